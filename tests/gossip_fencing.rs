//! Gossip speeds up failover: a broker killed with kill -9 is declared down by its
//! region's SWIM gossip, and the active controller fences it on that hint, so its
//! partitions get a new leader long before its session timeout (set to 60 s here, so
//! only the hint can explain a new leader within 45 s).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_hint_fences_a_dead_broker_before_its_session_timeout() {
    let mut region = Region::start_with(
        187,
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
    region.kill9(index);
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
            "no new leader 45 s after the kill: the gossip hint did not fence {victim}\n{}",
            region.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = region.logs();
    assert!(
        logs.contains("gossip declared it down"),
        "the controller says why it fenced:\n{logs}"
    );
    eprintln!(
        "new leader of hinted-0 {moved_after:?} after kill -9 of {victim} (session timeout 60 s)"
    );
}
