//! One partition on this broker: the partition log plus the async shell around it.
//!
//! ```text
//!  produce ──AppendJob──▶ appender task ──spawn_blocking──▶ log.append × n, then one sync
//!                              │ (group commit: every job queued meanwhile shares the fsync)
//!                              ▼
//!                     high watermark (watch) ──▶ fetches read below it, long polls wake
//! ```
//!
//! Consumers only see records below the high watermark. On the leader it is the minimum
//! log end offset of the ISR ([`LeaderState`]), the leader's own counted once the flush
//! policy is satisfied, so with `flush = batch` nothing is shown to a consumer before it
//! is on disk; with one replica it is simply the leader's durable log end offset. On a
//! follower it is `min(leader's HW, own log end offset)`. Followers (replica fetches) read
//! up to the log end offset.
//!
//! The partition's role (leader at an epoch, follower at an epoch) comes from the
//! controller's metadata through `BrokerNode::reconcile`. A write queued under one
//! leader epoch is refused, or not acknowledged, once the epoch has changed: the new
//! leader may have replaced it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{BrokerError, ErrorCode, Result};
use crate::log::{AppendMode, AppendOutcome, FlushPolicy, PartitionLog};
use crate::replication::LeaderState;

/// File in the partition directory holding the last checkpointed high watermark.
pub const HW_CHECKPOINT_FILE: &str = "high-watermark.checkpoint";

/// Most queued appends folded into one group commit.
const MAX_GROUP: usize = 256;

/// Who an append is for: a producer at the leader (under a leader epoch) or the
/// follower's fetcher (under the epoch of the leader it copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Leader(i32),
    Follower(i32),
}

struct AppendJob {
    batches: BytesMut,
    mode: AppendMode,
    writer: Writer,
    reply: oneshot::Sender<Result<AppendOutcome>>,
}

/// The partition's role on this broker, from the controller's metadata.
#[derive(Debug)]
enum Role {
    /// Opened but not yet told its role: takes no writes.
    Unassigned,
    /// Leads at `LeaderState::epoch`.
    Leader(LeaderState),
    /// Copies from `leader` (`None`: the partition is offline) at `epoch`.
    Follower { leader: Option<u64>, epoch: i32 },
}

