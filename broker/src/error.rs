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
    /// The peer does not support this request or version (UNSUPPORTED_VERSION).
    UnsupportedVersion = 35,
    /// An idempotent producer's batch does not follow its previous one.
    OutOfOrderSequenceNumber = 45,
    /// An idempotent producer wrote with an epoch older than the partition has seen.
    InvalidProducerEpoch = 47,
    /// The partition count is not valid.
    InvalidPartitions = 37,
    /// The replication factor is not valid.
    InvalidReplicationFactor = 38,
    /// A configuration value is not valid.
    InvalidConfig = 40,
    /// This node cannot serve the controller request (no controller leader reachable).
    NotController = 41,
    /// The request is malformed.
    InvalidRequest = 42,
    /// The disk failed under the log.
    KafkaStorageError = 56,
    /// A partition leader acted under a leader epoch that is no longer current.
    FencedLeaderEpoch = 74,
    /// The batch uses a compression codec this build cannot read or write.
    UnsupportedCompressionType = 76,
    /// A broker acted under a registration (broker epoch) that is no longer current.
    StaleBrokerEpoch = 77,
    /// A record inside a batch is not valid.
    InvalidRecord = 87,
    /// The group coordinator is not available (the group is being unloaded or deleted).
    CoordinatorNotAvailable = 15,
    /// This broker is not the coordinator of the group.
    NotCoordinator = 16,
    /// The generation in a group request is not the group's current one.
    IllegalGeneration = 22,
    /// The member's protocol type or protocols do not match the group's.
    InconsistentGroupProtocol = 23,
    /// The group id is empty or otherwise not valid.
    InvalidGroupId = 24,
    /// The member id is not a member of the group.
    UnknownMemberId = 25,
    /// The session timeout is outside the broker's allowed range.
    InvalidSessionTimeout = 26,
    /// The group is rebalancing; the member must rejoin.
    RebalanceInProgress = 27,
    /// The group is not empty, so it cannot be deleted.
    NonEmptyGroup = 68,
    /// The group does not exist.
    GroupIdNotFound = 69,
    /// A new member must rejoin with the member id the coordinator handed out (KIP-394).
    MemberIdRequired = 79,
    /// The group already has as many members as the coordinator allows.
    GroupMaxSizeReached = 81,
    /// Another client uses the same static member id (group.instance.id).
    FencedInstanceId = 82,
}

