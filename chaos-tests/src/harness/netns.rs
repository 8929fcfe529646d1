//! Regions in their own network namespaces, joined by veth links: the inter-region path
//! is a real link that can go down, as a WAN circuit does, instead of loopback rules.
//!
//! ```text
//!  harness (root namespace)            chaos-171-r1                      chaos-171-r2
//!  chaos171r1 198.18.171.254 ══ uplink 198.18.171.{1,2,3,11,250}
//!                                     x2 ════════════ veth ════════════ x1
//!  chaos171r2 198.18.172.254 ══════════════════════════════════════ uplink 198.18.172.{…}
//! ```
//!
//! Every node runs in its region's namespace (`ip netns exec`) on the address the
//! deployment file gives it, in 198.18.0.0/15 (the range set aside for network tests).
//! The harness reaches each region over its uplink; a region reaches another only over
//! their direct link (no default route), so setting that link down really cuts the two
//! regions apart while the harness still sees both, as with the loopback cut. Loss is an
//! iptables `statistic` rule on the link inside each namespace. Added latency goes through
//! the link proxy placed inside the target region's namespace ([`super::proxy`]): this
//! machine's kernel has no `sch_netem`, which `tc` would need.
//!
//! Needs root and `ip` (Debian package iproute2); [`RegionNetwork::available`] says
//! whether this machine can. Dropping the value deletes the namespaces, which takes their
//! links, addresses and rules with them; namespaces a crashed run left are deleted first.

use std::net::Ipv4Addr;

use super::partition::{Cut, loss_match, run_tool, slash24, tool_works};
use crate::error::ChaosError;

/// The first two octets of every node address in a namespaced run.
pub const NAMESPACED_PREFIX: [u8; 2] = [198, 18];
/// The harness's host part on every region's uplink.
const HARNESS_HOST: u8 = 254;
/// The name of a region's uplink inside its namespace.
const UPLINK: &str = "uplink";

/// One region's namespace.
#[derive(Debug, Clone)]
pub struct RegionNamespace {
    /// Region name, e.g. `r1`.
    pub region: String,
    /// Network namespace name, for `ip netns exec`.
    pub namespace: String,
    /// The region's `/24` (host part 0).
    pub subnet: Ipv4Addr,
    /// 0-based position among the regions (names the links: [`link_interface`]).
    index: usize,
    /// The uplink's end in the harness's namespace.
    uplink: String,
}

impl RegionNamespace {
    /// (Re)installs the route to region `there` over their link, with a source address
    /// in this region's subnet (so the far side's answers come back the same way).
    fn route_to(&self, there: &RegionNamespace) -> Result<(), ChaosError> {
        ip(&[
            "-n",
            &self.namespace,
            "route",
            "replace",
            &slash24(there.subnet),
            "dev",
            &link_interface(there.index),
            "src",
            &host(self.subnet, 1).to_string(),
        ])
    }

    /// Packets this region could not send on its link to `there` so far.
    fn dropped_towards(&self, there: &RegionNamespace) -> u64 {
        let Ok(out) = run_tool(
            "ip",
            &[
                "-n",
                &self.namespace,
                "-s",
                "-j",
                "link",
                "show",
                &link_interface(there.index),
            ],
        ) else {
            return 0;
        };
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v.get(0)?.pointer("/stats64/tx/dropped")?.as_u64())
            .unwrap_or(0)
    }
}

/// Every region's namespace and the links between them.
#[derive(Debug)]
pub struct RegionNetwork {
    regions: Vec<RegionNamespace>,
}

/// The name, in every other region's namespace, of the link to region `to` (0-based):
/// `x2` leads to r2 wherever it is.
pub fn link_interface(to: usize) -> String {
    format!("x{}", to + 1)
}

fn ip(args: &[&str]) -> Result<(), ChaosError> {
    run_tool("ip", args).map(drop)
}

fn host(subnet: Ipv4Addr, host: u8) -> Ipv4Addr {
    let [a, b, c, _] = subnet.octets();
    Ipv4Addr::new(a, b, c, host)
}

impl RegionNetwork {
    /// Whether this machine can put regions in network namespaces (root, `ip netns`,
    /// iptables for the loss faults), and if not, why.
    pub fn available() -> Result<(), String> {
        Cut::available()?;
        let probe = format!("chaos-probe-{}", std::process::id());
        tool_works(
            "ip",
            &["netns", "add", &probe],
            "ip netns cannot create a namespace here (needs root)",
            "iproute2",
        )?;
        let _ = ip(&["netns", "del", &probe]);
        Ok(())
    }

