//! The mirror stays exactly once through an inter-region cut and leader failovers on
//! both sides, over mutual TLS, with real processes in two regions of three brokers:
//!
//! - the path between region r2's mirror worker and region r1's brokers is cut for 30 s
//!   (iptables DROP on the loopback addresses) while r1 keeps taking writes; once it is
//!   restored the mirror catches up;
//! - then the leader of a source partition, and then the leader of its remote partition,
//!   are killed with kill -9 while records keep flowing;
//!
//! and at the end `r1.orders` in r2 equals `orders` in r1 record for record (the chaos
//! checker's invariant). Needs root and iptables (.ci/run installs it); says so and
//! skips otherwise.

mod support;

use std::time::{Duration, Instant};

use broker::client::Client;
use chaos_tests::harness::deployment::{DeploymentSpec, LOOPBACK_PREFIX};
use chaos_tests::harness::partition::Cut;
use support::deployment::{Running, assert_exact_copy, create, produce, wait_caught_up};

const OCTET: u8 = 191;

/// The broker name (`REGION/bN`) leading `topic`-`partition`, from fresh metadata.
async fn leader_name(client: &Client, region: &str, topic: &str, partition: i32) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(meta) = client.refresh_metadata().await
            && let Some(leader) = meta
                .topics
                .get(topic)
                .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
                .map(|p| p.leader)
            && let Some(broker) = meta.brokers.get(&leader)
        {
            return format!("{region}/{}", broker.name);
        }
        assert!(
            Instant::now() < deadline,
            "no leader for {topic}-{partition}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_exact_through_a_30_s_cut_and_leader_kills_on_both_sides() {
    if let Err(why) = Cut::available() {
        eprintln!("SKIPPED mirror_cut: {why}");
        return;
    }
    let spec = DeploymentSpec {
        regions: 2,
        brokers: 3,
        prefix: LOOPBACK_PREFIX,
        octet: OCTET,
        mirrors: 1,
        flows: vec![(1, 2)],
    };
    let mut running = Running::start(spec);
    let r1 = running.client("r1").await;
    let r2 = running.client("r2").await;
    create(&r1, "orders", 3).await;
    running.node("r2/m1").start().unwrap();
    produce(&r1, "orders", "before", 5_000).await;
    wait_caught_up(&r1, "orders", &r2, "r1.orders", &running).await;

    // Cut r2's mirror worker off from every r1 broker for 30 s while r1 takes writes.
    let mirror = format!("127.0.{}.11", OCTET + 1);
    let r1_brokers = format!("127.0.{OCTET}.0/24");
    let cut = Cut::between(&[&mirror], &[&r1_brokers]).expect("cut the inter-region path");
    let cut_at = Instant::now();
    produce(&r1, "orders", "during-cut", 10_000).await;
    // The cut holds: the remote partitions do not move while r1 is ahead of them.
    let ends = |client: Client, topic: &'static str| async move {
        client
            .list_offsets(topic, broker::client::OffsetSpec::Latest)
            .await
            .unwrap()
    };
    let copied = ends(r2.clone(), "r1.orders").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ends(r2.clone(), "r1.orders").await,
        copied,
        "nothing may cross the cut"
    );
    assert_ne!(
        ends(r1.clone(), "orders").await,
        copied,
        "r1 is ahead during the cut"
    );
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed())).await;
    cut.heal().expect("restore the path");
    let healed_at = Instant::now();
    wait_caught_up(&r1, "orders", &r2, "r1.orders", &running).await;
    eprintln!(
        "caught up {:?} after the 30 s cut was restored",
        healed_at.elapsed()
    );

    // A source leader dies mid-stream; then the remote partition's leader.
    let source_leader = leader_name(&r1, "r1", "orders", 0).await;
    let writes = {
        let r1 = r1.clone();
        tokio::spawn(async move { produce(&r1, "orders", "source-kill", 5_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.node(&source_leader).kill9();
    writes
        .await
        .expect("acks=all writes ride over the failover");
    running.node(&source_leader).start().unwrap();
    let target_leader = leader_name(&r2, "r2", "r1.orders", 0).await;
    let writes = {
        let r1 = r1.clone();
        tokio::spawn(async move { produce(&r1, "orders", "target-kill", 5_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.node(&target_leader).kill9();
    writes.await.expect("writes in r1 do not depend on r2");
    running.node(&target_leader).start().unwrap();

    wait_caught_up(&r1, "orders", &r2, "r1.orders", &running).await;
    assert_exact_copy(&r1, "r1", &r2, "r2", "orders").await;
    for node in running.nodes.values_mut() {
        node.stop();
    }
}
