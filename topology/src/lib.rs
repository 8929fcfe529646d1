//! The deployment file.
//!
//! One TOML file describes a whole Meridian deployment: regions, their brokers and
//! controller quorums, mirror flows between regions, TLS material, the gossip keyring
//! and topic defaults. Every node and every operator tool reads it through this crate,
//! so that validation happens once, in one place, with errors that name file, line and
//! column.
//!
//! ```text
//! load(path) ─▶ parse(text, origin) ─▶ Topology ─node("REGION/NAME")─▶ NodeView
//!                    │                    │
//!            Problem{file,line,col}    to_toml() ─▶ the same file format again
//! ```
//!
//! Modules: `schema` (the file as written, spans kept), `validate` (every rule, every
//! problem collected), `model` (typed, validated values), `view` (one node's resolved
//! view), `units` (durations and sizes), `error`.

mod error;
mod model;
mod schema;
mod units;
mod validate;
mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{Problem, TopologyError};
pub use model::{
    Acl, Broker, ClusterSettings, CompiledFilter, Deployment, Filter, Flow, FlushPolicy, Gossip,
    GossipKey, GossipProfile, Mirror, Region, Tls, TlsListeners, TlsMode, TopicDefaults,
};
pub use units::{format_duration, format_size, parse_duration, parse_size};
pub use validate::ACL_ACTIONS;
pub use view::{BrokerView, GossipView, NodeView, Role, TlsView};

/// Reads, parses and validates a deployment file.
///
/// The one entry point nodes and tools use, so that nobody runs on a file that has not
/// passed every rule. Relative paths in the file resolve against its directory.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates deployment-file text. `origin` is the file's path: problems name
/// it, and relative paths in the file resolve against its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Topology, TopologyError> {
    validate::parse_document(text, origin)
}

