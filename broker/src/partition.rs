//! One partition on this broker: the partition log plus the async shell around it.
//!
//! ```text
//!  produce ──AppendJob──▶ appender task ──spawn_blocking──▶ log.append × n, then one sync
//!                              │ (group commit: every job queued meanwhile shares the fsync)
//!                              ▼
//!                     high watermark (watch) ──▶ fetches read below it, long polls wake
//! ```
//!
//! Consumers only see records below the high watermark. On a single broker it is the log
//! end offset once the flush policy is satisfied, so with `flush = batch` nothing is
//! shown to a consumer (or acknowledged to a producer) before it is on disk.

use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{BrokerError, Result};
use crate::log::{AppendMode, AppendOutcome, FlushPolicy, PartitionLog};

/// Most queued appends folded into one group commit.
const MAX_GROUP: usize = 256;

struct AppendJob {
    batches: BytesMut,
    mode: AppendMode,
    reply: oneshot::Sender<Result<AppendOutcome>>,
}

/// What a fetch of one partition returns.
#[derive(Debug, Clone)]
pub struct FetchedData {
    /// Whole stored batches, below the high watermark.
    pub records: Bytes,
    /// The partition's high watermark when read.
    pub high_watermark: i64,
    /// The partition's log start offset when read.
    pub log_start_offset: i64,
}

/// A partition hosted by this broker.
pub struct Partition {
    topic: String,
    index: i32,
    log: Arc<RwLock<PartitionLog>>,
    high_watermark: watch::Sender<i64>,
    appender: mpsc::Sender<AppendJob>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("partition", &self.index)
            .field("high_watermark", &*self.high_watermark.borrow())
            .finish()
    }
}

impl Partition {
    /// Wraps an opened log and starts its appender task.
    pub fn start(topic: &str, index: i32, log: PartitionLog, flush: FlushPolicy) -> Arc<Self> {
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        let (appender, jobs) = mpsc::channel(1024);
        let partition = Arc::new(Self {
            topic: topic.to_owned(),
            index,
            log: Arc::new(RwLock::new(log)),
            high_watermark,
            appender,
        });
        tokio::spawn(run_appender(Arc::downgrade(&partition), jobs, flush));
        partition
    }

