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

pub mod access;
pub mod client;
pub mod controller;
pub mod data_dir;
pub mod error;
pub mod group;
pub mod kafka;
pub mod log;
pub mod node;
pub mod partition;
pub mod record;
pub mod rendezvous;
pub mod replication;
pub mod server;
pub mod telemetry;
pub mod topic_config;
pub mod transport;

pub use error::{BrokerError, ErrorCode};

/// Generated gRPC types and services (broker/proto/meridian.proto).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("meridian.broker.v1");
}

/// Generated gRPC types and services of the controller quorum (broker/proto/controller.proto).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod controller_proto {
    tonic::include_proto!("meridian.controller.v1");
}
