//! Partition replication inside a region, with real broker processes on 127.0.0.x:
//! acks=all survives a leader's kill -9 without losing or duplicating an acknowledged
//! record, refuses writes it cannot replicate, and a dead leader's unreplicated tail is
//! gone once it returns as a follower.
//!
//! The first test's producer uses a client that does not retry by itself (`attempts: 1`)
//! and gives every attempt a value of its own, so "acknowledged once" is told apart from
//! "retried". The pipelined test keeps the client's retries and the idempotent producer's
//! five requests in flight per partition, and holds it to more: nothing stored twice at
//! all, and send order kept, through the kill.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::ErrorCode;
use broker::client::{
    Acks, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, RetryPolicy, TopicSpec,
};
use broker::record::Record;
use support::Region;

/// Short failure detection so a failover fits in a few seconds.
const CLUSTER: &str = "[cluster]\nsession_timeout = \"1500ms\"\nreplica_lag_max = \"2s\"\n";

async fn connect(bootstrap: &str, attempts: u32) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    let policy = RetryPolicy {
        attempts,
        ..RetryPolicy::default()
    };
    loop {
        match Client::connect_with_retry(bootstrap, policy.clone()).await {
            Ok(client) => return client,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("cannot connect to {bootstrap}: {err}"),
        }
    }
}

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

async fn create_replicated(client: &Client, name: &str, partitions: i32) {
    client
        .create_topic(TopicSpec {
            name: name.into(),
            partitions,
            replication_factor: 3,
            configs: BTreeMap::from([("min.insync.replicas".to_owned(), "2".to_owned())]),
        })
        .await
        .expect("create topic");
}

/// (leader, isr) of a partition, from fresh metadata.
async fn placement(client: &Client, topic: &str, partition: i32) -> Option<(u64, Vec<u64>)> {
    let meta = client.refresh_metadata().await.ok()?;
    let p = meta
        .topics
        .get(topic)?
        .partitions
        .iter()
        .find(|p| p.partition == partition)?
        .clone();
    Some((p.leader, p.isr))
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    region: &Region,
    mut done: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}; logs:\n{}",
            region.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three brokers on 127.0.`octet`.x and an rf=3 topic with full ISRs, with an admin
/// client.
async fn replicated_topic(octet: u8, topic: &str, partitions: i32) -> (Region, Client) {
    let region = Region::start_with(octet, 3, "", CLUSTER);
    let admin = connect(&region.bootstrap_all(), 20).await;
    wait_for_brokers(&admin, 3).await;
    create_replicated(&admin, topic, partitions).await;
    (region, admin)
}

fn producer(client: &Client, timeout: Duration) -> Producer {
    let config = ProducerConfig {
        acks: Acks::All,
        request_timeout: timeout,
        ..ProducerConfig::default()
    };
    Producer::new(client.clone(), config).expect("producer")
}

/// Sends one record with acks=all; `Ok((partition, offset))` only when acknowledged.
async fn send_one(
    producer: &Producer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    value: &str,
) -> broker::error::Result<(i32, i64)> {
    let record = Record::new(value.to_owned(), 0).with_key(key.to_owned());
    let delivery = producer.send(topic, partition, record).await?.await?;
    Ok((delivery.partition, delivery.offset))
}

