//! Issue 3's end-to-end check: the real binary, a 3-partition topic, 100,000 keyed records
//! with headers produced through the CLI and consumed back through the CLI.

mod support;

use std::collections::BTreeMap;

use support::{SingleBroker, run_ok, run_with_stdin};

const RECORDS: usize = 100_000;

#[test]
fn cli_round_trip_keeps_every_key_value_header_and_partition_order() {
    let broker = SingleBroker::start(21, "");
    let b = broker.bootstrap();
    run_ok(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "3",
        "--bootstrap",
        &b,
    ]);

    let mut input = String::with_capacity(RECORDS * 24);
    for i in 0..RECORDS {
        input.push_str(&format!("customer-{}\torder-{i}\n", i % 997));
    }
    let produced = run_with_stdin(
        &[
            "produce",
            "orders",
            "--key-separator",
            "\t",
            "--header",
            "source=test",
            "--header",
            "trace=a=b",
            "--acks",
            "1",
            "--bootstrap",
            &b,
        ],
        input.as_bytes(),
    );
    assert!(
        produced.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let out = run_ok(&[
        "consume",
        "orders",
        "--from-beginning",
        "--exit-at-end",
        "--format",
        "json",
        "--bootstrap",
        &b,
    ]);
    let mut seen = 0;
    let mut last_in_partition: BTreeMap<i64, (i64, usize)> = BTreeMap::new();
    let mut values_seen = vec![false; RECORDS];
    for line in out.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("json line");
        let value = record["value"].as_str().expect("value");
        let i: usize = value
            .strip_prefix("order-")
            .expect("order- prefix")
            .parse()
            .expect("number");
        let key = record["key"].as_str().expect("key");
        assert_eq!(key, format!("customer-{}", i % 997), "key of {value}");
        assert_eq!(record["headers"]["source"], "test");
        assert_eq!(record["headers"]["trace"], "a=b");
        assert_eq!(record["topic"], "orders");
        let partition = record["partition"].as_i64().expect("partition");
        let expected =
            broker::record::partition_for_key(key.as_bytes(), 3).expect("partition") as i64;
        assert_eq!(
            partition, expected,
            "{key} is not on Kafka's partition for it"
        );
        let offset = record["offset"].as_i64().expect("offset");
        if let Some((last_offset, last_i)) = last_in_partition.get(&partition) {
            assert!(
                offset > *last_offset && i > *last_i,
                "order broken in partition {partition} at {value}"
            );
        }
        last_in_partition.insert(partition, (offset, i));
        assert!(!values_seen[i], "{value} read twice");
        values_seen[i] = true;
        seen += 1;
    }
    assert_eq!(seen, RECORDS, "records read back");
    assert_eq!(
        last_in_partition.len(),
        3,
        "keys spread over every partition"
    );

    let described = run_ok(&["topic", "describe", "orders", "--bootstrap", &b]);
    assert!(described.contains("3 partitions"), "{described}");
    let listed = run_ok(&["topic", "list", "--bootstrap", &b]);
    assert_eq!(listed.trim(), "orders");

    // A group reads 1,000 records and commits; groups list|describe show it with its lag.
    let read = run_ok(&[
        "consume",
        "orders",
        "--from-beginning",
        "--max",
        "1000",
        "--group",
        "billing",
        "--bootstrap",
        &b,
    ]);
    assert_eq!(read.lines().count(), 1000);
    let groups = run_ok(&["groups", "list", "--bootstrap", &b]);
    assert_eq!(
        groups.trim(),
        "billing\tEmpty\torders",
        "the member left when it stopped"
    );
    let described = run_ok(&["groups", "describe", "billing", "--json", "--bootstrap", &b]);
    let rows: Vec<serde_json::Value> = described
        .lines()
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect();
    assert_eq!(rows.len(), 3, "{described}");
    let committed: i64 = rows
        .iter()
        .map(|r| r["committed_offset"].as_i64().unwrap())
        .sum();
    let lag: i64 = rows.iter().map(|r| r["lag"].as_i64().unwrap()).sum();
    assert_eq!(
        committed, 1000,
        "exactly the records printed were committed: {described}"
    );
    assert_eq!(lag, RECORDS as i64 - 1000, "{described}");

    // The group resumes where it committed: the next 10 records are new ones.
    let next = run_ok(&[
        "consume",
        "orders",
        "--max",
        "10",
        "--group",
        "billing",
        "--bootstrap",
        &b,
    ]);
    for value in next.lines() {
        assert!(
            !read.lines().any(|v| v == value),
            "{value} was delivered twice to the group"
        );
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_appends_nothing() {
    let broker = SingleBroker::start(22, "max_message_bytes = \"1KiB\"");
    let b = broker.bootstrap();
    run_ok(&[
        "topic",
        "create",
        "small",
        "--partitions",
        "1",
        "--bootstrap",
        &b,
    ]);

    // Unknown topic.
    let out = run_with_stdin(&["produce", "nope", "--bootstrap", &b], b"x\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown topic \"nope\""), "{err}");

    // A record above max.message.bytes.
    let big = format!("{}\n", "x".repeat(4096));
    let out = run_with_stdin(&["produce", "small", "--bootstrap", &b], big.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max.message.bytes"), "{err}");

    // Invalid partition.
    let out = run_with_stdin(
        &["produce", "small", "--partition", "5", "--bootstrap", &b],
        b"x\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no partition 5"), "{err}");

    // Fetch out of range names the valid range.
    let out = support::meridian()
        .args([
            "consume",
            "small",
            "--offset",
            "50",
            "--exit-at-end",
            "--bootstrap",
            &b,
        ])
        .output()
        .expect("consume");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("out of range") && err.contains("0 to 0"),
        "{err}"
    );

    // Nothing was appended by any of it.
    let described = run_ok(&["topic", "describe", "small", "--bootstrap", &b]);
    let row = described
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .expect("partition row");
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        fields[3], "0",
        "high watermark after refused input: {described}"
    );

    // Bad topic config names the key.
    let out = support::meridian()
        .args([
            "topic",
            "create",
            "t2",
            "--config",
            "retention.hours=1",
            "--bootstrap",
            &b,
        ])
        .output()
        .expect("create");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.hours"));
}
