//! No acknowledged record lost: every write acknowledged with acks=all is in its region's
//! committed log, at the offset the cluster acknowledged, with the workload's record id.
//! Also counts duplicates (a record id stored more than once), which the report shows:
//! a producer without idempotence may duplicate on retries, and operators want to know.

use std::collections::HashMap;

use super::Verdict;
use crate::history::{Ack, PartitionId, PartitionLog};

/// The guarantee, as the report states it.
pub const GUARANTEE: &str = "In a region with replication factor N and acks=all, up to N-1 broker \
     failures lose no acknowledged record.";

/// What the durability check found besides its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// The verdict on lost records.
    pub verdict: Verdict,
    /// Acknowledged records that are missing or replaced.
    pub lost: u64,
    /// Record ids stored more than once across the logs.
    pub duplicated: u64,
}

/// Checks every acknowledgement against the final committed logs of its region.
pub fn check(acks: &[Ack], logs: &[PartitionLog]) -> Durability {
    let mut verdict = Verdict::new("acked_durable", GUARANTEE);
    let by_partition: HashMap<&PartitionId, &PartitionLog> =
        logs.iter().map(|log| (&log.id, log)).collect();
    let mut lost = 0;
    for ack in acks {
        verdict.checked_one();
        let Some(log) = by_partition.get(&ack.at) else {
            lost += 1;
            verdict.violation(format!(
                "{} acknowledged at {} offset {} but the partition was not read back",
                ack.record_id, ack.at, ack.offset
            ));
            continue;
        };
        if ack.offset < log.log_start_offset {
            // Deleted by retention, which is configured, not lost.
            continue;
        }
        let stored = log
            .records
            .binary_search_by_key(&ack.offset, |r| r.offset)
            .ok()
            .map(|i| &log.records[i]);
        match stored {
            Some(record) if record.record_id() == Some(ack.record_id.as_str()) => {}
            Some(record) => {
                lost += 1;
                verdict.violation(format!(
                    "{} acknowledged at {} offset {} but that offset holds {:?}",
                    ack.record_id,
                    ack.at,
                    ack.offset,
                    record.record_id().unwrap_or("<not a record id>")
                ));
            }
            None => {
                lost += 1;
                verdict.violation(format!(
                    "{} acknowledged at {} offset {} is missing (committed log ends at {})",
                    ack.record_id, ack.at, ack.offset, log.high_watermark
                ));
            }
        }
    }
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for log in logs {
        for record in &log.records {
            if let Some(id) = record.record_id() {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    let duplicated = seen
        .values()
        .filter(|n| **n > 1)
        .map(|n| u64::from(n - 1))
        .sum();
    Durability {
        verdict,
        lost,
        duplicated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::StoredRecord;

    fn record(offset: i64, id: &str) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: 1_000 + offset,
            key: None,
            value: Some(id.as_bytes().to_vec()),
            headers: vec![],
        }
    }

    fn log(records: Vec<StoredRecord>) -> PartitionLog {
        let hw = records.last().map_or(0, |r| r.offset + 1);
        PartitionLog {
            id: PartitionId::new("a", "t", 0),
            log_start_offset: 0,
            high_watermark: hw,
            records,
        }
    }

    fn ack(id: &str, offset: i64) -> Ack {
        Ack {
            record_id: id.into(),
            at: PartitionId::new("a", "t", 0),
            offset,
        }
    }

    #[test]
    fn every_acknowledged_record_present_passes() {
        let logs = [log(vec![record(0, "w1:0"), record(1, "w1:1")])];
        let found = check(&[ack("w1:0", 0), ack("w1:1", 1)], &logs);
        assert!(found.verdict.passed(), "{:?}", found.verdict);
        assert_eq!((found.lost, found.duplicated), (0, 0));
    }

    #[test]
    fn acknowledged_record_missing_from_the_log_is_lost() {
        let logs = [log(vec![record(0, "w1:0")])];
        let found = check(&[ack("w1:0", 0), ack("w1:1", 1)], &logs);
        assert!(!found.verdict.passed());
        assert_eq!(found.lost, 1);
        assert!(
            found.verdict.violations[0].contains("w1:1"),
            "{:?}",
            found.verdict.violations
        );
    }

    #[test]
    fn acknowledged_offset_overwritten_by_another_record_is_lost() {
        // A truncated leader tail refilled by a new leader: the offset exists, the record
        // does not.
        let logs = [log(vec![record(0, "w1:0"), record(1, "w2:0")])];
        let found = check(&[ack("w1:1", 1)], &logs);
        assert_eq!(found.lost, 1);
        assert!(found.verdict.violations[0].contains("w2:0"));
    }

    #[test]
    fn records_below_the_log_start_were_deleted_by_retention_not_lost() {
        let mut partition = log(vec![record(5, "w1:5")]);
        partition.log_start_offset = 5;
        let found = check(&[ack("w1:0", 0), ack("w1:5", 5)], &[partition]);
        assert!(found.verdict.passed());
    }

    #[test]
    fn duplicates_are_counted() {
        let logs = [log(vec![
            record(0, "w1:0"),
            record(1, "w1:0"),
            record(2, "w1:1"),
        ])];
        let found = check(&[ack("w1:0", 0)], &logs);
        assert_eq!(found.duplicated, 1);
    }

    #[test]
    fn checking_nothing_does_not_pass() {
        let found = check(&[], &[]);
        assert!(!found.verdict.passed());
    }
}