/// What a replica fetch returns.
#[derive(Debug, Clone)]
pub struct ReplicaData {
    /// Whole stored batches from the fetch offset, up to the log end offset.
    pub records: Bytes,
    /// The leader's high watermark after recording this fetch.
    pub high_watermark: i64,
    /// The leader's log end offset.
    pub log_end_offset: i64,
    /// The leader's log start offset.
    pub log_start_offset: i64,
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
    /// Written only with `role` locked, so the role and the HW are read consistently.
    high_watermark: watch::Sender<i64>,
    log_end: watch::Sender<i64>,
    role: Mutex<Role>,
    /// `(leads, epoch)`; changes wake acks=all waiters so they fail promptly.
    role_changes: watch::Sender<(bool, i32)>,
    appender: mpsc::Sender<AppendJob>,
    checkpoint: PathBuf,
    checkpointed: Mutex<i64>,
    min_insync: usize,
    fetcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Some(task) = self.fetcher.get_mut().ok().and_then(|f| f.take()) {
            task.abort();
        }
    }
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
    /// Wraps an opened log and starts its appender task. The high watermark starts at
    /// the checkpoint in the log's directory (0 without one); `min_insync` is the topic's
    /// `min.insync.replicas`. The partition takes no writes until it is given a role.
    pub fn start(
        topic: &str,
        index: i32,
        log: PartitionLog,
        flush: FlushPolicy,
        min_insync: usize,
    ) -> Arc<Self> {
        let checkpoint = log.dir().join(HW_CHECKPOINT_FILE);
        let start = read_checkpoint(&checkpoint)
            .unwrap_or(0)
            .min(log.log_end_offset())
            .max(log.log_start_offset());
        let (high_watermark, _) = watch::channel(start);
        let (log_end, _) = watch::channel(log.log_end_offset());
        let (role_changes, _) = watch::channel((false, -1));
        let (appender, jobs) = mpsc::channel(1024);
        let partition = Arc::new(Self {
            topic: topic.to_owned(),
            index,
            log: Arc::new(RwLock::new(log)),
            high_watermark,
            log_end,
            role: Mutex::new(Role::Unassigned),
            role_changes,
            appender,
            checkpoint,
            checkpointed: Mutex::new(start),
            min_insync: min_insync.max(1),
            fetcher: Mutex::new(None),
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

    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().expect("partition role lock poisoned")
    }

    fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    fn not_leader(&self, why: String) -> BrokerError {
        BrokerError::Remote {
            code: ErrorCode::NotLeaderOrFollower,
            message: format!("{}: {why}", self.name()),
        }
    }

    /// The leader epoch this broker leads at, if it leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &*self.role() {
            Role::Leader(state) => Some(state.epoch()),
            _ => None,
        }
    }

    /// The `(leader, epoch)` this broker follows, if it is a follower.
    pub fn following(&self) -> Option<(Option<u64>, i32)> {
        match &*self.role() {
            Role::Follower { leader, epoch } => Some((*leader, *epoch)),
            _ => None,
        }
    }

    /// Makes this broker the leader at `epoch` (or, already leading at it, takes the
    /// committed ISR). A new leadership starts from the current high watermark (the
    /// checkpoint, or what it learned as a follower) and moves it as followers fetch.
    /// Returns whether the role or epoch changed.
    #[allow(clippy::too_many_arguments)]
    pub fn become_leader(
        &self,
        me: u64,
        epoch: i32,
        replicas: &[u64],
        isr: &[u64],
        replica_lag_max: Duration,
        now: Instant,
    ) -> bool {
        let mut role = self.role();
        if Self::newer_role(&role, epoch) {
            return false;
        }
        if let Role::Leader(state) = &mut *role
            && state.epoch() == epoch
        {
            if state.isr() != isr {
                // The committed ISR changed under this leadership (this leader's own
                // AlterIsr coming back, or the controller dropping a fenced broker).
                let events = crate::telemetry::events();
                if isr.len() < state.isr().len() {
                    events.isr_shrinks.inc();
                } else {
                    events.isr_expands.inc();
                }
                let hw = state.set_isr(isr);
                self.set_high_watermark(hw);
            }
            return false;
        }
        self.stop_fetcher();
        if let Err(err) = self
            .log
            .write()
            .expect("partition log lock poisoned")
            .start_epoch(epoch)
        {
            // Followers asking about older epochs still get the right answer from the
            // entries already there; only the start of this epoch is not recorded.
            tracing::error!(topic = %self.topic, partition = self.index, epoch, %err, "cannot record the new leader epoch");
        }
        let leo = self.log_end_offset();
        let state = LeaderState::new(
            me,
            epoch,
            replicas,
            isr,
            leo,
            self.high_watermark(),
            replica_lag_max,
            now,
        );
        let hw = state.high_watermark();
        *role = Role::Leader(state);
        self.set_high_watermark(hw);
        self.role_changes.send_replace((true, epoch));
        crate::telemetry::events().leader_elections.inc();
        tracing::info!(topic = %self.topic, partition = self.index, epoch, high_watermark = hw, log_end_offset = leo, ?isr, "became leader");
        true
    }

    /// Makes this broker a follower of `leader` at `epoch`. Returns whether the role,
    /// leader or epoch changed (then the caller starts a fetcher, which first truncates
    /// the log to the high watermark).
    pub fn become_follower(&self, leader: Option<u64>, epoch: i32) -> bool {
        let mut role = self.role();
        if Self::newer_role(&role, epoch) {
            return false;
        }
        if let Role::Follower {
            leader: l,
            epoch: e,
        } = &*role
            && *l == leader
            && *e == epoch
        {
            return false;
        }
        self.stop_fetcher();
        *role = Role::Follower { leader, epoch };
        self.role_changes.send_replace((false, epoch));
        tracing::info!(topic = %self.topic, partition = self.index, epoch, ?leader, "became follower");
        true
    }

    /// Whether the current role is of a later epoch than `epoch` (metadata applied out of
    /// order by two reconciles must not move the role backwards).
    fn newer_role(role: &Role, epoch: i32) -> bool {
        match role {
            Role::Unassigned => false,
            Role::Leader(state) => state.epoch() > epoch,
            Role::Follower { epoch: e, .. } => *e > epoch,
        }
    }

    /// Registers the task that fetches from the leader, aborting the previous one.
    pub fn set_fetcher(&self, task: tokio::task::JoinHandle<()>) {
        if let Some(old) = self
            .fetcher
            .lock()
            .expect("fetcher lock poisoned")
            .replace(task)
        {
            old.abort();
        }
    }

    fn stop_fetcher(&self) {
        if let Some(old) = self.fetcher.lock().expect("fetcher lock poisoned").take() {
            old.abort();
        }
    }

    /// Sets the HW; callers hold the role lock.
    fn set_high_watermark(&self, hw: i64) {
        self.high_watermark.send_if_modified(|current| {
            let moved = *current != hw;
            *current = hw;
            moved
        });
    }

    /// `min.insync.replicas` for this partition's topic: fewer in-sync replicas refuse acks=all.
    pub fn min_insync(&self) -> usize {
        self.min_insync
    }

    /// Fails with NotEnoughReplicas unless at least `min.insync.replicas` replicas are in
    /// sync (the leader counts those the controller keeps in the ISR and that it has seen
    /// caught up within `replica_lag_max`). Checked before an acks=all append, so a
    /// refused write appends nothing.
    pub fn check_min_insync(&self, now: Instant) -> Result<()> {
        match &*self.role() {
            Role::Leader(state) => {
                let in_sync = state.in_sync_count(now).min(state.isr().len());
                if in_sync < self.min_insync {
                    return Err(BrokerError::Remote {
                        code: ErrorCode::NotEnoughReplicas,
                        message: format!(
                            "{}: {in_sync} replica(s) in sync (ISR {:?}), min.insync.replicas is {}; nothing was appended. Bring the stopped replicas back, or lower min.insync.replicas",
                            self.name(),
                            state.isr(),
                            self.min_insync
                        ),
                    });
                }
                Ok(())
            }
            _ => Err(self.not_leader("this broker does not lead it".into())),
        }
    }

    /// Appends a producer's batches as the leader and answers once they are durable per
    /// the flush policy (acks=1). Returns the outcome with the leader epoch it was
    /// written under.
    pub async fn append(&self, batches: BytesMut, mode: AppendMode) -> Result<AppendOutcome> {
        self.append_as_leader(batches, mode).await.map(|(o, _)| o)
    }

    /// Like [`Self::append`], also returning the leader epoch the write was made under
    /// (for [`Self::wait_committed`]).
    pub async fn append_as_leader(
        &self,
        batches: BytesMut,
        mode: AppendMode,
    ) -> Result<(AppendOutcome, i32)> {
        let epoch = self
            .leader_epoch()
            .ok_or_else(|| self.not_leader("this broker does not lead it".into()))?;
        self.submit(batches, mode, Writer::Leader(epoch))
            .await
            .map(|o| (o, epoch))
    }

    /// Appends batches fetched from the leader of `epoch`, keeping their offsets.
    pub async fn append_as_follower(&self, batches: BytesMut, epoch: i32) -> Result<AppendOutcome> {
        self.submit(batches, AppendMode::KeepOffsets, Writer::Follower(epoch))
            .await
    }

    async fn submit(
        &self,
        batches: BytesMut,
        mode: AppendMode,
        writer: Writer,
    ) -> Result<AppendOutcome> {
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
                writer,
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

    /// acks=all: waits until the high watermark passes `last_offset` while this broker
    /// still leads at `epoch`. Fails with NotLeaderOrFollower if the epoch changes first
    /// (the write may be replaced by the new leader), and after `timeout` with
    /// NotEnoughReplicas (too few replicas in sync) or RequestTimedOut: never a silent
    /// success.
    pub async fn wait_committed(
        &self,
        last_offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<()> {
        if debug_ack_before_hw() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut hw = self.high_watermark.subscribe();
        let mut roles = self.role_changes.subscribe();
        loop {
            {
                let role = self.role();
                match &*role {
                    Role::Leader(state) if state.epoch() == epoch => {
                        if *self.high_watermark.borrow() > last_offset {
                            return Ok(());
                        }
                    }
                    _ => {
                        return Err(self.not_leader(format!(
                            "the leader epoch changed from {epoch} before offset {last_offset} was replicated; the write was not acknowledged and may be lost, retry it"
                        )));
                    }
                }
                hw.borrow_and_update();
                roles.borrow_and_update();
            }
            tokio::select! {
                _ = hw.changed() => {}
                _ = roles.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let in_sync = self.check_min_insync(Instant::now());
                    return Err(match in_sync {
                        Err(err) => err,
                        Ok(()) => BrokerError::Remote {
                            code: ErrorCode::RequestTimedOut,
                            message: format!(
                                "{}: offset {last_offset} was appended on the leader but not replicated by every in-sync replica within {timeout:?} (high watermark {}); it was not acknowledged",
                                self.name(),
                                self.high_watermark()
                            ),
                        },
                    });
                }
            }
        }
    }

    /// The leader's side of a follower's fetch: checks the epoch, records the follower's
    /// log end offset (= `offset`), moves the high watermark, and reads from `offset` up
    /// to the log end offset.
    pub fn read_replica(
        &self,
        replica: u64,
        epoch: i32,
        offset: i64,
        max_bytes: usize,
        now: Instant,
    ) -> Result<ReplicaData> {
        let (log_start_offset, log_end_offset) = {
            let log = self.log.read().expect("partition log lock poisoned");
            (log.log_start_offset(), log.log_end_offset())
        };
        let high_watermark = {
            let mut role = self.role();
            let Role::Leader(state) = &mut *role else {
                return Err(self.not_leader("this broker does not lead it".into()));
            };
            if state.epoch() != epoch {
                let code = if epoch < state.epoch() {
                    ErrorCode::FencedLeaderEpoch
                } else {
                    ErrorCode::NotLeaderOrFollower
                };
                return Err(BrokerError::Remote {
                    code,
                    message: format!(
                        "{}: the replica fetches at leader epoch {epoch}, this leader is at {}",
                        self.name(),
                        state.epoch()
                    ),
                });
            }
            if !state.is_follower(replica) {
                return Err(BrokerError::InvalidRequest {
                    reason: format!(
                        "broker {replica} is not a follower replica of {}",
                        self.name()
                    ),
                });
            }
            if offset > log_end_offset || offset < log_start_offset {
                return Err(BrokerError::OffsetOutOfRange {
                    requested: offset,
                    start: log_start_offset,
                    end: log_end_offset,
                });
            }
            let hw = state.follower_fetched(replica, offset, log_end_offset, now);
            self.set_high_watermark(hw);
            hw
        };
        let records = if offset < log_end_offset {
            self.log
                .read()
                .expect("partition log lock poisoned")
                .read(offset, max_bytes)?
                .bytes
        } else {
            Bytes::new()
        };
        Ok(ReplicaData {
            records,
            high_watermark,
            log_end_offset,
            log_start_offset,
        })
    }

    /// A follower learned the leader's high watermark: its own is `min(that, its log end
    /// offset)`. Ignored unless it still follows at `epoch`.
    pub fn follower_high_watermark(&self, leader_hw: i64, epoch: i32) {
        let role = self.role();
        if matches!(&*role, Role::Follower { epoch: e, .. } if *e == epoch) {
            self.set_high_watermark(leader_hw.min(self.log_end_offset()));
        }
    }

    /// The newest leader epoch that wrote to this replica's log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.log
            .read()
            .expect("partition log lock poisoned")
            .latest_epoch()
    }

    /// Where `requested` ended in this replica's log: `(largest epoch <= requested, its
    /// end offset)`, or `(-1, -1)` (see [`crate::log::epochs::LeaderEpochCache`]).
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.log
            .read()
            .expect("partition log lock poisoned")
            .end_offset_for_epoch(requested)
    }

    /// The leader's answer to a follower of `current_epoch` asking where `requested`
    /// ended (OffsetsForLeaderEpoch): refused unless this broker leads at exactly that
    /// epoch, so a follower never truncates against a deposed leader's log.
    pub fn leader_end_offset_for(&self, current_epoch: i32, requested: i32) -> Result<(i32, i64)> {
        let role = self.role();
        match &*role {
            Role::Leader(state) if state.epoch() == current_epoch => {
                drop(role);
                Ok(self.end_offset_for_epoch(requested))
            }
            _ => Err(self.not_leader(format!(
                "this broker does not lead it at epoch {current_epoch}"
            ))),
        }
    }

    /// Cuts the log back to `offset` (a follower dropping a tail the leader may not
    /// have); the high watermark follows it down if needed. Blocking.
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        let end = {
            let mut log = self.log.write().expect("partition log lock poisoned");
            log.truncate_to(offset)?;
            log.sync()?;
            log.log_end_offset()
        };
        let _role = self.role();
        self.log_end.send_replace(end);
        if self.high_watermark() > end {
            self.set_high_watermark(end);
        }
        Ok(())
    }

    /// The offset after the last stored record.
    pub fn log_end_offset(&self) -> i64 {
        *self.log_end.borrow()
    }

    /// Waits, up to `max_wait`, while the first batch of `batches` is ahead of its
    /// idempotent producer's sequence: with several requests of one producer in flight,
    /// gRPC may deliver a later one first, and the earlier one is usually a moment behind.
    /// Waiting here costs nothing; refusing would make the producer send the whole
    /// request again. The append checks the sequence again either way.
    pub async fn wait_for_sequence_turn(&self, batches: &[u8], max_wait: Duration) {
        let Ok(header) = crate::log::batch::BatchHeader::parse(batches) else {
            return;
        };
        let mut log_end = self.watch_log_end();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let ahead = self
                .log
                .read()
                .expect("partition log lock poisoned")
                .is_ahead_of_sequence(&header);
            if !ahead {
                return;
            }
            match tokio::time::timeout_at(deadline, log_end.changed()).await {
                Ok(Ok(())) => continue,
                _ => return,
            }
        }
    }

    /// Resolves when the log end offset moves (replica fetches long-poll on it).
    pub fn watch_log_end(&self) -> watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    /// The ISR change this leader wants, with its epoch, if any (see
    /// [`LeaderState::desired_isr`]).
    pub fn desired_isr(&self, now: Instant) -> Option<(i32, Vec<u64>)> {
        match &*self.role() {
            Role::Leader(state) => state.desired_isr(now).map(|isr| (state.epoch(), isr)),
            _ => None,
        }
    }

    /// Writes the high watermark to the checkpoint file if it moved since the last
    /// write (temp file + rename, so a crash leaves the old or the new value). Blocking.
    pub fn write_checkpoint(&self) -> Result<()> {
        let hw = self.high_watermark();
        let mut last = self.checkpointed.lock().expect("checkpoint lock poisoned");
        if *last == hw && self.checkpoint.exists() {
            return Ok(());
        }
        let tmp = self.checkpoint.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(file, "0 {hw}")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.checkpoint)
        };
        write().map_err(|e| BrokerError::io(&self.checkpoint, e))?;
        *last = hw;
        Ok(())
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

