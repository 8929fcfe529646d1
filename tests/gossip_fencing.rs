//! Failover before the session timeout (set to 60 s here, so only these signals can
//! explain a new leader within 45 s):
//!
//! - a broker killed with kill -9 has its connections closed by the kernel; its
//!   attachment streams to the controller voters end and the active controller fences
//!   it within a short grace;
//! - a broker that hangs (SIGSTOP: its connections stay open) is declared down by its
//!   region's SWIM gossip, and the active controller fences it on that hint.

mod support;

use std::time::{Duration, Instant};

use broker::client::{Client, TopicSpec};
use support::Region;

async fn leader_of(client: &Client, topic: &str, partition: i32) -> Option<u64> {
    let meta = client.refresh_metadata().await.ok()?;
    let topic = meta.topics.get(topic)?;
    topic
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .map(|p| p.leader)
}

async fn dead_broker_fenced_before_its_session_timeout(octet: u8, hang: bool, reason: &str) {
    let mut region = Region::start_with(
        octet,
        3,
        "",
        "[cluster]\nsession_timeout = \"60s\"\nreplica_lag_max = \"10s\"\n",
    );
    let client = Client::connect(&region.bootstrap_all()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spec = TopicSpec {
            name: "hinted".into(),
            partitions: 3,
            replication_factor: 3,
            configs: Default::default(),
        };
        match client.create_topic(spec).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("create: {e}\n{}", region.logs()),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    let meta = client.refresh_metadata().await.unwrap();
    // Kill the leader of partition 0 (not necessarily the controller).
    let leader = loop {
        if let Some(leader) = leader_of(&client, "hinted", 0).await.filter(|l| *l != 0) {
            break leader;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let victim = meta.brokers[&leader].name.clone();
    let index = region
        .brokers
        .iter()
        .position(|b| b.name == victim)
        .expect("the leader is one of ours");
    let killed_at = Instant::now();
    if hang {
        region.pause(index);
    } else {
        region.kill9(index);
    }
    let survivor = region
        .brokers
        .iter()
        .enumerate()
        .find(|(i, _)| *i != index)
        .map(|(_, b)| b.grpc.to_string())
        .unwrap();
    let survivor = Client::connect(&survivor).await.unwrap();
    let moved_after = loop {
        match leader_of(&survivor, "hinted", 0).await {
            Some(new) if new != leader && new != 0 => break killed_at.elapsed(),
            _ => {}
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(45),
            "no new leader 45 s after the failure: {victim} was not fenced ({reason})\n{}",
            region.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = region.logs();
    assert!(
        logs.contains(reason),
        "the controller says why it fenced ({reason}):\n{logs}"
    );
    eprintln!(
        "new leader of hinted-0 {moved_after:?} after {} {victim} (session timeout 60 s)",
        if hang { "SIGSTOP of" } else { "kill -9 of" }
    );
    if hang {
        region.resume(index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_fenced_when_its_connections_to_the_controller_close() {
    dead_broker_fenced_before_its_session_timeout(
        187,
        false,
        "did not attach again (process gone)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_is_fenced_on_the_gossip_hint() {
    dead_broker_fenced_before_its_session_timeout(188, true, "gossip declared it down").await;
}
