//! The leader's pure bookkeeping for one partition: follower log end offsets, when each
//! follower was last caught up, the ISR the controller committed, and the high
//! watermark derived from them. No clocks are read here: every call takes `now`, so
//! tests drive it with made-up instants.
//!
//! Rules (Kafka's):
//! - high watermark = min log end offset of the ISR (the leader included); it never
//!   moves backwards and never passes the leader's own (durable) log end offset. A
//!   follower in the ISR that has not fetched yet holds it still.
//! - a follower is caught up when it fetches at the leader's log end offset, or at the
//!   leader's log end offset of its previous fetch (it read everything there was then);
//!   one not caught up for `replica_lag_max` leaves the ISR.
//! - a follower out of the ISR whose log end offset reaches the high watermark joins.
//! - ISR changes are only *proposed* here ([`LeaderState::desired_isr`]); the ISR used
//!   for the high watermark is the one the controller committed ([`LeaderState::set_isr`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Follower {
    /// The follower's log end offset (its last fetch offset); `None` before its first
    /// fetch in this leadership.
    leo: Option<i64>,
    last_caught_up: Instant,
    last_fetch_leader_leo: i64,
    last_fetch_time: Instant,
}

/// What the leader of one partition knows about its replicas, for one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderState {
    leader: u64,
    epoch: i32,
    isr: Vec<u64>,
    followers: BTreeMap<u64, Follower>,
    leader_leo: i64,
    high_watermark: i64,
    replica_lag_max: Duration,
}

