//! Mirror flows end to end: two regions of three real brokers each, real mirror workers,
//! active/active. The remote topics must equal their sources record for record (offsets,
//! keys, values, headers, timestamps) through a worker kill -9 and a takeover, and no
//! topic may loop back; a consumer group then fails over from one region to the other and
//! reads every record exactly once. The chaos checker's invariants judge the copies.

mod support;

use support::deployment::{Running, assert_exact_copy, create, produce, wait_caught_up};

use std::collections::BTreeMap;
use std::time::Duration;

use broker::client::Client;
use chaos_tests::check::no_loops;
use chaos_tests::harness::deployment::DeploymentSpec;
use chaos_tests::harness::readback::read_topic;

async fn topics(client: &Client) -> Vec<String> {
    client
        .refresh_metadata()
        .await
        .unwrap()
        .topics
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_active_mirrors_are_exact_through_a_worker_kill_and_takeover_and_never_loop() {
    // r1 and r2, three brokers each; two mirror workers per region.
    let mut run = Running::start(DeploymentSpec::active_active(101, 2));
    let (a, b) = (run.client("r1").await, run.client("r2").await);
    create(&a, "orders", 3).await;
    create(&b, "orders", 3).await;
    for node in ["r1/m1", "r2/m1", "r2/m2"] {
        run.node(node).start().unwrap();
    }

    // Producers in both regions at once for a minute (active/active): at least 200,000
    // records into r1 and batches into r2 throughout, while r2's first worker is killed
    // mid-stream and restarted.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let producing = {
        let a = a.clone();
        tokio::spawn(async move {
            produce(&a, "orders", "r1", 200_000).await;
            let mut round = 0;
            while std::time::Instant::now() < until {
                produce(&a, "orders", &format!("r1-tail-{round}"), 2_000).await;
                round += 1;
            }
        })
    };
    let producing_b = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut round = 0;
            while std::time::Instant::now() < until {
                produce(&b, "orders", &format!("r2-{round}"), 2_000).await;
                round += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    run.node("r2/m1").kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.node("r2/m1").start().unwrap();
    producing.await.unwrap();
    producing_b.await.unwrap();
    wait_caught_up(&a, "orders", &b, "r1.orders", &run).await;
    assert_exact_copy(&a, "r1", &b, "r2", "orders").await;

    // r2/m2 alone must take over r2's share: kill m1 for good, write more, compare again.
    run.node("r2/m1").kill9();
    produce(&a, "orders", "r1-more", 3_000).await;
    wait_caught_up(&a, "orders", &b, "r1.orders", &run).await;
    assert_exact_copy(&a, "r1", &b, "r2", "orders").await;

    // The other direction (r1's only worker) is exact too.
    wait_caught_up(&b, "orders", &a, "r2.orders", &run).await;
    assert_exact_copy(&b, "r2", &a, "r1", "orders").await;

    // Heartbeats flow both ways, and nothing loops: no r1.r2.* or r2.r1.* topic, ever.
    tokio::time::sleep(Duration::from_secs(
        2 * mirror::worker::PLAN_EVERY.as_secs(),
    ))
    .await;
    let layout: BTreeMap<String, Vec<String>> = [
        ("r1".to_string(), topics(&a).await),
        ("r2".to_string(), topics(&b).await),
    ]
    .into_iter()
    .collect();
    let verdict = no_loops::check(&layout, &["r1".into(), "r2".into()], ".");
    assert!(verdict.passed(), "{verdict:?}");
    assert!(
        layout["r2"].contains(&"r1.heartbeats".to_string()),
        "{layout:?}\n{}",
        run.logs()
    );
    assert!(
        layout["r1"].contains(&"r2.orders".to_string()),
        "{layout:?}"
    );

    // The operator's view agrees: every partition of both flows caught up.
    let status: serde_json::Value = support::deployment::mirror_status(&run.deployment.topology);
    let orders: Vec<_> = status
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == "orders")
        .collect();
    assert_eq!(orders.len(), 6, "3 partitions in each direction: {status}");
    assert!(
        orders
            .iter()
            .all(|p| p["state"] == "caught-up" && p["lag_records"] == 0),
        "{status}"
    );

    // Failover: group G reads part of `orders` in r1 and commits, moves to r2 with
    // `meridian failover`, and reads `r1.orders` there. Every record exactly once.
    let bootstrap_a = run.deployment.bootstrap("r1");
    let bootstrap_b = run.deployment.bootstrap("r2");
    let before = consume_json(&[
        "orders",
        "--group",
        "G",
        "--from-beginning",
        "--max",
        "70000",
        "--bootstrap",
        &bootstrap_a,
    ]);
    assert_eq!(before.len(), 70_000);
    let topology = run.deployment.topology.to_str().unwrap().to_string();
    let out = support::meridian()
        .args([
            "failover",
            "--topology",
            &topology,
            "--group",
            "G",
            "--from",
            "r1",
            "--to",
            "r2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "failover failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = consume_json(&[
        "r1.orders",
        "--group",
        "G",
        "--exit-at-end",
        "--bootstrap",
        &bootstrap_b,
    ]);
    assert!(!after.is_empty(), "nothing was left to read in r2");
    let source_logs = read_topic(&a, "r1", "orders", Duration::from_secs(120))
        .await
        .unwrap();
    let deliveries: Vec<_> = before
        .iter()
        .map(|r| delivery("r1", r))
        .chain(after.iter().map(|r| delivery("r2", r)))
        .collect();
    let found = chaos_tests::check::failover_once::check(
        &source_logs,
        &BTreeMap::new(),
        |remote| remote.strip_prefix("r1.").map(str::to_string),
        &deliveries,
    );
    assert!(
        found.verdict.passed(),
        "failover was not exactly once (skipped {}, re-delivered {}): {:#?}",
        found.skipped,
        found.redelivered,
        found.verdict
    );
}

/// `meridian consume ARGS --format json`, one JSON object per record.
fn consume_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = support::meridian()
        .arg("consume")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn delivery(region: &str, record: &serde_json::Value) -> chaos_tests::history::Delivery {
    chaos_tests::history::Delivery {
        from: chaos_tests::history::PartitionId::new(
            region,
            record["topic"].as_str().unwrap(),
            record["partition"].as_i64().unwrap() as i32,
        ),
        offset: record["offset"].as_i64().unwrap(),
        record_id: record["value"].as_str().unwrap().to_string(),
    }
}