    /// Creates a namespace per region (`regions`: name, subnet, and the host addresses
    /// its nodes listen on), its uplink to the harness, and a direct link between every
    /// two regions. `tag` keeps parallel runs apart (the first region's third octet).
    pub fn create(
        tag: u8,
        regions: &[(String, Ipv4Addr, Vec<Ipv4Addr>)],
    ) -> Result<Self, ChaosError> {
        let mut network = RegionNetwork {
            regions: Vec::new(),
        };
        for (i, (region, subnet, hosts)) in regions.iter().enumerate() {
            let namespace = format!("chaos-{tag}-r{}", i + 1);
            let uplink = format!("chaos{tag}r{}", i + 1);
            // A crashed run's namespace would hold this run's addresses.
            let _ = ip(&["netns", "del", &namespace]);
            let _ = ip(&["link", "del", &uplink]);
            ip(&["netns", "add", &namespace])?;
            network.regions.push(RegionNamespace {
                region: region.clone(),
                namespace: namespace.clone(),
                subnet: *subnet,
                index: i,
                uplink: uplink.clone(),
            });
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", &uplink, "type", "veth", "peer", "name", UPLINK, "netns", &namespace,
            ])?;
            let harness = format!("{}/24", host(*subnet, HARNESS_HOST));
            ip(&["addr", "add", &harness, "dev", &uplink])?;
            ip(&["link", "set", &uplink, "up"])?;
            for address in hosts {
                ip(&[
                    "-n",
                    &namespace,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    UPLINK,
                ])?;
            }
            ip(&["-n", &namespace, "link", "set", UPLINK, "up"])?;
        }
        for a in 0..network.regions.len() {
            for b in a + 1..network.regions.len() {
                let (ns_a, ns_b) = (&network.regions[a].namespace, &network.regions[b].namespace);
                ip(&[
                    "link",
                    "add",
                    &link_interface(b),
                    "netns",
                    ns_a,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &link_interface(a),
                    "netns",
                    ns_b,
                ])?;
                for (from, to) in [(a, b), (b, a)] {
                    let ns = &network.regions[from].namespace;
                    ip(&["-n", ns, "link", "set", &link_interface(to), "up"])?;
                    network.regions[from].route_to(&network.regions[to])?;
                }
            }
        }
        Ok(network)
    }

    /// The regions' namespaces, in region order.
    pub fn regions(&self) -> &[RegionNamespace] {
        &self.regions
    }

    /// The namespace region `region` runs in.
    pub fn namespace_of(&self, region: &str) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| r.region == region)
            .map(|r| r.namespace.as_str())
    }

    /// Sets the link between regions `a` and `b` (0-based) down at `a`'s end: `a`'s
    /// nodes get "network unreachable", `b`'s packets vanish into a link without carrier.
    pub fn link_down(&self, a: usize, b: usize) -> Result<LinkDown, ChaosError> {
        let (a, b) = (self.regions[a].clone(), self.regions[b].clone());
        let dropped_before = b.dropped_towards(&a);
        ip(&[
            "-n",
            &a.namespace,
            "link",
            "set",
            &link_interface(b.index),
            "down",
        ])?;
        Ok(LinkDown {
            a,
            b,
            dropped_before,
            healed: false,
        })
    }

    /// Drops `percent`% of the packets on the link between regions `a` and `b`, each
    /// way, until healed.
    pub fn lossy_link(&self, a: usize, b: usize, percent: u8) -> Result<Cut, ChaosError> {
        let rules = [(a, b), (b, a)]
            .into_iter()
            .map(|(from, to)| {
                let mut rule = vec!["-o".to_string(), link_interface(to)];
                rule.extend(loss_match(percent, None));
                (self.regions[from].namespace.clone(), rule)
            })
            .collect();
        Cut::in_namespaces(rules)
    }

    /// Drops `percent`% of the `protocol` packets between nodes of region `a`.
    pub fn lossy_within(&self, a: usize, percent: u8, protocol: &str) -> Result<Cut, ChaosError> {
        let subnet = slash24(self.regions[a].subnet);
        let mut rule = vec!["-s".to_string(), subnet.clone(), "-d".to_string(), subnet];
        rule.extend(loss_match(percent, Some(protocol)));
        Cut::in_namespaces(vec![(self.regions[a].namespace.clone(), rule)])
    }
}

impl Drop for RegionNetwork {
    fn drop(&mut self) {
        for region in &self.regions {
            if let Err(err) = ip(&["netns", "del", &region.namespace]) {
                tracing::error!(namespace = %region.namespace, %err, "could not delete a namespace");
            }
            let _ = ip(&["link", "del", &region.uplink]);
        }
    }
}

/// A link set down; [`LinkDown::heal`] (or dropping it) sets it up and restores the
/// routes over it, as a router does when its circuit returns.
#[derive(Debug)]
pub struct LinkDown {
    /// The end set down.
    a: RegionNamespace,
    /// The far end, left without carrier.
    b: RegionNamespace,
    dropped_before: u64,
    healed: bool,
}

impl LinkDown {
    /// What was cut, for the report.
    pub fn describe(&self) -> String {
        format!(
            "link {} <-> {} down ({} in {})",
            self.a.region,
            self.b.region,
            link_interface(self.b.index),
            self.a.namespace
        )
    }

    /// Packets the far end could not send while the link was down (the evidence that
    /// the cut met traffic).
    pub fn dropped(&self) -> u64 {
        self.b
            .dropped_towards(&self.a)
            .saturating_sub(self.dropped_before)
    }