/// A validated deployment.
///
/// Its serde form is the deployment-file format itself. Built by [`parse`]/[`load`] it
/// has passed every rule; built by hand (as `meridian dev` does) it has not until it goes
/// through `parse(&topology.to_toml(), origin)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Name and naming policy.
    pub deployment: Deployment,
    /// TLS material and listener modes.
    #[serde(default)]
    pub tls: Tls,
    /// Gossip keyring and preset.
    pub gossip: Gossip,
    /// Defaults for new topics.
    #[serde(default)]
    pub topic_defaults: TopicDefaults,
    /// Failure-detection timing of every region's cluster.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// Regions, in file order.
    pub regions: Vec<Region>,
    /// Mirror flows, in file order.
    #[serde(default)]
    pub flows: Vec<Flow>,
    /// Access rules for client identities (as Kafka ACLs), in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<Acl>,
    /// Absolute directory that relative paths resolve against (the file's directory);
    /// not part of the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Topology {
    /// Serialises back to deployment-file TOML that [`parse`] reads back equal; `meridian
    /// dev` writes its generated deployments with it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .expect("a Topology has only string keys and TOML-representable values")
    }

    /// The resolved view of one node, named `REGION/NAME` (a broker or a mirror).
    pub fn node(&self, spec: &str) -> Result<NodeView, TopologyError> {
        let unknown = |hint: String| TopologyError::UnknownNode {
            spec: spec.to_owned(),
            hint,
            valid: self.node_names(),
        };
        let Some((region_name, name)) = spec.split_once('/') else {
            return Err(unknown("write it as REGION/NAME".to_owned()));
        };
        let Some(region) = self.regions.iter().find(|r| r.name == region_name) else {
            return Err(unknown(format!("there is no region {region_name:?}")));
        };
        let broker = region.brokers.iter().find(|b| b.name == name);
        let mirror = region.mirrors.iter().find(|m| m.name == name);
        let (role, gossip_addr, metrics_addr, cert, key) = match (broker, mirror) {
            (Some(b), _) => (Role::Broker, b.gossip, b.metrics, &b.cert, &b.key),
            (None, Some(m)) => (Role::Mirror, m.gossip, m.metrics, &m.cert, &m.key),
            (None, None) => {
                return Err(unknown(format!(
                    "region {region_name:?} has no broker or mirror named {name:?}"
                )));
            }
        };
        let base = &self.base_dir;
        let tls_dir = view::resolve(base, &self.tls.dir);
        let node_dir = tls_dir.join(region_name).join(name);
        let tls = TlsView {
            ca: self
                .tls
                .ca
                .as_ref()
                .map_or_else(|| tls_dir.join("ca.pem"), |ca| view::resolve(base, ca)),
            cert: cert
                .as_ref()
                .map_or_else(|| node_dir.join("cert.pem"), |c| view::resolve(base, c)),
            key: key
                .as_ref()
                .map_or_else(|| node_dir.join("key.pem"), |k| view::resolve(base, k)),
            listeners: self.tls.listeners,
        };
        let region_brokers: Vec<BrokerView> = region.brokers.iter().map(BrokerView::from).collect();
        let controller_quorum = region
            .controller_quorum
            .iter()
            .filter_map(|member| region_brokers.iter().find(|b| &b.name == member).cloned())
            .collect();
        let (flows_served, source_brokers) = if role == Role::Mirror {
            let flows: Vec<Flow> = self
                .flows
                .iter()
                .filter(|f| f.target == region.name)
                .cloned()
                .collect();
            let sources = flows
                .iter()
                .filter_map(|f| self.regions.iter().find(|r| r.name == f.source))
                .map(|r| {
                    (
                        r.name.clone(),
                        r.brokers.iter().map(BrokerView::from).collect(),
                    )
                })
                .collect();
            (flows, sources)
        } else {
            (Vec::new(), BTreeMap::new())
        };
        Ok(NodeView {
            deployment: self.deployment.name.clone(),
            region: region.name.clone(),
            name: name.to_owned(),
            role,
            broker_id: broker.map(|b| b.id),
            grpc_addr: broker.map(|b| b.grpc),
            kafka_addr: broker.and_then(|b| b.kafka),
            gossip_addr,
            metrics_addr,
            data_dir: broker.map(|b| view::resolve(base, &b.data_dir)),
            region_brokers,
            controller_quorum,
            gossip_seeds: region.gossip_seeds.clone(),
            flows_served,
            source_brokers,
            tls,
            gossip: GossipView {
                keyring: self.gossip.keyring.clone(),
                profile: self.gossip.profile,
            },
            topic_defaults: self.topic_defaults.clone(),
            cluster: self.cluster,
            remote_topic_separator: self.deployment.remote_topic_separator.clone(),
            region_flows: self
                .flows
                .iter()
                .filter(|f| f.source == region_name || f.target == region_name)
                .cloned()
                .collect(),
            acls: self.acls.clone(),
        })
    }

    /// Every node as `REGION/NAME`, brokers then mirrors, in file order; for error
    /// messages and `meridian dev`.
    pub fn node_names(&self) -> Vec<String> {
        self.regions
            .iter()
            .flat_map(|r| {
                r.brokers
                    .iter()
                    .map(|b| b.name.as_str())
                    .chain(r.mirrors.iter().map(|m| m.name.as_str()))
                    .map(move |n| format!("{}/{n}", r.name))
            })
            .collect()
    }

    /// Regions in file order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Mirror flows in file order.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// Defaults for new topics.
    pub fn topic_defaults(&self) -> &TopicDefaults {
        &self.topic_defaults
    }

    /// The name topic `topic` of region `source_region` has in the regions it is mirrored
    /// to: `<source><separator><topic>`, so its origin is visible and flows both ways
    /// never copy a record back.
    pub fn remote_topic_name(&self, source_region: &str, topic: &str) -> String {
        format!(
            "{source_region}{}{topic}",
            self.deployment.remote_topic_separator
        )
    }
}
