//! Per-partition order: offsets in a partition only grow, and the records one writer sent
//! to a partition are stored in the order it sent them (its sequence numbers never go
//! back). A record id seen before in the partition is a duplicate (a retried request
//! that had in fact been written: counted by [`super::acked_durable`]), not a
//! reordering, so only first occurrences are held to the order.

use std::collections::{HashMap, HashSet};

use super::Verdict;
use crate::history::{PartitionLog, parse_record_id};

/// The guarantee, as the report states it.
pub const GUARANTEE: &str =
    "Records in a partition keep the order their producer sent them in, through failovers.";

/// Checks the order of every partition's committed log.
pub fn check(logs: &[PartitionLog]) -> Verdict {
    let mut verdict = Verdict::new("order", GUARANTEE);
    for log in logs {
        let mut previous_offset = None;
        let mut last_sequence: HashMap<&str, (u64, i64)> = HashMap::new();
        let mut seen: HashSet<(&str, u64)> = HashSet::new();
        for record in &log.records {
            verdict.checked_one();
            if let Some(previous) = previous_offset
                && record.offset <= previous
            {
                verdict.violation(format!(
                    "{}: offset {} follows offset {previous}",
                    log.id, record.offset
                ));
            }
            previous_offset = Some(record.offset);
            let Some((writer, sequence)) = record.record_id().and_then(parse_record_id) else {
                continue;
            };
            if !seen.insert((writer, sequence)) {
                continue; // a duplicate, not a reordering
            }
            if let Some((last, at)) = last_sequence.get(writer).copied()
                && sequence < last
            {
                verdict.violation(format!(
                    "{}: {writer}'s record {sequence} at offset {} comes after its record \
                     {last} at offset {at}",
                    log.id, record.offset
                ));
            }
            let entry = last_sequence
                .entry(writer)
                .or_insert((sequence, record.offset));
            if sequence >= entry.0 {
                *entry = (sequence, record.offset);
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{PartitionId, StoredRecord};

    fn log(entries: &[(i64, &str)]) -> PartitionLog {
        PartitionLog {
            id: PartitionId::new("a", "t", 0),
            log_start_offset: 0,
            high_watermark: entries.last().map_or(0, |e| e.0 + 1),
            records: entries
                .iter()
                .map(|(offset, id)| StoredRecord {
                    offset: *offset,
                    timestamp_ms: 0,
                    key: None,
                    value: Some(id.as_bytes().to_vec()),
                    headers: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn interleaved_writers_each_in_order_pass() {
        let verdict = check(&[log(&[(0, "w1:0"), (1, "w2:0"), (2, "w1:1"), (3, "w2:1")])]);
        assert!(verdict.passed(), "{verdict:?}");
    }

    #[test]
    fn a_writer_going_back_is_a_reordering() {
        let verdict = check(&[log(&[(0, "w1:0"), (1, "w1:2"), (2, "w1:1")])]);
        assert_eq!(verdict.violation_count, 1);
        assert!(
            verdict.violations[0].contains("w1's record 1"),
            "{verdict:?}"
        );
    }

    #[test]
    fn an_immediate_duplicate_is_not_a_reordering() {
        let verdict = check(&[log(&[(0, "w1:0"), (1, "w1:0"), (2, "w1:1")])]);
        assert!(verdict.passed(), "{verdict:?}");
    }

    #[test]
    fn a_late_duplicate_of_a_retried_request_is_not_a_reordering() {
        // w1 sent 0,1 in one request, it timed out but had been written; the retry wrote
        // both again after other records.
        let verdict = check(&[log(&[
            (0, "w1:0"),
            (1, "w1:1"),
            (2, "w2:0"),
            (3, "w1:0"),
            (4, "w1:1"),
            (5, "w1:2"),
        ])]);
        assert!(verdict.passed(), "{verdict:?}");
    }

    #[test]
    fn offsets_that_do_not_grow_are_a_violation() {
        let verdict = check(&[log(&[(0, "w1:0"), (0, "w1:1")])]);
        assert_eq!(verdict.violation_count, 1);
    }
}
