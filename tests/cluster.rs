//! A region is a cluster: three broker processes share one controller quorum, spread
//! partition leadership, route clients to leaders from any bootstrap broker, keep group
//! offsets through a broker's loss, and refuse metadata changes clearly (while still
//! serving committed data) when the quorum is lost.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use broker::client::{Client, Consumer, ConsumerConfig, Producer, ProducerConfig, TopicSpec};
use broker::record::Record;
use support::Region;

/// Waits until every broker of the region has registered with the controller, as an
/// operator would before creating topics (placement only uses registered brokers).
async fn wait_for_brokers(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .refresh_metadata()
        .await
        .map(|m| m.brokers.len())
        .unwrap_or(0)
        < n
    {
        assert!(
            Instant::now() < deadline,
            "{n} brokers did not all register"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(bootstrap: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(bootstrap).await {
            Ok(client) => return client,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("cannot connect to {bootstrap}: {err}"),
        }
    }
}

async fn read_all(
    client: Client,
    topic: &str,
    partitions: Option<Vec<i32>>,
) -> BTreeMap<(i32, i64), String> {
    let mut config = ConsumerConfig::new(topic);
    config.partitions = partitions;
    config.max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::new(client, config).await.expect("consumer");
    let ends = consumer.end_offsets().await.expect("ends");
    let mut out = BTreeMap::new();
    while ends.iter().any(|(p, end)| consumer.positions()[p] < *end) {
        for r in consumer.poll().await.expect("poll") {
            out.insert(
                (r.partition, r.record.offset),
                String::from_utf8(r.record.value.unwrap().to_vec()).unwrap(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_spread_leaders_route_clients_and_agree_on_metadata() {
    let region = Region::start(41, 3, "");
    let client = connect(&region.bootstrap_of(0)).await;
    wait_for_brokers(&client, 3).await;
    client
        .create_topic(TopicSpec {
            name: "spread".into(),
            partitions: 6,
            ..TopicSpec::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", region.logs()));

    let meta = client.refresh_metadata().await.expect("metadata");
    assert_eq!(meta.brokers.len(), 3, "every broker registered: {meta:?}");
    let leaders: BTreeSet<u64> = meta.topics["spread"]
        .partitions
        .iter()
        .map(|p| p.leader)
        .collect();
    assert_eq!(
        leaders,
        BTreeSet::from([1, 2, 3]),
        "leadership spread over the brokers"
    );

    // Every broker answers metadata from its replicated copy, and they agree.
    for i in 1..3 {
        let other = connect(&region.bootstrap_of(i)).await.cached_metadata();
        assert!(
            other.topics.contains_key("spread"),
            "DEBUG {other:?}\n{}",
            region.logs()
        );
        assert_eq!(
            other.topics["spread"], meta.topics["spread"],
            "broker {i} disagrees"
        );
    }

    // Produce through a client that only knew broker 1: records reach every leader.
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..3000 {
        let record = Record::new(format!("v{i}"), 0).with_key(format!("k{}", i % 101));
        deliveries.push(producer.send("spread", None, record).await.expect("send"));
    }
    producer.flush().await.expect("flush");
    let mut acked = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let d = d.await.expect("acknowledged");
        acked.insert((d.partition, d.offset), format!("v{i}"));
    }
    let stored = read_all(connect(&region.bootstrap_of(2)).await, "spread", None).await;
    assert_eq!(
        stored, acked,
        "what was acknowledged is exactly what is stored"
    );
    assert_eq!(
        stored
            .keys()
            .map(|(p, _)| *p)
            .collect::<BTreeSet<_>>()
            .len(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_survive_a_broker_and_quorum_loss_fails_metadata_changes_clearly() {
    let mut region = Region::start(42, 3, "");
    let client = connect(&region.bootstrap_of(0)).await;
    wait_for_brokers(&client, 3).await;
    client
        .create_topic(TopicSpec {
            name: "orders".into(),
            partitions: 3,
            ..TopicSpec::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", region.logs()));
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    for i in 0..300 {
        let delivery = producer
            .send("orders", Some(i % 3), Record::new(format!("o{i}"), 0))
            .await
            .expect("send");
        drop(delivery);
    }
    producer.flush().await.expect("flush");
    client
        .commit_offsets(
            "billing",
            &[
                ("orders".into(), 0, 40),
                ("orders".into(), 1, 41),
                ("orders".into(), 2, 42),
            ],
        )
        .await
        .expect("commit");

    // Every broker sees the other two alive in the region's gossip.
    let members = |bootstrap: &str| -> Vec<serde_json::Value> {
        support::run_ok(&["members", "--json", "--bootstrap", bootstrap])
            .lines()
            .map(|l| serde_json::from_str(l).expect("json member"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = members(&region.bootstrap_of(1));
        if view.len() == 3 && view.iter().all(|m| m["state"] == "alive") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members never all alive: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Broker 1 crashes: the group's offsets are still there, read from another broker.
    region.kill9(0);
    let survivor = connect(&region.bootstrap_of(1)).await;
    let offsets = survivor
        .fetch_offsets("billing", &["orders".into()])
        .await
        .expect("offset fetch");
    assert_eq!(
        offsets,
        BTreeMap::from([
            (("orders".into(), 0), 40),
            (("orders".into(), 1), 41),
            (("orders".into(), 2), 42)
        ])
    );
    // Gossip marks the crashed broker down (LAN preset: p99 13.4 s in simulation).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let view = members(&region.bootstrap_of(1));
        if view
            .iter()
            .any(|m| m["name"] == "b1" && m["state"] == "down")
        {
            break;
        }
        assert!(Instant::now() < deadline, "b1 never marked down: {view:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Two of three voters still form a quorum: metadata changes work.
    survivor
        .create_topic(TopicSpec {
            name: "after-one-loss".into(),
            partitions: 1,
            ..TopicSpec::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create with 2 of 3 voters: {e}\n{}", region.logs()));

    // Broker 2 crashes too: the quorum is lost. Metadata changes fail, and say why.
    region.kill9(1);
    let last = connect(&region.bootstrap_of(2)).await;
    let err = last
        .create_topic(TopicSpec {
            name: "no-quorum".into(),
            partitions: 1,
            ..TopicSpec::default()
        })
        .await
        .expect_err("no metadata change without a quorum");
    let message = err.to_string();
    assert!(
        message.contains("no leader") && message.contains("voters"),
        "unclear error: {message}"
    );

    // Committed data on the surviving broker stays readable.
    let meta = last.cached_metadata();
    let mine: Vec<i32> = meta.topics["orders"]
        .partitions
        .iter()
        .filter(|p| p.leader == 3)
        .map(|p| p.partition)
        .collect();
    assert!(
        !mine.is_empty(),
        "broker 3 leads some partition of orders: {meta:?}"
    );
    let stored = read_all(last.clone(), "orders", Some(mine.clone())).await;
    assert_eq!(
        stored.len(),
        100 * mine.len(),
        "every record of broker 3's partitions is readable"
    );

    // The quorum comes back with a restarted broker, and changes work again.
    region.spawn(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match last
            .create_topic(TopicSpec {
                name: "quorum-back".into(),
                partitions: 1,
                ..TopicSpec::default()
            })
            .await
        {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("quorum did not come back: {err}\n{}", region.logs()),
        }
    }
}
