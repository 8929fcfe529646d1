//! Writes the deployment file of a chaos run: `regions` regions of `brokers` brokers on
//! 127.0.<octet + region>.<broker> (198.18.… when regions live in network namespaces),
//! fixed ports per role (each node has its own address),
//! short session timeouts so failovers fit in a quick run.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::error::{ChaosError, io};

/// The first two octets of every node address in a loopback run.
pub const LOOPBACK_PREFIX: [u8; 2] = [127, 0];

/// The shape of the deployment a run starts.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// Number of regions (named r1, r2, ...).
    pub regions: u8,
    /// Brokers per region.
    pub brokers: u8,
    /// The first two octets of every address: 127.0 (loopback) or 198.18 (regions in
    /// network namespaces, [`super::netns::NAMESPACED_PREFIX`]).
    pub prefix: [u8; 2],
    /// First third octet; region i uses `octet + i`.
    pub octet: u8,
    /// Mirror workers per region (named m1, m2, ... on 127.0.<octet>.11, .12, ...).
    pub mirrors: u8,
    /// Flows as (source region index, target region index), 1-based.
    pub flows: Vec<(u8, u8)>,
}

impl DeploymentSpec {
    /// `regions` regions of three brokers, no mirrors.
    pub fn brokers_only(regions: u8, octet: u8) -> Self {
        Self {
            regions,
            brokers: 3,
            prefix: LOOPBACK_PREFIX,
            octet,
            mirrors: 0,
            flows: Vec::new(),
        }
    }

    /// Two regions of three brokers with `mirrors` workers each and flows both ways.
    pub fn active_active(octet: u8, mirrors: u8) -> Self {
        Self {
            regions: 2,
            brokers: 3,
            prefix: LOOPBACK_PREFIX,
            octet,
            mirrors,
            flows: vec![(1, 2), (2, 1)],
        }
    }
}

/// A mirror worker of the written deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorAddr {
    /// Region name.
    pub region: String,
    /// Node name.
    pub name: String,
    /// Prometheus metrics address.
    pub metrics: SocketAddr,
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
    /// Prometheus metrics address.
    pub metrics: SocketAddr,
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
    /// Every mirror worker.
    pub mirrors: Vec<MirrorAddr>,
    /// The first two octets of every address (see [`DeploymentSpec::prefix`]).
    pub prefix: [u8; 2],
    /// The first region's third octet.
    pub octet: u8,
}

impl Deployment {
    /// Writes `dir/topology.toml` for `spec`.
    pub fn write(dir: &Path, spec: &DeploymentSpec) -> Result<Self, ChaosError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let mut text = String::from(
            r#"# Written by chaos-tests: every node on its own address.
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

"#,
        );
        // Three replicas, two in sync for acks=all; fewer in a smaller region.
        let replication_factor = spec.brokers.min(3);
        let _ = write!(
            text,
            "\n[topic_defaults]\npartitions = 3\nreplication_factor = {replication_factor}\nmin_insync_replicas = {}\n",
            replication_factor.min(2)
        );
        let mut regions = Vec::new();
        let mut brokers = Vec::new();
        let mut mirrors = Vec::new();
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
                let ip = Ipv4Addr::new(spec.prefix[0], spec.prefix[1], octet, b);
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
                    metrics: SocketAddr::from((ip, 9100)),
                });
            }
            for m in 1..=spec.mirrors {
                let ip = Ipv4Addr::new(spec.prefix[0], spec.prefix[1], octet, 10 + m);
                let _ = write!(
                    text,
                    "\n[[regions.mirrors]]\nname = \"m{m}\"\ngossip = \"{ip}:7946\"\nmetrics = \"{ip}:9100\"\n"
                );
                mirrors.push(MirrorAddr {
                    region: region.clone(),
                    name: format!("m{m}"),
                    metrics: SocketAddr::from((ip, 9100)),
                });
            }
            regions.push(region);
        }
        for (source, target) in &spec.flows {
            let _ = write!(
                text,
                "\n[[flows]]\nsource = \"r{source}\"\ntarget = \"r{target}\"\nenabled = true\n\
                 topics = {{ include = [\".*\"], exclude = [] }}\ngroups = {{ include = [\".*\"], exclude = [] }}\n\
                 sync_group_offsets = false\ncheckpoint_interval = \"1s\"\n"
            );
        }
        let topology = dir.join("topology.toml");
        std::fs::write(&topology, text).map_err(io(format!("write {}", topology.display())))?;
        issue_certificates(&topology)?;
        Ok(Self {
            topology,
            regions,
            brokers,
            mirrors,
            prefix: spec.prefix,
            octet: spec.octet,
        })
    }

    /// Each region's name, subnet (host part 0) and the addresses its nodes listen on,
    /// in region order.
    pub fn region_hosts(&self) -> Vec<(String, Ipv4Addr, Vec<Ipv4Addr>)> {
        self.regions
            .iter()
            .enumerate()
            .map(|(i, region)| {
                let [a, b] = self.prefix;
                let subnet = Ipv4Addr::new(a, b, self.octet + i as u8, 0);
                let listening = self
                    .brokers
                    .iter()
                    .filter(|n| &n.region == region)
                    .map(|n| n.grpc.ip())
                    .chain(
                        self.mirrors
                            .iter()
                            .filter(|n| &n.region == region)
                            .map(|n| n.metrics.ip()),
                    )
                    .filter_map(|ip| match ip {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                (region.clone(), subnet, listening)
            })
            .collect()
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

/// A fresh CA and every node's certificate under the deployment's `tls` directory, as
/// an operator would with `meridian certs init-ca` and `issue-deployment`: mirror flows
/// run over mutual TLS.
fn issue_certificates(topology_path: &Path) -> Result<(), ChaosError> {
    let failed = |what: &str, reason: String| ChaosError::Io {
        what: format!("{what} for {}", topology_path.display()),
        source: std::io::Error::other(reason),
    };
    let topology =
        topology::load(topology_path).map_err(|e| failed("load the deployment", e.to_string()))?;
    let ca = certs::Ca::generate("chaos-ca").map_err(|e| failed("create a CA", e.to_string()))?;
    // Kept for the certificate-rotation fault, which issues from the same CA mid-run.
    ca.save(&super::rotation::ca_dir(&topology.base_dir))
        .map_err(|e| failed("save the CA", e.to_string()))?;
    let out = topology.base_dir.join(&topology.tls.dir);
    certs::issue_deployment(&topology, &ca, &out, 2)
        .map_err(|e| failed("issue certificates", e.to_string()))?;
    Ok(())
}
