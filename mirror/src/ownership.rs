//! Who copies what: rendezvous (highest-random-weight) hashing of each source partition
//! over the live mirror workers of the target region. Every worker computes the same
//! answer from the same membership view with no coordination; when a worker dies only
//! its partitions move, spread over the survivors; when it returns they move back.
//!
//! Two workers that briefly disagree (their gossip views differ for a moment) may both
//! copy a partition: that is safe, because appends are offset-preserving and a batch that
//! is already stored is a no-op. It only costs bandwidth until the views agree.

pub use broker::rendezvous::owner;

/// The key of one unit of work, e.g. `us-east->eu-west/orders/3`.
pub fn work_key(flow: &str, topic: &str, partition: i32) -> String {
    format!("{flow}/{topic}/{partition}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_worker_agrees_whatever_the_order_of_its_view() {
        let a = workers(&["m1", "m2", "m3"]);
        let b = workers(&["m3", "m1", "m2"]);
        for p in 0..50 {
            let key = work_key("a->b", "orders", p);
            assert_eq!(owner(&key, &a), owner(&key, &b));
        }
    }

    #[test]
    fn work_spreads_over_workers() {
        let all = workers(&["m1", "m2", "m3"]);
        let mut counts = std::collections::BTreeMap::new();
        for p in 0..300 {
            *counts
                .entry(owner(&work_key("a->b", "orders", p), &all).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|n| *n > 60), "{counts:?}");
    }

    #[test]
    fn only_a_dead_workers_partitions_move() {
        let all = workers(&["m1", "m2", "m3"]);
        let survivors = workers(&["m1", "m3"]);
        for p in 0..100 {
            let key = work_key("a->b", "orders", p);
            let before = owner(&key, &all).unwrap();
            let after = owner(&key, &survivors).unwrap();
            if before != "m2" {
                assert_eq!(before, after, "partition {p} moved needlessly");
            }
        }
    }

    #[test]
    fn no_workers_no_owner() {
        assert_eq!(owner("k", &[]), None);
    }
}
