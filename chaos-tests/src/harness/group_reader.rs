//! The failover step's consumer: one member of a consumer group that reads a topic in one
//! region, commits after every poll, and on stop commits what it delivered and leaves, as
//! an application does before it is moved to another region.
//!
//! Inside one region a group is at least once (a rebalance after a coordinator dies
//! replays from the last commit, as in Kafka); the application keeps its own next offset
//! per partition and drops such replays, counting them. The first record of each
//! partition in a region is never dropped: that is the record the failover's translated
//! position chose, and the checker judges it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::client::{Client, GroupConsumer, GroupConsumerConfig, StartOffset};
use tokio::sync::Mutex;

use crate::history::{Delivery, PartitionId};

/// What a reader saw.
#[derive(Debug, Default)]
pub struct ReaderLog {
    /// Every record handed to the application, in order.
    pub deliveries: Vec<Delivery>,
    /// Replays inside the region after a rebalance, dropped by the application.
    pub replays_dropped: u64,
    /// When the first record arrived (the failover's recovery time ends there).
    pub first_delivery: Option<Instant>,
}

/// A running group member; [`GroupReader::stop`] commits, leaves and returns its log.
pub struct GroupReader {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<ReaderLog>>,
}

impl GroupReader {
    /// Joins `group` on `topic` in `region` and reads until stopped.
    pub fn start(client: Client, region: &str, topic: &str, group: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ReaderLog::default()));
        let mut config = GroupConsumerConfig::new(group, vec![topic.to_string()]);
        config.start = StartOffset::Earliest;
        config.session_timeout = Duration::from_secs(6);
        config.heartbeat_interval = Duration::from_secs(1);
        config.client_id = format!("chaos-reader-{region}");
        let task = tokio::spawn(read_loop(
            client,
            config,
            region.to_string(),
            stop.clone(),
            log.clone(),
        ));
        Self { stop, task, log }
    }

    /// How many records it has delivered so far.
    pub async fn delivered(&self) -> usize {
        self.log.lock().await.deliveries.len()
    }

    /// When it delivered its first record, if it has.
    pub async fn first_delivery(&self) -> Option<Instant> {
        self.log.lock().await.first_delivery
    }

    /// The next offset it will deliver per partition (one past the last delivered).
    pub async fn positions(&self) -> BTreeMap<i32, i64> {
        let log = self.log.lock().await;
        let mut next = BTreeMap::new();
        for d in &log.deliveries {
            let at = next.entry(d.from.partition).or_insert(0);
            *at = (*at).max(d.offset + 1);
        }
        next
    }

    /// Stops reading, commits what was delivered, leaves the group, returns the log.
    pub async fn stop(self) -> ReaderLog {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *self.log.lock().await)
    }
}

async fn read_loop(
    client: Client,
    config: GroupConsumerConfig,
    region: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ReaderLog>>,
) {
    let group = config.group.clone();
    let Ok(mut member) = GroupConsumer::new(client.clone(), config) else {
        return;
    };
    // The application's own next offset per (topic, partition).
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let records = match member.poll().await {
            Ok(records) => records,
            Err(err) => {
                tracing::debug!(%group, %region, %err, "group poll failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        {
            let mut log = log.lock().await;
            for consumed in records {
                let key = (consumed.topic.clone(), consumed.partition);
                let offset = consumed.record.offset;
                if next.get(&key).is_some_and(|n| offset < *n) {
                    log.replays_dropped += 1;
                    continue;
                }
                next.insert(key, offset + 1);
                let record_id = consumed
                    .record
                    .value
                    .as_deref()
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .unwrap_or("?")
                    .to_string();
                log.first_delivery.get_or_insert_with(Instant::now);
                log.deliveries.push(Delivery {
                    from: PartitionId::new(&region, &consumed.topic, consumed.partition),
                    offset,
                    record_id,
                });
            }
        }
        // Commit-after-process; a failed commit (coordinator moving) is retried by the
        // next one.
        let _ = member.commit().await;
    }
    // Leave, then commit exactly what was delivered as a standalone commit (the group is
    // empty now): the member's own positions may trail after a dropped replay, and its
    // generation may have ended while the coordinator moved.
    if let Err(err) = member.close().await {
        tracing::warn!(%group, %region, %err, "leaving the group failed");
    }
    let offsets: Vec<(String, i32, i64)> = next
        .into_iter()
        .map(|((topic, partition), offset)| (topic, partition, offset))
        .collect();
    for attempt in 0..30 {
        match client.commit_offsets(&group, &offsets).await {
            Ok(()) => break,
            Err(err) => {
                tracing::debug!(%group, %region, %err, attempt, "final commit failed; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}
