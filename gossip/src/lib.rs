//! Membership.
//!
//! Will own: SWIM failure detection on foca's sans-IO core behind a thin tokio UDP
//! shell, authenticated and encrypted datagrams under a rotating keyring, membership
//! events, and a small CRDT-merged map of shared state that converges without a leader.
