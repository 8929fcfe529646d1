//! Where a run's regions live on the network, and how the network faults reach them there:
//! on loopback addresses in the harness's own namespace (faults are iptables rules on its
//! OUTPUT chain, [`super::partition`]), or each region in its own network namespace
//! joined by veth links (a cut is the link set down, [`super::netns`]). The scenario and
//! the checker are the same either way; only the means differ.

use std::net::Ipv4Addr;

use super::deployment::{Deployment, LOOPBACK_PREFIX};
use super::netns::{LinkDown, NAMESPACED_PREFIX, RegionNetwork};
use super::partition::{Cut, slash24};
use super::proxy::LinkProxy;
use crate::error::ChaosError;

/// Which network a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Every node on its own 127.0.x.y address in the harness's namespace.
    Loopback,
    /// Every region in its own network namespace, joined by veth links (needs root).
    Namespaces,
}

impl NetworkMode {
    /// Namespaces where this machine can make them (root, `ip netns`), else loopback.
    pub fn best_available() -> Self {
        match RegionNetwork::available() {
            Ok(()) => Self::Namespaces,
            Err(why) => {
                tracing::info!(%why, "regions run on loopback addresses");
                Self::Loopback
            }
        }
    }

    /// The first two octets of every node address in this mode.
    pub fn prefix(self) -> [u8; 2] {
        match self {
            Self::Loopback => LOOPBACK_PREFIX,
            Self::Namespaces => NAMESPACED_PREFIX,
        }
    }

    /// The name reports and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Namespaces => "namespaces",
        }
    }
}

/// The network a run's regions live on.
#[derive(Debug)]
pub enum Network {
    /// Regions are `/24`s of 127.0.0.0/8.
    Loopback {
        /// Each region's subnet (host part 0), in region order.
        subnets: Vec<Ipv4Addr>,
    },
    /// Regions are network namespaces.
    Namespaces(RegionNetwork),
}

/// A network fault in force until healed (or dropped).
#[derive(Debug)]
pub enum ActiveFault {
    /// DROP rules, in the harness's namespace or the regions'.
    Rules(Cut),
    /// An inter-region link set down.
    LinkDown(LinkDown),
}

impl ActiveFault {
    /// Ends the fault and says what it met: the packets it dropped (for a downed link, the
    /// ones its far end could not send).
    pub fn heal(self) -> Result<String, ChaosError> {
        match self {
            Self::Rules(cut) => {
                let dropped = cut.dropped();
                cut.heal().map(|()| format!("{dropped} packets dropped"))
            }
            Self::LinkDown(down) => {
                let dropped = down.dropped();
                down.heal()
                    .map(|()| format!("{dropped} packets dropped at the far end"))
            }
        }
    }
}

impl Network {
    /// Sets up the network `deployment` asks for: nothing to do on loopback; a namespace
    /// per region and the links between them otherwise.
    pub fn create(mode: NetworkMode, deployment: &Deployment) -> Result<Self, ChaosError> {
        let regions = deployment.region_hosts();
        match mode {
            NetworkMode::Loopback => Ok(Self::Loopback {
                subnets: regions.iter().map(|(_, subnet, _)| *subnet).collect(),
            }),
            NetworkMode::Namespaces => {
                RegionNetwork::available().map_err(|why| ChaosError::NetworkUnavailable { why })?;
                let with_proxy: Vec<_> = regions
                    .into_iter()
                    .map(|(region, subnet, mut hosts)| {
                        let [a, b, c, _] = subnet.octets();
                        hosts.push(Ipv4Addr::new(a, b, c, super::proxy::PROXY_HOST));
                        (region, subnet, hosts)
                    })
                    .collect();
                Ok(Self::Namespaces(RegionNetwork::create(
                    deployment.octet,
                    &with_proxy,
                )?))
            }
        }
    }

    /// Which mode this is.
    pub fn mode(&self) -> NetworkMode {
        match self {
            Self::Loopback { .. } => NetworkMode::Loopback,
            Self::Namespaces(_) => NetworkMode::Namespaces,
        }
    }

    /// The namespace region `region`'s nodes run in, if regions have their own.
    pub fn namespace_of(&self, region: &str) -> Option<&str> {
        match self {
            Self::Loopback { .. } => None,
            Self::Namespaces(network) => network.namespace_of(region),
        }
    }

    /// How many regions there are.
    pub fn regions(&self) -> usize {
        match self {
            Self::Loopback { subnets } => subnets.len(),
            Self::Namespaces(network) => network.regions().len(),
        }
    }

    /// The link between the first two regions, for the report.
    pub fn describe_link(&self) -> String {
        match self {
            Self::Loopback { subnets } => {
                format!("{} <-> {}", slash24(subnets[0]), slash24(subnets[1]))
            }
            Self::Namespaces(network) => {
                let names: Vec<&str> = network
                    .regions()
                    .iter()
                    .map(|r| r.namespace.as_str())
                    .collect();
                format!("veth {}", names.join(" <-> "))
            }
        }
    }

    /// The gossip traffic of the first region, for the report.
    fn describe_gossip(&self) -> String {
        match self {
            Self::Loopback { subnets } => format!("{} (udp)", slash24(subnets[0])),
            Self::Namespaces(network) => format!("{} (udp)", network.regions()[0].namespace),
        }
    }

    /// Cuts the first two regions apart; also says what was cut, for the report (as the
    /// other faults do).
    pub fn cut_regions(&self) -> Result<(ActiveFault, String), ChaosError> {
        match self {
            Self::Loopback { subnets } => Ok((
                ActiveFault::Rules(Cut::between(
                    &[&slash24(subnets[0])],
                    &[&slash24(subnets[1])],
                )?),
                self.describe_link(),
            )),
            Self::Namespaces(network) => {
                let down = network.link_down(0, 1)?;
                let what = down.describe();
                Ok((ActiveFault::LinkDown(down), what))
            }
        }
    }

    /// Drops `percent`% of the packets between the first two regions.
    pub fn lossy_regions(&self, percent: u8) -> Result<(ActiveFault, String), ChaosError> {
        let cut = match self {
            Self::Loopback { subnets } => Cut::lossy(
                &[&slash24(subnets[0])],
                &[&slash24(subnets[1])],
                percent,
                None,
            )?,
            Self::Namespaces(network) => network.lossy_link(0, 1, percent)?,
        };
        Ok((ActiveFault::Rules(cut), self.describe_link()))
    }

    /// Drops `percent`% of the gossip (UDP) between the first region's nodes.
    pub fn lossy_gossip(&self, percent: u8) -> Result<(ActiveFault, String), ChaosError> {
        let cut = match self {
            Self::Loopback { subnets } => {
                let own = slash24(subnets[0]);
                Cut::lossy(&[&own], &[&own], percent, Some("udp"))?
            }
            Self::Namespaces(network) => network.lossy_within(0, percent, "udp")?,
        };
        Ok((ActiveFault::Rules(cut), self.describe_gossip()))
    }

    /// Starts the link proxy that carries every inter-region TCP connection.
    pub async fn link_proxy(&self, seed: u64) -> Result<LinkProxy, ChaosError> {
        match self {
            Self::Loopback { subnets } => LinkProxy::start(subnets, seed).await,
            Self::Namespaces(network) => LinkProxy::start_in_namespaces(network, seed).await,
        }
    }
}
