//! The partition log: segment files of Kafka RecordBatch v2 batches, with indexes,
//! recovery and retention.
//!
//! ```text
//!  <dir>/00000000000000000000.log        batches, byte for byte as produced
//!       /00000000000000000000.index      {relative offset u32, position u32}
//!       /00000000000000000000.timeindex  {max timestamp i64, relative offset u32}
//!       /00000000000000004096.log ...    the last segment is the active one
//! ```
//!
//! The log never decodes records: it validates each batch's 61-byte header and CRC-32C
//! ([`batch`]), rewrites only the base offset and partition leader epoch (outside the
//! CRC) when it assigns offsets, and serves reads as whole stored batches.
//!
//! # Durability
//! [`PartitionLog::append`] writes to the OS page cache; nothing is durable against power
//! loss until [`PartitionLog::sync`] returns. A process crash (kill -9) loses nothing that
//! `append` returned, because the page cache survives it.
//! * [`FlushPolicy::EveryBatch`] (the default, the safe one): the server appends a group
//!   of produce requests, calls `sync()` once for the group (group commit), and only then
//!   acknowledges the requests of that group.
//! * [`FlushPolicy::Interval`]: the server calls `sync()` when [`PartitionLog::flush_due`]
//!   says so; acknowledged data of the last interval may be lost on power failure.
//! * [`FlushPolicy::Never`]: the OS writes back when it likes; durability comes from
//!   replication.
//!
//! Sealed segments are synced (data and indexes) when they are sealed, unless the policy
//! is `Never`. Index files are never synced on the append path: recovery rebuilds any
//! that are missing or inconsistent, and always re-validates the active segment's tail
//! from its last good index entry, cutting a torn or corrupt tail with a `warn!` line
//! that names the file, position and bytes dropped.
//!
//! Sealed segments are trusted at open when their indexes are consistent (their data is
//! not re-read), as Kafka does below its recovery point; with `FlushPolicy::Never` a power
//! failure can therefore leave a damaged sealed segment that only replication repairs.
//!
//! # Use from the server
//! ```text
//!  RwLock<PartitionLog>
//!    write: append(..) × N requests → sync() once → ack the N requests   (EveryBatch)
//!    read:  read(offset, max_bytes), offset_for_timestamp(ts), log_*_offset()
//!    timer: roll_if_due(now); enforce_retention(now) → drop the lock → remove_deleted(..)
//! ```

pub mod batch;
pub mod epochs;
mod index;
pub mod producers;
mod segment;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{BrokerError, Result};

use batch::BatchHeader;
use segment::{ActiveSegment, SealedSegment, SegmentData};

/// When appended data is made durable; see the module docs for what each one risks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Sync before acknowledging each group of appends (group commit). The safe default.
    EveryBatch,
    /// Sync at most this often; [`PartitionLog::flush_due`] tells the server when.
    Interval(Duration),
    /// Never sync explicitly; rely on replication.
    Never,
}

/// Per-partition storage settings. The lead maps topology's per-topic values onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before it would grow past this many bytes.
    pub segment_bytes: u64,
    /// Roll a non-empty active segment once it is this old (since created or reopened).
    pub segment_age: Duration,
    /// Delete sealed segments whose newest batch timestamp is older than this.
    pub retention_time: Option<Duration>,
    /// Delete the oldest sealed segments while the log stays at or above this size.
    pub retention_bytes: Option<u64>,
    /// When appended data is synced to disk.
    pub flush: FlushPolicy,
    /// Largest accepted batch, in bytes (Kafka's max.message.bytes).
    pub max_message_bytes: usize,
    /// Bytes of data between two sparse index entries: smaller means faster lookups,
    /// larger means smaller indexes.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    /// Kafka's defaults, with [`FlushPolicy::EveryBatch`] so that nothing acknowledged
    /// is lost even to power failure unless a topic opts out.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age: Duration::from_secs(7 * 24 * 3600),
            retention_time: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            flush: FlushPolicy::EveryBatch,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
        }
    }
}

