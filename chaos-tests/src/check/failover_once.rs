//! Failover exactly once: a consumer group reads part of a topic in region A, fails over
//! with `meridian failover`, and reads the remote copy in region B. Every source record
//! from where the group started to the end of the run is delivered exactly once across
//! both regions: nothing skipped, nothing read twice.

use std::collections::BTreeMap;

use super::Verdict;
use crate::history::{Delivery, PartitionLog};

/// The guarantee, as the report states it.
pub const GUARANTEE: &str = "After meridian failover a group resumes in the target region with \
     zero records skipped and zero re-delivered.";

/// What the failover check found besides its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverFindings {
    /// The verdict.
    pub verdict: Verdict,
    /// Source records never delivered (the RPO of the failover step, in records).
    pub skipped: u64,
    /// Source records delivered more than once.
    pub redelivered: u64,
}

/// Checks one group. `source_logs` are the source partitions the group consumed (region
/// A), `start_offsets` where the group began on each partition (absent = the log start),
/// `remote_topic` maps a remote topic name in B back to its source topic name in A, and
/// `deliveries` are everything the group handed to the application, in both regions.
pub fn check(
    source_logs: &[PartitionLog],
    start_offsets: &BTreeMap<(String, i32), i64>,
    remote_topic: impl Fn(&str) -> Option<String>,
    deliveries: &[Delivery],
) -> FailoverFindings {
    let mut verdict = Verdict::new("failover_once", GUARANTEE);
    // (source topic, partition, offset) -> record ids delivered there
    let mut delivered: BTreeMap<(String, i32, i64), Vec<&str>> = BTreeMap::new();
    for delivery in deliveries {
        let topic = if delivery.from.region == source_region(source_logs) {
            delivery.from.topic.clone()
        } else {
            match remote_topic(&delivery.from.topic) {
                Some(source) => source,
                None => {
                    verdict.violation(format!(
                        "{} offset {} is not a remote copy of a checked source topic",
                        delivery.from, delivery.offset
                    ));
                    continue;
                }
            }
        };
        delivered
            .entry((topic, delivery.from.partition, delivery.offset))
            .or_default()
            .push(delivery.record_id.as_str());
    }
    let (mut skipped, mut redelivered) = (0, 0);
    for log in source_logs {
        let key = (log.id.topic.clone(), log.id.partition);
        let start = start_offsets
            .get(&key)
            .copied()
            .unwrap_or(log.log_start_offset);
        for record in log.records.iter().filter(|r| r.offset >= start) {
            verdict.checked_one();
            let at = (log.id.topic.clone(), log.id.partition, record.offset);
            let expected = record.record_id().unwrap_or("?");
            match delivered.remove(&at).as_deref() {
                None | Some([]) => {
                    skipped += 1;
                    verdict.violation(format!(
                        "{} offset {} ({expected}) was never delivered",
                        log.id, record.offset
                    ));
                }
                Some([one]) if *one == expected => {}
                Some([one]) => verdict.violation(format!(
                    "{} offset {} delivered as {one}, but the source holds {expected}",
                    log.id, record.offset
                )),
                Some(many) => {
                    redelivered += many.len() as u64 - 1;
                    verdict.violation(format!(
                        "{} offset {} ({expected}) was delivered {} times",
                        log.id,
                        record.offset,
                        many.len()
                    ));
                }
            }
        }
    }
    for ((topic, partition, offset), ids) in delivered {
        verdict.violation(format!(
            "{topic}-{partition} offset {offset} ({}) was delivered but is not in the checked \
             range of the source",
            ids.join(",")
        ));
    }
    FailoverFindings {
        verdict,
        skipped,
        redelivered,
    }
}

fn source_region(logs: &[PartitionLog]) -> String {
    logs.first()
        .map(|l| l.id.region.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{PartitionId, StoredRecord};

    fn source(n: i64) -> PartitionLog {
        PartitionLog {
            id: PartitionId::new("a", "orders", 0),
            log_start_offset: 0,
            high_watermark: n,
            records: (0..n)
                .map(|o| StoredRecord {
                    offset: o,
                    timestamp_ms: 0,
                    key: None,
                    value: Some(format!("w1:{o}").into_bytes()),
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn read(region: &str, topic: &str, offsets: std::ops::Range<i64>) -> Vec<Delivery> {
        offsets
            .map(|o| Delivery {
                from: PartitionId::new(region, topic, 0),
                offset: o,
                record_id: format!("w1:{o}"),
            })
            .collect()
    }

    fn remote(topic: &str) -> Option<String> {
        topic.strip_prefix("a.").map(str::to_string)
    }

    #[test]
    fn a_clean_failover_is_exactly_once() {
        let mut got = read("a", "orders", 0..6);
        got.extend(read("b", "a.orders", 6..10));
        let found = check(&[source(10)], &BTreeMap::new(), remote, &got);
        assert!(found.verdict.passed(), "{:?}", found.verdict);
    }

    #[test]
    fn resuming_too_far_skips_records() {
        // MirrorMaker 2's approximate translation can land past the committed position.
        let mut got = read("a", "orders", 0..6);
        got.extend(read("b", "a.orders", 8..10));
        let found = check(&[source(10)], &BTreeMap::new(), remote, &got);
        assert_eq!(found.skipped, 2);
    }

    #[test]
    fn resuming_too_early_redelivers_records() {
        let mut got = read("a", "orders", 0..6);
        got.extend(read("b", "a.orders", 4..10));
        let found = check(&[source(10)], &BTreeMap::new(), remote, &got);
        assert_eq!(found.redelivered, 2);
        assert!(!found.verdict.passed());
    }

    #[test]
    fn a_group_that_started_midway_is_checked_from_its_start() {
        let mut got = read("a", "orders", 3..6);
        got.extend(read("b", "a.orders", 6..10));
        let starts = [(("orders".to_string(), 0), 3)].into_iter().collect();
        let found = check(&[source(10)], &starts, remote, &got);
        assert!(found.verdict.passed(), "{:?}", found.verdict);
    }
}
