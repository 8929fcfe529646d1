//! Copying one source partition into its remote partition, exactly once.
//!
//! The remote partition is offset-preserving: each source batch is appended at its own
//! base offset, bytes unchanged. So the copier needs no state of its own: its resume
//! position is the remote partition's log end, and a batch sent twice (after a crash, a
//! timeout, or two workers briefly owning the same partition) is recognised by the
//! broker and stored once. Only committed source data (below the source high watermark)
//! is fetched, so a source leader failover cannot make the remote hold records the source
//! later truncated.
//!
//! [`Progress`] is the plain state (position, gaps, counters) that tests drive;
//! [`run_partition`] is the thin async loop around it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::client::{Client, OffsetSpec};
use broker::log::batch::BatchHeader;
use broker::{BrokerError, ErrorCode};
use bytes::Bytes;
use tokio::sync::watch;

/// Most bytes fetched per request.
const FETCH_MAX_BYTES: i32 = 16 << 20;
/// Long-poll wait when the copy has caught up.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// acks=all wait on the target.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed call before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Records the source deleted (retention) before the mirror copied them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// First missing offset.
    pub from: i64,
    /// First offset copied after the gap.
    pub to: i64,
    /// When it was found (ms since the epoch).
    pub found_at_ms: i64,
}

/// What a copier is doing, for status and logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyState {
    /// Finding the resume position.
    Starting,
    /// Behind the source high watermark and copying.
    Copying,
    /// At the source high watermark.
    CaughtUp,
    /// The last call failed; retrying.
    Retrying {
        /// The failure, as the broker client reported it.
        error: String,
    },
}

/// One partition's copy progress: plain data the worker, status and tests read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    /// Next source offset to copy (= the remote partition's log end).
    pub position: i64,
    /// Last source high watermark seen.
    pub source_high_watermark: i64,
    /// Last source log start offset seen.
    pub source_log_start: i64,
    /// Records copied by this worker.
    pub copied_records: u64,
    /// Bytes copied by this worker.
    pub copied_bytes: u64,
    /// Retention gaps found, oldest first.
    pub gaps: Vec<Gap>,
    /// Current state.
    pub state: CopyState,
    /// Latest end-to-end latency measured from a mirrored heartbeat, in ms.
    pub heartbeat_latency_ms: Option<i64>,
    /// Newest record timestamp (ms) among the batches copied so far.
    pub newest_copied_timestamp_ms: Option<i64>,
    /// When the copy fell behind the source high watermark; `None` while caught up.
    #[serde(skip)]
    pub behind_since: Option<std::time::Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            position: 0,
            source_high_watermark: 0,
            source_log_start: 0,
            copied_records: 0,
            copied_bytes: 0,
            gaps: Vec::new(),
            state: CopyState::Starting,
            heartbeat_latency_ms: None,
            newest_copied_timestamp_ms: None,
            behind_since: None,
        }
    }
}

impl Progress {
    /// Records not yet copied.
    pub fn lag(&self) -> i64 {
        (self.source_high_watermark - self.position).max(0)
    }

    /// Sets the resume position from the remote partition's end and the source's log
    /// start. An empty remote starts at the source's log start (nothing was ever
    /// mirrored, so nothing is missing); a remote whose end the source has deleted past
    /// records a gap — never skipped silently.
    pub fn resume(
        &mut self,
        remote_end: i64,
        remote_empty: bool,
        source_log_start: i64,
    ) -> Option<Gap> {
        self.source_log_start = source_log_start;
        if remote_empty {
            self.position = remote_end.max(source_log_start);
            return None;
        }
        self.position = remote_end;
        self.skip_deleted(source_log_start)
    }

    /// The source's log start moved past the position (retention deleted records that
    /// were never copied): record the gap and continue from the log start.
    pub fn skip_deleted(&mut self, source_log_start: i64) -> Option<Gap> {
        self.source_log_start = source_log_start;
        if source_log_start <= self.position {
            return None;
        }
        let gap = Gap {
            from: self.position,
            to: source_log_start,
            found_at_ms: now_ms(),
        };
        self.gaps.push(gap.clone());
        self.position = source_log_start;
        Some(gap)
    }

    /// Notes a fetch's high watermark and log start.
    pub fn observe_source(&mut self, high_watermark: i64, log_start: i64) {
        self.source_high_watermark = high_watermark;
        self.source_log_start = log_start;
        self.update_state();
    }

