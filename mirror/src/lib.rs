//! Mirror workers: copy topics from one region's cluster into another's, exactly, and
//! move consumer groups between regions at their exact positions.
//!
//! ```text
//!   source region A                       mirror worker (in B)                    target region B
//!   orders-0 leader ──fetch committed──▶  copy::run_partition  ──append at the ──▶ A.orders-0 leader
//!   (stored batches)     batches          (position = remote    same offsets,       (offset-preserving,
//!                                          log end)             acks=all)            gaps allowed)
//! ```
//!
//! - [`plan`]: which source topics a flow mirrors and under which names (pure; loop rules).
//! - [`copy`]: one partition's copy loop and its plain [`copy::Progress`] (gaps, lag).
//! - [`ownership`]: rendezvous hashing of partitions over the region's live workers.
//! - [`heartbeat`]: the per-region heartbeat writer.
//! - [`translate`]: a group's exact positions in the target region (pure).
//! - [`checkpoint`]: durable, continuously followed group positions in the target region.
//! - [`failover`]: `meridian failover`: commit, verify, report.
//! - [`gaps`]: the durable record of retention gaps (`_meridian.gaps.<source>`).
//! - [`metrics`]: the worker's Prometheus metrics (copy progress, lag, latency, checkpoints).
//! - [`status`]: `meridian mirror status`, from the two regions' brokers.
//! - [`worker`]: the `meridian mirror` process shell that ties them together.
//!
//! Exactness comes from the remote partition itself: a batch is stored at its source
//! offsets, so the resume position is the remote log end and a re-sent batch is a no-op.
//! A consumer group's position P on `orders` in A is the same P on `A.orders` in B.

pub mod checkpoint;
pub mod copy;
pub mod error;
pub mod failover;
pub mod gaps;
pub mod heartbeat;
pub mod metrics;
pub mod ownership;
pub mod plan;
pub mod status;
pub mod translate;
pub mod worker;

pub use error::MirrorError;
