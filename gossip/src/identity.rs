//! Who a member is: the identity foca gossips about.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What a member does in the deployment; mirror workers and brokers watch
/// different subsets of the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// A broker serving partitions in its region.
    Broker,
    /// A mirror worker copying records between regions.
    Mirror,
}

/// A member's identity as carried in every SWIM message.
///
/// It exists so that peers learn, from gossip alone, where to reach a member
/// (gRPC, Kafka, metrics) and which restart of it they are talking to: the
/// `incarnation` grows on each restart or rejoin, so stale news about an old
/// incarnation never shadows the live one.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Unique member name within the deployment (e.g. `eu-1`).
    pub name: String,
    /// Region the member lives in.
    pub region: String,
    /// What the member does.
    pub role: Role,
    /// UDP address peers send gossip to; this is foca's `Addr`.
    pub gossip_addr: SocketAddr,
    /// Advertised gRPC endpoint, if any.
    pub grpc: Option<String>,
    /// Advertised Kafka endpoint, if any.
    pub kafka: Option<String>,
    /// Advertised metrics endpoint, if any.
    pub metrics: Option<String>,
    /// Restart generation: higher wins an address conflict.
    pub incarnation: u64,
}

impl NodeIdentity {
    /// A member identity with no advertised service endpoints, incarnation 1.
    pub fn new(
        name: impl Into<String>,
        region: impl Into<String>,
        role: Role,
        gossip_addr: SocketAddr,
    ) -> Self {
        Self {
            name: name.into(),
            region: region.into(),
            role,
            gossip_addr,
            grpc: None,
            kafka: None,
            metrics: None,
            incarnation: 1,
        }
    }

    /// A placeholder for a seed known only by address, used to announce to it.
    /// foca accepts an announce whose destination has the right address, so the
    /// other fields do not matter; incarnation 0 loses every conflict.
    pub fn seed(gossip_addr: SocketAddr) -> Self {
        Self {
            name: String::new(),
            region: String::new(),
            role: Role::Broker,
            gossip_addr,
            grpc: None,
            kafka: None,
            metrics: None,
            incarnation: 0,
        }
    }

    /// Same identity with the next incarnation: what a restarted node uses to
    /// rejoin after the cluster declared its previous incarnation down.
    pub fn next_incarnation(&self) -> Self {
        let mut next = self.clone();
        next.incarnation = self.incarnation.wrapping_add(1).max(1);
        next
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}#{}({})",
            self.name, self.gossip_addr, self.incarnation, self.region
        )
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(self.next_incarnation())
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id() -> NodeIdentity {
        NodeIdentity::new("a", "eu", Role::Broker, "127.0.0.1:7000".parse().unwrap())
    }

    #[test]
    fn renew_raises_incarnation_and_wins_conflict() {
        let old = id();
        let new = old.renew().unwrap();
        assert_eq!(new.incarnation, old.incarnation + 1);
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn identity_round_trips_through_postcard() {
        let mut a = id();
        a.grpc = Some("10.0.0.1:9000".into());
        let bytes = postcard::to_allocvec(&a).unwrap();
        let back: NodeIdentity = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(a, back);
    }
}
