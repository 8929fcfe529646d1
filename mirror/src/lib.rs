//! Mirror workers.
//!
//! Will own: flow planning (which source topics go where, never looping), record
//! copying at the source offsets (offset-preserving, exactly once), checkpoints of group
//! offsets, heartbeats, and failover of consumer groups between regions.

pub mod checkpoint;
pub mod error;
pub mod failover;
pub mod status;
pub mod translate;

pub use error::MirrorError;
