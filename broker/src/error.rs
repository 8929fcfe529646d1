//! The broker crate's one error type, and the stable numeric codes that cross the wire.
//!
//! Each variant says in its doc whether any state changed when it was returned.

use std::path::PathBuf;

/// A stable error code carried on the wire. The numbers are Kafka's, so that operators
/// and Kafka clients read them the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ErrorCode {
    /// No error.
    None = 0,
    /// Something unexpected on the server; the message says what.
    UnknownServerError = -1,
    /// The requested offset is outside the log.
    OffsetOutOfRange = 1,
    /// A batch failed its CRC or is malformed.
    CorruptMessage = 2,
    /// The topic or partition does not exist.
    UnknownTopicOrPartition = 3,
    /// There is no leader for the partition right now.
    LeaderNotAvailable = 5,
    /// This broker does not lead the partition.
    NotLeaderOrFollower = 6,
    /// The request did not complete in time.
    RequestTimedOut = 7,
    /// A batch is larger than max.message.bytes.
    MessageTooLarge = 10,
    /// The topic name is not valid.
    InvalidTopic = 17,
    /// Fewer in-sync replicas than min.insync.replicas.
    NotEnoughReplicas = 19,
    /// Not allowed for this identity on this topic.
    TopicAuthorizationFailed = 29,
    /// The topic exists already.
    TopicAlreadyExists = 36,
    /// The partition count is not valid.
    InvalidPartitions = 37,
    /// The replication factor is not valid.
    InvalidReplicationFactor = 38,
    /// A configuration value is not valid.
    InvalidConfig = 40,
    /// The request is malformed.
    InvalidRequest = 42,
    /// The disk failed under the log.
    KafkaStorageError = 56,
    /// A record inside a batch is not valid.
    InvalidRecord = 87,
}

/// Everything the broker crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A file operation failed. State: the operation did not complete; a partial append
    /// is truncated by recovery at the next start.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed validation (bad CRC, torn write, bad length). State: nothing
    /// changed; recovery decides what to truncate and logs it.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The segment or index file.
        path: PathBuf,
        /// Byte position of the problem in that file.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// A batch sent by a client is malformed or fails its CRC. State: nothing appended.
    #[error("invalid record batch: {reason}")]
    InvalidBatch {
        /// What was wrong with it.
        reason: String,
    },
    /// A batch is larger than the topic's max.message.bytes. State: nothing appended.
    #[error(
        "record batch of {size} bytes exceeds max.message.bytes ({max}); send smaller batches or raise the topic's max_message_bytes"
    )]
    RecordTooLarge {
        /// The batch size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A read asked for an offset outside the log. State: nothing changed.
    #[error(
        "offset {requested} is out of range: the log holds offsets {start} to {end} (exclusive)"
    )]
    OffsetOutOfRange {
        /// The offset that was asked for.
        requested: i64,
        /// The log start offset.
        start: i64,
        /// The log end offset.
        end: i64,
    },
    /// An append at explicit offsets overlaps stored data that differs from it.
    /// State: nothing appended.
    #[error(
        "batch at offsets {base}..={last} is below the log end offset {end} and differs from the stored records"
    )]
    OffsetBelowEnd {
        /// First offset of the rejected batch.
        base: i64,
        /// Last offset of the rejected batch.
        last: i64,
        /// The log end offset.
        end: i64,
    },
    /// A partition log setting is out of range. State: nothing opened or changed.
    #[error("invalid log setting {field}: {reason}")]
    InvalidLogConfig {
        /// The `LogConfig` field at fault.
        field: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// The data directory holds something that is not a Meridian data directory.
    /// State: nothing touched.
    #[error(
        "{path} is not a Meridian data directory ({reason}); point data_dir at an empty or Meridian directory"
    )]
    NotADataDir {
        /// The directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Another running broker holds the data directory. State: nothing touched.
    #[error(
        "data directory {path} is locked by another running broker; stop it or use another data_dir"
    )]
    DataDirLocked {
        /// The directory.
        path: PathBuf,
    },
    /// The topic does not exist. State: nothing changed.
    #[error("unknown topic {topic:?}; create it with `meridian topic create {topic}`")]
    UnknownTopic {
        /// The topic name asked for.
        topic: String,
    },
    /// The partition does not exist in the topic. State: nothing changed.
    #[error("topic {topic:?} has no partition {partition}; it has partitions 0 to {}", count.saturating_sub(1))]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        count: i32,
    },
    /// The topic exists already. State: nothing changed.
    #[error("topic {topic:?} already exists")]
    TopicExists {
        /// The topic.
        topic: String,
    },
    /// A request or its arguments are not valid. State: nothing changed.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// The metadata store failed. State: the change may not be durable.
    #[error("metadata store: {reason}")]
    Metadata {
        /// What failed.
        reason: String,
    },
    /// An error returned by a remote broker, with its code. State: as the code says.
    #[error("{message}")]
    Remote {
        /// The stable code the broker sent.
        code: ErrorCode,
        /// The broker's message.
        message: String,
    },
    /// The connection to a broker failed. State: unknown for requests in flight.
    #[error("cannot reach broker {addr}: {reason}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
}

impl BrokerError {
    /// The stable code sent on the wire for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::Io { .. } => ErrorCode::KafkaStorageError,
            BrokerError::Corrupt { .. } => ErrorCode::KafkaStorageError,
            BrokerError::InvalidBatch { .. } => ErrorCode::CorruptMessage,
            BrokerError::RecordTooLarge { .. } => ErrorCode::MessageTooLarge,
            BrokerError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            BrokerError::OffsetBelowEnd { .. } => ErrorCode::InvalidRecord,
            BrokerError::InvalidLogConfig { .. } => ErrorCode::InvalidConfig,
            BrokerError::NotADataDir { .. } | BrokerError::DataDirLocked { .. } => {
                ErrorCode::KafkaStorageError
            }
            BrokerError::UnknownTopic { .. } | BrokerError::InvalidPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            BrokerError::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
            BrokerError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            BrokerError::Metadata { .. } => ErrorCode::UnknownServerError,
            BrokerError::Remote { code, .. } => *code,
            BrokerError::Unreachable { .. } => ErrorCode::RequestTimedOut,
        }
    }

    /// Shorthand for an I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BrokerError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The broker crate's result type.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
