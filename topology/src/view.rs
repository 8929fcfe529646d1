//! A node's resolved view: everything one broker or mirror needs, paths made absolute.
//!
//! Nodes never walk the whole deployment themselves: `meridian broker --node us-east/b1`
//! asks for its view once and wires itself from it, so "which peers, which quorum, which
//! certificate" is decided here, in one place, and tested here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::{
    Broker, ClusterSettings, Flow, GossipKey, GossipProfile, TlsListeners, TopicDefaults,
};

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Stores partitions and serves clients.
    Broker,
    /// Copies records into its region for flows that target it.
    Mirror,
}

/// A broker as its peers (and mirrors of other regions) need to see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerView {
    /// Broker name in its region.
    pub name: String,
    /// Deployment-wide broker id.
    pub id: u64,
    /// gRPC address (replication, controller, clients).
    pub grpc_addr: SocketAddr,
    /// Kafka wire-protocol address, if it has one.
    pub kafka_addr: Option<SocketAddr>,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
}

impl From<&Broker> for BrokerView {
    fn from(b: &Broker) -> Self {
        BrokerView {
            name: b.name.clone(),
            id: b.id,
            grpc_addr: b.grpc,
            kafka_addr: b.kafka,
            gossip_addr: b.gossip,
            metrics_addr: b.metrics,
        }
    }
}

/// The TLS material and listener modes of one node, paths absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsView {
    /// CA certificate that every peer's certificate must chain to.
    pub ca: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// Listener modes.
    pub listeners: TlsListeners,
}

/// The gossip settings of one node: membership needs the keys and the timing preset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GossipView {
    /// Keys; the first encrypts, all decrypt. Serialised redacted.
    #[serde(serialize_with = "redact_keys")]
    pub keyring: Vec<GossipKey>,
    /// Timing preset.
    pub profile: GossipProfile,
}

/// Everything one node needs to start, resolved from the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Deployment name, for logs and metrics labels.
    pub deployment: String,
    /// The node's region.
    pub region: String,
    /// The node's name in its region.
    pub name: String,
    /// Broker or mirror.
    pub role: Role,
    /// Brokers: deployment-wide id. Mirrors: none.
    pub broker_id: Option<u64>,
    /// Brokers: gRPC listener. Mirrors: none.
    pub grpc_addr: Option<SocketAddr>,
    /// Brokers with a Kafka listener: its address.
    pub kafka_addr: Option<SocketAddr>,
    /// Gossip listener.
    pub gossip_addr: SocketAddr,
    /// Metrics listener.
    pub metrics_addr: SocketAddr,
    /// Brokers: absolute data directory. Mirrors: none (their state lives in the brokers).
    pub data_dir: Option<PathBuf>,
    /// Every broker of the node's region, itself included, in file order.
    pub region_brokers: Vec<BrokerView>,
    /// The region's controller voters.
    pub controller_quorum: Vec<BrokerView>,
    /// Where to join the region's gossip.
    pub gossip_seeds: Vec<SocketAddr>,
    /// Mirrors: the flows whose target is this region. Brokers: empty.
    pub flows_served: Vec<Flow>,
    /// Mirrors: the brokers of each source region of `flows_served`, so the mirror can
    /// reach them without reading the deployment again. Brokers: empty.
    pub source_brokers: BTreeMap<String, Vec<BrokerView>>,
    /// TLS paths and modes.
    pub tls: TlsView,
    /// Gossip keys and preset.
    pub gossip: GossipView,
    /// Defaults for new topics.
    pub topic_defaults: TopicDefaults,
    /// Failure-detection timing of the region's cluster.
    pub cluster: ClusterSettings,
    /// Remote topics are `<source><separator><topic>`.
    pub remote_topic_separator: String,
    /// Every flow into or out of the node's region: whose mirrors may act here.
    pub region_flows: Vec<Flow>,
    /// Client access rules.
    pub acls: Vec<crate::model::Acl>,
}

/// Joins a path written in the file to the file's directory, unless already absolute.
pub(crate) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

impl NodeView {
    /// Renders the view as TOML for `meridian config show`; gossip keys are redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a NodeView has only TOML-representable values")
    }
}

/// The serde form of a view is for people and scripts, never for moving secrets: keys
/// are shown as a count.
fn redact_keys<S: serde::Serializer>(keys: &[GossipKey], ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format!("<{} key(s), redacted>", keys.len()))
}
