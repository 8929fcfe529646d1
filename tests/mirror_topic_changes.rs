//! A mirrored topic follows its source: partitions added in the source are added to the
//! remote topic and mirrored exactly, config changes are synced, and with the flow's
//! `delete_remote_topics` a deleted source topic takes its remote topic with it.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::client::{Client, TopicSpec};
use chaos_tests::harness::deployment::{DeploymentSpec, LOOPBACK_PREFIX};
use support::deployment::{Running, assert_exact_copy, produce, wait_caught_up};

async fn wait_for(what: &str, running: &Running, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen\n{}",
            running.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn remote(client: &Client, topic: &str) -> Option<(usize, BTreeMap<String, String>)> {
    let meta = client.refresh_metadata().await.ok()?;
    let t = meta.topics.get(topic)?;
    Some((t.partitions.len(), t.configs.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_topics_grow_sync_configs_and_follow_deletions() {
    let spec = DeploymentSpec {
        regions: 2,
        brokers: 1,
        prefix: LOOPBACK_PREFIX,
        octet: 198,
        mirrors: 1,
        flows: vec![(1, 2)],
    };
    let mut running = Running::start(spec);
    let path = running.deployment.topology.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "checkpoint_interval = \"1s\"\n",
            "checkpoint_interval = \"1s\"\ndelete_remote_topics = true\n",
        ),
    )
    .unwrap();
    let r1 = running.client("r1").await;
    let r2 = running.client("r2").await;
    r1.create_topic(TopicSpec {
        name: "orders".into(),
        partitions: 2,
        replication_factor: 1,
        configs: [("retention.ms".to_owned(), "86400000".to_owned())].into(),
    })
    .await
    .unwrap();
    running.node("r2/m1").start().unwrap();
    produce(&r1, "orders", "before", 500).await;
    wait_caught_up(&r1, "orders", &r2, "r1.orders", &running).await;

    // The source grows to 4 partitions and changes a config; the remote follows.
    support::run_ok(&[
        "topic",
        "add-partitions",
        "orders",
        "--partitions",
        "4",
        "--bootstrap",
        &running.deployment.bootstrap("r1"),
    ]);
    support::run_ok(&[
        "topic",
        "alter",
        "orders",
        "--config",
        "retention.ms=3600000",
        "--config",
        "retention.bytes=1073741824",
        "--bootstrap",
        &running.deployment.bootstrap("r1"),
    ]);
    // Clients learn about new partitions on their next metadata refresh, as Kafka's do.
    r1.refresh_metadata().await.unwrap();
    produce(&r1, "orders", "after", 2_000).await;
    wait_for(
        "r1.orders to grow and take the new configs",
        &running,
        async || {
            remote(&r2, "r1.orders").await.is_some_and(|(n, configs)| {
                n == 4
                    && configs.get("retention.ms").map(String::as_str) == Some("3600000")
                    && configs.get("retention.bytes").map(String::as_str) == Some("1073741824")
            })
        },
    )
    .await;
    wait_caught_up(&r1, "orders", &r2, "r1.orders", &running).await;
    r2.refresh_metadata().await.unwrap();
    assert_exact_copy(&r1, "r1", &r2, "r2", "orders").await;
    let ends = r2
        .list_offsets("r1.orders", broker::client::OffsetSpec::Latest)
        .await
        .unwrap();
    assert!(
        ends[&2] > 0 && ends[&3] > 0,
        "the new partitions are mirrored: {ends:?}"
    );

    // The source topic is deleted; with delete_remote_topics the remote one goes too.
    support::run_ok(&[
        "topic",
        "delete",
        "orders",
        "--bootstrap",
        &running.deployment.bootstrap("r1"),
    ]);
    wait_for("r1.orders to be deleted in r2", &running, async || {
        remote(&r2, "r1.orders").await.is_none()
    })
    .await;
    assert!(running.logs().contains("deleted the remote topic"));
}
