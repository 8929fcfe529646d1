//! What a run observed, as plain data: the checker's only input.
//!
//! Records are identified by where they live (topic, partition, offset) and by the
//! workload's own record id (carried in the value), so that loss, duplication and
//! reordering can be told apart.

use serde::{Deserialize, Serialize};

/// A partition of a topic in one region: where a record lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    /// Region whose cluster holds the partition.
    pub region: String,
    /// Topic name as it exists in that region (a remote topic keeps its prefix).
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl PartitionId {
    /// Shorthand used by the harness and the tests.
    pub fn new(region: &str, topic: &str, partition: i32) -> Self {
        Self {
            region: region.to_string(),
            topic: topic.to_string(),
            partition,
        }
    }
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}-{}", self.region, self.topic, self.partition)
    }
}

/// A record as read back from a partition: every field a mirror must preserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Offset in the partition.
    pub offset: i64,
    /// Record timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// Record key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value, if any (the workload puts its record id here).
    pub value: Option<Vec<u8>>,
    /// Record headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl StoredRecord {
    /// The workload's record id, when the value is one (UTF-8).
    pub fn record_id(&self) -> Option<&str> {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A full read of one partition's committed log (below its high watermark) at the end of
/// a run, after the faults have healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLog {
    /// Which partition was read.
    pub id: PartitionId,
    /// Log start offset when it was read (records below were deleted by retention).
    pub log_start_offset: i64,
    /// High watermark when it was read: the end of the committed log.
    pub high_watermark: i64,
    /// Every record from the log start to the high watermark, in offset order.
    pub records: Vec<StoredRecord>,
}

/// A write the cluster acknowledged with acks=all: the promise the checker holds it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The workload's unique record id (also the record's value).
    pub record_id: String,
    /// Where the cluster said it stored the record.
    pub at: PartitionId,
    /// The offset the cluster acknowledged.
    pub offset: i64,
}

/// One record a consumer group delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The partition it was read from (a remote topic after a failover).
    pub from: PartitionId,
    /// Its offset there.
    pub offset: i64,
    /// The workload's record id read from the value.
    pub record_id: String,
}

/// Builds the workload's record id: the writer's name and its send sequence number, so
/// the checker can tell per-writer order from the ids alone.
pub fn record_id(writer: &str, sequence: u64) -> String {
    format!("{writer}:{sequence}")
}

/// Splits a record id made by [`record_id`] into writer and sequence number.
pub fn parse_record_id(id: &str) -> Option<(&str, u64)> {
    let (writer, sequence) = id.rsplit_once(':')?;
    Some((writer, sequence.parse().ok()?))
}