impl LogConfig {
    /// Checks the rules across fields, so the server can refuse a topic's settings at
    /// creation time rather than when a partition opens. Positions in the index are u32,
    /// so segments must stay below 2 GiB.
    pub fn validate(self) -> Result<Self> {
        let bad = |field: &'static str, reason: String| {
            Err(BrokerError::InvalidLogConfig { field, reason })
        };
        if self.segment_bytes < batch::HEADER_LEN as u64 || self.segment_bytes > i32::MAX as u64 {
            return bad(
                "segment_bytes",
                format!(
                    "{} is outside {}..={}; pick a size between a few MiB and 1 GiB",
                    self.segment_bytes,
                    batch::HEADER_LEN,
                    i32::MAX
                ),
            );
        }
        if self.max_message_bytes < batch::HEADER_LEN || self.max_message_bytes > i32::MAX as usize
        {
            return bad(
                "max_message_bytes",
                format!(
                    "{} is outside {}..={}",
                    self.max_message_bytes,
                    batch::HEADER_LEN,
                    i32::MAX
                ),
            );
        }
        if self.index_interval_bytes == 0 {
            return bad(
                "index_interval_bytes",
                "must be at least 1 (4096 is usual)".into(),
            );
        }
        if let FlushPolicy::Interval(d) = self.flush
            && d.is_zero()
        {
            return bad(
                "flush",
                "Interval(0) is meaningless; use EveryBatch instead".into(),
            );
        }
        Ok(self)
    }
}

/// How an append chooses offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// The leader: offsets start at the log end offset; base offset and partition leader
    /// epoch are rewritten in the caller's buffer.
    AssignOffsets,
    /// Followers and mirrors: each batch keeps its base offset, which must be at or above
    /// the log end offset (gaps allowed). A batch below it is accepted as a duplicate
    /// only when byte-identical to what is stored (ignoring the leader epoch).
    KeepOffsets,
}

/// What an append did, for the produce response and replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Base offset of the first batch of the request.
    pub base_offset: i64,
    /// Last offset of the last batch of the request.
    pub last_offset: i64,
    /// True when every batch was already stored (an idempotent re-send): nothing written.
    pub duplicate: bool,
    /// Largest max timestamp among the batches of the request.
    pub max_timestamp: i64,
    /// Byte position of the first written batch in its segment file (0 if none written).
    pub position: u64,
    /// Number of batches in the request.
    pub batches: usize,
}

/// Stored batches returned by a read, ready to send without re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSlice {
    /// Whole batches, concatenated, exactly as stored.
    pub bytes: bytes::Bytes,
    /// Base offset of the first batch (may be below the offset asked for).
    pub first_offset: i64,
    /// Offset after the last batch returned; where the next read continues.
    pub next_offset: i64,
}

/// What start-up recovery found and did, for the start-up log line and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from torn or corrupt tails.
    pub truncated_bytes: u64,
    /// Segments whose indexes were rebuilt.
    pub rebuilt_indexes: usize,
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Index files found without their segment, and `*.deleted` files left by
    /// retention, removed.
    pub orphans_removed: usize,
    /// Log start offset after recovery.
    pub log_start_offset: i64,
    /// Log end offset after recovery.
    pub log_end_offset: i64,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Whole segments deleted.
    pub deleted_segments: usize,
    /// Bytes of segment data deleted.
    pub deleted_bytes: u64,
    /// Log start offset after the pass.
    pub log_start_offset: i64,
    /// Files of the deleted segments, already out of the log (renamed `*.deleted`).
    /// Unlinking a big file is slow on this kind of disk (about 0.2 s per 512 MiB
    /// measured), so the caller removes them with [`remove_deleted`] outside its lock;
    /// any left over are removed at the next [`PartitionLog::open`].
    pub to_delete: Vec<PathBuf>,
}

/// Unlinks segment files that [`PartitionLog::enforce_retention`] took out of the log.
/// Meant to run outside the log's lock (e.g. in a blocking task).
pub fn remove_deleted(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BrokerError::io(p, e)),
        }
    }
    Ok(())
}

