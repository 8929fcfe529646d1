//! The harness's one error type.

/// Why a chaos run could not be carried out (as opposed to a guarantee found broken,
/// which is a failed verdict in the report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The `meridian` binary was not found; nothing was started.
    #[error(
        "cannot find the meridian binary at {path}: build it first (cargo build --bin meridian) or set MERIDIAN_BIN"
    )]
    BinaryMissing {
        /// Where it was looked for.
        path: String,
    },
    /// A file or process operation failed; processes already started are stopped.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A node did not come up in time; its log tail says why.
    #[error("{node} did not become ready within {seconds} s; last log lines:\n{log_tail}")]
    NotReady {
        /// region/name.
        node: String,
        /// How long the harness waited.
        seconds: u64,
        /// The end of the node's log.
        log_tail: String,
    },
    /// A client call to the cluster failed where the harness needed it to succeed
    /// (set-up or the final read, after every fault healed).
    #[error("{what}: {source}")]
    Cluster {
        /// What the harness was doing.
        what: String,
        /// The broker client's error.
        source: broker::BrokerError,
    },
    /// Regions were asked to run in network namespaces and this machine cannot make them.
    #[error("cannot put the regions in network namespaces: {why} (run with --network loopback)")]
    NetworkUnavailable {
        /// What is missing.
        why: String,
    },
    /// The scenario name is not known.
    #[error("unknown scenario {name:?}; known: {known}")]
    UnknownScenario {
        /// What was asked for.
        name: String,
        /// The known names.
        known: String,
    },
}

/// Shorthand for I/O failures with context.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |source| ChaosError::Io { what, source }
}
