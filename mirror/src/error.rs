//! The mirror crate's one error type.

/// Why a mirror worker could not start, or a mirror operation (translation,
/// checkpoint, failover) failed.
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
    /// A broker call failed during a step the message names; the worker retries it.
    #[error("{what}: {source}")]
    BrokerCall {
        /// What the mirror was doing.
        what: String,
        /// The broker client's error.
        source: broker::BrokerError,
    },
    /// The worker's TLS material is missing or unusable; nothing was started.
    #[error("mirror TLS: {reason}")]
    Tls {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The node is not a mirror worker of the deployment; nothing was started.
    #[error(
        "{node} is not a mirror worker in the deployment file (mirrors are listed under [[regions.mirrors]])"
    )]
    NotAMirror {
        /// region/name as given.
        node: String,
    },
    /// The deployment has no enabled flow into this worker's region; nothing to do.
    #[error(
        "no enabled flow targets region {region}; add a [[flows]] entry with target = \"{region}\""
    )]
    NoFlows {
        /// The worker's region.
        region: String,
    },
    /// Gossip could not start (address in use, bad keyring); nothing was started.
    #[error("cannot join the mirror gossip on {addr}: {reason}")]
    Gossip {
        /// The gossip address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A filter regex in the deployment file does not compile (validation normally
    /// catches this first).
    #[error("flow {flow}: bad topic filter: {reason}")]
    BadFilter {
        /// The flow.
        flow: String,
        /// The regex error.
        reason: String,
    },
}

/// Shorthand for broker errors with context.
pub(crate) fn broker(what: impl Into<String>) -> impl FnOnce(broker::BrokerError) -> MirrorError {
    let what = what.into();
    move |source| MirrorError::BrokerCall { what, source }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, MirrorError>;