impl ErrorCode {
    /// Every code, for decoding numbers that came over the wire.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::None,
        ErrorCode::UnknownServerError,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::MessageTooLarge,
        ErrorCode::InvalidTopic,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::TopicAuthorizationFailed,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::UnsupportedVersion,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidConfig,
        ErrorCode::NotController,
        ErrorCode::InvalidRequest,
        ErrorCode::KafkaStorageError,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::StaleBrokerEpoch,
        ErrorCode::InvalidRecord,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::IllegalGeneration,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::InvalidGroupId,
        ErrorCode::UnknownMemberId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::RebalanceInProgress,
        ErrorCode::NonEmptyGroup,
        ErrorCode::GroupIdNotFound,
        ErrorCode::MemberIdRequired,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
        ErrorCode::UnsupportedCompressionType,
    ];

    /// The number sent on the wire.
    pub fn as_i32(self) -> i32 {
        i32::from(self as i16)
    }

    /// Decodes a wire number; numbers this build does not know read as UnknownServerError.
    pub fn from_i32(code: i32) -> ErrorCode {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_i32() == code)
            .unwrap_or(ErrorCode::UnknownServerError)
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::LeaderNotAvailable
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotController
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
        )
    }
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
    /// A checkpoint file (the leader-epoch cache) is malformed. State: the file is left
    /// as it is; the log rebuilds what it held from the batches' epochs.
    #[error("checkpoint {path} is malformed: {reason}")]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong, with the line.
        reason: String,
    },
    /// An idempotent producer's batch skips sequence numbers (a batch in between was
    /// lost). State: nothing appended; the producer must fail the gap's records.
    #[error(
        "producer {producer_id} sent sequence {got} but the partition expects {expected}: a batch in between is missing"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence that would follow the last written batch.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// An idempotent producer wrote with an epoch older than one already seen (a newer
    /// incarnation of it exists). State: nothing appended.
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch it sent.
        epoch: i16,
        /// The newest epoch seen.
        current: i16,
    },
    /// A batch sent by a client is malformed or fails its CRC. State: nothing appended.
    #[error("invalid record batch: {reason}")]
    InvalidBatch {
        /// What was wrong with it.
        reason: String,
    },
    /// A record batch received from a broker (a fetch) fails its CRC, has a wrong magic
    /// byte or cannot be decoded. State: nothing changed; the caller's position is not
    /// advanced past the batch.
    #[error(
        "record batch at offset {offset} is corrupt: {reason}; the data was damaged in storage or transit, re-fetch from that offset"
    )]
    CorruptBatch {
        /// Base offset of the damaged batch, as written in its header.
        offset: i64,
        /// What was wrong with it.
        reason: String,
    },
    /// A batch asks for a compression codec that is not compiled into this build.
    /// State: nothing encoded, decoded or appended.
    #[error(
        "compression codec {codec} is not supported by this build (supported: {supported}); use one of those, or enable the codec's kafka-protocol feature"
    )]
    UnsupportedCompression {
        /// The codec asked for (or found in a batch header).
        codec: String,
        /// The codecs this build supports, comma-separated.
        supported: String,
    },
    /// A single record is larger than the producer's whole buffer memory, so it could never
    /// be accepted however long the caller waits. State: nothing buffered.
    #[error(
        "record of about {size} bytes is larger than the producer buffer ({buffer_memory} bytes); raise buffer_memory or send a smaller record"
    )]
    RecordLargerThanBuffer {
        /// Estimated encoded size of the record in its own batch.
        size: usize,
        /// The configured buffer memory.
        buffer_memory: usize,
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
    /// A topic config key or value is not valid. State: nothing changed.
    #[error("invalid topic config {key}={value}: {reason}")]
    InvalidConfig {
        /// The config name.
        key: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A partition stopped taking writes (shutdown, or a failed fsync: data since the last
    /// good sync cannot be trusted). State: the append may be in the page cache but was
    /// not acknowledged; recovery re-validates it at the next start.
    #[error("partition {partition} is offline: {reason}")]
    PartitionOffline {
        /// `topic-partition`, when known.
        partition: String,
        /// Why.
        reason: String,
    },
    /// The replication factor cannot be met. State: nothing changed.
    #[error(
        "replication factor {requested} cannot be met: {available} broker(s) can hold replicas in this region"
    )]
    InvalidReplicationFactor {
        /// The factor asked for.
        requested: i32,
        /// Brokers available.
        available: i32,
    },
    /// A topic name breaks the naming rules. State: nothing changed.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
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
    /// The region's controller quorum has no leader that this node can reach, so a
    /// metadata change cannot be committed. State: the command was not confirmed; if it
    /// reached a leader that later regains its quorum it may still be applied, so
    /// retrying is safe only for idempotent commands. Committed metadata stays readable.
    #[error(
        "the controller quorum of region {region} has no leader: {reachable} of {voters} voters reachable; a majority of {} must run for metadata changes (restart the stopped controller brokers)",
        voters / 2 + 1
    )]
    ControllerUnavailable {
        /// The region.
        region: String,
        /// Voters this node could reach (itself included).
        reachable: usize,
        /// Voters in the quorum.
        voters: usize,
    },
    /// A partition leader proposed a change under a stale leader epoch (it was replaced).
    /// State: nothing changed.
    #[error(
        "{topic}-{partition}: broker {leader_id} acted at leader epoch {given} but the partition is at epoch {current}; refresh metadata and stop acting as leader"
    )]
    StaleLeaderEpoch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The broker that proposed.
        leader_id: u64,
        /// The epoch it used.
        given: i32,
        /// The current epoch.
        current: i32,
    },
    /// A broker acted under a registration epoch that is not its current one (it was
    /// replaced by a newer incarnation). State: nothing changed.
    #[error(
        "broker {broker} used broker epoch {given} but its current epoch is {current}; it must register again"
    )]
    StaleBrokerEpoch {
        /// The broker.
        broker: u64,
        /// The epoch it used.
        given: i64,
        /// The current epoch.
        current: i64,
    },
    /// The controller refused a command as malformed or impossible (unknown broker or
    /// partition, bad config value). State: nothing changed.
    #[error("the controller refused the command: {reason}")]
    ControllerRejected {
        /// Why.
        reason: String,
    },
    /// A controller setting is not valid. State: nothing started or opened.
    #[error("invalid controller setting {field}: {reason}")]
    InvalidControllerConfig {
        /// The `ControllerConfig` field at fault.
        field: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// The controller's Raft node or its storage failed, or it was shut down.
    /// State: unknown for a proposal in flight; committed metadata is intact on disk.
    #[error("controller: {reason}")]
    Controller {
        /// What failed.
        reason: String,
    },
    /// The connection to a broker failed. State: unknown for requests in flight.
    #[error("cannot reach broker {addr}: {reason}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// A group id is empty. State: nothing changed.
    #[error("invalid group id {group:?}: a group id must not be empty; pass a non-empty --group")]
    InvalidGroupId {
        /// The group id given.
        group: String,
    },
    /// The member is not (or no longer) a member of the group: it left, its session
    /// expired, or it was evicted for not rejoining in time. State: nothing changed; the
    /// client must join again with an empty member id.
    #[error(
        "member {member_id:?} is not a member of group {group:?}; it left or timed out, join again with an empty member id"
    )]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id given.
        member_id: String,
    },
    /// The generation given is not the group's current generation (a rebalance happened
    /// since). State: nothing changed; the client must rejoin.
    #[error(
        "generation {generation} of group {group:?} is stale (current generation is {current}); rejoin the group"
    )]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The generation the member sent.
        generation: i32,
        /// The group's current generation.
        current: i32,
    },
    /// The group is rebalancing. State: for a heartbeat, the member's session was
    /// refreshed; otherwise nothing changed. The member must send JoinGroup again.
    #[error("group {group:?} is rebalancing; rejoin the group")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },
    /// The member's protocol type or protocols do not fit the group. State: nothing changed.
    #[error("inconsistent group protocol for group {group:?}: {reason}")]
    InconsistentGroupProtocol {
        /// The group.
        group: String,
        /// What does not match, and what the group uses.
        reason: String,
    },
    /// The session timeout is outside the coordinator's allowed range. State: nothing changed.
    #[error(
        "session timeout {timeout_ms} ms is not allowed; use a value between {min_ms} ms and {max_ms} ms"
    )]
    InvalidSessionTimeout {
        /// The timeout asked for.
        timeout_ms: u64,
        /// The smallest allowed.
        min_ms: u64,
        /// The largest allowed.
        max_ms: u64,
    },
    /// The group's coordinator cannot serve it right now (the group is being deleted or
    /// unloaded). State: nothing changed; retry after finding the coordinator again.
    #[error("the coordinator of group {group:?} is not available; retry")]
    CoordinatorNotAvailable {
        /// The group.
        group: String,
    },
    /// This broker no longer coordinates the group (it resigned or moved). State: the
    /// request was dropped; find the coordinator again and retry.
    #[error("this broker is not the coordinator of group {group:?}; find the coordinator again")]
    NotCoordinator {
        /// The group.
        group: String,
    },
    /// A first join without a member id, from a client that supports KIP-394: the
    /// coordinator handed out `member_id` and waits for the client to join again with it.
    /// State: the member id is reserved until the session timeout passes.
    #[error("group {group:?} requires a member id; join again with member id {member_id:?}")]
    MemberIdRequired {
        /// The group.
        group: String,
        /// The member id to join with.
        member_id: String,
    },
    /// The group does not exist. State: nothing changed.
    #[error("group {group:?} does not exist; `meridian groups list` shows the groups")]
    GroupNotFound {
        /// The group asked for.
        group: String,
    },
    /// A new member asked to join a group that is full. State: nothing changed.
    #[error(
        "group {group:?} is full ({max} members); stop a consumer or raise the coordinator's max group size"
    )]
    GroupMaxSizeReached {
        /// The group.
        group: String,
        /// The configured maximum.
        max: usize,
    },
    /// A static member (KIP-345) was replaced by a newer client with the same
    /// `group.instance.id`; the older one must stop. State: nothing changed.
    #[error(
        "member {member_id:?} of group {group:?} was fenced: another client joined with group.instance.id {instance_id:?}; give each consumer its own instance id"
    )]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The static instance id.
        instance_id: String,
        /// The member id the fenced client used.
        member_id: String,
    },
    /// The group still has members, so it cannot be deleted. State: nothing changed.
    #[error("group {group:?} still has {members} member(s); stop its consumers before deleting it")]
    NonEmptyGroup {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },
}

