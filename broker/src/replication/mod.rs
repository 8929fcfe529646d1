//! Partition replication inside a region (DESIGN.md "Data path" 2–3).
//!
//! ```text
//!  leader                                   follower (one fetcher task per partition)
//!  Produce ─▶ Partition::append_as_leader    truncate to HW (once per leader epoch)
//!             │  LeaderState: follower LEOs   │
//!  Fetch(replica_id, leader_epoch, offset) ◀──┤ loop: fetch at own LEO
//!             │  records up to LEO, HW ──────▶│ append (KeepOffsets), HW = min(leader HW, LEO)
//!  HW = min LEO of ISR ─▶ acks=all answers
//!  periodic: desired ISR ─▶ controller AlterIsr (epoch-checked); HW checkpoint files
//! ```
//!
//! The pure rules live in [`state`] ([`LeaderState`]); the async shell is
//! [`fetcher::run_fetcher`] (follower side) and `BrokerNode::run_replication`
//! (ISR proposals and checkpoints). Roles come from the controller's metadata on every
//! reconcile: leader at epoch N, or follower of broker L at epoch N.
//!
//! Divergent tails: a follower that starts following at a new epoch first truncates its
//! log to its high watermark (everything above it may never have been committed), then
//! fetches the rest from the new leader. This is the pre-KIP-101 rule; KIP-101's
//! epoch-based truncation (keeping committed-but-unknown records) is not built yet.

pub mod fetcher;
pub mod state;

use std::time::Duration;

pub use state::LeaderState;

/// Default for how long a follower may go without catching up before it leaves the ISR.
pub const DEFAULT_REPLICA_LAG_MAX: Duration = Duration::from_secs(10);

/// What a producer asked the leader to wait for before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredAcks {
    /// acks=1 (and acks=0, which simply does not wait for the answer): the leader's own
    /// append, durable per the flush policy.
    Leader,
    /// acks=all: every in-sync replica holds it (the high watermark passed it), with at
    /// least `min.insync.replicas` in sync; fails after the timeout otherwise.
    All {
        /// How long to wait for the high watermark before failing.
        timeout: Duration,
    },
}
