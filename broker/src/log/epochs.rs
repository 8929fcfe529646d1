//! The leader-epoch cache (Kafka's KIP-101): for each leader epoch that wrote to this
//! partition, the offset of its first record, persisted as `leader-epoch-checkpoint`.
//!
//! It is what lets a broker that comes back as a follower cut exactly its divergent
//! tail: it asks the leader where the follower's latest epoch ended in the leader's log,
//! and truncates there. Truncating to the local high watermark instead (the pre-KIP-101
//! rule) can cut records the leader had already committed whenever the follower's
//! high watermark lagged, and a second failure then loses them.
//!
//! ```text
//!   epoch 3 from 0, epoch 5 from 120, epoch 6 from 300     (log end 340)
//!   end_offset_for(5) = (5, 300)   end_offset_for(4) = (3, 120)   end_offset_for(6) = (6, 340)
//! ```

use std::path::{Path, PathBuf};

use crate::error::{BrokerError, Result};

/// The checkpoint's file name in a partition directory (Kafka's).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// No epoch / no offset: the answer when the requested epoch is unknown.
pub const UNDEFINED: i32 = -1;

/// Epoch → first offset, in increasing order of both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// A cache from `(epoch, start offset)` pairs.
    pub fn from_entries(entries: Vec<(i32, i64)>) -> Self {
        let mut cache = LeaderEpochCache::default();
        for (epoch, offset) in entries {
            cache.assign(epoch, offset);
        }
        cache
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The newest epoch that wrote to the log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|(e, _)| *e)
    }

    /// Records that `epoch` wrote starting at `start_offset`; returns whether the cache
    /// changed. An older or equal epoch changes nothing (batches of the current epoch
    /// keep arriving); an entry at or past `start_offset` from a newer-looking epoch
    /// cannot exist in a consistent log and is replaced.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|(_, start)| *start > start_offset)
        {
            self.entries.pop();
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// Kafka's OffsetsForLeaderEpoch answer: the largest epoch `<= requested` this log
    /// knows, and the offset where it ended (the next epoch's start offset, or
    /// `log_end` for the latest epoch). `(UNDEFINED, -1)` when the log knows no such
    /// epoch or `requested` is newer than every epoch here.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        let undefined = (UNDEFINED, i64::from(UNDEFINED));
        if requested < 0 {
            return undefined;
        }
        match self.latest_epoch() {
            None => undefined,
            Some(latest) if requested == latest => (latest, log_end),
            Some(latest) if requested > latest => undefined,
            Some(_) => {
                let higher = self
                    .entries
                    .iter()
                    .find(|(e, _)| *e > requested)
                    .map(|(_, start)| *start)
                    .expect("an epoch above requested exists");
                let floor = self
                    .entries
                    .iter()
                    .rev()
                    .find(|(e, _)| *e <= requested)
                    .map_or(requested, |(e, _)| *e);
                (floor, higher)
            }
        }
    }

    /// Forgets epochs that start at or past `end` (the log was truncated to `end`).
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < end);
        self.entries.len() != before
    }

    /// Forgets what retention deleted: the epoch covering `log_start` now starts there.
    pub fn truncate_from_start(&mut self, log_start: i64) -> bool {
        let covering = self
            .entries
            .iter()
            .rposition(|(_, start)| *start <= log_start);
        match covering {
            Some(i) if i > 0 || self.entries[0].1 < log_start => {
                self.entries.drain(..i);
                self.entries[0].1 = log_start;
                true
            }
            _ => false,
        }
    }

    /// Reads the checkpoint in `dir`: `Ok(None)` when there is none, an error naming the
    /// file and line when it is malformed.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BrokerError::io(&path, e)),
        };
        parse(&text)
            .map(Some)
            .map_err(|reason| BrokerError::CorruptCheckpoint {
                path: path.clone(),
                reason,
            })
    }

    /// Writes the checkpoint durably (temporary file, fsync, rename, fsync of the
    /// directory), in Kafka's format: version, count, then `epoch offset` lines.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT_FILE);
        let tmp: PathBuf = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            text.push_str(&format!("{epoch} {offset}\n"));
        }
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| BrokerError::io(&path, e))
    }
}

fn parse(text: &str) -> std::result::Result<LeaderEpochCache, String> {
    let mut lines = text.lines().enumerate();
    let mut next = |what: &str| {
        lines
            .next()
            .map(|(i, l)| (i + 1, l.trim()))
            .ok_or_else(|| format!("ends before the {what}"))
    };
    let (n, version) = next("version line")?;
    if version != "0" {
        return Err(format!("line {n}: version {version:?} is not 0"));
    }
    let (n, count) = next("entry count")?;
    let count: usize = count
        .parse()
        .map_err(|_| format!("line {n}: entry count {count:?} is not a number"))?;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let (n, line) = next("last entry")?;
        let mut fields = line.split_whitespace();
        let parsed = match (fields.next(), fields.next(), fields.next()) {
            (Some(e), Some(o), None) => e.parse::<i32>().ok().zip(o.parse::<i64>().ok()),
            _ => None,
        };
        let (epoch, offset) =
            parsed.ok_or_else(|| format!("line {n}: {line:?} is not \"epoch offset\""))?;
        if entries
            .last()
            .is_some_and(|(e, o)| epoch <= *e || offset < *o)
        {
            return Err(format!(
                "line {n}: epoch {epoch} at {offset} is out of order"
            ));
        }
        entries.push((epoch, offset));
    }
    Ok(LeaderEpochCache { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> LeaderEpochCache {
        LeaderEpochCache::from_entries(vec![(3, 0), (5, 120), (6, 300)])
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let c = cache();
        assert_eq!(
            c.end_offset_for(6, 340),
            (6, 340),
            "latest epoch ends at the log end"
        );
        assert_eq!(c.end_offset_for(5, 340), (5, 300));
        assert_eq!(
            c.end_offset_for(4, 340),
            (3, 120),
            "largest epoch at or below"
        );
        assert_eq!(
            c.end_offset_for(2, 340),
            (2, 0),
            "below every epoch: ends at the first"
        );
        assert_eq!(
            c.end_offset_for(7, 340),
            (-1, -1),
            "newer than anything here"
        );
        assert_eq!(c.end_offset_for(-1, 340), (-1, -1));
        assert_eq!(LeaderEpochCache::default().end_offset_for(1, 0), (-1, -1));
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_increasing() {
        let mut c = cache();
        assert!(!c.assign(6, 310), "the current epoch keeps writing");
        assert!(!c.assign(4, 330), "an older epoch is ignored");
        assert!(c.assign(8, 340));
        assert!(
            c.assign(9, 200),
            "a newer epoch starting earlier replaces later entries"
        );
        assert_eq!(c.entries(), &[(3, 0), (5, 120), (9, 200)]);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache();
        assert!(c.truncate_from_end(300));
        assert_eq!(c.entries(), &[(3, 0), (5, 120)]);
        assert!(c.truncate_from_start(150));
        assert_eq!(c.entries(), &[(5, 150)]);
        assert!(!c.truncate_from_start(100), "already past");
    }

    #[test]
    fn checkpoint_round_trips_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), None);
        cache().store(dir.path()).unwrap();
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), Some(cache()));
        let path = dir.path().join(CHECKPOINT_FILE);
        std::fs::write(&path, "0\n2\n3 0\nfive 120\n").unwrap();
        let err = LeaderEpochCache::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("leader-epoch-checkpoint") && err.contains("line 4"),
            "{err}"
        );
        std::fs::write(&path, "0\n2\n5 0\n3 120\n").unwrap();
        let err = LeaderEpochCache::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");
    }
}
