//! The inter-region link as a fault-injecting TCP proxy: added latency and jitter, which
//! this machine's kernel cannot add itself (it has no `sch_netem`).
//!
//! ```text
//!   r2 node ──connect 127.0.151.3:9090──▶ nat OUTPUT DNAT ──▶ proxy 127.0.151.250:P
//!                                                              │ SO_ORIGINAL_DST
//!                                                              ▼ (held `delay` + jitter)
//!                                           proxy ──connect from .250──▶ 127.0.151.3:9090
//! ```
//!
//! Each region gets a proxy for the TCP connections other regions open into it, on the
//! `.250` address of its own subnet, and an iptables `nat` rule sends those connections
//! there; nodes keep the addresses in the deployment file and never know. The proxy
//! lives inside the region's subnet on purpose: the cut and loss faults
//! ([`super::partition`]), which match the regions' subnets, still hit every proxied
//! byte. Every chunk read is written `delay + U(0, jitter)` later, never before the chunk
//! ahead of it (a TCP stream keeps its order; jitter shows as bursts). Without a fault the
//! delay is zero and the proxy only copies. Needs root and iptables' nat table; dropping
//! the value removes the rules.
//!
//! When regions live in network namespaces ([`super::netns`]), each proxy listens and
//! connects inside its region's namespace and a `PREROUTING` rule there redirects the TCP
//! connections that arrive over an inter-region link: the same shape, one namespace in.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::netns::{RegionNetwork, in_namespace};
use super::partition::{iptables_in, slash24};
use crate::error::ChaosError;
use crate::rng::SeededRng;

/// The host part of each region's proxy address (`127.0.X.250`).
pub const PROXY_HOST: u8 = 250;

/// The link's current added latency, shared by every proxied connection.
#[derive(Debug, Default)]
pub struct LinkShaping {
    delay_us: AtomicU64,
    jitter_us: AtomicU64,
    held: AtomicU64,
}

impl LinkShaping {
    /// Adds `delay` plus up to `jitter` to every chunk, each way, from now on.
    pub fn set(&self, delay: Duration, jitter: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        self.jitter_us
            .store(jitter.as_micros() as u64, Ordering::Relaxed);
    }

    /// Back to a plain copy.
    pub fn clear(&self) {
        self.set(Duration::ZERO, Duration::ZERO);
    }

    /// Chunks held back so far (the evidence that a latency fault touched traffic).
    pub fn chunks_held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    fn hold(&self, rng: &mut SeededRng) -> Duration {
        let delay = self.delay_us.load(Ordering::Relaxed);
        let jitter = self.jitter_us.load(Ordering::Relaxed);
        let extra = if jitter == 0 {
            0
        } else {
            rng.below(jitter + 1)
        };
        if delay + extra > 0 {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        Duration::from_micros(delay + extra)
    }
}

/// Running proxies and the nat rules that route inter-region connections through them.
#[derive(Debug)]
pub struct LinkProxy {
    /// Change this to shape the link.
    pub shaping: Arc<LinkShaping>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    rules: Vec<NatRule>,
}

/// A redirect rule the proxy installed, and where.
#[derive(Debug)]
struct NatRule {
    /// Network namespace (`None`: the harness's).
    netns: Option<String>,
    /// `OUTPUT` (connections from loopback nodes) or `PREROUTING` (arriving over a link).
    chain: &'static str,
    /// Everything after the chain name.
    rule: Vec<String>,
}

/// Where one region's proxy runs and which connections are sent to it.
struct Placement {
    /// The region's subnet (host part 0); the proxy takes its `.250`.
    subnet: Ipv4Addr,
    netns: Option<String>,
    chain: &'static str,
    /// The match part of each redirect rule (before `-j DNAT`).
    matches: Vec<Vec<String>>,
}

fn owned(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

impl LinkProxy {
    /// Whether this machine can redirect loopback connections (root, iptables with the
    /// nat table), and if not, why.
    pub fn available() -> Result<(), String> {
        super::partition::Cut::available()?;
        iptables_in(None, &["-t", "nat", "-L", "OUTPUT", "-n"])
            .map(drop)
            .map_err(|e| format!("iptables has no usable nat table here: {e}"))
    }

    /// Starts a proxy into each region (`subnets` are the regions' `127.0.X.0/24`, in
    /// order) and routes every TCP connection from another region through it.
    pub async fn start(subnets: &[Ipv4Addr], seed: u64) -> Result<Self, ChaosError> {
        remove_leftover_rules(subnets);
        let placements = subnets
            .iter()
            .enumerate()
            .map(|(i, subnet)| Placement {
                subnet: *subnet,
                netns: None,
                chain: "OUTPUT",
                matches: subnets
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, other)| {
                        owned(&["-p", "tcp", "-s", &slash24(*other), "-d", &slash24(*subnet)])
                    })
                    .collect(),
            })
            .collect();
        Self::start_at(placements, seed).await
    }