    /// Sets the link up and puts both routes back.
    pub fn heal(mut self) -> Result<(), ChaosError> {
        self.restore()
    }

    fn restore(&mut self) -> Result<(), ChaosError> {
        if self.healed {
            return Ok(());
        }
        self.healed = true;
        ip(&[
            "-n",
            &self.a.namespace,
            "link",
            "set",
            &link_interface(self.b.index),
            "up",
        ])?;
        self.a.route_to(&self.b)?;
        self.b.route_to(&self.a)
    }
}

impl Drop for LinkDown {
    fn drop(&mut self) {
        if let Err(err) = self.restore() {
            tracing::error!(%err, "could not set the inter-region link up again");
        }
    }
}

/// Runs `make` on a fresh thread that has entered network namespace `netns` (the
/// harness's own when `None`) and returns what it made: a socket keeps the namespace it
/// was created in, whichever thread uses it later, so the harness can listen and connect
/// inside a region without running there.
pub(crate) fn in_namespace<T: Send>(
    netns: Option<&str>,
    make: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let Some(ns) = netns else {
        return make();
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let handle = std::fs::File::open(format!("/run/netns/{ns}"))?;
                nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                make()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("a namespace thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(1);

    /// Two regions with one node address each, on subnets 198.18.`tag`.0 and `tag + 1`.
    fn two_regions(tag: u8) -> Option<RegionNetwork> {
        if let Err(why) = RegionNetwork::available() {
            eprintln!("SKIPPED: region namespaces: {why}");
            return None;
        }
        let regions: Vec<_> = (0..2)
            .map(|i| {
                let subnet = Ipv4Addr::new(198, 18, tag + i, 0);
                (format!("r{}", i + 1), subnet, vec![host(subnet, 1)])
            })
            .collect();
        Some(RegionNetwork::create(tag, &regions).expect("create the namespaces"))
    }

    /// A listener on region `i`'s node address (the kernel completes handshakes into its
    /// backlog, so nobody needs to accept).
    fn listen_in(network: &RegionNetwork, i: usize) -> (TcpListener, SocketAddr) {
        let region = &network.regions()[i];
        let listener = in_namespace(Some(&region.namespace), || {
            TcpListener::bind((host(region.subnet, 1), 0))
        })
        .expect("listen in the namespace");
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    fn connect_from(
        network: &RegionNetwork,
        i: usize,
        to: SocketAddr,
    ) -> std::io::Result<TcpStream> {
        in_namespace(Some(&network.regions()[i].namespace), || {
            TcpStream::connect_timeout(&to, PATIENCE)
        })
    }

    #[test]
    fn a_downed_link_cuts_the_regions_apart_while_the_harness_reaches_both() {
        let Some(network) = two_regions(191) else {
            return;
        };
        let (_l1, in_r1) = listen_in(&network, 0);
        let (_l2, in_r2) = listen_in(&network, 1);
        connect_from(&network, 0, in_r2).expect("r1 reaches r2 over the link");
        connect_from(&network, 1, in_r1).expect("r2 reaches r1 over the link");

        let down = network.link_down(0, 1).unwrap();
        let refused = connect_from(&network, 0, in_r2).unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::NetworkUnreachable,
            "{refused}"
        );
        let vanished = connect_from(&network, 1, in_r1).unwrap_err();
        assert_eq!(vanished.kind(), std::io::ErrorKind::TimedOut, "{vanished}");
        assert!(down.dropped() > 0, "the far end's packets were dropped");
        // The harness's uplinks do not go through the inter-region link.
        TcpStream::connect_timeout(&in_r1, PATIENCE).expect("the harness reaches r1");
        TcpStream::connect_timeout(&in_r2, PATIENCE).expect("the harness reaches r2");

        down.heal().unwrap();
        connect_from(&network, 0, in_r2).expect("r1 reaches r2 again");
        connect_from(&network, 1, in_r1).expect("r2 reaches r1 again");
    }

    #[test]
    fn a_fully_lossy_link_drops_every_packet_until_healed() {
        let Some(network) = two_regions(193) else {
            return;
        };
        let (_l2, in_r2) = listen_in(&network, 1);
        let cut = network.lossy_link(0, 1, 100).unwrap();
        let lost = connect_from(&network, 0, in_r2).unwrap_err();
        assert_eq!(lost.kind(), std::io::ErrorKind::TimedOut, "{lost}");
        assert!(cut.dropped() > 0, "the SYNs show in the rules' counters");
        cut.heal().unwrap();
        connect_from(&network, 0, in_r2).expect("r1 reaches r2 once healed");
    }

    #[test]
    fn dropping_the_network_deletes_its_namespaces() {
        let Some(network) = two_regions(195) else {
            return;
        };
        let names: Vec<String> = network
            .regions()
            .iter()
            .map(|r| r.namespace.clone())
            .collect();
        drop(network);
        let listed = run_tool("ip", &["netns", "list"]).unwrap();
        for name in names {
            assert!(
                !listed
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(&name)),
                "{name} is still there: {listed}"
            );
        }
    }
}