    /// Notes batches appended up to `next_position`, the newest record timestamp among
    /// them included.
    pub fn copied(
        &mut self,
        next_position: i64,
        records: u64,
        bytes: u64,
        newest_timestamp_ms: Option<i64>,
    ) {
        self.position = next_position;
        self.copied_records += records;
        self.copied_bytes += bytes;
        if newest_timestamp_ms > self.newest_copied_timestamp_ms {
            self.newest_copied_timestamp_ms = newest_timestamp_ms;
        }
        self.update_state();
    }

    /// How long the copy has been behind the source high watermark (zero while caught
    /// up): the lag in time that alerts watch.
    pub fn lag_duration(&self, now: std::time::Instant) -> std::time::Duration {
        self.behind_since
            .map(|since| now.saturating_duration_since(since))
            .unwrap_or_default()
    }

    fn update_state(&mut self) {
        if self.position >= self.source_high_watermark {
            self.state = CopyState::CaughtUp;
            self.behind_since = None;
        } else {
            self.state = CopyState::Copying;
            self.behind_since
                .get_or_insert_with(std::time::Instant::now);
        }
    }
}

/// The whole batches of `bytes` that hold offsets at or after `position`: the bytes to
/// append, the offset after the last of them, and how many records they hold. Batches
/// wholly before `position` (a fetch returns the batch containing the asked offset) are
/// dropped; a trailing partial batch (cut by the fetch size) is left for the next fetch.
pub fn batches_from(bytes: &Bytes, position: i64) -> Result<(Bytes, i64, u64), String> {
    let mut start = None;
    let mut end = 0;
    let mut next = position;
    let mut records = 0u64;
    let mut at = 0;
    while at + 61 <= bytes.len() {
        let header = BatchHeader::parse(&bytes[at..])?;
        let len = header.total_len();
        if at + len > bytes.len() {
            break;
        }
        if header.last_offset() >= position {
            start.get_or_insert(at);
            end = at + len;
            next = header.last_offset() + 1;
            records += u64::try_from(header.record_count).unwrap_or(0);
        }
        at += len;
    }
    Ok(match start {
        Some(start) => (bytes.slice(start..end), next, records),
        None => (Bytes::new(), position, 0),
    })
}

/// Which partition a copier copies, and where to.
#[derive(Debug, Clone)]
pub struct CopyTask {
    /// `source->target`.
    pub flow: String,
    /// Topic name in the source region.
    pub source_topic: String,
    /// Topic name in the target region.
    pub remote_topic: String,
    /// Partition index (the same on both sides).
    pub partition: i32,
}

/// Copies one partition until `stop` turns true. Every failure is retried; the position
/// is re-read from the remote after a failed append so that the copy stays exact.
pub async fn run_partition(
    task: CopyTask,
    source: Client,
    target: Client,
    progress: Arc<Mutex<Progress>>,
    stop: watch::Receiver<bool>,
) {
    use tracing::Instrument;
    // Instrumented, not entered: an entered guard held across awaits would tag other
    // tasks' log lines on the same thread with this partition.
    let span = tracing::info_span!("copy", flow = %task.flow, topic = %task.source_topic, partition = task.partition);
    copy_partition(task, source, target, progress, stop)
        .instrument(span)
        .await;
}