    /// Starts a proxy inside each region's namespace for the TCP connections that arrive
    /// over its links from other regions (interfaces `x…`).
    pub async fn start_in_namespaces(
        network: &RegionNetwork,
        seed: u64,
    ) -> Result<Self, ChaosError> {
        let placements = network
            .regions()
            .iter()
            .map(|region| Placement {
                subnet: region.subnet,
                netns: Some(region.namespace.clone()),
                chain: "PREROUTING",
                matches: vec![owned(&[
                    "-p",
                    "tcp",
                    "-i",
                    "x+",
                    "-d",
                    &slash24(region.subnet),
                ])],
            })
            .collect();
        Self::start_at(placements, seed).await
    }

    async fn start_at(placements: Vec<Placement>, seed: u64) -> Result<Self, ChaosError> {
        let shaping = Arc::new(LinkShaping::default());
        let mut proxy = LinkProxy {
            shaping: shaping.clone(),
            tasks: Vec::new(),
            rules: Vec::new(),
        };
        for (i, place) in placements.into_iter().enumerate() {
            let [a, b, c, _] = place.subnet.octets();
            let ip = Ipv4Addr::new(a, b, c, PROXY_HOST);
            let listen = |e| ChaosError::Io {
                what: format!("listen on {ip} for the link proxy"),
                source: e,
            };
            let listener = in_namespace(place.netns.as_deref(), || {
                let listener = std::net::TcpListener::bind((ip, 0))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .and_then(TcpListener::from_std)
            .map_err(listen)?;
            let listening = listener.local_addr().map_err(|e| ChaosError::Io {
                what: "read the link proxy's port".into(),
                source: e,
            })?;
            for matched in place.matches {
                let mut rule = matched;
                rule.extend(owned(&[
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &listening.to_string(),
                ]));
                let mut args = vec!["-t", "nat", "-I", place.chain];
                args.extend(rule.iter().map(String::as_str));
                iptables_in(place.netns.as_deref(), &args)?;
                proxy.rules.push(NatRule {
                    netns: place.netns.clone(),
                    chain: place.chain,
                    rule,
                });
            }
            proxy.tasks.push(tokio::spawn(accept_loop(
                listener,
                ip,
                place.netns,
                shaping.clone(),
                seed ^ (i as u64 + 1),
            )));
        }
        Ok(proxy)
    }

    fn remove_rules(&mut self) {
        for NatRule { netns, chain, rule } in std::mem::take(&mut self.rules) {
            let mut args = vec!["-t", "nat", "-D", chain];
            args.extend(rule.iter().map(String::as_str));
            if let Err(err) = iptables_in(netns.as_deref(), &args) {
                tracing::error!(%err, "could not remove a link proxy rule");
            }
        }
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.remove_rules();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Deletes redirect rules into these subnets that a crashed earlier run left behind
/// (they would send this run's connections to a proxy that is gone).
fn remove_leftover_rules(subnets: &[Ipv4Addr]) {
    let Ok(out) = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S", "OUTPUT"])
        .output()
    else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    for line in listing.lines() {
        let Some(rule) = line.strip_prefix("-A OUTPUT ") else {
            continue;
        };
        let ours = subnets.iter().any(|s| {
            let [a, b, c, _] = s.octets();
            rule.contains(&format!("--to-destination {a}.{b}.{c}.{PROXY_HOST}:"))
        });
        if ours {
            let mut args = vec!["-t", "nat", "-D", "OUTPUT"];
            args.extend(rule.split_whitespace());
            let _ = iptables_in(None, &args);
        }
    }
}

/// Where a redirected connection was going (the nat rule's original destination).
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let dst = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst).ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(dst.sin_addr.s_addr)),
        u16::from_be(dst.sin_port),
    )))
}

async fn accept_loop(
    listener: TcpListener,
    own_ip: Ipv4Addr,
    netns: Option<String>,
    shaping: Arc<LinkShaping>,
    seed: u64,
) {
    let mut connections = 0u64;
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, typically: back off instead of spinning.
                tracing::warn!(%err, "link proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections += 1;
        let Some(destination) = original_destination(&inbound) else {
            tracing::warn!(%peer, "link proxy: no original destination; dropping the connection");
            continue;
        };
        let shaping = shaping.clone();
        let seed = seed ^ connections.rotate_left(17);
        let netns = netns.clone();
        tokio::spawn(async move {
            let outbound = async {
                let socket = in_namespace(netns.as_deref(), TcpSocket::new_v4)?;
                socket.bind(SocketAddr::from((own_ip, 0)))?;
                socket.connect(destination).await
            };
            let outbound = match outbound.await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(%peer, %destination, %err, "link proxy: cannot reach the destination");
                    return;
                }
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            let there = tokio::spawn(pump(
                in_read,
                out_write,
                shaping.clone(),
                SeededRng::new(seed),
            ));
            let back = tokio::spawn(pump(out_read, in_write, shaping, SeededRng::new(!seed)));
            let _ = tokio::join!(there, back);
        });
    }
}

/// Copies one direction, holding each chunk for the link's current delay and jitter,
/// in order; closes the write side when the read side ends.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shaping: Arc<LinkShaping>,
    mut rng: SeededRng,
) {
    let (chunks, mut held) = mpsc::channel::<(Instant, Bytes)>(1024);
    let reader = async move {
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let due = (Instant::now() + shaping.hold(&mut rng)).max(last);
            last = due;
            if chunks
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = held.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
