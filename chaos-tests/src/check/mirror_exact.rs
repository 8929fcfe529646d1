//! Mirror exactly once: a remote partition (`A.orders` in region B) equals its source
//! partition's committed log (`orders` in A) — same offsets, keys, values, headers and
//! timestamps — over the range it holds, with no holes, nothing the source never
//! committed, and (once the run has quiesced) nothing left to copy.
//!
//! Offsets below the source's log start may exist only in the remote (retention deleted
//! them at the source after they were mirrored), and offsets below the remote's log start
//! may exist only in the source (the remote's own retention). Records the source deleted
//! before the mirror copied them are a retention gap, which the mirror itself must report
//! (its status and metric); this check cannot see them in the final logs.

use super::Verdict;
use crate::history::PartitionLog;

/// The guarantee, as the report states it.
pub const GUARANTEE: &str = "A mirror flow delivers every record of a mirrored source partition to \
     the target exactly once and in order, offsets preserved, through crashes and partitions.";

/// One source partition and its remote copy, as read at the end of a run.
#[derive(Debug, Clone)]
pub struct MirrorPair<'a> {
    /// The source partition's committed log.
    pub source: &'a PartitionLog,
    /// The remote partition's committed log in the target region.
    pub remote: &'a PartitionLog,
}

/// What the mirror check found besides its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFindings {
    /// The verdict.
    pub verdict: Verdict,
    /// Records the remote still lacks (source high watermark minus remote's), summed.
    pub lag_records: i64,
}

