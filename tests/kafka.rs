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

/// Whether `python3` can import `module`; prints SKIPPED with the install hint when not.
fn have_python_module(module: &str, package: &str) -> bool {
    have(
        "python3",
        &["-c", &format!("import {module}")],
        &format!("pip install {package}"),
    )
}

fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!(
        "{}/tests/kafka_clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_idempotent_producer_and_a_group_of_two_that_hands_over_without_a_skip() {
    if !have_python_module("confluent_kafka", "confluent-kafka") {
        return;
    }
    let region = Region::start_with_kafka(73, 3, "");
    let client = connect(&region).await;
    create(&client, "payments", 4).await;
    let n = 2_000;
    let report = python(
        "confluent_group.py",
        &[&region.kafka_bootstrap(), "payments", &n.to_string()],
    );
    assert_eq!(report["delivery_errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["acked"], n);
    let ends = client
        .list_offsets("payments", OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(
        ends.values().sum::<i64>(),
        n,
        "the idempotent producer wrote each record once"
    );

    // The two members split the four partitions.
    let a: Vec<i64> = serde_json::from_value(report["assigned_first"].clone()).unwrap();
    let b: Vec<i64> = serde_json::from_value(report["assigned_second"].clone()).unwrap();
    assert!(!a.is_empty() && !b.is_empty(), "{report}");
    assert!(a.iter().all(|p| !b.contains(p)), "disjoint: {a:?} {b:?}");
    assert_eq!(a.len() + b.len(), 4);
    let after: Vec<i64> = serde_json::from_value(report["assigned_second_after"].clone()).unwrap();
    assert_eq!(after, vec![0, 1, 2, 3], "the survivor owns every partition");

    // Nothing skipped: every offset of every partition was read; the survivor resumed
    // the leaver's partitions exactly at its committed positions.
    let mut seen: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for who in ["first", "second"] {
        for r in report["reads"][who].as_array().unwrap() {
            seen.entry(r[0].as_i64().unwrap())
                .or_default()
                .push(r[1].as_i64().unwrap());
        }
    }
    for (p, end) in &ends {
        let mut offsets = seen.remove(&i64::from(*p)).unwrap_or_default();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets, (0..*end).collect::<Vec<_>>(), "partition {p}");
    }
    let first_read: i64 = report["first_read"].as_i64().unwrap();
    assert!(
        first_read > 0,
        "the first member read before leaving: {report}"
    );
    let mut last_of_first: BTreeMap<i64, i64> = BTreeMap::new();
    for r in report["reads"]["first"].as_array().unwrap() {
        last_of_first.insert(r[0].as_i64().unwrap(), r[1].as_i64().unwrap());
    }
    let mut first_after: BTreeMap<i64, i64> = BTreeMap::new();
    for r in report["second_after_takeover"].as_array().unwrap() {
        first_after
            .entry(r[0].as_i64().unwrap())
            .or_insert(r[1].as_i64().unwrap());
    }
    for (p, last) in last_of_first {
        if let Some(resumed) = first_after.get(&p) {
            assert_eq!(
                *resumed,
                last + 1,
                "partition {p} resumed at the committed offset"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_round_trip() {
    if !have_python_module("kafka", "kafka-python") {
        return;
    }
    let region = Region::start_with_kafka(74, 1, "");
    let client = connect(&region).await;
    create(&client, "events", 2).await;
    let report = python(
        "kafka_python_roundtrip.py",
        &[&region.kafka_bootstrap(), "events", "500"],
    );
    let read = report["read"].as_array().unwrap();
    assert_eq!(read.len(), 500, "{report}");
    let acked: BTreeMap<(i64, i64), ()> = report["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| ((a[0].as_i64().unwrap(), a[1].as_i64().unwrap()), ()))
        .collect();
    for r in read {
        let key = r[2].as_str().unwrap();
        assert_eq!(r[3].as_str().unwrap(), key.replace('k', "v"));
        assert_eq!(r[4], serde_json::json!([["origin", "kafka-python"]]));
        assert!(
            acked.contains_key(&(r[0].as_i64().unwrap(), r[1].as_i64().unwrap())),
            "read what was acknowledged"
        );
    }
}
