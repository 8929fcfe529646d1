//! Broker liveness as the active controller sees it: the time of each broker's last
//! heartbeat, kept in memory (heartbeats are far too frequent for the Raft log). Only the
//! Raft leader acts on it; a new leader starts every broker's clock afresh, so a leader
//! change never fences a broker that was heartbeating to the previous leader.
//!
//! Plain struct, time passed in: tests drive it with made-up instants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::state::ClusterState;

/// Last-heartbeat times of the region's brokers.
#[derive(Debug, Default)]
pub struct Liveness {
    last_seen: HashMap<u64, Instant>,
}

impl Liveness {
    /// A heartbeat from `broker` arrived at `now`.
    pub fn observe(&mut self, broker: u64, now: Instant) {
        self.last_seen.insert(broker, now);
    }

    /// This node just became the active controller: every broker gets a full session.
    pub fn reset(&mut self, state: &ClusterState, now: Instant) {
        self.last_seen = state.brokers.keys().map(|id| (*id, now)).collect();
    }

    /// Forgets everything (this node is no longer the active controller).
    pub fn clear(&mut self) {
        self.last_seen.clear();
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
}
