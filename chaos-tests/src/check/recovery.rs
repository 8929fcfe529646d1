//! Processes recover within bounds: after a fault heals, each observed recovery (a new
//! leader serving, a restarted broker back in the ISR, a mirror caught up again, a
//! worker's partitions taken over) happens within its bound, and none is left pending.

use serde::{Deserialize, Serialize};

use super::Verdict;

/// The guarantee, as the report states it.
pub const GUARANTEE: &str =
    "After every fault heals, the deployment returns to full service within its bounds.";

/// One recovery the harness timed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// What recovered, e.g. "leader of orders-1 after kill -9 of us-east/b2".
    pub what: String,
    /// How long it took, in milliseconds; `None` when it never recovered in the run.
    pub took_ms: Option<u64>,
    /// The bound it is held to, in milliseconds.
    pub bound_ms: u64,
}

/// Checks every recovery against its bound.
pub fn check(recoveries: &[Recovery]) -> Verdict {
    let mut verdict = Verdict::new("recovery", GUARANTEE);
    for recovery in recoveries {
        verdict.checked_one();
        match recovery.took_ms {
            None => verdict.violation(format!("{}: never recovered", recovery.what)),
            Some(took) if took > recovery.bound_ms => verdict.violation(format!(
                "{}: took {took} ms, bound {} ms",
                recovery.what, recovery.bound_ms
            )),
            Some(_) => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_or_missing_recoveries_are_violations() {
        let verdict = check(&[
            Recovery {
                what: "fast".into(),
                took_ms: Some(900),
                bound_ms: 5_000,
            },
            Recovery {
                what: "slow".into(),
                took_ms: Some(9_000),
                bound_ms: 5_000,
            },
            Recovery {
                what: "never".into(),
                took_ms: None,
                bound_ms: 5_000,
            },
        ]);
        assert_eq!(verdict.violation_count, 2);
        assert_eq!(verdict.checked, 3);
    }
}
