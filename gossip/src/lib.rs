//! Membership for Meridian: SWIM failure detection (foca) behind a thin tokio UDP
//! shell, datagrams authenticated and encrypted under a rotating keyring, membership
//! events, and a small CRDT-merged map of shared state that converges with no leader.
//!
//! ```text
//!   GossipHandle ──mpsc──▶ shell task (one per member) ◀──UDP── peers
//!     members()/get()        │  owns the socket, a timer queue,
//!     subscribe()            │  and one sans-IO `Node`:
//!     set()/join()/leave()   ▼
//!                        Node = foca::Foca (SWIM core, pure)
//!                             + Keyring (ChaCha20-Poly1305 per datagram)
//!                             + StateHandler (custom broadcasts → SharedState)
//!                             + view diff → MembershipEvent, Stats
//!   sim::Sim drives N `Node`s with virtual time, seeded loss/delay/partitions.
//! ```
//!
//! Brokers join their region's gossip (LAN preset); mirror workers join one
//! deployment-wide gossip (WAN preset).

mod config;
mod error;
mod identity;
mod keyring;
mod node;
mod shell;
pub mod sim;
mod state;

pub use config::{GossipConfig, MAX_DATAGRAM};
pub use error::GossipError;
pub use identity::{NodeIdentity, Role};
pub use keyring::{Keyring, OVERHEAD};
pub use node::{Member, MemberState, MembershipEvent, Node, Output, Stats};
pub use shell::{Gossip, GossipHandle};
pub use state::{MAX_ENTRY_BYTES, Marker, SharedState};
