//! Sparse per-segment indexes with fixed-size entries, and the one rule that fills them.
//!
//! * `.index`: `{relative offset u32, position u32}` (8 bytes, big endian). An entry
//!   points at the start of a batch whose base offset is `segment base + relative`.
//!   Lookups take the largest entry at or below the target and scan forward, so a
//!   missing entry only costs a longer scan.
//! * `.timeindex`: `{timestamp i64, relative offset u32}` (12 bytes). Entry `(T, r)`
//!   means: every batch up to and including the one at `r` has max timestamp `<= T`,
//!   and `T` strictly grows from entry to entry. A lookup for `ts` starts scanning after
//!   the last entry with `T < ts`.
//!
//! Index files are not synced on the append path: they are rebuilt from the data at
//! start-up when inconsistent, and the active segment's tail is always re-scanned.

/// Size of one offset index entry on disk.
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// Size of one time index entry on disk.
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// One offset index entry: where a batch starts in the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub rel: u32,
    /// Byte position of the batch in the segment file.
    pub pos: u32,
}

/// One time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Largest batch max timestamp up to the batch at `rel`.
    pub ts: i64,
    /// Relative base offset of the batch that carried `ts`.
    pub rel: u32,
}

impl OffsetEntry {
    pub(crate) fn encode(&self) -> [u8; OFFSET_ENTRY_LEN] {
        let mut b = [0u8; OFFSET_ENTRY_LEN];
        b[..4].copy_from_slice(&self.rel.to_be_bytes());
        b[4..].copy_from_slice(&self.pos.to_be_bytes());
        b
    }
}

impl TimeEntry {
    pub(crate) fn encode(&self) -> [u8; TIME_ENTRY_LEN] {
        let mut b = [0u8; TIME_ENTRY_LEN];
        b[..8].copy_from_slice(&self.ts.to_be_bytes());
        b[8..].copy_from_slice(&self.rel.to_be_bytes());
        b
    }
}

/// Parses an offset index. Returns the longest valid prefix and, if the whole file was
/// not valid, why (size not a multiple of 8, entries not increasing, position outside
/// the segment file).
pub(crate) fn parse_offset_index(
    bytes: &[u8],
    segment_size: u64,
) -> (Vec<OffsetEntry>, Option<String>) {
    let mut out: Vec<OffsetEntry> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
    for chunk in bytes.chunks(OFFSET_ENTRY_LEN) {
        if chunk.len() != OFFSET_ENTRY_LEN {
            return (
                out,
                Some(format!("size {} is not a multiple of 8", bytes.len())),
            );
        }
        let e = OffsetEntry {
            rel: u32::from_be_bytes(chunk[..4].try_into().expect("4")),
            pos: u32::from_be_bytes(chunk[4..].try_into().expect("4")),
        };
        if let Some(prev) = out.last()
            && (e.rel <= prev.rel || e.pos <= prev.pos)
        {
            let n = out.len();
            return (out, Some(format!("entry {n} is not increasing")));
        }
        if u64::from(e.pos) >= segment_size {
            let n = out.len();
            return (
                out,
                Some(format!(
                    "entry {n} points at byte {} beyond the segment ({segment_size} bytes)",
                    e.pos
                )),
            );
        }
        out.push(e);
    }
    (out, None)
}

/// Parses a time index. Returns the longest valid prefix and, if the whole file was not
/// valid, why.
pub(crate) fn parse_time_index(bytes: &[u8]) -> (Vec<TimeEntry>, Option<String>) {
    let mut out: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
    for chunk in bytes.chunks(TIME_ENTRY_LEN) {
        if chunk.len() != TIME_ENTRY_LEN {
            return (
                out,
                Some(format!("size {} is not a multiple of 12", bytes.len())),
            );
        }
        let e = TimeEntry {
            ts: i64::from_be_bytes(chunk[..8].try_into().expect("8")),
            rel: u32::from_be_bytes(chunk[8..].try_into().expect("4")),
        };
        if let Some(prev) = out.last()
            && (e.ts <= prev.ts || e.rel <= prev.rel)
        {
            let n = out.len();
            return (out, Some(format!("entry {n} is not increasing")));
        }
        out.push(e);
    }
    (out, None)
}

/// The largest entry whose relative offset is `<= rel`, or the segment start.
pub(crate) fn lookup_offset(entries: &[OffsetEntry], rel: u32) -> OffsetEntry {
    let n = entries.partition_point(|e| e.rel <= rel);
    if n == 0 {
        OffsetEntry { rel: 0, pos: 0 }
    } else {
        entries[n - 1]
    }
}

/// The last entry whose timestamp is `< ts`, if any.
pub(crate) fn lookup_time(entries: &[TimeEntry], ts: i64) -> Option<TimeEntry> {
    let n = entries.partition_point(|e| e.ts < ts);
    n.checked_sub(1).map(|i| entries[i])
}