/// The high watermark in a checkpoint file (`0 <hw>`: format version, value), if the
/// file exists and reads well.
fn read_checkpoint(path: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next().and_then(|v| v.parse().ok())) {
        (Some("0"), Some(hw)) => Some(hw),
        _ => {
            tracing::warn!(path = %path.display(), "unreadable high-watermark checkpoint; starting from 0");
            None
        }
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

/// Appends every job whose writer still holds its role, syncs once if the policy asks,
/// moves the log end offset (and, on the leader, the high watermark), then answers each
/// job. A leader's job is answered with NotLeaderOrFollower if the epoch changed while it
/// was written (the new leader may replace it). `Err` when an fsync failed: then nothing
/// appended since the last good sync can be trusted and the partition stops taking writes
/// (restart recovery re-validates the tail), as Kafka takes a failed log dir offline.
fn append_group(
    partition: &Partition,
    log: &RwLock<PartitionLog>,
    group: Vec<AppendJob>,
    flush: FlushPolicy,
) -> std::result::Result<(), ()> {
    let started = Instant::now();
    let holds = |writer: Writer| -> bool {
        match (&*partition.role(), writer) {
            (Role::Leader(state), Writer::Leader(epoch)) => state.epoch() == epoch,
            (Role::Follower { epoch: e, .. }, Writer::Follower(epoch)) => *e == epoch,
            _ => false,
        }
    };
    let stale = |writer: Writer| {
        partition.not_leader(format!(
            "its role changed (written under {writer:?}); the write was not acknowledged"
        ))
    };
    let mut log = log.write().expect("partition log lock poisoned");
    let mut results = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    for mut job in group {
        let result = if holds(job.writer) {
            let stamp = match job.writer {
                Writer::Leader(e) => Some(e),
                Writer::Follower(_) => None,
            };
            log.append(&mut job.batches, job.mode, stamp)
        } else {
            Err(stale(job.writer))
        };
        results.push(result);
        replies.push((job.reply, job.writer));
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
        for (reply, _) in replies {
            let _ = reply.send(Err(BrokerError::PartitionOffline {
                partition: String::new(),
                reason: format!("fsync failed: {reason}"),
            }));
        }
        return Err(());
    }
    let end = log.log_end_offset();
    drop(log);
    {
        let mut role = partition.role();
        partition.log_end.send_if_modified(|leo| {
            let moved = *leo != end;
            *leo = end;
            moved
        });
        if let Role::Leader(state) = &mut *role {
            let hw = state.leader_appended(end);
            partition.set_high_watermark(hw);
        }
    }
    tracing::trace!(jobs = replies.len(), elapsed = ?started.elapsed(), "group commit");
    for ((reply, writer), result) in replies.into_iter().zip(results) {
        // Written, but the epoch moved on meanwhile: the new leader may replace it, so
        // it is not acknowledged.
        let result = match (result, writer) {
            (Ok(_), Writer::Leader(_)) if !holds(writer) => Err(stale(writer)),
            (other, _) => other,
        };
        let _ = reply.send(result);
    }
    Ok(())
}

/// Chaos-test switch (`MERIDIAN_DEBUG_ACK_BEFORE_HW`): acknowledge acks=all writes
/// without waiting for the high watermark, breaking the durability guarantee on purpose
/// so that the chaos checker's own test can show it catches the loss. Only debug builds
/// honour it; a release build never reads the variable.
fn debug_ack_before_hw() -> bool {
    static SWITCH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SWITCH.get_or_init(|| {
        let on = cfg!(debug_assertions) && std::env::var_os("MERIDIAN_DEBUG_ACK_BEFORE_HW").is_some();
        if on {
            tracing::error!("MERIDIAN_DEBUG_ACK_BEFORE_HW is set: acks=all is answered before replication; acknowledged records WILL be lost on failover");
        }
        on
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use crate::record::{Compression, Record, encode_batch};

    const LAG: Duration = Duration::from_secs(10);

    fn open(dir: &Path) -> Arc<Partition> {
        let (log, _) = PartitionLog::open(dir, LogConfig::default()).expect("open log");
        Partition::start("t", 0, log, FlushPolicy::EveryBatch, 2)
    }

    fn batch(value: &str) -> BytesMut {
        BytesMut::from(
            &encode_batch(&[Record::new(value.to_owned(), 0)], Compression::None).unwrap()[..],
        )
    }

    fn code(err: &BrokerError) -> ErrorCode {
        err.code()
    }

    #[tokio::test]
    async fn acks_all_is_answered_once_every_isr_follower_has_fetched_past_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path());
        p.become_leader(1, 0, &[1, 2, 3], &[1, 2, 3], LAG, Instant::now());
        let (outcome, epoch) = p
            .append_as_leader(batch("a"), AppendMode::AssignOffsets)
            .await
            .unwrap();
        assert_eq!(
            p.high_watermark(),
            0,
            "not committed before the followers fetch"
        );
        assert!(
            p.read(0, 1 << 20).unwrap().records.is_empty(),
            "consumers see nothing yet"
        );
        let replica = p.read_replica(2, 0, 0, 1 << 20, Instant::now()).unwrap();
        assert!(
            !replica.records.is_empty(),
            "followers read up to the log end"
        );
        p.read_replica(2, 0, 1, 1 << 20, Instant::now()).unwrap();
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move {
                p.wait_committed(outcome.last_offset, epoch, Duration::from_secs(30))
                    .await
            })
        };
        p.read_replica(3, 0, 1, 1 << 20, Instant::now()).unwrap();
        waiting
            .await
            .unwrap()
            .expect("committed once the whole ISR has it");
        assert_eq!(p.high_watermark(), 1);
        assert!(!p.read(0, 1 << 20).unwrap().records.is_empty());
    }

    #[tokio::test]
    async fn a_write_is_not_acknowledged_when_the_leader_epoch_changes_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path());
        p.become_leader(1, 4, &[1, 2], &[1, 2], LAG, Instant::now());
        let (outcome, epoch) = p
            .append_as_leader(batch("a"), AppendMode::AssignOffsets)
            .await
            .unwrap();
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move {
                p.wait_committed(outcome.last_offset, epoch, Duration::from_secs(30))
                    .await
            })
        };
        assert!(p.become_follower(Some(2), 5));
        let err = waiting.await.unwrap().expect_err("epoch changed");
        assert_eq!(code(&err), ErrorCode::NotLeaderOrFollower);
        let err = p
            .append_as_leader(batch("b"), AppendMode::AssignOffsets)
            .await
            .expect_err("a follower takes no producer writes");
        assert_eq!(code(&err), ErrorCode::NotLeaderOrFollower);
        // A stale reconcile cannot move the role back to the old epoch.
        assert!(!p.become_leader(1, 4, &[1, 2], &[1, 2], LAG, Instant::now()));
        assert_eq!(p.leader_epoch(), None);
    }

    #[tokio::test]
    async fn acks_all_below_min_insync_appends_nothing_and_times_out_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path());
        let start = Instant::now();
        p.become_leader(1, 0, &[1, 2, 3], &[1, 2, 3], LAG, start);
        let later = start + LAG + Duration::from_secs(1);
        let err = p
            .check_min_insync(later)
            .expect_err("both followers silent");
        assert_eq!(code(&err), ErrorCode::NotEnoughReplicas);
        assert_eq!(p.log_end_offset(), 0);
        let (outcome, epoch) = p
            .append_as_leader(batch("a"), AppendMode::AssignOffsets)
            .await
            .unwrap();
        let err = p
            .wait_committed(outcome.last_offset, epoch, Duration::from_millis(50))
            .await
            .expect_err("never a silent success");
        assert!(
            matches!(
                code(&err),
                ErrorCode::RequestTimedOut | ErrorCode::NotEnoughReplicas
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_high_watermark_checkpoint_survives_a_reopen_and_bounds_follower_truncation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = open(dir.path());
            p.become_leader(1, 0, &[1, 2], &[1, 2], LAG, Instant::now());
            for v in ["a", "b", "c"] {
                p.append_as_leader(batch(v), AppendMode::AssignOffsets)
                    .await
                    .unwrap();
            }
            p.read_replica(2, 0, 2, 1 << 20, Instant::now()).unwrap();
            assert_eq!(p.high_watermark(), 2);
            p.write_checkpoint().unwrap();
        }
        let p = open(dir.path());
        assert_eq!(p.high_watermark(), 2, "restarts from the checkpoint");
        assert_eq!(p.log_end_offset(), 3);
        p.become_follower(Some(2), 1);
        let hw = p.high_watermark();
        let q = p.clone();
        tokio::task::spawn_blocking(move || q.truncate_to(hw))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.log_end_offset(), 2, "the uncommitted record is dropped");
    }
}