impl BrokerError {
    /// The stable code sent on the wire for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::Io { .. } => ErrorCode::KafkaStorageError,
            BrokerError::Corrupt { .. } => ErrorCode::KafkaStorageError,
            BrokerError::InvalidBatch { .. } => ErrorCode::CorruptMessage,
            BrokerError::CorruptBatch { .. } => ErrorCode::CorruptMessage,
            BrokerError::UnsupportedCompression { .. } => ErrorCode::UnsupportedCompressionType,
            BrokerError::RecordTooLarge { .. } | BrokerError::RecordLargerThanBuffer { .. } => {
                ErrorCode::MessageTooLarge
            }
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
            BrokerError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            BrokerError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            BrokerError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            BrokerError::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            BrokerError::PartitionOffline { .. } | BrokerError::CorruptCheckpoint { .. } => {
                ErrorCode::KafkaStorageError
            }
            BrokerError::InvalidTopicName { .. } => ErrorCode::InvalidTopic,
            BrokerError::Metadata { .. } => ErrorCode::UnknownServerError,
            BrokerError::Remote { code, .. } => *code,
            BrokerError::Unreachable { .. } => ErrorCode::RequestTimedOut,
            BrokerError::ControllerUnavailable { .. } => ErrorCode::NotController,
            BrokerError::StaleLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            BrokerError::StaleBrokerEpoch { .. } => ErrorCode::StaleBrokerEpoch,
            BrokerError::ControllerRejected { .. } => ErrorCode::InvalidRequest,
            BrokerError::InvalidControllerConfig { .. } => ErrorCode::InvalidConfig,
            BrokerError::Controller { .. } => ErrorCode::UnknownServerError,
            BrokerError::InvalidGroupId { .. } => ErrorCode::InvalidGroupId,
            BrokerError::UnknownMember { .. } => ErrorCode::UnknownMemberId,
            BrokerError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
            BrokerError::RebalanceInProgress { .. } => ErrorCode::RebalanceInProgress,
            BrokerError::InconsistentGroupProtocol { .. } => ErrorCode::InconsistentGroupProtocol,
            BrokerError::InvalidSessionTimeout { .. } => ErrorCode::InvalidSessionTimeout,
            BrokerError::CoordinatorNotAvailable { .. } => ErrorCode::CoordinatorNotAvailable,
            BrokerError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
            BrokerError::MemberIdRequired { .. } => ErrorCode::MemberIdRequired,
            BrokerError::GroupNotFound { .. } => ErrorCode::GroupIdNotFound,
            BrokerError::NonEmptyGroup { .. } => ErrorCode::NonEmptyGroup,
            BrokerError::GroupMaxSizeReached { .. } => ErrorCode::GroupMaxSizeReached,
            BrokerError::FencedInstanceId { .. } => ErrorCode::FencedInstanceId,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_decodes_back_from_its_wire_number() {
        let source = include_str!("error.rs");
        let start = source.find("pub enum ErrorCode").expect("enum");
        let end = source[start..].find("\n}").expect("enum end") + start;
        let declared = source[start..end]
            .lines()
            .filter(|l| l.trim_end().ends_with(',') && l.contains(" = "))
            .count();
        assert_eq!(
            ErrorCode::ALL.len(),
            declared,
            "ErrorCode::ALL misses a declared code"
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_i32(code.as_i32()), *code);
        }
    }
}
