//! The mirror crate's one error type.

/// Why a mirror worker could not start or a mirror operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
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
    /// A broker call failed; the operation may be retried.
    #[error("{what}: {source}")]
    Broker {
        /// What the mirror was doing.
        what: String,
        /// The broker client's error.
        source: broker::BrokerError,
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
    move |source| MirrorError::Broker { what, source }
}
