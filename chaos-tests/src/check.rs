//! The invariant checker: one module per guarantee, each a pure function from what the
//! run observed to a [`Verdict`].
//!
//! | module | guarantee it protects |
//! |---|---|
//! | [`acked_durable`] | no acknowledged (acks=all) record is lost in its region |
//! | [`order`] | per-partition order: a writer's records keep their send order |
//! | [`mirror_exact`] | a remote partition equals the source's committed prefix, field for field |
//! | [`no_loops`] | active/active and chains never mirror a topic back to where it came from |
//! | [`failover_once`] | after a failover the group's deliveries are exactly once |
//! | [`recovery`] | processes recover within their bounds |

pub mod acked_durable;
pub mod failover_once;
pub mod mirror_exact;
pub mod no_loops;
pub mod order;
pub mod recovery;

use serde::{Deserialize, Serialize};

/// How many violations a verdict lists in full; the rest are only counted, so a badly
/// broken run still gives a readable report.
pub const MAX_LISTED: usize = 20;

/// The outcome of checking one invariant: what was checked and every way it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Short name of the invariant (the module name).
    pub invariant: String,
    /// The user-facing guarantee it protects, in one sentence.
    pub guarantee: String,
    /// How many items (records, partitions, topics, ...) were checked: a verdict that
    /// checked nothing proves nothing, and the report shows it.
    pub checked: u64,
    /// Total number of violations found.
    pub violation_count: u64,
    /// The first [`MAX_LISTED`] violations, each a sentence naming where and what.
    pub violations: Vec<String>,
}

impl Verdict {
    /// Starts a verdict for `invariant`; items are counted with [`Verdict::checked_one`].
    pub fn new(invariant: &str, guarantee: &str) -> Self {
        Self {
            invariant: invariant.to_string(),
            guarantee: guarantee.to_string(),
            checked: 0,
            violation_count: 0,
            violations: Vec::new(),
        }
    }

    /// One more item was checked.
    pub fn checked_one(&mut self) {
        self.checked += 1;
    }

    /// Records a violation (listed while fewer than [`MAX_LISTED`] are).
    pub fn violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_LISTED {
            self.violations.push(what);
        }
    }

    /// Passed means: something was checked and nothing was violated.
    pub fn passed(&self) -> bool {
        self.violation_count == 0 && self.checked > 0
    }
}