async fn copy_partition(
    task: CopyTask,
    source: Client,
    target: Client,
    progress: Arc<Mutex<Progress>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut position = loop {
        if *stop.borrow() {
            return;
        }
        match resume(&task, &source, &target, &progress).await {
            Ok(position) => break position,
            Err(err) => retrying(&progress, &err, &mut stop).await,
        }
    };
    tracing::info!(position, remote = %task.remote_topic, "copying");
    let mut prefetched = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let fetched = match prefetched.take() {
            Some(fetched) => fetched,
            None => {
                source
                    .fetch_raw(
                        &task.source_topic,
                        task.partition,
                        position,
                        FETCH_MAX_BYTES,
                        FETCH_MAX_WAIT,
                    )
                    .await
            }
        };
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(BrokerError::Remote {
                code: ErrorCode::OffsetOutOfRange,
                ..
            }) => {
                // Retention may have deleted what we were about to copy.
                match source
                    .list_offsets_of(&task.source_topic, &[task.partition], OffsetSpec::Earliest)
                    .await
                {
                    Ok(starts) => {
                        let start = starts.get(&task.partition).copied().unwrap_or(position);
                        let gap = progress.lock().expect("progress").skip_deleted(start);
                        if let Some(gap) = gap {
                            note_gap(&task, &target, &gap).await;
                            position = gap.to;
                        } else {
                            retrying(
                                &progress,
                                &BrokerError::Remote {
                                    code: ErrorCode::OffsetOutOfRange,
                                    message: format!("offset {position} out of range"),
                                },
                                &mut stop,
                            )
                            .await;
                        }
                    }
                    Err(err) => retrying(&progress, &err, &mut stop).await,
                }
                continue;
            }
            Err(err) => {
                retrying(&progress, &err, &mut stop).await;
                continue;
            }
        };
        progress
            .lock()
            .expect("progress")
            .observe_source(fetched.high_watermark, fetched.log_start_offset);
        let (batches, next, records) = match batches_from(&fetched.records, position) {
            Ok(found) => found,
            Err(reason) => {
                tracing::error!(%reason, position, "the source returned a batch that does not parse; retrying");
                retrying(
                    &progress,
                    &BrokerError::InvalidRequest { reason },
                    &mut stop,
                )
                .await;
                continue;
            }
        };
        if records == 0 {
            continue; // caught up: the fetch long-polled and found nothing new
        }
        if task.source_topic == crate::plan::HEARTBEATS_TOPIC {
            note_heartbeat_latency(&batches, &progress);
        }
        // Pipeline: fetch what follows while the target stores this.
        let append = target.append_raw(
            &task.remote_topic,
            task.partition,
            batches.clone(),
            APPEND_TIMEOUT,
        );
        let fetch_next = source.fetch_raw(
            &task.source_topic,
            task.partition,
            next,
            FETCH_MAX_BYTES,
            FETCH_MAX_WAIT,
        );
        let (appended, following) = tokio::join!(append, fetch_next);
        match appended {
            Ok(_) => {
                let newest = crate::metrics::observe_copied(&task.flow, &batches);
                progress.lock().expect("progress").copied(
                    next,
                    records,
                    batches.len() as u64,
                    newest,
                );
                position = next;
                prefetched = Some(following);
            }
            Err(err) => {
                tracing::warn!(%err, position, "append to the remote partition failed; resuming from its end");
                retrying(&progress, &err, &mut stop).await;
                match resume(&task, &source, &target, &progress).await {
                    Ok(resumed) => position = resumed,
                    Err(err) => retrying(&progress, &err, &mut stop).await,
                }
            }
        }
    }
}

/// Reads the remote partition's end and the source's log start, and sets the position.
async fn resume(
    task: &CopyTask,
    source: &Client,
    target: &Client,
    progress: &Mutex<Progress>,
) -> Result<i64, BrokerError> {
    let partitions = [task.partition];
    let remote_end = target
        .list_offsets_of(&task.remote_topic, &partitions, OffsetSpec::Latest)
        .await?
        .get(&task.partition)
        .copied()
        .unwrap_or(0);
    let remote_start = target
        .list_offsets_of(&task.remote_topic, &partitions, OffsetSpec::Earliest)
        .await?
        .get(&task.partition)
        .copied()
        .unwrap_or(0);
    let source_start = source
        .list_offsets_of(&task.source_topic, &partitions, OffsetSpec::Earliest)
        .await?
        .get(&task.partition)
        .copied()
        .unwrap_or(0);
    let (gap, position) = {
        let mut progress = progress.lock().expect("progress");
        let gap = progress.resume(remote_end, remote_end <= remote_start, source_start);
        (gap, progress.position)
    };
    if let Some(gap) = gap {
        note_gap(task, target, &gap).await;
    }
    Ok(position)
}

/// Reports a retention gap: an error line now, and a durable record in the flow's gap
/// topic in the target region (status shows it for good; retried a few times).
async fn note_gap(task: &CopyTask, target: &Client, gap: &Gap) {
    tracing::error!(
        from = gap.from,
        to = gap.to,
        lost = gap.to - gap.from,
        "retention gap: the source deleted records before they were mirrored"
    );
    let source = task.flow.split("->").next().unwrap_or_default();
    let record = crate::gaps::GapRecord {
        topic: task.source_topic.clone(),
        partition: task.partition,
        from: gap.from,
        to: gap.to,
        found_at_ms: gap.found_at_ms,
    };
    for attempt in 1..=5 {
        match crate::gaps::record_gap(target, source, &record).await {
            Ok(()) => return,
            Err(err) if attempt == 5 => {
                tracing::error!(%err, "could not record the retention gap durably; it stays in this worker's log and metrics")
            }
            Err(_) => tokio::time::sleep(RETRY_BACKOFF).await,
        }
    }
}

