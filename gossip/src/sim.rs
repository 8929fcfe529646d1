//! Deterministic simulation: N sans-IO [`Node`]s on a virtual clock, with seeded
//! packet loss, per-link delay, partitions, crashes and restarts; no tokio, no
//! sleeps, no sockets. The same seed replays the same run, so every assertion in
//! the tests prints its seed, and `GOSSIP_SIM_SEED=<n>` re-runs just that seed.
//!
//! ```text
//!  queue (virtual µs, seq) ──▶ Deliver{to, from, bytes} ─▶ Node::handle_datagram
//!                          ──▶ Timer{node, timer}       ─▶ Node::handle_timer
//!                          ──▶ Resync{node}             ─▶ Node::resync
//!  every Output: sends → loss? partition? → Deliver at now + delay; timers → queue
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use foca::Timer;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::{
    GossipConfig, Keyring, MemberState, MembershipEvent, Node, NodeIdentity, Output, Role,
};

/// Seeds to run: the one in `GOSSIP_SIM_SEED` if set (to replay a failure),
/// otherwise `defaults`.
pub fn seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var("GOSSIP_SIM_SEED") {
        Ok(s) => vec![
            s.trim()
                .parse()
                .expect("GOSSIP_SIM_SEED must be an unsigned integer, e.g. GOSSIP_SIM_SEED=42"),
        ],
        Err(_) => defaults.to_vec(),
    }
}

/// How a simulated cluster is built and how its network behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of members.
    pub nodes: usize,
    /// Seed for every random choice in the run.
    pub seed: u64,
    /// Timing preset every member runs.
    pub gossip: GossipConfig,
    /// Probability that any one datagram is lost.
    pub loss: f64,
    /// Shortest one-way delay.
    pub min_delay: Duration,
    /// Longest one-way delay (uniform between the two).
    pub max_delay: Duration,
    /// Encrypt datagrams with a shared key (slower; the codec is tested elsewhere).
    pub encrypt: bool,
}

impl SimConfig {
    /// A lossless LAN-like network (0.2–1 ms one way) without encryption.
    pub fn new(nodes: usize, seed: u64, gossip: GossipConfig) -> Self {
        Self {
            nodes,
            seed,
            gossip,
            loss: 0.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(1),
            encrypt: false,
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        generation: u32,
        timer: Timer<NodeIdentity>,
    },
    Resync {
        node: usize,
        generation: u32,
    },
}

struct Slot {
    node: Node,
    up: bool,
    generation: u32,
    bytes_sent: u64,
}

/// A simulated cluster (see the module docs).
pub struct Sim {
    cfg: SimConfig,
    now_us: u64,
    rng: StdRng,
    slots: Vec<Slot>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    pending: HashMap<u64, Event>,
    seq: u64,
    group: Option<Vec<usize>>,
    log: Vec<(Duration, usize, MembershipEvent)>,
}

/// Gossip address of simulated member `i` (never bound: the simulation has no sockets).
pub fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)),
        7946,
    )
}

