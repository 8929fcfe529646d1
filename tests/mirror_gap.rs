//! Retention that outruns the mirror is a reported loss, never a silent skip: with the
//! mirror worker stopped, the source's retention deletes records it had not copied; once
//! restarted, the worker records the gap, continues from the source's log start, and
//! `meridian mirror status` and the gap metrics show exactly how many offsets were lost,
//! still after another worker restart (the record is durable in the target region).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::client::{OffsetSpec, TopicSpec};
use chaos_tests::harness::deployment::{DeploymentSpec, LOOPBACK_PREFIX};
use support::deployment::{Running, produce, wait_caught_up};

fn scrape(addr: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains("topic=\"logs\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_gap_shows_in_status_and_metrics_and_survives_a_worker_restart() {
    let spec = DeploymentSpec {
        regions: 2,
        brokers: 1,
        prefix: LOOPBACK_PREFIX,
        octet: 195,
        mirrors: 1,
        flows: vec![(1, 2)],
    };
    let mut running = Running::start(spec);
    let r1 = running.client("r1").await;
    let r2 = running.client("r2").await;
    // Small segments, and retention that keeps only about two of them.
    let spec = TopicSpec {
        name: "logs".into(),
        partitions: 1,
        replication_factor: 1,
        configs: [
            ("segment.bytes".to_owned(), "4096".to_owned()),
            ("retention.bytes".to_owned(), "8192".to_owned()),
        ]
        .into(),
    };
    r1.create_topic(spec).await.unwrap();
    running.node("r2/m1").start().unwrap();
    produce(&r1, "logs", "copied", 50).await;
    wait_caught_up(&r1, "logs", &r2, "r1.logs", &running).await;

    // The worker stops; the source keeps writing and retention deletes what it missed.
    running.node("r2/m1").stop();
    produce(&r1, "logs", "lost-or-not", 3_000).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let log_start = loop {
        let start = r1.list_offsets("logs", OffsetSpec::Earliest).await.unwrap()[&0];
        if start > 50 {
            break start;
        }
        assert!(
            Instant::now() < deadline,
            "retention never deleted the unmirrored segments (log start {start})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Restarted, the worker records the gap and copies on from the source's log start.
    running.node("r2/m1").start().unwrap();
    wait_caught_up(&r1, "logs", &r2, "r1.logs", &running).await;
    let rows = support::deployment::mirror_status(&running.deployment.topology);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["topic"] == "logs")
        .unwrap_or_else(|| panic!("no status row for logs: {rows}"))
        .clone();
    assert_eq!(row["state"], "gap", "{row}");
    let lost = row["gap_records"].as_i64().unwrap();
    assert!(
        lost >= log_start - 50 && lost > 0,
        "status counts the offsets lost (mirrored up to 50, source log start {log_start}): {row}"
    );
    let mirror = running
        .deployment
        .mirrors
        .iter()
        .find(|m| m.region == "r2")
        .unwrap()
        .metrics;
    let body = scrape(mirror).expect("the worker serves metrics");
    assert_eq!(
        metric(&body, "meridian_mirror_retention_gaps_total"),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "meridian_mirror_retention_gap_records_total"),
        lost as f64
    );

    // The record is durable: another restart forgets nothing in status.
    running.node("r2/m1").kill9();
    running.node("r2/m1").start().unwrap();
    let again = support::deployment::mirror_status(&running.deployment.topology);
    let row = again
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["topic"] == "logs")
        .unwrap()
        .clone();
    assert_eq!(
        (row["state"].clone(), row["gap_records"].as_i64()),
        ("gap".into(), Some(lost))
    );
    for node in running.nodes.values_mut() {
        node.stop();
    }
}
