//! The sans-IO membership node: foca plus encryption, events, stats and shared state.
//!
//! Inputs are method calls (`handle_datagram`, `handle_timer`, `announce`, `set`,
//! `resync`, `leave`); every effect comes back in an [`Output`] for the caller to
//! perform (send datagrams, schedule timers, publish events). The UDP shell and the
//! simulation drive the same code, so what the simulation proves holds for the shell.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use serde::{Deserialize, Serialize};

use crate::state::{Item, MAX_ENTRY_BYTES, Replicated, StateHandler};
use crate::{GossipConfig, GossipError, Keyring, NodeIdentity};

/// Resync rounds after `announce` in which the seeds are asked again for members.
const JOIN_BOOST_ROUNDS: u32 = 2;

/// Liveness of a member as this node believes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; will be declared down unless it refutes in time.
    Suspect,
    /// Declared failed (or left); ignored until it rejoins with a higher incarnation.
    Down,
}

/// One entry of the membership view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Who the member is and where to reach it.
    pub identity: NodeIdentity,
    /// Its liveness.
    pub state: MemberState,
    /// Its restart generation (same as `identity.incarnation`), for display.
    pub incarnation: u64,
}

/// A change in the membership view, published to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member became known and alive (first join, or rejoin after being down).
    Joined(Member),
    /// A member missed probes and is suspected.
    Suspect(Member),
    /// A member was declared failed.
    Down(Member),
    /// A member left gracefully.
    Left(Member),
    /// A live member changed: refuted a suspicion or restarted with a new incarnation.
    Updated(Member),
}

/// Counters of what the node did; exposed so operators can alert on drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the network.
    pub datagrams_sent: u64,
    /// Bytes handed to the network (encryption included).
    pub bytes_sent: u64,
    /// Datagrams received (before any check).
    pub datagrams_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Datagrams dropped because no key in the ring authenticated them.
    pub datagrams_dropped_auth: u64,
    /// Datagrams dropped because they were malformed (bad framing or foca payload).
    pub datagrams_dropped_malformed: u64,
    /// Datagrams dropped by the shell's test filter (partitions).
    pub datagrams_dropped_filtered: u64,
    /// Probe rounds started.
    pub probes: u64,
    /// Times a member went from alive to suspect.
    pub suspicions: u64,
    /// Times a member was declared down (not counting graceful leaves).
    pub downs: u64,
    /// Suspicions this node concluded itself because foca had dropped their timer.
    pub stale_suspicions_expired: u64,
    /// Remote shared-state deltas that changed the local map.
    pub state_updates_applied: u64,
}

/// What one input produced, for the driver to carry out.
#[derive(Debug, Default)]
pub struct Output {
    /// Datagrams to send (already encrypted unless the node runs without a keyring).
    pub sends: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to deliver back through [`Node::handle_timer`] after the delay.
    pub timers: Vec<(Duration, Timer<NodeIdentity>)>,
    /// Membership changes this input caused.
    pub events: Vec<MembershipEvent>,
}

/// The sans-IO membership node (see the module docs).
pub struct Node {
    foca: Foca<NodeIdentity, PostcardCodec, StdRng, StateHandler>,
    rt: AccumulatingRuntime<NodeIdentity>,
    keyring: Option<Keyring>,
    /// Which key each peer last authenticated with: we answer in that key.
    peer_key: HashMap<SocketAddr, usize>,
    rng: StdRng,
    shared: Arc<Mutex<Replicated>>,
    stats: Stats,
    view: BTreeMap<SocketAddr, (NodeIdentity, MemberState)>,
    config: GossipConfig,
    left: bool,
    /// Seeds last given to `announce`, retried while we know no live member.
    seeds: Vec<SocketAddr>,
    /// Suspects and for how many probe periods they have been suspect (see
    /// `expire_stale_suspicions`).
    suspects: HashMap<SocketAddr, (NodeIdentity, u16, u32)>,
    /// Resync rounds left in which we announce to the seeds again after joining.
    join_boost: u32,
}