impl Sim {
    /// Builds the cluster; nobody has joined yet (see [`Sim::join_all`]).
    pub fn new(cfg: SimConfig) -> Self {
        let mut sim = Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            now_us: 0,
            slots: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            seq: 0,
            group: None,
            log: Vec::new(),
            cfg,
        };
        for i in 0..sim.cfg.nodes {
            let id = NodeIdentity::new(format!("n{i}"), "sim", Role::Broker, sim_addr(i));
            let node = sim.make_node(id, i, 0);
            sim.by_addr.insert(sim_addr(i), i);
            sim.slots.push(Slot {
                node,
                up: true,
                generation: 0,
                bytes_sent: 0,
            });
            sim.schedule_resync(i);
        }
        sim
    }

    fn make_node(&self, id: NodeIdentity, i: usize, generation: u32) -> Node {
        let keyring = self
            .cfg
            .encrypt
            .then(|| Keyring::from_keys(&[[0x5A; 32]]).expect("one key"));
        let seed = self.cfg.seed ^ ((i as u64) << 32) ^ u64::from(generation);
        Node::new(id, self.cfg.gossip.clone(), keyring, seed).expect("preset validates")
    }

    /// The seed of this run (put it in every assertion message).
    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    /// Number of members (up or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True for an empty cluster.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Member `i`'s node.
    pub fn node(&self, i: usize) -> &Node {
        &self.slots[i].node
    }

    /// Whether member `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].up
    }

    /// Bytes member `i` has sent so far.
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.slots[i].bytes_sent
    }

    /// Every membership event so far: (virtual time, observer, event).
    pub fn events(&self) -> &[(Duration, usize, MembershipEvent)] {
        &self.log
    }

    /// Sets the loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    /// Every member but the first announces to the first.
    pub fn join_all(&mut self) {
        for i in 1..self.slots.len() {
            let out = self.slots[i].node.announce(&[sim_addr(0)]);
            self.apply(i, out);
        }
    }

    /// Crashes member `i`: it stops handling anything, with no goodbye.
    pub fn kill(&mut self, i: usize) {
        self.slots[i].up = false;
        self.slots[i].generation += 1;
    }

    /// Member `i` leaves gracefully, then stops.
    pub fn leave(&mut self, i: usize) {
        let out = self.slots[i].node.leave();
        self.apply(i, out);
        self.kill(i);
    }

    /// Restarts crashed member `i` with the next incarnation and announces it to `seed`.
    pub fn restart(&mut self, i: usize, seed: usize) {
        let id = self.slots[i].node.identity().next_incarnation();
        let generation = self.slots[i].generation + 1;
        let node = self.make_node(id, i, generation);
        self.slots[i] = Slot {
            node,
            up: true,
            generation,
            bytes_sent: self.slots[i].bytes_sent,
        };
        self.schedule_resync(i);
        let out = self.slots[i].node.announce(&[sim_addr(seed)]);
        self.apply(i, out);
    }

    /// Splits the network: datagrams only flow inside a group.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let mut g = vec![usize::MAX; self.slots.len()];
        for (gi, members) in groups.iter().enumerate() {
            for &m in members {
                g[m] = gi;
            }
        }
        self.group = Some(g);
    }

    /// Removes the partition.
    pub fn heal(&mut self) {
        self.group = None;
    }

    /// Member `i` writes a shared-state key at the current virtual time.
    pub fn set(&mut self, i: usize, key: &str, value: &[u8]) {
        let now_ms = self.now_us / 1000;
        let out = self.slots[i]
            .node
            .set(key, value.to_vec(), now_ms)
            .expect("small entry");
        self.apply(i, out);
    }

    /// What member `observer` believes about member `target` (None if unknown).
    pub fn state_of(&self, observer: usize, target: usize) -> Option<MemberState> {
        let addr = sim_addr(target);
        self.slots[observer]
            .node
            .members()
            .into_iter()
            .find(|m| m.identity.gossip_addr == addr)
            .map(|m| m.state)
    }

    /// True when every running member sees exactly the running members alive.
    pub fn converged(&self) -> bool {
        let up: Vec<usize> = (0..self.slots.len()).filter(|&i| self.is_up(i)).collect();
        up.iter().all(|&o| {
            self.slots[o].node.alive_count() == up.len()
                && up
                    .iter()
                    .all(|&t| self.state_of(o, t) == Some(MemberState::Alive))
        })
    }

    /// Runs `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now_us + d.as_micros() as u64;
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now_us = at;
            let ev = self.pending.remove(&seq).expect("queued event exists");
            self.dispatch(ev);
        }
        self.now_us = end;
    }

    /// Runs until `done` holds (checked every 100 ms of virtual time) or `limit`
    /// passes; returns the virtual time taken, or None on timeout.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now_us;
        let step = Duration::from_millis(100);
        loop {
            if done(self) {
                return Some(Duration::from_micros(self.now_us - start));
            }
            if self.now_us - start >= limit.as_micros() as u64 {
                return None;
            }
            self.run_for(step);
        }
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, from, data } => {
                if self.slots[to].up {
                    let out = self.slots[to].node.handle_datagram(from, &data);
                    self.apply(to, out);
                }
            }
            Event::Timer {
                node,
                generation,
                timer,
            } => {
                if self.slots[node].up && self.slots[node].generation == generation {
                    let out = self.slots[node].node.handle_timer(timer);
                    self.apply(node, out);
                }
            }
            Event::Resync { node, generation } => {
                if self.slots[node].up && self.slots[node].generation == generation {
                    let out = self.slots[node].node.resync();
                    self.apply(node, out);
                    self.schedule_resync(node);
                }
            }
        }
    }

    fn schedule_resync(&mut self, i: usize) {
        let every = self.cfg.gossip.state_resync_every.as_micros() as u64;
        // jitter so members do not resync in lockstep
        let at = self.now_us + every / 2 + self.rng.random_range(0..every.max(1));
        let generation = self.slots[i].generation;
        self.push(
            at,
            Event::Resync {
                node: i,
                generation,
            },
        );
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, ev);
    }

    fn apply(&mut self, i: usize, out: Output) {
        let from = sim_addr(i);
        let generation = self.slots[i].generation;
        for (to_addr, data) in out.sends {
            self.slots[i].bytes_sent += data.len() as u64;
            let Some(&to) = self.by_addr.get(&to_addr) else {
                continue;
            };
            if let Some(g) = &self.group
                && g[i] != g[to]
            {
                continue;
            }
            if self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss) {
                continue;
            }
            let (lo, hi) = (
                self.cfg.min_delay.as_micros() as u64,
                self.cfg.max_delay.as_micros() as u64,
            );
            let delay = if hi > lo {
                self.rng.random_range(lo..=hi)
            } else {
                lo
            };
            self.push(self.now_us + delay, Event::Deliver { to, from, data });
        }
        for (after, timer) in out.timers {
            let at = self.now_us + after.as_micros() as u64;
            self.push(
                at,
                Event::Timer {
                    node: i,
                    generation,
                    timer,
                },
            );
        }
        let now = self.now();
        for e in out.events {
            self.log.push((now, i, e));
        }
    }
}