/// The in-memory indexes of one segment and the rule that decides when to add entries.
/// Appends and recovery scans both feed batches through [`IndexBuilder::on_batch`], so
/// a rebuilt index is the same as the one written while appending.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    interval: u64,
    bytes_since: u64,
    pub max_ts: i64,
    max_ts_rel: u32,
    /// Offset after the last batch seen; `None` while the segment is empty.
    pub next_offset: Option<i64>,
}

impl IndexBuilder {
    /// An empty segment.
    pub(crate) fn new(interval: u32) -> Self {
        IndexBuilder {
            offsets: Vec::new(),
            times: Vec::new(),
            interval: u64::from(interval.max(1)),
            bytes_since: 0,
            max_ts: i64::MIN,
            max_ts_rel: 0,
            next_offset: None,
        }
    }

    /// Resumes at a known-good offset entry `at` (which must be the last of `offsets`):
    /// the batch at `at` is fed again by the caller's scan.
    pub(crate) fn resume(interval: u32, offsets: Vec<OffsetEntry>, times: Vec<TimeEntry>) -> Self {
        let mut b = IndexBuilder::new(interval);
        let at_rel = offsets.last().map(|e| e.rel).unwrap_or(0);
        b.times = times.into_iter().take_while(|t| t.rel <= at_rel).collect();
        if let Some(t) = b.times.last() {
            b.max_ts = t.ts;
            b.max_ts_rel = t.rel;
        }
        b.offsets = offsets;
        b
    }

    /// Accounts for one batch at `pos`. Returns how many offset and time entries were
    /// added (so the caller can write just those).
    pub(crate) fn on_batch(
        &mut self,
        rel: u32,
        pos: u32,
        len: u64,
        max_ts: i64,
        last_offset: i64,
    ) -> (usize, usize) {
        let index_due = self.bytes_since >= self.interval;
        let mut added = (0, 0);
        if index_due {
            self.offsets.push(OffsetEntry { rel, pos });
            self.bytes_since = 0;
            added.0 = 1;
        }
        self.bytes_since += len;
        if max_ts > self.max_ts {
            self.max_ts = max_ts;
            self.max_ts_rel = rel;
        }
        if (index_due || self.times.is_empty()) && self.time_entry_pending() {
            self.times.push(TimeEntry {
                ts: self.max_ts,
                rel: self.max_ts_rel,
            });
            added.1 = 1;
        }
        self.next_offset = Some(last_offset + 1);
        added
    }

    fn time_entry_pending(&self) -> bool {
        self.max_ts > i64::MIN && self.times.last().is_none_or(|t| self.max_ts > t.ts)
    }

    /// On seal: records the segment's final max timestamp so retention and time lookups
    /// can read it from the last entry. Returns whether an entry was added.
    pub(crate) fn finish(&mut self) -> bool {
        if self.time_entry_pending() {
            self.times.push(TimeEntry {
                ts: self.max_ts,
                rel: self.max_ts_rel,
            });
            true
        } else {
            false
        }
    }

    /// Encoded offset index.
    pub(crate) fn offset_bytes(&self) -> Vec<u8> {
        self.offsets.iter().flat_map(|e| e.encode()).collect()
    }

    /// Encoded time index.
    pub(crate) fn time_bytes(&self) -> Vec<u8> {
        self.times.iter().flat_map(|e| e.encode()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_takes_largest_entry_at_or_below() {
        let e = [
            OffsetEntry { rel: 10, pos: 100 },
            OffsetEntry { rel: 20, pos: 200 },
        ];
        assert_eq!(lookup_offset(&e, 5).pos, 0);
        assert_eq!(lookup_offset(&e, 10).pos, 100);
        assert_eq!(lookup_offset(&e, 25).pos, 200);
    }

    #[test]
    fn non_increasing_or_out_of_file_entries_end_the_valid_prefix() {
        let bytes: Vec<u8> = [
            OffsetEntry { rel: 1, pos: 10 },
            OffsetEntry { rel: 1, pos: 20 },
        ]
        .iter()
        .flat_map(|e| e.encode())
        .collect();
        let (v, err) = parse_offset_index(&bytes, 1000);
        assert_eq!(v.len(), 1);
        assert!(err.is_some());
        let (v, err) = parse_offset_index(&bytes[..8], 5);
        assert!(v.is_empty() && err.unwrap().contains("beyond"));
        let (_, err) = parse_offset_index(&bytes[..7], 1000);
        assert!(err.unwrap().contains("multiple"));
    }

    #[test]
    fn time_entries_only_grow_and_cover_earlier_batches() {
        let mut b = IndexBuilder::new(10);
        b.on_batch(0, 0, 20, 100, 0);
        b.on_batch(1, 20, 20, 50, 1);
        b.on_batch(2, 40, 20, 300, 2);
        b.on_batch(3, 60, 20, 200, 3);
        assert!(b.times.windows(2).all(|w| w[0].ts < w[1].ts));
        assert_eq!(lookup_time(&b.times, 250).unwrap().ts, 100);
        b.finish();
        assert_eq!(b.times.last().unwrap().ts, 300);
    }
}