impl Node {
    /// A node that has not joined anyone yet. `keyring: None` disables encryption
    /// and is meant only for the simulation's long runs; `seed` drives every random
    /// choice (probe order, nonces), so a run replays from it.
    pub fn new(
        identity: NodeIdentity,
        config: GossipConfig,
        keyring: Option<Keyring>,
        seed: u64,
    ) -> Result<Self, GossipError> {
        let config = config.validate()?;
        let shared = Arc::new(Mutex::new(Replicated::default()));
        let foca = Foca::with_custom_broadcast(
            identity,
            config.foca.clone(),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
            StateHandler {
                shared: Arc::clone(&shared),
            },
        );
        Ok(Self {
            foca,
            rt: AccumulatingRuntime::new(),
            keyring,
            peer_key: HashMap::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15),
            shared,
            stats: Stats::default(),
            view: BTreeMap::new(),
            config,
            left: false,
            seeds: Vec::new(),
            suspects: HashMap::new(),
            join_boost: 0,
        })
    }

    /// This node's current identity (its incarnation grows if it had to rejoin).
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    /// The config the node runs with.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.state_updates_applied = self.lock().applied;
        s
    }

    /// Membership view: this node first (alive unless it left), then every member
    /// it knows, down ones included, sorted by gossip address.
    pub fn members(&self) -> Vec<Member> {
        let me = self.identity().clone();
        let mut out = vec![Member {
            incarnation: me.incarnation,
            state: if self.left {
                MemberState::Down
            } else {
                MemberState::Alive
            },
            identity: me,
        }];
        out.extend(self.view.values().map(|(id, state)| Member {
            identity: id.clone(),
            state: *state,
            incarnation: id.incarnation,
        }));
        out
    }

    /// Number of members (this node included) this node believes alive.
    pub fn alive_count(&self) -> usize {
        self.members()
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count()
    }

    /// Value of a shared-state key.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().state.get(key).map(<[u8]>::to_vec)
    }

    /// The whole shared state.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().state.snapshot()
    }

    /// Handles one datagram from `from`: decrypt, then feed foca.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8]) -> Output {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += data.len() as u64;
        let plain = match &self.keyring {
            None => data.to_vec(),
            Some(ring) => match ring.open(data) {
                Ok((plain, key)) => {
                    self.peer_key.insert(from, key);
                    plain
                }
                Err(GossipError::Unauthenticated { len, keys }) => {
                    self.stats.datagrams_dropped_auth += 1;
                    tracing::debug!(%from, len, keys, "gossip datagram dropped: authentication failed");
                    return Output::default();
                }
                Err(e) => {
                    self.stats.datagrams_dropped_malformed += 1;
                    tracing::debug!(%from, error = %e, "gossip datagram dropped: malformed");
                    return Output::default();
                }
            },
        };
        if let Err(e) = self.foca.handle_data(&plain, &mut self.rt) {
            self.stats.datagrams_dropped_malformed += 1;
            tracing::debug!(%from, error = %e, "gossip payload rejected by foca");
        }
        self.drain()
    }

    /// Handles a timer the driver scheduled from an earlier [`Output`].
    pub fn handle_timer(&mut self, timer: Timer<NodeIdentity>) -> Output {
        if matches!(timer, Timer::ProbeRandomMember(_)) {
            self.stats.probes += 1;
            self.expire_stale_suspicions();
        }
        if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
            tracing::warn!(error = %e, "gossip timer handling failed");
        }
        self.drain()
    }

    /// Asks each seed (known only by address) to let us in.
    /// While this node knows no live member, [`Node::resync`] announces again, so a
    /// lost announce or a seed started later does not leave it alone for good.
    pub fn announce(&mut self, seeds: &[SocketAddr]) -> Output {
        self.seeds = seeds.to_vec();
        self.join_boost = JOIN_BOOST_ROUNDS;
        self.announce_to_seeds();
        self.drain()
    }

    fn announce_to_seeds(&mut self) {
        let me = self.foca.identity().gossip_addr;
        for seed in self.seeds.clone() {
            if seed == me {
                continue;
            }
            if let Err(e) = self.foca.announce(NodeIdentity::seed(seed), &mut self.rt) {
                tracing::warn!(seed = %seed, error = %e, "gossip announce failed");
            }
        }
    }

    /// Sets a shared-state key at this node's time `now_millis`; it spreads by gossip.
    pub fn set(
        &mut self,
        key: &str,
        value: Vec<u8>,
        now_millis: u64,
    ) -> Result<Output, GossipError> {
        let marker = self
            .lock()
            .state
            .next_marker(key, now_millis, &self.identity().name);
        let data = Item::Set {
            key: key.to_owned(),
            value,
            marker,
        }
        .encode();
        if data.len() > MAX_ENTRY_BYTES {
            return Err(GossipError::EntryTooLarge {
                key: key.to_owned(),
                size: data.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        self.foca
            .add_broadcast(&data)
            .map_err(|e| GossipError::Core(e.to_string()))?;
        // Push it out now rather than waiting for the next probe or gossip round.
        if let Err(e) = self.foca.broadcast(&mut self.rt) {
            tracing::warn!(error = %e, "gossip broadcast failed");
        }
        Ok(self.drain())
    }

    /// Anti-entropy: re-sends a few random shared-state entries so values lost to
    /// packet loss or a partition still reach everyone. Call every
    /// `config.state_resync_every`. Also re-announces to the seeds while alone.
    pub fn resync(&mut self) -> Output {
        if !self.left && self.foca.num_members() == 0 {
            self.announce_to_seeds();
        } else if !self.left && self.join_boost > 0 {
            // A seed's reply (Feed) lists every member it knows; asking again shortly
            // after a join picks up members whose join news we missed (many joining
            // at once overflow foca's update backlog), instead of waiting for the
            // periodic announce.
            self.join_boost -= 1;
            self.announce_to_seeds();
        }
        let entries: Vec<(String, Vec<u8>, crate::state::Marker)> = {
            let shared = self.shared.lock().expect("state lock poisoned");
            let keys = shared.state.keys();
            keys.into_iter()
                .sample(&mut self.rng, self.config.state_resync_batch)
                .into_iter()
                .filter_map(|k| shared.state.entry(&k).map(|(v, m)| (k, v, m)))
                .collect()
        };
        for (key, value, marker) in entries {
            let data = Item::Set { key, value, marker }.encode();
            if let Err(e) = self.foca.add_broadcast(&data) {
                tracing::warn!(error = %e, "gossip resync failed");
            }
        }
        if let Err(e) = self.foca.broadcast(&mut self.rt) {
            tracing::warn!(error = %e, "gossip broadcast failed");
        }
        self.drain()
    }

    /// Leaves gracefully: tells a few members we are going, so the cluster reports
    /// `Left` at once instead of suspecting us. The node is inert afterwards.
    pub fn leave(&mut self) -> Output {
        let me = self.identity();
        let data = Item::Leave {
            addr: me.gossip_addr,
            incarnation: me.incarnation,
        }
        .encode();
        if let Err(e) = self.foca.add_broadcast(&data) {
            tracing::warn!(error = %e, "gossip leave broadcast failed");
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            tracing::warn!(error = %e, "gossip leave failed");
        }
        self.left = true;
        self.drain()
    }

    /// foca drops its pending suspect-to-down timers whenever this node changes
    /// identity (e.g. it rejoined after a partition), which can leave a member
    /// Suspect forever. Counted in probe periods (the probe timer runs whenever we
    /// are connected), a suspicion older than the timeout plus two periods is
    /// concluded here exactly as the lost timer would have: the member is Down.
    fn expire_stale_suspicions(&mut self) {
        let period = self.config.foca.probe_period.as_secs_f64().max(1e-3);
        let limit =
            (self.config.foca.suspect_to_down_after.as_secs_f64() / period).ceil() as u32 + 2;
        let mut still = HashMap::new();
        let mut expired = Vec::new();
        for m in self.foca.iter_membership_state() {
            if m.state() != foca::State::Suspect {
                continue;
            }
            let addr = m.id().gossip_addr;
            let ticks = match self.suspects.get(&addr) {
                Some((id, inc, t)) if id == m.id() && *inc == m.incarnation() => t + 1,
                _ => 0,
            };
            if ticks > limit {
                expired.push(foca::Member::new(
                    m.id().clone(),
                    m.incarnation(),
                    foca::State::Down,
                ));
            } else {
                still.insert(addr, (m.id().clone(), m.incarnation(), ticks));
            }
        }
        self.suspects = still;
        if !expired.is_empty() {
            self.stats.stale_suspicions_expired += expired.len() as u64;
            tracing::info!(members = ?expired.iter().map(|m| m.id()).collect::<Vec<_>>(), "suspicion timed out without its timer; declaring down");
            if let Err(e) = self
                .foca
                .apply_many(expired.into_iter(), true, &mut self.rt)
            {
                tracing::warn!(error = %e, "could not declare stale suspects down");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Replicated> {
        self.shared.lock().expect("state lock poisoned")
    }

    /// Turns what foca accumulated into an [`Output`] and diffs the view into events.
    fn drain(&mut self) -> Output {
        let mut out = Output::default();
        while let Some((dst, data)) = self.rt.to_send() {
            let addr = dst.gossip_addr;
            let wire = match &self.keyring {
                None => data.to_vec(),
                Some(ring) => {
                    let key = self.peer_key.get(&addr).copied().unwrap_or(0);
                    ring.seal_with(key, &data, &mut self.rng)
                }
            };
            self.stats.datagrams_sent += 1;
            self.stats.bytes_sent += wire.len() as u64;
            out.sends.push((addr, wire));
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            out.timers.push((after, timer));
        }
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(identity = ?id, "cluster declared us down; rejoined with a new incarnation");
                }
                OwnedNotification::Defunct => {
                    tracing::info!("this gossip node is now down (left or declared down)");
                }
                OwnedNotification::Idle => tracing::info!("no other live gossip members"),
                _ => {}
            }
        }
        self.diff_view(&mut out.events);
        out
    }

    fn diff_view(&mut self, events: &mut Vec<MembershipEvent>) {
        let current: BTreeMap<SocketAddr, (NodeIdentity, MemberState)> = self
            .foca
            .iter_membership_state()
            .map(|m| {
                let state = match m.state() {
                    foca::State::Alive => MemberState::Alive,
                    foca::State::Suspect => MemberState::Suspect,
                    foca::State::Down => MemberState::Down,
                };
                (m.id().gossip_addr, (m.id().clone(), state))
            })
            .collect();
        if current == self.view {
            return;
        }
        let left = self.lock().left.clone();
        for (addr, (id, state)) in &current {
            let member = Member {
                identity: id.clone(),
                state: *state,
                incarnation: id.incarnation,
            };
            let prev = self.view.get(addr);
            use MemberState::*;
            let event = match (prev, *state) {
                (None, Down) => None,
                (None, _) => Some(MembershipEvent::Joined(member)),
                (Some((_, Down)), Alive | Suspect) => Some(MembershipEvent::Joined(member)),
                (Some((pid, ps)), Down) if *ps != Down || pid != id => {
                    if *ps == Down {
                        None
                    } else if left.get(addr).is_some_and(|inc| *inc >= id.incarnation) {
                        Some(MembershipEvent::Left(member))
                    } else {
                        self.stats.downs += 1;
                        Some(MembershipEvent::Down(member))
                    }
                }
                (Some((pid, Alive)), Suspect) if pid == id => {
                    self.stats.suspicions += 1;
                    Some(MembershipEvent::Suspect(member))
                }
                (Some((pid, ps)), s) if pid != id || *ps != s => {
                    if s == Suspect {
                        self.stats.suspicions += 1;
                    }
                    Some(MembershipEvent::Updated(member))
                }
                _ => None,
            };
            if let Some(e) = event {
                tracing::debug!(observer = %self.identity().name, event = ?e, "membership change");
                events.push(e);
            }
        }
        self.view = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn node(i: u8, keys: Option<Keyring>) -> Node {
        let addr: SocketAddr = format!("10.0.0.{i}:7946").parse().unwrap();
        let id = NodeIdentity::new(format!("n{i}"), "eu", Role::Mirror, addr);
        Node::new(id, GossipConfig::lan(3), keys, u64::from(i)).unwrap()
    }

    #[test]
    fn set_rejects_entry_too_large_for_a_datagram_and_keeps_state() {
        let mut n = node(1, None);
        let err = n.set("big", vec![0; 2_000], 1).unwrap_err();
        assert!(matches!(
            err,
            GossipError::EntryTooLarge {
                max: MAX_ENTRY_BYTES,
                ..
            }
        ));
        assert!(n.snapshot().is_empty());
    }

    #[test]
    fn announce_sends_one_encrypted_datagram_per_seed_within_size_limit() {
        let ring = Keyring::from_keys(&[[3; 32]]).unwrap();
        let mut n = node(1, Some(ring.clone()));
        let seeds: Vec<SocketAddr> = vec![
            "10.0.0.2:7946".parse().unwrap(),
            "10.0.0.3:7946".parse().unwrap(),
        ];
        let out = n.announce(&seeds);
        let to: Vec<SocketAddr> = out.sends.iter().map(|(a, _)| *a).collect();
        assert_eq!(to, seeds);
        for (_, d) in &out.sends {
            assert!(d.len() <= crate::MAX_DATAGRAM);
            assert!(ring.open(d).is_ok());
        }
    }

    #[test]
    fn two_nodes_exchange_until_each_sees_the_other_joined() {
        let ring = Keyring::from_keys(&[[3; 32]]).unwrap();
        let mut a = node(1, Some(ring.clone()));
        let mut b = node(2, Some(ring));
        let (aa, ba) = (a.identity().gossip_addr, b.identity().gossip_addr);
        let mut to_b = a.announce(&[ba]).sends;
        let mut events = Vec::new();
        for _ in 0..4 {
            let mut to_a = Vec::new();
            for (_, d) in to_b.drain(..) {
                let out = b.handle_datagram(aa, &d);
                events.extend(out.events);
                to_a.extend(out.sends);
            }
            for (_, d) in to_a {
                let out = a.handle_datagram(ba, &d);
                events.extend(out.events);
                to_b.extend(out.sends);
            }
        }
        assert_eq!(a.alive_count(), 2);
        assert_eq!(b.alive_count(), 2);
        let joined = events
            .iter()
            .filter(|e| matches!(e, MembershipEvent::Joined(_)))
            .count();
        assert_eq!(
            joined, 2,
            "each side reports the other joined once: {events:?}"
        );
    }
}
