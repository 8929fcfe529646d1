//! Real Kafka clients against real Meridian brokers over the Kafka wire protocol:
//! kcat (librdkafka) and, in tests/kafka_python.rs, the Python clients. A test whose
//! client is not installed says SKIPPED; `.ci/run` installs them all.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker::client::{Client, OffsetSpec};
use support::Region;
use support::deployment::create;

/// Whether `tool` runs here; prints SKIPPED with the install hint when not.
pub fn have(tool: &str, probe: &[&str], install: &str) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: {tool} is not installed ({install}); .ci/run installs it");
    }
    ok
}

async fn connect(region: &Region) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(&region.bootstrap_all()).await {
            Ok(client)
                if client
                    .refresh_metadata()
                    .await
                    .is_ok_and(|m| m.brokers.len() == region.brokers.len()) =>
            {
                return client;
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!(
                "brokers did not register: {:?}\n{}",
                other.err(),
                region.logs()
            ),
        }
    }
}

fn kcat(args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kcat");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().expect("kcat");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes_10000_keyed_records_with_headers_and_lists_metadata() {
    if !have("kcat", &["-V"], "apt-get install kcat") {
        return;
    }
    let region = Region::start_with_kafka(72, 3, "");
    let client = connect(&region).await;
    create(&client, "orders", 3).await;
    let boot = region.kafka_bootstrap();

    // kcat -L: every broker at its Kafka address, the topic and a leader per partition.
    let listing: serde_json::Value =
        serde_json::from_str(&kcat(&["-L", "-J", "-b", &boot, "-t", "orders"], b"")).expect("json");
    let brokers: Vec<String> = listing["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    for b in &region.brokers {
        let addr = b.kafka.unwrap().to_string();
        assert!(
            brokers.iter().any(|n| n.contains(&addr)),
            "{addr} not in {brokers:?}"
        );
    }
    let topic = &listing["topics"][0];
    assert_eq!(topic["topic"], "orders");
    let partitions = topic["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert!(
        partitions.iter().all(|p| p["leader"].as_i64().unwrap() > 0),
        "{topic}"
    );

    // Produce 10,000 keyed records with headers (acks=all), consume them back.
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!("key-{i}\tvalue-{i}\n"));
    }
    kcat(
        &[
            "-P",
            "-b",
            &boot,
            "-t",
            "orders",
            "-K",
            "\t",
            "-H",
            "origin=kcat",
            "-H",
            "n=1",
            "-X",
            "acks=all",
        ],
        input.as_bytes(),
    );
    let ends = client
        .list_offsets("orders", OffsetSpec::Latest)
        .await
        .expect("offsets");
    assert_eq!(
        ends.values().sum::<i64>(),
        10_000,
        "every record acknowledged once"
    );
    let out = kcat(
        &[
            "-C",
            "-b",
            &boot,
            "-t",
            "orders",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p\t%o\t%k\t%s\t%h\n",
        ],
        b"",
    );
    let mut seen: BTreeMap<String, (i32, i64, String)> = BTreeMap::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "{line}");
        let (partition, offset): (i32, i64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        assert!(
            last.get(&partition).is_none_or(|l| offset > *l),
            "offsets in order per partition"
        );
        last.insert(partition, offset);
        assert_eq!(
            f[3],
            f[2].replace("key", "value"),
            "value travels with its key"
        );
        assert_eq!(f[4], "origin=kcat,n=1", "headers");
        assert!(
            seen.insert(f[2].to_string(), (partition, offset, f[3].to_string()))
                .is_none(),
            "{} twice",
            f[2]
        );
    }
    assert_eq!(seen.len(), 10_000, "every record read once");
    // The same records through Meridian's own client: same keys at the same offsets.
    let read = broker_read_all(&client, "orders").await;
    for (key, (partition, offset, _)) in &seen {
        assert_eq!(
            read.get(&(*partition, *offset)),
            Some(key),
            "gRPC and Kafka agree"
        );
    }
}

async fn broker_read_all(client: &Client, topic: &str) -> BTreeMap<(i32, i64), String> {
    let mut config = broker::client::ConsumerConfig::new(topic);
    config.max_wait = Duration::from_millis(100);
    let mut consumer = broker::client::Consumer::new(client.clone(), config)
        .await
        .unwrap();
    let ends = consumer.end_offsets().await.unwrap();
    let mut out = BTreeMap::new();
    while ends.iter().any(|(p, e)| consumer.positions()[p] < *e) {
        for r in consumer.poll().await.unwrap() {
            let key = String::from_utf8(r.record.key.unwrap().to_vec()).unwrap();
            out.insert((r.partition, r.record.offset), key);
        }
    }
    out
}
