//! The mirror crate's one error type.

/// Why a mirror operation (translation, checkpoint, failover) failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A group's committed position is beyond what has been mirrored into the target
    /// region; committing it there would skip records. Nothing was committed.
    #[error(
        "group {group}: {topic}-{partition} is committed at {committed} in the source but \
         only {mirrored} records are mirrored into {target_topic} ({missing} missing); wait \
         for the mirror to catch up or pass --force to accept the loss"
    )]
    NotMirrored {
        /// The group.
        group: String,
        /// The topic in the source region.
        topic: String,
        /// The partition.
        partition: i32,
        /// The topic in the target region.
        target_topic: String,
        /// The group's committed position in the source.
        committed: i64,
        /// The target partition's log end offset.
        mirrored: i64,
        /// Records between the two.
        missing: i64,
    },
    /// A region named on the command line or in a flow is not in the topology, or no
    /// flow links the two regions. Nothing changed.
    #[error("{reason}; fix the topology file or the --from/--to arguments")]
    Topology {
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint record could not be decoded (not written by this version?). Nothing
    /// changed; the record is skipped by readers that tolerate it.
    #[error("checkpoint record {key:?} is not valid: {reason}")]
    BadCheckpoint {
        /// The record key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The target group has active members; committing would race with them. Nothing
    /// was committed.
    #[error("group {group} is active in {region}; stop its consumers there or pass --force")]
    GroupActive {
        /// The group.
        group: String,
        /// The region where it is active.
        region: String,
    },
    /// A broker call failed. Earlier steps of the operation may have completed (e.g. some
    /// checkpoints written); each operation says what it retries.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, MirrorError>;