    /// The topic this partition belongs to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition number.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// Appends batches and answers once they are durable per the flush policy.
    pub async fn append(&self, batches: BytesMut, mode: AppendMode) -> Result<AppendOutcome> {
        let (reply, answer) = oneshot::channel();
        let gone = || BrokerError::PartitionOffline {
            partition: format!("{}-{}", self.topic, self.index),
            reason: "the broker is stopping, or a storage failure took it offline (see the \
                     broker log)"
                .into(),
        };
        self.appender
            .send(AppendJob {
                batches,
                mode,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Reads whole batches from `offset`, below the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<FetchedData> {
        let high_watermark = *self.high_watermark.borrow();
        let log = self.log.read().expect("partition log lock poisoned");
        let log_start_offset = log.log_start_offset();
        let empty = || FetchedData {
            records: Bytes::new(),
            high_watermark,
            log_start_offset,
        };
        if offset >= high_watermark && offset <= log.log_end_offset() {
            return Ok(empty());
        }
        if offset > log.log_end_offset() {
            return Err(BrokerError::OffsetOutOfRange {
                requested: offset,
                start: log_start_offset,
                end: high_watermark,
            });
        }
        let slice = log.read(offset, max_bytes)?;
        drop(log);
        let records = slice
            .bytes
            .slice(..committed_prefix(&slice.bytes, high_watermark));
        Ok(FetchedData {
            records,
            high_watermark,
            log_start_offset,
        })
    }

    /// The offset below which records are visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Resolves when the high watermark moves (for long polls).
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.log
            .read()
            .expect("partition log lock poisoned")
            .log_start_offset()
    }

    /// The earliest offset whose timestamp is at or after `timestamp_ms`, with that timestamp.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        let found = self
            .log
            .read()
            .expect("partition log lock poisoned")
            .offset_for_timestamp(timestamp_ms)?;
        let high_watermark = self.high_watermark();
        Ok(found.filter(|(offset, _)| *offset < high_watermark))
    }

    /// Rolls an aged segment and applies retention; called periodically.
    pub fn housekeeping(&self, now: SystemTime) -> Result<()> {
        let report = {
            let mut log = self.log.write().expect("partition log lock poisoned");
            log.roll_if_due(now)?;
            log.enforce_retention(now)?
        };
        if report.deleted_segments > 0 {
            // Unlinking big files is slow: done here, outside the log lock.
            crate::log::remove_deleted(&report.to_delete)?;
            tracing::info!(
                topic = %self.topic,
                partition = self.index,
                segments = report.deleted_segments,
                bytes = report.deleted_bytes,
                log_start_offset = report.log_start_offset,
                "retention deleted old segments"
            );
        }
        Ok(())
    }

    /// Segment count and bytes on disk, for `topic describe` and metrics.
    pub fn disk_usage(&self) -> (usize, u64) {
        let log = self.log.read().expect("partition log lock poisoned");
        (log.segments(), log.size_bytes())
    }
}

/// Length of the prefix of `bytes` made of whole batches that start below `limit`.
fn committed_prefix(bytes: &[u8], limit: i64) -> usize {
    let mut position = 0;
    while bytes.len() - position >= 12 {
        let base = i64::from_be_bytes(bytes[position..position + 8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(
            bytes[position + 8..position + 12]
                .try_into()
                .expect("4 bytes"),
        );
        let end = position + 12 + usize::try_from(length).unwrap_or(0);
        if base >= limit || end > bytes.len() || length <= 0 {
            break;
        }
        position = end;
    }
    position
}

async fn run_appender(
    partition: std::sync::Weak<Partition>,
    mut jobs: mpsc::Receiver<AppendJob>,
    flush: FlushPolicy,
) {
    let interval = match flush {
        FlushPolicy::Interval(every) => every,
        _ => std::time::Duration::from_secs(3600),
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
            _ = ticker.tick(), if matches!(flush, FlushPolicy::Interval(_)) => {
                let Some(partition) = partition.upgrade() else { return };
                let log = partition.log.clone();
                let synced = tokio::task::spawn_blocking(move || {
                    log.write().expect("partition log lock poisoned").sync()
                })
                .await;
                if let Ok(Err(err)) = synced {
                    tracing::error!(topic = %partition.topic, partition = partition.index, %err, "interval flush failed");
                }
                continue;
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let Some(partition) = partition.upgrade() else {
            return;
        };
        let log = partition.log.clone();
        let shared = partition.clone();
        let outcome =
            tokio::task::spawn_blocking(move || append_group(&shared, &log, group, flush)).await;
        match outcome {
            Ok(Err(())) => {
                tracing::error!(topic = %partition.topic, partition = partition.index, "partition offline after a storage failure; restart the broker once the disk is healthy");
                return;
            }
            Ok(Ok(())) => {}
            Err(err) => {
                tracing::error!(topic = %partition.topic, partition = partition.index, %err, "appender task failed");
                return;
            }
        }
    }
}

/// Appends every job, syncs once if the policy asks, moves the high watermark, then
/// answers each job (so an acknowledged record is already visible to a reader that asks
/// right after the acknowledgement). `Err` when an fsync failed: then nothing
/// appended since the last good sync can be trusted and the partition stops taking writes
/// (restart recovery re-validates the tail), as Kafka takes a failed log dir offline.
fn append_group(
    partition: &Partition,
    log: &RwLock<PartitionLog>,
    group: Vec<AppendJob>,
    flush: FlushPolicy,
) -> std::result::Result<(), ()> {
    let started = Instant::now();
    let mut log = log.write().expect("partition log lock poisoned");
    let mut results = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    for mut job in group {
        results.push(log.append(&mut job.batches, job.mode, 0));
        replies.push(job.reply);
    }
    if flush == FlushPolicy::EveryBatch
        && results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|o| !o.duplicate))
        && let Err(err) = log.sync()
    {
        let reason = err.to_string();
        tracing::error!(%reason, "fsync failed; failing the group's appends");
        drop(log);
        for reply in replies {
            let _ = reply.send(Err(BrokerError::PartitionOffline {
                partition: String::new(),
                reason: format!("fsync failed: {reason}"),
            }));
        }
        return Err(());
    }
    let end = log.log_end_offset();
    drop(log);
    partition.high_watermark.send_if_modified(|hw| {
        let moved = *hw != end;
        *hw = end;
        moved
    });
    tracing::trace!(jobs = replies.len(), elapsed = ?started.elapsed(), "group commit");
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
    Ok(())
}