/// One partition's log on disk. Reads take `&self` (positional reads) so a server can
/// keep it behind an `RwLock` and serve fetches concurrently.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    sealed: Vec<SealedSegment>,
    active: ActiveSegment,
    unsynced: bool,
    dir_dirty: bool,
    last_sync: Instant,
    /// Which leader epoch wrote from which offset (KIP-101), kept in step with the log.
    epochs: epochs::LeaderEpochCache,
    /// Idempotent producers' recent batches, to answer retries without writing twice.
    producers: producers::ProducerStates,
}

fn parse_segment_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl PartitionLog {
    /// Opens (creating if missing) the log in `dir` and recovers it: sealed segments are
    /// trusted when their indexes are consistent (else rebuilt), the active segment's
    /// tail is validated and a torn or corrupt tail is cut.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Self, RecoveryReport)> {
        let config = config.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| BrokerError::io(dir, e))?;
        let mut report = RecoveryReport::default();
        let mut bases = Vec::new();
        let mut index_bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| BrokerError::io(dir, e))? {
            let entry = entry.map_err(|e| BrokerError::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(segment::DELETED_SUFFIX) {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(|e| BrokerError::io(&p, e))?;
                report.orphans_removed += 1;
            } else if let Some(b) = parse_segment_name(&name, ".log") {
                bases.push(b);
            } else if let Some(b) = parse_segment_name(&name, ".index")
                .or_else(|| parse_segment_name(&name, ".timeindex"))
            {
                index_bases.push(b);
            }
        }
        bases.sort_unstable();
        for b in index_bases {
            if bases.binary_search(&b).is_err() {
                segment::delete_files(dir, b)?;
                report.orphans_removed += 1;
            }
        }
        let interval = config.index_interval_bytes;
        let mut dir_dirty = false;
        let (sealed, active) = match bases.split_last() {
            None => {
                dir_dirty = true;
                (Vec::new(), ActiveSegment::create(dir, 0, interval)?)
            }
            Some((&last, rest)) => {
                let mut sealed = Vec::with_capacity(rest.len());
                for &b in rest {
                    sealed.push(SealedSegment::open(dir, b, interval, &mut report)?);
                }
                (
                    sealed,
                    ActiveSegment::recover(dir, last, interval, &mut report)?,
                )
            }
        };
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            sealed,
            active,
            unsynced: false,
            dir_dirty,
            last_sync: Instant::now(),
            epochs: epochs::LeaderEpochCache::default(),
            producers: producers::ProducerStates::default(),
        };
        log.epochs = log.recover_epochs()?;
        log.producers = log.recover_producers()?;
        report.segments = log.segments();
        report.log_start_offset = log.log_start_offset();
        report.log_end_offset = log.log_end_offset();
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments,
            log_start_offset = report.log_start_offset,
            log_end_offset = report.log_end_offset,
            truncated_bytes = report.truncated_bytes,
            rebuilt_indexes = report.rebuilt_indexes,
            "partition log opened"
        );
        Ok((log, report))
    }

    /// Loads the leader-epoch checkpoint and fits it to the recovered log; rebuilds it
    /// from the batches' epochs when it is missing (a log from before KIP-101 support)
    /// or malformed, so nothing it should say is lost.
    fn recover_epochs(&self) -> Result<epochs::LeaderEpochCache> {
        let loaded = match epochs::LeaderEpochCache::load(&self.dir) {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), %err, "rebuilding the leader-epoch checkpoint from the log");
                None
            }
        };
        let empty = self.log_end_offset() == self.log_start_offset();
        let mut cache = match loaded {
            Some(cache) => cache,
            None if empty => epochs::LeaderEpochCache::default(),
            None => self.scan_epochs()?,
        };
        let mut changed = cache.truncate_from_end(self.log_end_offset());
        changed |= cache.truncate_from_start(self.log_start_offset());
        if changed
            || (cache.latest_epoch().is_some() && !self.dir.join(epochs::CHECKPOINT_FILE).exists())
        {
            cache.store(&self.dir)?;
        }
        Ok(cache)
    }

    /// Idempotent producers' state from the batches of the active segment: a retry
    /// arrives within seconds of its first attempt, so the newest batches are the ones
    /// that matter. A producer whose last batch is older starts afresh (accepted at any
    /// sequence), which is what Kafka does for a producer whose state expired.
    /// Whether an idempotent batch is ahead of its producer's sequence here (see
    /// [`producers::ProducerStates::is_ahead`]).
    pub fn is_ahead_of_sequence(&self, header: &batch::BatchHeader) -> bool {
        self.producers.is_ahead(header)
    }

    fn recover_producers(&self) -> Result<producers::ProducerStates> {
        let mut states = producers::ProducerStates::default();
        let mut offset = self.active.data.base.max(self.log_start_offset());
        let end = self.log_end_offset();
        while offset < end {
            let slice = self.read(offset, 4 << 20)?;
            let mut at = 0;
            while at < slice.bytes.len() {
                let Ok(h) = batch::BatchHeader::parse(&slice.bytes[at..]) else {
                    break;
                };
                states.record(&h);
                at += h.total_len();
            }
            if slice.next_offset <= offset {
                break;
            }
            offset = slice.next_offset;
        }
        Ok(states)
    }

    /// Reads every batch header once to learn where each leader epoch started.
    fn scan_epochs(&self) -> Result<epochs::LeaderEpochCache> {
        let mut cache = epochs::LeaderEpochCache::default();
        let mut offset = self.log_start_offset();
        let end = self.log_end_offset();
        while offset < end {
            let slice = self.read(offset, 4 << 20)?;
            let mut at = 0;
            while at < slice.bytes.len() {
                let h = batch::BatchHeader::parse(&slice.bytes[at..]).map_err(|reason| {
                    BrokerError::Corrupt {
                        path: self.dir.clone(),
                        position: at as u64,
                        reason,
                    }
                })?;
                cache.assign(h.partition_leader_epoch, h.base_offset);
                at += h.total_len();
            }
            if slice.next_offset <= offset {
                break;
            }
            offset = slice.next_offset;
        }
        tracing::info!(dir = %self.dir.display(), epochs = cache.entries().len(), "rebuilt the leader-epoch cache from the log");
        Ok(cache)
    }

    /// The newest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Where `requested` ended in this log (see [`epochs::LeaderEpochCache::end_offset_for`]),
    /// for a follower deciding where its log diverges from the leader's.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.epochs.end_offset_for(requested, self.log_end_offset())
    }

    /// A new leader marks where its epoch starts, before it writes anything, so that a
    /// follower asking about an older epoch learns where that one ended.
    pub fn start_epoch(&mut self, epoch: i32) -> Result<()> {
        if self.epochs.assign(epoch, self.log_end_offset()) {
            self.epochs.store(&self.dir)?;
        }
        Ok(())
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// First offset still stored (the first segment's base offset).
    pub fn log_start_offset(&self) -> i64 {
        self.sealed
            .first()
            .map_or(self.active.data.base, |s| s.data.base)
    }

    /// The next offset to assign: one past the last stored batch.
    pub fn log_end_offset(&self) -> i64 {
        self.active.next_offset()
    }

    /// Number of segments, active one included.
    pub fn segments(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Total bytes of segment data.
    pub fn size_bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.data.size).sum::<u64>() + self.active.data.size
    }

    fn seg(&self, i: usize) -> &SegmentData {
        if i < self.sealed.len() {
            &self.sealed[i].data
        } else {
            &self.active.data
        }
    }

    /// Index of the last segment whose base is `<= offset` (0 if none).
    fn seg_for(&self, offset: i64) -> usize {
        let n = self.sealed.partition_point(|s| s.data.base <= offset);
        if n == self.sealed.len() && self.active.data.base <= offset {
            n
        } else {
            n.saturating_sub(1)
        }
    }

    fn out_of_range(&self, requested: i64) -> BrokerError {
        BrokerError::OffsetOutOfRange {
            requested,
            start: self.log_start_offset(),
            end: self.log_end_offset(),
        }
    }

    /// Validates every batch of a request before anything is written.
    fn validate(&self, buf: &[u8], mode: AppendMode) -> Result<Vec<(usize, BatchHeader)>> {
        let invalid = |reason: String| Err(BrokerError::InvalidBatch { reason });
        if buf.is_empty() {
            return invalid("the request holds no record batch".into());
        }
        let mut out: Vec<(usize, BatchHeader)> = Vec::new();
        let mut at = 0usize;
        while at < buf.len() {
            let rest = &buf[at..];
            let header = match BatchHeader::parse(rest) {
                Ok(h) => h,
                Err(r) => return invalid(format!("batch {} at byte {at}: {r}", out.len())),
            };
            if header.batch_length > 0 && header.total_len() > self.config.max_message_bytes {
                return Err(BrokerError::RecordTooLarge {
                    size: header.total_len(),
                    max: self.config.max_message_bytes,
                });
            }
            let header = match batch::validate_batch(rest) {
                Ok(h) => h,
                Err(r) => return invalid(format!("batch {} at byte {at}: {r}", out.len())),
            };
            if mode == AppendMode::KeepOffsets {
                if header.base_offset < 0 {
                    return invalid(format!(
                        "batch {} has negative base offset {}",
                        out.len(),
                        header.base_offset
                    ));
                }
                if let Some((_, prev)) = out.last()
                    && header.base_offset <= prev.last_offset()
                {
                    return invalid(format!(
                        "batch {} starts at offset {}, overlapping the previous batch (ends at {})",
                        out.len(),
                        header.base_offset,
                        prev.last_offset()
                    ));
                }
            }
            out.push((at, header));
            at += header.total_len();
        }
        Ok(out)
    }

    /// True when the stored batch at `h.base_offset` has the same bytes as `bytes`,
    /// ignoring the partition leader epoch.
    fn is_stored_duplicate(&self, h: &BatchHeader, bytes: &[u8]) -> Result<bool> {
        if h.base_offset < self.log_start_offset() || h.last_offset() >= self.log_end_offset() {
            return Ok(false);
        }
        let i = self.seg_for(h.base_offset);
        let Some(stored) = self.seg(i).batch_bytes_at(h.base_offset)? else {
            return Ok(false);
        };
        Ok(stored.len() == bytes.len()
            && stored[..batch::EPOCH_RANGE.start] == bytes[..batch::EPOCH_RANGE.start]
            && stored[batch::EPOCH_RANGE.end..] == bytes[batch::EPOCH_RANGE.end..])
    }

    /// Appends one or more concatenated batches. Every batch is validated first; on any
    /// error nothing of the request is written. A leader passes its `leader_epoch`, which
    /// is stamped on every batch it writes (offset-preserving mirror appends included:
    /// the epoch says which leader of *this* cluster wrote it); a follower passes `None`
    /// and keeps the leader's epochs. Not durable until [`PartitionLog::sync`].
    /// On an I/O error the failing write is cut back; batches of the same request already
    /// written to an earlier segment (the request crossed a roll) stay.
    pub fn append(
        &mut self,
        batches: &mut [u8],
        mode: AppendMode,
        leader_epoch: Option<i32>,
    ) -> Result<AppendOutcome> {
        let mut parsed = self.validate(batches, mode)?;
        let leo = self.log_end_offset();
        let mut skip = 0;
        match mode {
            AppendMode::AssignOffsets => {
                // A retried idempotent batch is answered with its first offsets. Kafka
                // clients send one batch per partition and request, Meridian's several
                // in sequence; a request that mixes retried and new batches is refused
                // rather than half-written.
                let checks = self.producers.check_run(parsed.iter().map(|(_, h)| h))?;
                let duplicates: Vec<(i64, i64)> = checks
                    .iter()
                    .filter_map(|c| match c {
                        producers::SequenceCheck::Duplicate {
                            base_offset,
                            last_offset,
                        } => Some((*base_offset, *last_offset)),
                        producers::SequenceCheck::Append => None,
                    })
                    .collect();
                if !duplicates.is_empty() {
                    if duplicates.len() != parsed.len() {
                        return Err(BrokerError::InvalidRequest {
                            reason:
                                "a request mixes retried and new batches of an idempotent producer"
                                    .into(),
                        });
                    }
                    tracing::debug!(dir = %self.dir.display(), base_offset = duplicates[0].0, "idempotent retry answered from the first write");
                    return Ok(AppendOutcome {
                        base_offset: duplicates[0].0,
                        last_offset: duplicates[duplicates.len() - 1].1,
                        duplicate: true,
                        max_timestamp: parsed
                            .iter()
                            .map(|(_, h)| h.max_timestamp)
                            .max()
                            .unwrap_or(-1),
                        position: 0,
                        batches: parsed.len(),
                    });
                }
                let mut next = leo;
                for (at, h) in parsed.iter_mut() {
                    let len = h.total_len();
                    let epoch = leader_epoch.unwrap_or(h.partition_leader_epoch);
                    batch::set_offset_and_epoch(&mut batches[*at..*at + len], next, epoch);
                    h.base_offset = next;
                    h.partition_leader_epoch = epoch;
                    next = h.last_offset() + 1;
                }
            }
            AppendMode::KeepOffsets => {
                for (at, h) in &parsed {
                    if h.base_offset >= leo {
                        break;
                    }
                    if !self.is_stored_duplicate(h, &batches[*at..*at + h.total_len()])? {
                        return Err(BrokerError::OffsetBelowEnd {
                            base: h.base_offset,
                            last: h.last_offset(),
                            end: leo,
                        });
                    }
                    skip += 1;
                }
                if let Some(epoch) = leader_epoch {
                    for (at, h) in parsed.iter_mut().skip(skip) {
                        let len = h.total_len();
                        batch::set_offset_and_epoch(
                            &mut batches[*at..*at + len],
                            h.base_offset,
                            epoch,
                        );
                        h.partition_leader_epoch = epoch;
                    }
                }
            }
        }
        let outcome = |position| AppendOutcome {
            base_offset: parsed[0].1.base_offset,
            last_offset: parsed[parsed.len() - 1].1.last_offset(),
            duplicate: skip == parsed.len(),
            max_timestamp: parsed
                .iter()
                .map(|(_, h)| h.max_timestamp)
                .max()
                .unwrap_or(-1),
            position,
            batches: parsed.len(),
        };
        if skip == parsed.len() {
            tracing::debug!(dir = %self.dir.display(), base_offset = parsed[0].1.base_offset, "duplicate batches skipped");
            return Ok(outcome(0));
        }
        let now = SystemTime::now();
        let mut first_pos = None;
        let mut i = skip;
        while i < parsed.len() {
            self.make_room(&parsed[i].1, now)?;
            // Extend the run while the next batches fit in this segment too.
            let seg_base = self.active.data.base;
            let mut size = self.active.data.size + parsed[i].1.total_len() as u64;
            let mut j = i + 1;
            while j < parsed.len() {
                let h = &parsed[j].1;
                if size + h.total_len() as u64 > self.config.segment_bytes
                    || h.last_offset() - seg_base > i64::from(i32::MAX)
                {
                    break;
                }
                size += h.total_len() as u64;
                j += 1;
            }
            let start = parsed[i].0;
            let end = parsed[j - 1].0 + parsed[j - 1].1.total_len();
            let headers: Vec<BatchHeader> = parsed[i..j].iter().map(|(_, h)| *h).collect();
            let pos = self.active.append_run(&batches[start..end], &headers)?;
            self.unsynced = true;
            first_pos.get_or_insert(pos);
            i = j;
        }
        let mut new_epoch = false;
        for (_, h) in &parsed[skip..] {
            new_epoch |= self.epochs.assign(h.partition_leader_epoch, h.base_offset);
            self.producers.record(h);
        }
        if new_epoch && let Err(err) = self.epochs.store(&self.dir) {
            // The batches are written and the cache in memory is right; the next start
            // rebuilds a checkpoint that does not match the log.
            tracing::error!(dir = %self.dir.display(), %err, "cannot write the leader-epoch checkpoint");
        }
        Ok(outcome(first_pos.unwrap_or(0)))
    }

    /// Rolls or rebases the active segment so that `h` can go into it.
    fn make_room(&mut self, h: &BatchHeader, now: SystemTime) -> Result<()> {
        let active = &self.active.data;
        let len = h.total_len() as u64;
        if active.size == 0 {
            if h.base_offset != active.base {
                // An empty segment takes the base of its first batch (gap or rebase).
                let old = active.base;
                self.active = ActiveSegment::create(
                    &self.dir,
                    h.base_offset,
                    self.config.index_interval_bytes,
                )?;
                segment::delete_files(&self.dir, old)?;
                self.dir_dirty = true;
            }
            return Ok(());
        }
        let too_big = active.size + len > self.config.segment_bytes;
        let too_far = h.last_offset() - active.base > i64::from(i32::MAX);
        let too_old = self.age_due(now);
        if too_big || too_far || too_old {
            self.roll(h.base_offset)?;
        }
        Ok(())
    }

    fn age_due(&self, now: SystemTime) -> bool {
        self.active.data.size > 0
            && now
                .duration_since(self.active.created)
                .is_ok_and(|age| age >= self.config.segment_age)
    }

    /// Seals the active segment and starts a new one at `base`.
    fn roll(&mut self, base: i64) -> Result<()> {
        self.active
            .prepare_seal(self.config.flush != FlushPolicy::Never)?;
        let fresh = ActiveSegment::create(&self.dir, base, self.config.index_interval_bytes)?;
        let old = std::mem::replace(&mut self.active, fresh);
        let old_base = old.data.base;
        let old_size = old.data.size;
        self.sealed.push(old.seal());
        self.dir_dirty = true;
        tracing::info!(dir = %self.dir.display(), sealed_base = old_base, sealed_bytes = old_size, new_base = base, "rolled segment");
        Ok(())
    }

    /// Makes everything appended so far durable: fdatasync of the active segment, and of
    /// the directory when segments were created since the last sync. Call it once per
    /// group of appends before acknowledging them (group commit).
    pub fn sync(&mut self) -> Result<()> {
        let started = Instant::now();
        let had_work = self.unsynced || self.dir_dirty;
        if self.unsynced {
            self.active.sync()?;
        }
        if self.dir_dirty {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| BrokerError::io(&self.dir, e))?;
            self.dir_dirty = false;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        // Only real fdatasyncs: a no-op call would drag the latency histogram to zero.
        if had_work {
            crate::telemetry::events()
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Whether the server should call [`PartitionLog::sync`] now: there is unsynced data
    /// and the policy asks for it (always for `EveryBatch`, after the interval for
    /// `Interval`, never for `Never`).
    pub fn flush_due(&self, now: Instant) -> bool {
        if !self.unsynced {
            return false;
        }
        match self.config.flush {
            FlushPolicy::EveryBatch => true,
            FlushPolicy::Interval(d) => now.saturating_duration_since(self.last_sync) >= d,
            FlushPolicy::Never => false,
        }
    }

    /// Whole stored batches from the one containing `offset`, up to `max_bytes` but at
    /// least one batch. `offset == log_end_offset()` gives an empty slice; outside
    /// `[log_start_offset, log_end_offset]` is `OffsetOutOfRange`. Reads step over gaps.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadSlice> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset() || offset > end {
            return Err(self.out_of_range(offset));
        }
        if offset < end {
            for i in self.seg_for(offset)..self.segments() {
                let seg = self.seg(i);
                if let Some((pos, h)) = seg.find_batch(offset)? {
                    return seg.read_from(pos, h, max_bytes);
                }
            }
        }
        Ok(ReadSlice {
            bytes: bytes::Bytes::new(),
            first_offset: end,
            next_offset: end,
        })
    }

    /// The first batch whose max timestamp is `>= ts_ms`: `(its base offset, its max
    /// timestamp)`, or None. Batch granularity: the batch may hold earlier-stamped
    /// records; a caller wanting the exact record decodes that batch.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>> {
        for i in 0..self.segments() {
            let seg = self.seg(i);
            if seg.max_timestamp() < ts_ms {
                continue;
            }
            if let Some(hit) = seg.find_timestamp(ts_ms)? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// Deletes the oldest sealed segments while they are past `retention_time` (by their
    /// newest batch timestamp) or the log stays at or above `retention_bytes` without
    /// them. Never deletes the active segment. Advances the log start offset. The
    /// segments' files are renamed, not unlinked: see [`RetentionReport::to_delete`].
    pub fn enforce_retention(&mut self, now: SystemTime) -> Result<RetentionReport> {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut report = RetentionReport::default();
        let mut total = self.size_bytes();
        while let Some(first) = self.sealed.first() {
            let seg = &first.data;
            let by_time = self.config.retention_time.is_some_and(|rt| {
                seg.max_timestamp() < now_ms.saturating_sub(rt.as_millis() as i64)
            });
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|rb| total - seg.size >= rb);
            if !(by_time || by_size) {
                break;
            }
            let seg = self.sealed.remove(0).data;
            report
                .to_delete
                .extend(segment::mark_deleted(&self.dir, seg.base)?);
            self.dir_dirty = true;
            total -= seg.size;
            report.deleted_segments += 1;
            report.deleted_bytes += seg.size;
            tracing::info!(
                dir = %self.dir.display(),
                base = seg.base,
                bytes = seg.size,
                by_time,
                by_size,
                "retention deleted segment"
            );
        }
        report.log_start_offset = self.log_start_offset();
        if self.epochs.truncate_from_start(report.log_start_offset) {
            self.epochs.store(&self.dir)?;
        }
        Ok(report)
    }

    /// Rolls the active segment if it is non-empty and older than `segment_age`.
    /// Returns whether it rolled.
    pub fn roll_if_due(&mut self, now: SystemTime) -> Result<bool> {
        if self.age_due(now) {
            let next = self.log_end_offset();
            self.roll(next)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Drops every batch whose last offset is `>= offset` (a batch straddling `offset`
    /// goes whole, as Kafka followers truncate at batch boundaries). The log end offset
    /// becomes one past the last kept batch (`<= offset`).
    /// `offset <= log_start_offset` empties the log and restarts it at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let interval = self.config.index_interval_bytes;
        if offset <= self.log_start_offset() {
            for s in std::mem::take(&mut self.sealed) {
                segment::delete_files(&self.dir, s.data.base)?;
            }
            let old = self.active.data.base;
            segment::delete_files(&self.dir, old)?;
            self.active = ActiveSegment::create(&self.dir, offset, interval)?;
            self.dir_dirty = true;
            self.unsynced = true;
            tracing::warn!(dir = %self.dir.display(), offset, "log truncated fully");
            self.epochs = epochs::LeaderEpochCache::default();
            self.epochs.store(&self.dir)?;
            self.producers = producers::ProducerStates::default();
            return Ok(());
        }
        let mut i = self.seg_for(offset);
        let mut cut = match self.seg(i).find_batch(offset)? {
            Some((pos, _)) => pos,
            None => self.seg(i).size,
        };
        // A segment emptied by the cut goes too, so the log end offset is one past the
        // last kept batch, never a segment base beyond it.
        while cut == 0 && i > 0 {
            i -= 1;
            cut = self.seg(i).size;
        }
        let keep_base = self.seg(i).base;
        // Delete every later segment, newest first.
        if i < self.sealed.len() {
            segment::delete_files(&self.dir, self.active.data.base)?;
            for s in self.sealed.drain(i + 1..).rev() {
                segment::delete_files(&self.dir, s.data.base)?;
            }
            self.sealed.pop();
        }
        let path = segment::log_path(&self.dir, keep_base);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(cut))
            .map_err(|e| BrokerError::io(&path, e))?;
        let mut scratch = RecoveryReport::default();
        self.active = ActiveSegment::recover(&self.dir, keep_base, interval, &mut scratch)?;
        self.dir_dirty = true;
        self.unsynced = true;
        tracing::warn!(dir = %self.dir.display(), offset, log_end_offset = self.log_end_offset(), "log truncated");
        if self.epochs.truncate_from_end(self.log_end_offset()) {
            self.epochs.store(&self.dir)?;
        }
        self.producers.truncate_from(self.log_end_offset());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
