//! Broker liveness as the active controller sees it, kept in memory (far too frequent
//! for the Raft log). Only the Raft leader acts on it. Two signals:
//!
//! - **Heartbeats** and the session timeout: a broker silent for `session_timeout` is
//!   fenced. This catches every failure, hung processes and network partitions
//!   included, but only after the whole timeout. A new leader starts every broker's
//!   clock afresh, so a leader change never fences a broker that heartbeated to the
//!   previous leader.
//! - **Attachment**: every broker holds a long-lived stream open to every controller
//!   voter. A process that dies (kill -9, crash, OOM) has its sockets closed by the
//!   kernel at once, so its streams end; if it does not attach again within a short
//!   grace the leader fences it, well before its session timeout. A closed connection
//!   is a fact, not a timing guess, so this adds no false suspicions on a loaded
//!   machine. Every voter keeps this record, not only the leader, so a voter elected
//!   after the death (the dead broker may have been the controller) acts on it at once.
//!   Only a stream that ended counts: a broker that never attached (it cannot reach a
//!   voter) is left to the session timeout, never fenced and unfenced in a loop.
//!
//! Plain struct, time passed in: tests drive it with made-up instants.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::state::ClusterState;

/// Last-heartbeat times of the region's brokers.
#[derive(Debug, Default)]
pub struct Liveness {
    last_seen: HashMap<u64, Instant>,
    /// Open attachment streams per broker.
    attached: HashMap<u64, u32>,
    /// When each broker's last stream ended (while it has none).
    detached_at: HashMap<u64, Instant>,
}

impl Liveness {
    /// A heartbeat from `broker` arrived at `now`.
    pub fn observe(&mut self, broker: u64, now: Instant) {
        self.last_seen.insert(broker, now);
    }

    /// This node just became the active controller: every broker gets a full session.
    /// Attachments are kept: they were recorded while this node was a follower voter.
    pub fn reset(&mut self, state: &ClusterState, now: Instant) {
        self.last_seen = state.brokers.keys().map(|id| (*id, now)).collect();
    }

    /// Forgets the heartbeat clocks (this node is no longer the active controller).
    pub fn clear(&mut self) {
        self.last_seen.clear();
    }

    /// A stream from `broker` opened.
    pub fn attach(&mut self, broker: u64) {
        *self.attached.entry(broker).or_default() += 1;
        self.detached_at.remove(&broker);
    }

    /// A stream from `broker` ended at `now`.
    pub fn detach(&mut self, broker: u64, now: Instant) {
        let left = match self.attached.get_mut(&broker) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.attached.remove(&broker);
            self.detached_at.insert(broker, now);
        }
    }

    /// Unfenced brokers whose streams all ended `grace` or more before `now` without a
    /// new one. Each is returned once: fencing it is the caller's job, and the session
    /// timeout still applies if that fails.
    pub fn disconnected(
        &mut self,
        state: &ClusterState,
        now: Instant,
        grace: Duration,
    ) -> Vec<u64> {
        let out: BTreeSet<u64> = self
            .detached_at
            .iter()
            .filter(|(id, at)| {
                state.brokers.get(id).is_some_and(|b| !b.fenced)
                    && now.saturating_duration_since(**at) >= grace
            })
            .map(|(id, _)| *id)
            .collect();
        self.detached_at.retain(|id, _| !out.contains(id));
        out.into_iter().collect()
    }

    /// Unfenced brokers whose last heartbeat is `session_timeout` or more before `now`.
    /// A broker this node has never heard of starts its session at `now`.
    pub fn expired(
        &mut self,
        state: &ClusterState,
        now: Instant,
        session_timeout: Duration,
    ) -> Vec<u64> {
        state
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                let seen = *self.last_seen.entry(b.id).or_insert(now);
                now.saturating_duration_since(seen) >= session_timeout
            })
            .map(|b| b.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::Command;
    use super::*;

    fn state(ids: &[u64]) -> ClusterState {
        let mut state = ClusterState::default();
        for (i, id) in ids.iter().enumerate() {
            state
                .apply(
                    &Command::RegisterBroker {
                        id: *id,
                        name: format!("b{id}"),
                        region: "r".into(),
                        grpc_addr: String::new(),
                        kafka_addr: None,
                    },
                    i as u64 + 1,
                )
                .unwrap();
        }
        state
    }

    #[test]
    fn broker_missing_its_session_timeout_expires_and_others_do_not() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(6);
        let state = state(&[1, 2]);
        let mut live = Liveness::default();
        live.reset(&state, t0);
        live.observe(1, t0 + Duration::from_secs(5));
        assert!(
            live.expired(&state, t0 + Duration::from_secs(5), timeout)
                .is_empty()
        );
        assert_eq!(
            live.expired(&state, t0 + Duration::from_secs(6), timeout),
            vec![2]
        );
    }

    #[test]
    fn fenced_brokers_do_not_expire_again() {
        let t0 = Instant::now();
        let mut state = state(&[1]);
        state.apply(&Command::FenceBroker { id: 1 }, 10).unwrap();
        let mut live = Liveness::default();
        live.reset(&state, t0);
        assert!(
            live.expired(&state, t0 + Duration::from_secs(60), Duration::from_secs(6))
                .is_empty()
        );
    }

    #[test]
    fn new_active_controller_gives_every_broker_a_full_session() {
        let t0 = Instant::now();
        let state = state(&[1]);
        let mut live = Liveness::default();
        live.observe(1, t0);
        // Leadership moves here much later: the old timestamp must not count.
        let later = t0 + Duration::from_secs(30);
        live.reset(&state, later);
        assert!(
            live.expired(
                &state,
                later + Duration::from_secs(5),
                Duration::from_secs(6)
            )
            .is_empty()
        );
    }

    #[test]
    fn a_broker_whose_streams_end_is_disconnected_after_the_grace_unless_it_reattaches() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(500);
        let state = state(&[1, 2, 3]);
        let mut live = Liveness::default();
        live.attach(2);
        live.attach(3);
        live.attach(3);
        assert!(
            live.disconnected(&state, t0 + grace, grace).is_empty(),
            "all attached"
        );
        live.detach(2, t0);
        live.detach(3, t0);
        assert!(
            live.disconnected(&state, t0 + grace / 2, grace).is_empty(),
            "within grace"
        );
        assert_eq!(
            live.disconnected(&state, t0 + grace * 2, grace),
            vec![2],
            "3 still has a stream"
        );
        assert!(
            live.disconnected(&state, t0 + grace * 3, grace).is_empty(),
            "reported once"
        );
        live.detach(3, t0 + grace * 3);
        live.attach(3);
        assert!(
            live.disconnected(&state, t0 + grace * 5, grace).is_empty(),
            "3 came back"
        );
    }

    #[test]
    fn a_detachment_seen_as_a_follower_counts_once_this_node_leads() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(500);
        let state = state(&[1, 2]);
        let mut live = Liveness::default();
        live.attach(2);
        live.detach(2, t0);
        // Elected two seconds later: the dead broker is reported at the first check.
        live.clear();
        live.reset(&state, t0 + Duration::from_secs(2));
        assert_eq!(
            live.disconnected(&state, t0 + Duration::from_secs(2), grace),
            vec![2]
        );
    }

    #[test]
    fn a_broker_that_never_attached_is_left_to_its_session() {
        let t0 = Instant::now();
        let state = state(&[1, 2]);
        let mut live = Liveness::default();
        live.reset(&state, t0);
        assert!(
            live.disconnected(
                &state,
                t0 + Duration::from_secs(60),
                Duration::from_millis(1)
            )
            .is_empty()
        );
    }
}