impl LeaderState {
    /// A new leadership: `high_watermark` is where the partition's HW stood (its
    /// checkpoint, or the follower's HW); every follower gets `replica_lag_max` from
    /// `now` to show it is caught up before it can be dropped from the ISR.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        leader: u64,
        epoch: i32,
        replicas: &[u64],
        isr: &[u64],
        leader_leo: i64,
        high_watermark: i64,
        replica_lag_max: Duration,
        now: Instant,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|id| **id != leader)
            .map(|id| {
                (
                    *id,
                    Follower {
                        leo: None,
                        last_caught_up: now,
                        last_fetch_leader_leo: -1,
                        last_fetch_time: now,
                    },
                )
            })
            .collect();
        let mut state = Self {
            leader,
            epoch,
            isr: isr.to_vec(),
            followers,
            leader_leo,
            high_watermark: high_watermark.min(leader_leo).max(0),
            replica_lag_max,
        };
        state.recompute();
        state
    }

    /// The leader epoch this state belongs to.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The ISR as the controller last committed it.
    pub fn isr(&self) -> &[u64] {
        &self.isr
    }

    /// The current high watermark.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The leader's own log end offset, as last reported.
    pub fn leader_leo(&self) -> i64 {
        self.leader_leo
    }

    /// Whether `id` is a follower replica of this partition.
    pub fn is_follower(&self, id: u64) -> bool {
        self.followers.contains_key(&id)
    }

    /// The leader's log end offset moved (an append became durable). Returns the high
    /// watermark afterwards.
    pub fn leader_appended(&mut self, leader_leo: i64) -> i64 {
        self.leader_leo = leader_leo;
        self.recompute()
    }

    /// A follower fetched at `offset` (so it holds everything below it) while the
    /// leader's log held records up to `leader_leo` (durable or not: that is what the
    /// follower could read). Returns the high watermark afterwards. Unknown replicas are
    /// ignored.
    pub fn follower_fetched(&mut self, id: u64, offset: i64, leader_leo: i64, now: Instant) -> i64 {
        if let Some(f) = self.followers.get_mut(&id) {
            f.leo = Some(offset);
            if offset >= leader_leo {
                f.last_caught_up = now;
            } else if offset >= f.last_fetch_leader_leo && f.last_fetch_leader_leo >= 0 {
                f.last_caught_up = f.last_caught_up.max(f.last_fetch_time);
            }
            f.last_fetch_leader_leo = leader_leo;
            f.last_fetch_time = now;
        }
        self.recompute()
    }

    /// The controller committed a new ISR for this epoch. Returns the high watermark
    /// afterwards (a shrink may let it advance).
    pub fn set_isr(&mut self, isr: &[u64]) -> i64 {
        self.isr = isr.to_vec();
        self.recompute()
    }

    /// The ISR the leader wants given what it saw: followers not caught up within
    /// `replica_lag_max` out, followers that reached the high watermark in. `None` when
    /// it is the committed one. Replica order is kept.
    pub fn desired_isr(&self, now: Instant) -> Option<Vec<u64>> {
        let mut wanted = vec![self.leader];
        for (id, f) in &self.followers {
            let in_isr = self.isr.contains(id);
            let lagging = now.saturating_duration_since(f.last_caught_up) > self.replica_lag_max;
            let keep = if in_isr {
                !lagging
            } else {
                f.leo
                    .is_some_and(|leo| leo >= self.high_watermark && leo >= 0)
                    && !lagging
            };
            if keep {
                wanted.push(*id);
            }
        }
        let mut current = self.isr.clone();
        current.sort_unstable();
        wanted.sort_unstable();
        (wanted != current).then_some(wanted)
    }

    /// How many ISR members count towards `min.insync.replicas` now: the leader plus the
    /// ISR followers caught up within `replica_lag_max` (a follower the leader already
    /// knows is lagging does not count, even before the controller drops it).
    pub fn in_sync_count(&self, now: Instant) -> usize {
        1 + self
            .isr
            .iter()
            .filter(|id| **id != self.leader)
            .filter(|id| {
                self.followers.get(id).is_some_and(|f| {
                    now.saturating_duration_since(f.last_caught_up) <= self.replica_lag_max
                })
            })
            .count()
    }

    /// Whether an acks=all append whose last offset is `last_offset` is committed.
    pub fn is_committed(&self, last_offset: i64) -> bool {
        self.high_watermark > last_offset
    }

    fn recompute(&mut self) -> i64 {
        let mut candidate = self.leader_leo;
        for id in &self.isr {
            if *id == self.leader {
                continue;
            }
            match self.followers.get(id).and_then(|f| f.leo) {
                Some(leo) => candidate = candidate.min(leo),
                None => candidate = candidate.min(self.high_watermark),
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
        }
        self.high_watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(10);

    fn leader(now: Instant) -> LeaderState {
        LeaderState::new(1, 3, &[1, 2, 3], &[1, 2, 3], 0, 0, LAG, now)
    }

    #[test]
    fn high_watermark_is_the_min_log_end_offset_of_the_isr() {
        let t = Instant::now();
        let mut s = leader(t);
        assert_eq!(s.leader_appended(10), 0, "followers have not fetched yet");
        assert_eq!(
            s.follower_fetched(2, 10, 10, t),
            0,
            "follower 3 holds it back"
        );
        assert_eq!(s.follower_fetched(3, 6, 10, t), 6);
        assert!(s.is_committed(5));
        assert!(!s.is_committed(6));
        assert_eq!(s.follower_fetched(3, 10, 10, t), 10);
        assert!(s.is_committed(9));
    }

    #[test]
    fn high_watermark_never_moves_backwards_or_past_the_leader() {
        let t = Instant::now();
        let mut s = LeaderState::new(1, 0, &[1, 2], &[1, 2], 5, 50, LAG, t);
        assert_eq!(
            s.high_watermark(),
            5,
            "a checkpoint above the log end is clamped"
        );
        s.follower_fetched(2, 5, 5, t);
        s.leader_appended(8);
        s.follower_fetched(2, 8, 8, t);
        assert_eq!(s.high_watermark(), 8);
        // A follower re-fetching lower (it truncated) does not lower the HW.
        assert_eq!(s.follower_fetched(2, 3, 8, t), 8);
    }

    #[test]
    fn a_single_replica_commits_on_its_own_append() {
        let t = Instant::now();
        let mut s = LeaderState::new(7, 0, &[7], &[7], 0, 0, LAG, t);
        assert_eq!(s.leader_appended(4), 4);
        assert!(s.is_committed(3));
        assert_eq!(s.desired_isr(t), None);
        assert_eq!(s.in_sync_count(t), 1);
    }

    #[test]
    fn a_follower_not_caught_up_within_lag_max_is_dropped_from_the_isr() {
        let t = Instant::now();
        let mut s = leader(t);
        s.leader_appended(10);
        s.follower_fetched(2, 10, 10, t);
        s.follower_fetched(3, 4, 10, t);
        assert_eq!(s.desired_isr(t + LAG), None, "within lag max both stay");
        let later = t + LAG + Duration::from_millis(1);
        s.follower_fetched(2, 10, 10, later);
        assert_eq!(s.desired_isr(later), Some(vec![1, 2]));
        assert_eq!(s.in_sync_count(later), 2);
        // Once the controller commits the shrink, the HW moves past follower 3.
        assert_eq!(s.set_isr(&[1, 2]), 10);
    }

    #[test]
    fn a_follower_that_read_everything_of_its_previous_fetch_counts_as_caught_up() {
        let t = Instant::now();
        let mut s = leader(t);
        s.leader_appended(10);
        s.follower_fetched(2, 0, 10, t + Duration::from_secs(9));
        // The leader kept appending, but the follower reached the previous fetch's end.
        s.leader_appended(20);
        let now = t + Duration::from_secs(15);
        s.follower_fetched(2, 10, 20, now);
        s.follower_fetched(3, 20, 20, now);
        assert_eq!(
            s.desired_isr(now),
            None,
            "caught up as of its previous fetch"
        );
        assert_eq!(s.desired_isr(t + Duration::from_secs(20)), Some(vec![1, 3]));
    }

    #[test]
    fn a_follower_out_of_the_isr_joins_when_it_reaches_the_high_watermark() {
        let t = Instant::now();
        let mut s = LeaderState::new(1, 2, &[1, 2, 3], &[1, 2], 10, 10, LAG, t);
        s.follower_fetched(2, 10, 10, t);
        s.follower_fetched(3, 5, 10, t);
        assert_eq!(s.desired_isr(t), None, "3 is behind the HW");
        s.follower_fetched(3, 10, 10, t);
        assert_eq!(s.desired_isr(t), Some(vec![1, 2, 3]));
        s.set_isr(&[1, 2, 3]);
        assert_eq!(s.desired_isr(t), None);
    }

    #[test]
    fn acks_all_waits_for_every_isr_member_and_min_isr_counts_only_the_caught_up() {
        let t = Instant::now();
        let mut s = leader(t);
        s.leader_appended(3);
        s.follower_fetched(2, 3, 3, t);
        assert!(!s.is_committed(2), "follower 3 has not fetched it");
        assert_eq!(s.in_sync_count(t), 3);
        let late = t + LAG + Duration::from_secs(1);
        assert_eq!(
            s.in_sync_count(late),
            1,
            "both followers silent past lag max"
        );
        s.follower_fetched(3, 3, 3, t);
        assert!(s.is_committed(2));
    }
}
