//! The crate's single error type.

use std::net::SocketAddr;

/// Everything that can go wrong in membership, keyring handling and the UDP shell.
///
/// Each variant says whether any state changed before it was returned, so a caller
/// knows whether a retry is safe.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// A keyring entry was not valid base64 or not exactly 32 bytes.
    /// Nothing changed: the keyring was not built.
    #[error(
        "gossip key #{index} is invalid: {reason}; expected 32 random bytes encoded as base64 \
         (generate one with `head -c32 /dev/urandom | base64`)"
    )]
    InvalidKey {
        /// Position of the bad key in the list given (0 = primary).
        index: usize,
        /// What was wrong with it.
        reason: String,
    },
    /// The keyring was given no keys at all. Nothing changed.
    #[error("gossip keyring is empty: give at least one base64 key (the first one is the primary)")]
    EmptyKeyring,
    /// A datagram failed authentication under every key in the ring (tampered, or
    /// sent by a node without a shared key). Nothing changed: the datagram was dropped.
    #[error("datagram of {len} bytes failed authentication under all {keys} keys")]
    Unauthenticated {
        /// Size of the rejected datagram.
        len: usize,
        /// How many keys were tried.
        keys: usize,
    },
    /// A datagram was too short or had an unknown format byte. Nothing changed.
    #[error("malformed datagram of {len} bytes: {reason}")]
    Malformed {
        /// Size of the rejected datagram.
        len: usize,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The configuration breaks a rule; the message names the field and the fix.
    /// Nothing changed: no node was started.
    #[error("invalid gossip config: {0}")]
    InvalidConfig(String),
    /// Binding the gossip UDP socket failed. Nothing changed: no task was started.
    #[error(
        "cannot bind gossip UDP socket on {addr}: {source}; is the port in use or the address not local?"
    )]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A shared-state value or key does not fit in one gossip datagram.
    /// Nothing changed: the value was not stored.
    #[error("shared-state entry for key {key:?} is {size} bytes; at most {max} fit in a datagram")]
    EntryTooLarge {
        /// The key given.
        key: String,
        /// Encoded size of the entry.
        size: usize,
        /// Largest encoded entry accepted.
        max: usize,
    },
    /// foca refused an operation (for example, announcing after leaving).
    /// State may have changed partially inside foca; the node keeps running.
    #[error("membership core refused the operation: {0}")]
    Core(String),
    /// The gossip task has stopped (after `leave`, or it panicked). Nothing changed.
    #[error("the gossip task is no longer running")]
    Stopped,
}
