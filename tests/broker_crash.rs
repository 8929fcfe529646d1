//! Crash tests against a real broker process: kill -9 during a produce stream with
//! `flush = batch`, restart, and every acknowledged record is there and readable.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use broker::client::{Client, Consumer, ConsumerConfig, Producer, ProducerConfig, TopicSpec};
use broker::record::Record;
use support::SingleBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_produce_loses_no_acknowledged_record() {
    let mut broker = SingleBroker::start(23, "flush = \"batch\"");
    let client = Client::connect(&broker.bootstrap()).await.expect("connect");
    client
        .create_topic(TopicSpec {
            name: "payments".into(),
            partitions: 2,
            ..TopicSpec::default()
        })
        .await
        .expect("create");

    let mut config = ProducerConfig::default();
    config.batching.linger = Duration::from_millis(1);
    config.batching.max_batch_bytes = 4096;
    let producer = Producer::new(client.clone(), config).expect("producer");
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = tokio::spawn(async move {
        for i in 0u64.. {
            let record = Record::new(format!("payment-{i}"), 0).with_key(format!("k{}", i % 13));
            let Ok(delivery) = producer.send("payments", None, record).await else {
                break;
            };
            let acked_tx = acked_tx.clone();
            tokio::spawn(async move {
                if let Ok(d) = delivery.await {
                    let _ = acked_tx.send((d.partition, d.offset, i));
                }
            });
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });

    // Let a few thousand records be acknowledged, then crash the broker mid-stream.
    let mut acked: Vec<(i32, i64, u64)> = Vec::new();
    while acked.len() < 3000 {
        acked.push(acked_rx.recv().await.expect("acks flow"));
    }
    broker.kill9();
    stream.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(a) = acked_rx.try_recv() {
        acked.push(a);
    }

    broker.restart();
    let client = Client::connect(&broker.bootstrap())
        .await
        .expect("reconnect");
    let mut consumer = Consumer::new(client, ConsumerConfig::new("payments"))
        .await
        .expect("consumer");
    let ends = consumer.end_offsets().await.expect("ends");
    let mut stored: BTreeMap<(i32, i64), String> = BTreeMap::new();
    while ends.iter().any(|(p, end)| consumer.positions()[p] < *end) {
        for r in consumer.poll().await.expect("poll") {
            let value = String::from_utf8(r.record.value.unwrap().to_vec()).unwrap();
            stored.insert((r.partition, r.record.offset), value);
        }
    }
    for (partition, offset, i) in &acked {
        assert_eq!(
            stored.get(&(*partition, *offset)).map(String::as_str),
            Some(format!("payment-{i}").as_str()),
            "acknowledged record {i} at {partition}/{offset} is missing after kill -9 ({} acked, {} stored)",
            acked.len(),
            stored.len()
        );
    }
    assert!(stored.len() >= acked.len());
}