/// Every committed record of `topic` per partition, in offset order: (offset, value).
async fn read_all(client: Client, topic: &str) -> BTreeMap<i32, Vec<(i64, String)>> {
    let mut config = ConsumerConfig::new(topic);
    config.max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::new(client, config).await.expect("consumer");
    let ends = consumer.end_offsets().await.expect("ends");
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    while ends.iter().any(|(p, end)| consumer.positions()[p] < *end) {
        for r in consumer.poll().await.expect("poll") {
            out.entry(r.partition).or_default().push((
                r.record.offset,
                String::from_utf8(r.record.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    out
}

/// Values of one partition's log as stored on a stopped broker's disk, in order.
fn values_on_disk(region: &Region, broker: usize, topic: &str, partition: i32) -> Vec<String> {
    let dir = region.dir.path().join(format!(
        "data/{}/{topic}-{partition}",
        region.brokers[broker].name
    ));
    let (log, _) = broker::log::PartitionLog::open(&dir, broker::log::LogConfig::default())
        .expect("open the stopped broker's log");
    let mut offset = log.log_start_offset();
    let mut values = Vec::new();
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20).expect("read");
        if slice.bytes.is_empty() {
            break;
        }
        for r in broker::record::decode_batches(&slice.bytes).expect("decode") {
            if r.offset >= offset {
                values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        offset = slice.next_offset;
    }
    values
}

fn code_of(err: &broker::BrokerError) -> ErrorCode {
    err.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_loses_and_duplicates_no_acknowledged_record_when_the_leader_is_killed() {
    let (mut region, admin) = replicated_topic(61, "orders", 3).await;

    let client = connect(&region.bootstrap_all(), 1).await;
    let acked: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let producer = producer(&client, Duration::from_secs(5));
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", seq % 7);
                for attempt in 0.. {
                    let value = format!("r{seq}.{attempt}");
                    match send_one(&producer, "orders", None, &key, &value).await {
                        Ok((partition, offset)) => {
                            acked.lock().unwrap().push((partition, offset, value));
                            break;
                        }
                        Err(_) => {
                            let _ = client.refresh_metadata().await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                seq += 1;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (old_leader, isr) = placement(&admin, "orders", 0).await.expect("placement");
    assert_eq!(isr.len(), 3, "every replica starts in the ISR");
    let killed = usize::try_from(old_leader - 1).unwrap();
    let before_kill = acked.lock().unwrap().len();
    region.kill9(killed);
    wait_until(
        "a new leader for orders-0",
        Duration::from_secs(20),
        &region,
        async || {
            placement(&admin, "orders", 0)
                .await
                .is_some_and(|(leader, _)| leader != old_leader && leader != 0)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_failover = acked.lock().unwrap().len();
    region.spawn(killed);
    wait_until(
        "the restarted broker back in every ISR",
        Duration::from_secs(30),
        &region,
        async || {
            let mut all = true;
            for p in 0..3 {
                all &= placement(&admin, "orders", p)
                    .await
                    .is_some_and(|(_, isr)| isr.contains(&old_leader));
            }
            all
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    streamer.await.expect("streamer");
    let acked = acked.lock().unwrap().clone();
    assert!(
        before_kill > 10,
        "too few records before the kill: {before_kill}"
    );
    assert!(
        acked.len() > after_failover && after_failover > before_kill,
        "writes must continue after the failover and after the restart ({before_kill}, {after_failover}, {})",
        acked.len()
    );

    let stored = read_all(admin.clone(), "orders").await;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for records in stored.values() {
        for (_, value) in records {
            *count.entry(value.as_str()).or_default() += 1;
        }
    }
    for (partition, offset, value) in &acked {
        assert_eq!(
            count.get(value.as_str()),
            Some(&1),
            "acknowledged {value} (p{partition}@{offset}) must be stored exactly once"
        );
        let at = stored[partition].iter().find(|(o, _)| o == offset);
        assert_eq!(
            at.map(|(_, v)| v.as_str()),
            Some(value.as_str()),
            "{value} must be at the offset it was acknowledged with"
        );
    }
    // In order: per partition, acknowledged records are stored in acknowledgement order.
    for partition in 0..3 {
        let acked_order: Vec<&str> = acked
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, _, v)| v.as_str())
            .collect();
        let acked_set: BTreeSet<&str> = acked_order.iter().copied().collect();
        let stored_order: Vec<&str> = stored
            .get(&partition)
            .into_iter()
            .flatten()
            .map(|(_, v)| v.as_str())
            .filter(|v| acked_set.contains(v))
            .collect();
        assert_eq!(stored_order, acked_order, "order of partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_idempotent_producer_keeps_order_and_writes_once_through_a_leader_kill() {
    let (mut region, admin) = replicated_topic(66, "ledger", 1).await;
    let client = connect(&region.bootstrap_all(), 200).await;
    // Small batches and a short linger: many requests, several in flight at once.
    let mut config = ProducerConfig {
        acks: Acks::All,
        request_timeout: Duration::from_secs(20),
        ..ProducerConfig::default()
    };
    config.batching.max_batch_bytes = 512;
    config.batching.linger = Duration::from_millis(1);
    assert_eq!(config.max_in_flight_per_partition, 5);
    assert!(
        config.idempotence,
        "idempotence is the default with acks=all"
    );
    let producer = Producer::new(client.clone(), config).expect("producer");

    let (old_leader, _) = placement(&admin, "ledger", 0).await.expect("placement");
    let killed = usize::try_from(old_leader - 1).unwrap();
    let mut pending = Vec::new();
    for seq in 0..6_000u32 {
        if seq == 2_000 {
            region.kill9(killed);
        }
        let record = Record::new(format!("v{seq:05}"), 0);
        let delivery = producer
            .send("ledger", Some(0), record)
            .await
            .expect("queued");
        pending.push((seq, tokio::spawn(delivery)));
        if seq % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    producer.flush().await.expect("flush");
    let mut acked = Vec::new();
    let mut errors = BTreeMap::new();
    for (seq, delivery) in pending {
        match delivery.await.expect("delivery task") {
            Ok(d) => acked.push((seq, d.offset)),
            Err(err) => *errors.entry(err.to_string()).or_insert(0) += 1,
        }
    }
    assert!(
        acked.len() > 5_000,
        "most sends are acknowledged: {} ({errors:?})",
        acked.len()
    );
    let stored = read_all(admin.clone(), "ledger").await;
    let values: Vec<&str> = stored[&0].iter().map(|(_, v)| v.as_str()).collect();
    let distinct: BTreeSet<&str> = values.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        values.len(),
        "an idempotent producer's retries are written once"
    );
    let mut sorted = values.clone();
    sorted.sort_unstable();
    assert_eq!(values, sorted, "stored in send order");
    for (seq, offset) in &acked {
        let at = stored[&0].iter().find(|(o, _)| o == offset);
        assert_eq!(
            at.map(|(_, v)| v.clone()),
            Some(format!("v{seq:05}")),
            "acknowledged v{seq:05} is at its acknowledged offset"
        );
    }
    region.spawn(killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_fails_with_not_enough_replicas_when_two_of_three_brokers_are_down() {
    let (mut region, admin) = replicated_topic(62, "payments", 1).await;
    let client = connect(&region.bootstrap_all(), 3).await;
    let producer = producer(&client, Duration::from_secs(3));
    send_one(&producer, "payments", Some(0), "k", "committed")
        .await
        .expect("acks=all with every replica up");

    let (leader, _) = placement(&admin, "payments", 0).await.expect("placement");
    for id in 1..=3u64 {
        if id != leader {
            region.kill9(usize::try_from(id - 1).unwrap());
        }
    }
    for i in 0..3 {
        let err = send_one(&producer, "payments", Some(0), "k", &format!("lost{i}"))
            .await
            .expect_err("acks=all must not succeed with one replica of three");
        assert_eq!(
            code_of(&err),
            ErrorCode::NotEnoughReplicas,
            "attempt {i}: {err}"
        );
    }
    // Nothing past the committed record became visible.
    let stored = read_all(admin.clone(), "payments").await;
    let values: Vec<&str> = stored[&0].iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, ["committed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaders_unreplicated_tail_is_truncated_when_it_returns_as_a_follower() {
    // A longer lag allowance, so the stalled followers still count as in sync (and the
    // leader still appends) while the test writes the tail that will diverge.
    let cluster = "[cluster]\nsession_timeout = \"1500ms\"\nreplica_lag_max = \"6s\"\n";
    let mut region = Region::start_with(63, 3, "", cluster);
    let admin = connect(&region.bootstrap_all(), 20).await;
    wait_for_brokers(&admin, 3).await;
    create_replicated(&admin, "ledger", 1).await;
    let client = connect(&region.bootstrap_all(), 1).await;
    let producer = producer(&client, Duration::from_secs(1));

    let mut acked = Vec::new();
    let send_acked = async |prefix: &str, n: usize, acked: &mut Vec<String>| {
        for i in 0..n {
            let deadline = Instant::now() + Duration::from_secs(30);
            for attempt in 0.. {
                let value = format!("{prefix}{i}.{attempt}");
                match send_one(&producer, "ledger", Some(0), "k", &value).await {
                    Ok(_) => {
                        acked.push(value);
                        break;
                    }
                    Err(err) => {
                        assert!(Instant::now() < deadline, "cannot write {value}: {err}");
                        let _ = client.refresh_metadata().await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    };
    send_acked("a", 20, &mut acked).await;
    let (leader, isr) = placement(&admin, "ledger", 0).await.expect("placement");
    assert_eq!(isr.len(), 3);
    let leader_index = usize::try_from(leader - 1).unwrap();
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader_index).collect();

    // Stall both followers (this also stalls the controller quorum, so nothing can move
    // the ISR): the leader appends, but nothing it appends now can be committed.
    for f in &followers {
        region.pause(*f);
    }
    // Let the followers' pending long polls (500 ms) run out, so no answer carrying the
    // tail is already on its way to them when they resume.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        let err = send_one(&producer, "ledger", Some(0), "k", &format!("u{i}"))
            .await
            .expect_err("nothing can be acknowledged while both followers stall");
        let _ = err;
    }
    region.kill9(leader_index);
    let on_dead_leader = values_on_disk(&region, leader_index, "ledger", 0);
    let tail: Vec<String> = on_dead_leader
        .iter()
        .filter(|v| v.starts_with('u'))
        .cloned()
        .collect();
    assert_eq!(
        tail,
        ["u0", "u1", "u2"],
        "the dead leader should hold the unacknowledged tail: {on_dead_leader:?}"
    );
    for f in &followers {
        region.resume(*f);
    }
    wait_until(
        "a new leader for ledger-0",
        Duration::from_secs(20),
        &region,
        async || {
            placement(&admin, "ledger", 0)
                .await
                .is_some_and(|(l, _)| l != leader && l != 0)
        },
    )
    .await;
    send_acked("b", 10, &mut acked).await;

    region.spawn(leader_index);
    wait_until(
        "the old leader back in the ISR",
        Duration::from_secs(30),
        &region,
        async || {
            placement(&admin, "ledger", 0)
                .await
                .is_some_and(|(_, isr)| isr.contains(&leader))
        },
    )
    .await;
    send_acked("c", 5, &mut acked).await;
    // Let the old leader (now a follower in the ISR) fetch the last batch, then stop it
    // and look at its log.
    tokio::time::sleep(Duration::from_secs(1)).await;
    region.kill9(leader_index);
    let on_old_leader = values_on_disk(&region, leader_index, "ledger", 0);
    assert!(
        !on_old_leader.iter().any(|v| tail.contains(v)),
        "the unacknowledged tail must be gone: {on_old_leader:?}"
    );
    let stored: Vec<String> = read_all(admin.clone(), "ledger").await[&0]
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    for value in &acked {
        assert_eq!(
            stored.iter().filter(|v| *v == value).count(),
            1,
            "acknowledged {value} must be stored once: {stored:?}"
        );
    }
    assert_eq!(
        on_old_leader, stored,
        "the returned follower holds exactly the leader's log"
    );
    // It cut the tail where its epoch ended in the new leader's log (KIP-101), not at
    // a possibly stale high watermark.
    let old_leader_log = std::fs::read_to_string(&region.brokers[leader_index].log).unwrap();
    assert!(
        old_leader_log.contains("follower cuts its divergent tail"),
        "no epoch-based truncation in the returned broker's log:\n{old_leader_log}"
    );
}

/// Kills the preferred leader of `leaders-0`, waits until leadership moved away, restarts
/// it and waits until it is back in the ISR. Returns (region, client, the broker id).
async fn preferred_leader_returns(octet: u8, rebalance: &str) -> (Region, Client, u64) {
    // The default session timeout: a kill -9 is detected by the closed attachment
    // streams at once, and a loaded CI machine does not fence the interim leader for a
    // late heartbeat (which would hand leadership back to the preferred replica, first
    // in the ISR, and defeat the point of these tests).
    let cluster = format!(
        "[cluster]\nreplica_lag_max = \"2s\"\nleader_rebalance_interval = \"{rebalance}\"\n"
    );
    let mut region = Region::start_with(octet, 3, "", &cluster);
    let admin = connect(&region.bootstrap_all(), 20).await;
    wait_for_brokers(&admin, 3).await;
    create_replicated(&admin, "leaders", 3).await;
    let meta = admin.topic("leaders").await.expect("metadata");
    let preferred = meta.partitions[0].replicas[0];
    wait_until(
        "leaders-0 led by its preferred replica with a full ISR",
        Duration::from_secs(30),
        &region,
        async || {
            placement(&admin, "leaders", 0)
                .await
                .is_some_and(|(l, isr)| l == preferred && isr.len() == 3)
        },
    )
    .await;
    let index = usize::try_from(preferred - 1).unwrap();
    region.kill9(index);
    wait_until(
        "leadership of leaders-0 to move",
        Duration::from_secs(30),
        &region,
        async || {
            placement(&admin, "leaders", 0)
                .await
                .is_some_and(|(l, _)| l != preferred && l != 0)
        },
    )
    .await;
    region.spawn(index);
    wait_until(
        "the preferred replica back in the ISR",
        Duration::from_secs(30),
        &region,
        async || {
            placement(&admin, "leaders", 0)
                .await
                .is_some_and(|(_, isr)| isr.contains(&preferred))
        },
    )
    .await;
    (region, admin, preferred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_moves_leadership_back_to_a_returning_preferred_replica() {
    let (region, admin, preferred) = preferred_leader_returns(64, "1s").await;
    wait_until(
        "leadership back on the preferred replica",
        Duration::from_secs(30),
        &region,
        async || {
            placement(&admin, "leaders", 0)
                .await
                .is_some_and(|(l, _)| l == preferred)
        },
    )
    .await;
    assert!(
        region
            .logs()
            .contains("moving leaderships back to preferred replicas")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_elect_leaders_moves_leadership_back_when_automatic_rebalancing_is_off() {
    let (region, admin, preferred) = preferred_leader_returns(65, "0s").await;
    let (leader, _) = placement(&admin, "leaders", 0).await.unwrap();
    assert_ne!(leader, preferred, "nothing moved it back on its own");
    let out = support::run_ok(&[
        "topic",
        "elect-leaders",
        "leaders",
        "--bootstrap",
        &region.bootstrap_all(),
    ]);
    assert!(
        out.contains(&format!("leaders-0: leader {leader} -> {preferred}")),
        "{out}"
    );
    let (leader, _) = placement(&admin, "leaders", 0).await.unwrap();
    assert_eq!(leader, preferred);
    let again = support::run_ok(&[
        "topic",
        "elect-leaders",
        "--bootstrap",
        &region.bootstrap_all(),
    ]);
    assert!(
        again.contains("every partition is led by its preferred replica"),
        "{again}"
    );
    assert!(
        !region
            .logs()
            .contains("moving leaderships back to preferred replicas")
    );
}
