//! Writes the deployment file of a chaos run: `regions` regions of `brokers` brokers on
//! 127.0.<octet + region>.<broker>, fixed ports per role (each node has its own address),
//! short session timeouts so failovers fit in a quick run.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::error::{ChaosError, io};

/// The shape of the deployment a run starts.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// Number of regions (named r1, r2, ...).
    pub regions: u8,
    /// Brokers per region.
    pub brokers: u8,
    /// First loopback third octet; region i uses `octet + i`.
    pub octet: u8,
}

/// A broker of the written deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Region name.
    pub region: String,
    /// Node name.
    pub name: String,
    /// Broker id (unique in the deployment).
    pub id: u64,
    /// gRPC address.
    pub grpc: SocketAddr,
}

/// The written deployment: where its file is and who is in it.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The deployment file.
    pub topology: PathBuf,
    /// Region names in order.
    pub regions: Vec<String>,
    /// Every broker.
    pub brokers: Vec<BrokerAddr>,
}

impl Deployment {
    /// Writes `dir/topology.toml` for `spec`.
    pub fn write(dir: &Path, spec: &DeploymentSpec) -> Result<Self, ChaosError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let mut text = String::from(
            r#"# Written by chaos-tests: every node on its own 127.0.x.y address.
[deployment]
name = "chaos"

[tls]
dir = "tls"

[tls.listeners]
client = "off"
inter_broker = "off"
inter_region = "required"
kafka = "off"
metrics = "off"

[gossip]
keyring = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]

[cluster]
session_timeout = "3s"
replica_lag_max = "10s"

[topic_defaults]
partitions = 3
replication_factor = 3
min_insync_replicas = 2
"#,
        );
        let mut regions = Vec::new();
        let mut brokers = Vec::new();
        for r in 1..=spec.regions {
            let region = format!("r{r}");
            let octet = spec.octet + r - 1;
            let quorum: Vec<String> = (1..=spec.brokers.min(3))
                .map(|b| format!("\"b{b}\""))
                .collect();
            let _ = write!(
                text,
                "\n[[regions]]\nname = \"{region}\"\ncontroller_quorum = [{}]\n",
                quorum.join(", ")
            );
            for b in 1..=spec.brokers {
                let ip = Ipv4Addr::new(127, 0, octet, b);
                let id = u64::from(r) * 100 + u64::from(b);
                let grpc = SocketAddr::from((ip, 9090));
                let _ = write!(
                    text,
                    "\n[[regions.brokers]]\nname = \"b{b}\"\nid = {id}\ngrpc = \"{grpc}\"\n\
                     gossip = \"{ip}:7946\"\nmetrics = \"{ip}:9100\"\ndata_dir = \"data/{region}/b{b}\"\n"
                );
                brokers.push(BrokerAddr {
                    region: region.clone(),
                    name: format!("b{b}"),
                    id,
                    grpc,
                });
            }
            regions.push(region);
        }
        let topology = dir.join("topology.toml");
        std::fs::write(&topology, text).map_err(io(format!("write {}", topology.display())))?;
        Ok(Self {
            topology,
            regions,
            brokers,
        })
    }

    /// `--bootstrap` for a region: every broker's gRPC address.
    pub fn bootstrap(&self, region: &str) -> String {
        let addrs: Vec<String> = self
            .brokers
            .iter()
            .filter(|b| b.region == region)
            .map(|b| b.grpc.to_string())
            .collect();
        addrs.join(",")
    }
}