async fn retrying(progress: &Mutex<Progress>, err: &BrokerError, stop: &mut watch::Receiver<bool>) {
    {
        let mut progress = progress.lock().expect("progress");
        let error = err.to_string();
        if progress.state
            != (CopyState::Retrying {
                error: error.clone(),
            })
        {
            tracing::warn!(%err, "mirror call failed; retrying");
        }
        progress.state = CopyState::Retrying { error };
    }
    tokio::select! {
        _ = tokio::time::sleep(RETRY_BACKOFF) => {}
        _ = stop.changed() => {}
    }
}

fn note_heartbeat_latency(batches: &Bytes, progress: &Mutex<Progress>) {
    if let Ok(records) = broker::record::decode_batches(batches)
        && let Some(last) = records.last()
    {
        let latency = now_ms() - last.timestamp_ms;
        progress.lock().expect("progress").heartbeat_latency_ms = Some(latency);
        tracing::debug!(latency_ms = latency, "mirrored heartbeat");
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::record::{Compression, Record, encode_batch};

    fn batch_at(base: i64, n: usize) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record::new(format!("v{i}"), 1_000))
            .collect();
        let mut bytes = encode_batch(&records, Compression::None).unwrap().to_vec();
        bytes[0..8].copy_from_slice(&base.to_be_bytes());
        bytes
    }

    #[test]
    fn an_empty_remote_starts_at_the_source_log_start_without_a_gap() {
        let mut p = Progress::default();
        assert_eq!(p.resume(0, true, 500), None);
        assert_eq!(p.position, 500);
    }

    #[test]
    fn a_remote_resumes_at_its_end() {
        let mut p = Progress::default();
        assert_eq!(p.resume(1_200, false, 500), None);
        assert_eq!(p.position, 1_200);
    }

    #[test]
    fn retention_past_the_position_is_a_recorded_gap_not_a_silent_skip() {
        let mut p = Progress::default();
        let gap = p.resume(1_200, false, 1_500).expect("a gap");
        assert_eq!((gap.from, gap.to), (1_200, 1_500));
        assert_eq!(p.position, 1_500);
        assert_eq!(p.gaps.len(), 1);
        // Later, during the copy.
        p.copied(1_600, 100, 1_000, Some(5));
        assert!(p.skip_deleted(1_700).is_some());
        assert_eq!(p.gaps.len(), 2);
    }

    #[test]
    fn lag_and_state_follow_the_source_high_watermark() {
        let mut p = Progress::default();
        p.resume(0, true, 0);
        p.observe_source(100, 0);
        assert_eq!((p.lag(), p.state.clone()), (100, CopyState::Copying));
        assert!(
            p.behind_since.is_some(),
            "behind the source: the lag clock runs"
        );
        p.copied(100, 100, 5_000, None);
        assert_eq!((p.lag(), p.state.clone()), (0, CopyState::CaughtUp));
        assert_eq!(p.lag_duration(std::time::Instant::now()), Duration::ZERO);
    }

    #[test]
    fn batches_before_the_position_are_dropped_and_whole_batches_kept() {
        let mut bytes = batch_at(0, 3);
        bytes.extend(batch_at(3, 2));
        bytes.extend(batch_at(5, 4));
        let bytes = Bytes::from(bytes);
        let (kept, next, records) = batches_from(&bytes, 3).unwrap();
        assert_eq!((next, records), (9, 6));
        assert_eq!(kept.len(), bytes.len() - batch_at(0, 3).len());
    }

    #[test]
    fn a_truncated_trailing_batch_waits_for_the_next_fetch() {
        let mut bytes = batch_at(0, 3);
        let second = batch_at(3, 2);
        bytes.extend(&second[..second.len() - 5]);
        let (kept, next, records) = batches_from(&Bytes::from(bytes), 0).unwrap();
        assert_eq!((next, records), (3, 3));
        assert_eq!(kept.len(), batch_at(0, 3).len());
    }

    #[test]
    fn nothing_new_returns_the_position() {
        let bytes = Bytes::from(batch_at(0, 3));
        let (kept, next, records) = batches_from(&bytes, 3).unwrap();
        assert!(kept.is_empty());
        assert_eq!((next, records), (3, 0));
    }
}
