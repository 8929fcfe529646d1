//! One broker.
//!
//! ```text
//!  producers ──Produce──▶ server ──append──▶ log::PartitionLog ──▶ segment files
//!  consumers ◀──Fetch─── server ◀──read──── log::PartitionLog
//!  record:  client-side batch building/decoding and the Kafka partitioner
//! ```
//!
//! Owns the partition log on disk, the in-region cluster (controller quorum,
//! replication, leader election), the client-facing APIs (gRPC and the Kafka wire
//! protocol), consumer groups, and `broker::client`, the typed client every other crate
//! uses to speak to brokers.

pub mod error;
pub mod log;
pub mod record;

pub use error::{BrokerError, ErrorCode};