/// Checks each pair; with `expect_caught_up` the remote must also hold everything the
/// source committed (the run stopped writing and waited for the mirror).
pub fn check(pairs: &[MirrorPair<'_>], expect_caught_up: bool) -> MirrorFindings {
    let mut verdict = Verdict::new("mirror_exact", GUARANTEE);
    let mut lag_records = 0;
    for MirrorPair { source, remote } in pairs {
        let name = format!("{} → {}", source.id, remote.id);
        let mut source_at = source.records.iter().peekable();
        let mut previous: Option<i64> = None;
        for record in &remote.records {
            verdict.checked_one();
            if previous.is_some_and(|p| record.offset <= p) {
                verdict.violation(format!(
                    "{name}: remote offset {} follows {}",
                    record.offset,
                    previous.unwrap_or_default()
                ));
            }
            if record.offset >= source.high_watermark {
                verdict.violation(format!(
                    "{name}: remote holds offset {} but the source committed only up to {}",
                    record.offset, source.high_watermark
                ));
            }
            if record.offset < source.log_start_offset {
                previous = Some(record.offset);
                continue; // mirrored, then deleted at the source by retention
            }
            // Every source record between the previous remote record and this one must
            // be in the remote too (no holes).
            while let Some(expected) = source_at.next_if(|s| s.offset < record.offset) {
                if expected.offset >= remote.log_start_offset {
                    verdict.violation(format!(
                        "{name}: source offset {} ({:?}) is missing from the remote",
                        expected.offset,
                        expected.record_id().unwrap_or("?")
                    ));
                }
            }
            match source_at.next_if(|s| s.offset == record.offset) {
                Some(expected) if expected == record => {}
                Some(expected) => verdict.violation(format!(
                    "{name}: offset {} differs: source {:?}, remote {:?}",
                    record.offset,
                    describe(expected),
                    describe(record)
                )),
                None => verdict.violation(format!(
                    "{name}: remote offset {} ({:?}) does not exist in the source",
                    record.offset,
                    record.record_id().unwrap_or("?")
                )),
            }
            previous = Some(record.offset);
        }
        if remote.records.is_empty() {
            verdict.checked_one();
        }
        let lag = (source.high_watermark - remote.high_watermark).max(0);
        lag_records += lag;
        if expect_caught_up && lag > 0 {
            let missing = source_at.count();
            verdict.violation(format!(
                "{name}: not caught up: remote ends at {}, source at {} ({missing} source \
                 records never arrived)",
                remote.high_watermark, source.high_watermark
            ));
        }
    }
    MirrorFindings {
        verdict,
        lag_records,
    }
}

fn describe(record: &crate::history::StoredRecord) -> String {
    format!(
        "id={} ts={} key={:?} headers={}",
        record.record_id().unwrap_or("?"),
        record.timestamp_ms,
        record.key.as_deref().map(String::from_utf8_lossy),
        record.headers.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{PartitionId, StoredRecord};

    fn record(offset: i64) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset,
            key: Some(format!("k{offset}").into_bytes()),
            value: Some(format!("w1:{offset}").into_bytes()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
        }
    }

    fn log(
        region: &str,
        topic: &str,
        start: i64,
        offsets: impl IntoIterator<Item = i64>,
    ) -> PartitionLog {
        let records: Vec<_> = offsets.into_iter().map(record).collect();
        let hw = records.last().map_or(start, |r| r.offset + 1);
        PartitionLog {
            id: PartitionId::new(region, topic, 0),
            log_start_offset: start,
            high_watermark: hw,
            records,
        }
    }

    #[test]
    fn an_identical_caught_up_copy_passes() {
        let source = log("a", "orders", 0, 0..10);
        let remote = log("b", "a.orders", 0, 0..10);
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            true,
        );
        assert!(found.verdict.passed(), "{:?}", found.verdict);
        assert_eq!(found.lag_records, 0);
    }

    #[test]
    fn a_prefix_passes_until_caught_up_is_expected() {
        let source = log("a", "orders", 0, 0..10);
        let remote = log("b", "a.orders", 0, 0..6);
        let pair = [MirrorPair {
            source: &source,
            remote: &remote,
        }];
        assert!(check(&pair, false).verdict.passed());
        assert_eq!(check(&pair, false).lag_records, 4);
        assert!(!check(&pair, true).verdict.passed());
    }

    #[test]
    fn a_hole_in_the_remote_is_a_violation() {
        let source = log("a", "orders", 0, 0..10);
        let remote = log("b", "a.orders", 0, (0..10).filter(|o| *o != 4));
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            true,
        );
        assert_eq!(found.verdict.violation_count, 1);
        assert!(found.verdict.violations[0].contains("source offset 4"));
    }

    #[test]
    fn a_changed_header_or_timestamp_is_a_violation() {
        let source = log("a", "orders", 0, 0..3);
        let mut remote = log("b", "a.orders", 0, 0..3);
        remote.records[1].headers.clear();
        remote.records[2].timestamp_ms += 1;
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            true,
        );
        assert_eq!(found.verdict.violation_count, 2);
    }

    #[test]
    fn records_at_new_offsets_are_a_violation() {
        // A mirror that appends at its own offsets (as MirrorMaker 2 does) shifts records.
        let source = log("a", "orders", 5, 5..10);
        let mut remote = log("b", "a.orders", 0, 0..5);
        for (i, r) in remote.records.iter_mut().enumerate() {
            r.value = Some(format!("w1:{}", i + 5).into_bytes());
        }
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            true,
        );
        assert!(!found.verdict.passed());
    }

    #[test]
    fn a_remote_beyond_the_source_commit_is_a_violation() {
        let source = log("a", "orders", 0, 0..3);
        let remote = log("b", "a.orders", 0, 0..4);
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            false,
        );
        assert!(
            found
                .verdict
                .violations
                .iter()
                .any(|v| v.contains("committed only up to 3"))
        );
    }

    #[test]
    fn a_mirror_that_started_after_source_retention_passes() {
        // The source deleted 0..3 before the mirror started; the remote starts at 3.
        let source = log("a", "orders", 3, 3..10);
        let mut remote = log("b", "a.orders", 0, 3..10);
        remote.log_start_offset = 0;
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            true,
        );
        assert!(found.verdict.passed(), "{:?}", found.verdict);
    }

    #[test]
    fn a_mirror_that_skipped_records_the_source_still_holds_is_a_violation() {
        let source = log("a", "orders", 0, 0..10);
        let remote = log("b", "a.orders", 0, 3..10);
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            true,
        );
        assert_eq!(found.verdict.violation_count, 3, "{:?}", found.verdict);
    }

    #[test]
    fn mirrored_records_later_deleted_at_the_source_are_fine() {
        let source = log("a", "orders", 5, 5..10);
        let remote = log("b", "a.orders", 0, 0..10);
        let found = check(
            &[MirrorPair {
                source: &source,
                remote: &remote,
            }],
            true,
        );
        assert!(found.verdict.passed(), "{:?}", found.verdict);
    }
}
