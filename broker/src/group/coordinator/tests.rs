//! Coordinator behaviour, driven with virtual time: no sockets, no sleeps.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::error::ErrorCode;
use crate::group::assignor::{
    Assignment, RangeAssignor, RoundRobinAssignor, Subscription, assign_group,
};

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Drives one coordinator and remembers every completion it hands out.
struct Harness {
    c: GroupCoordinator,
    t0: Instant,
    joins: BTreeMap<Ticket, Result<JoinResponse, BrokerError>>,
    syncs: BTreeMap<Ticket, Result<SyncResponse, BrokerError>>,
}

impl Harness {
    fn new(initial_delay: Duration) -> Self {
        let config = GroupConfig {
            initial_rebalance_delay: initial_delay,
            ..GroupConfig::default()
        };
        Harness {
            c: GroupCoordinator::new(config, 7),
            t0: Instant::now(),
            joins: BTreeMap::new(),
            syncs: BTreeMap::new(),
        }
    }

    fn at(&self, s: u64) -> Instant {
        self.t0 + secs(s)
    }

    fn collect(&mut self) {
        for c in self.c.take_completions() {
            match c.response {
                CompletionResponse::Join(r) => {
                    assert!(
                        self.joins.insert(c.ticket, r).is_none(),
                        "ticket answered twice"
                    );
                }
                CompletionResponse::Sync(r) => {
                    assert!(
                        self.syncs.insert(c.ticket, r).is_none(),
                        "ticket answered twice"
                    );
                }
            }
        }
    }

    fn join_with(&mut self, req: JoinRequest, s: u64) -> Result<JoinOutcome> {
        let out = self.c.join(req, self.at(s));
        self.collect();
        out
    }

    fn join(&mut self, member_id: &str, client: &str, s: u64) -> JoinOutcome {
        self.join_with(request("g", member_id, client, &["orders"]), s)
            .expect("join accepted")
    }

    fn tick(&mut self, s: u64) {
        self.c.tick(self.at(s));
        self.collect();
    }

    /// The answer to a join, whether it came at once or through a completion.
    fn joined(&mut self, outcome: JoinOutcome) -> JoinResponse {
        match outcome {
            JoinOutcome::Ready(r) => r,
            JoinOutcome::Pending(t) => self
                .joins
                .remove(&t)
                .expect("join completed")
                .expect("join succeeded"),
        }
    }

    fn heartbeat(&mut self, member: &str, generation: i32, s: u64) -> Result<()> {
        self.c.heartbeat("g", member, None, generation, self.at(s))
    }

    /// Followers sync first (they wait), then the leader sends the range assignment of
    /// `partitions` partitions of `orders`; returns each member's partitions.
    fn sync_round(
        &mut self,
        joined: &[JoinResponse],
        partitions: i32,
        s: u64,
    ) -> BTreeMap<String, Vec<i32>> {
        let leader = joined.iter().find(|r| r.is_leader()).expect("one leader");
        let mut tickets = BTreeMap::new();
        for r in joined.iter().filter(|r| !r.is_leader()) {
            let out = self
                .c
                .sync(
                    "g",
                    &r.member_id,
                    None,
                    r.generation_id,
                    Vec::new(),
                    self.at(s),
                )
                .expect("follower sync accepted");
            let SyncOutcome::Pending(t) = out else {
                panic!("a follower's sync must wait for the leader");
            };
            tickets.insert(r.member_id.clone(), t);
        }
        let topics = BTreeMap::from([("orders".to_string(), partitions)]);
        let plan = assign_group(&RangeAssignor, &leader.members, &topics).expect("assign");
        let out = self
            .c
            .sync(
                "g",
                &leader.member_id,
                None,
                leader.generation_id,
                plan,
                self.at(s),
            )
            .expect("leader sync accepted");
        self.collect();
        let mut result = BTreeMap::new();
        let SyncOutcome::Ready(own) = out else {
            panic!("the leader's sync completes at once");
        };
        result.insert(leader.member_id.clone(), partitions_of(&own.assignment));
        for (member, t) in tickets {
            let r = self
                .syncs
                .remove(&t)
                .expect("sync completed")
                .expect("sync ok");
            result.insert(member, partitions_of(&r.assignment));
        }
        result
    }
}

fn request(group: &str, member_id: &str, client: &str, topics: &[&str]) -> JoinRequest {
    let subscription = Subscription::new(topics.iter().copied())
        .encode(1)
        .expect("encode");
    JoinRequest {
        member_id: member_id.to_string(),
        client_host: "127.0.0.1".to_string(),
        protocols: vec![Protocol::new("range", subscription)],
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        ..JoinRequest::new(group, client)
    }
}

fn partitions_of(assignment: &Bytes) -> Vec<i32> {
    Assignment::decode(assignment)
        .expect("assignment decodes")
        .partitions
        .into_iter()
        .map(|tp| tp.partition)
        .collect()
}

fn code<T: std::fmt::Debug>(result: Result<T>) -> ErrorCode {
    result.expect_err("an error").code()
}

/// Two members in the initial delay, stable with a range assignment of 4 partitions.
fn stable_pair(h: &mut Harness) -> (JoinResponse, JoinResponse) {
    let a = h.join("", "app", 0);
    let b = h.join("", "app", 1);
    h.tick(6);
    let a = h.joined(a);
    let b = h.joined(b);
    h.sync_round(&[a.clone(), b.clone()], 4, 6);
    (a, b)
}

#[test]
fn two_members_join_one_generation_then_a_third_rebalances_everyone() {
    let mut h = Harness::new(secs(3));
    let a = h.join("", "app", 0);
    let b = h.join("", "app", 1);
    assert!(matches!(a, JoinOutcome::Pending(_)) && matches!(b, JoinOutcome::Pending(_)));
    // The initial delay (3 s) is extended once because a member arrived during it.
    h.tick(3);
    assert!(
        h.joins.is_empty(),
        "joins complete only after the initial delay"
    );
    assert_eq!(
        h.c.describe_group("g").state,
        GroupState::PreparingRebalance
    );
    h.tick(6);
    let a = h.joined(a);
    let b = h.joined(b);
    assert_eq!((a.generation_id, b.generation_id), (1, 1));
    assert!(a.is_leader() && !b.is_leader(), "the first member leads");
    assert_eq!(a.leader, b.leader);
    assert_eq!(a.members.len(), 2, "the leader sees every member");
    assert!(b.members.is_empty(), "followers see no member list");
    assert_eq!(a.protocol_name, "range");
    assert!(a.member_id.starts_with("app-") && a.member_id.len() == "app-".len() + 36);

    let split = h.sync_round(&[a.clone(), b.clone()], 4, 6);
    assert_eq!(split.values().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
    let all: BTreeSet<i32> = split.values().flatten().copied().collect();
    assert_eq!(all, BTreeSet::from([0, 1, 2, 3]));
    let described = h.c.describe_group("g");
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.generation_id, 1);
    assert!(described.members.iter().all(|m| !m.assignment.is_empty()));

    // A third member: everyone learns through heartbeats and rejoins.
    let c = h.join("", "other", 7);
    assert!(matches!(c, JoinOutcome::Pending(_)));
    assert_eq!(
        code(h.heartbeat(&a.member_id, 1, 8)),
        ErrorCode::RebalanceInProgress
    );
    assert_eq!(
        code(h.heartbeat(&b.member_id, 1, 8)),
        ErrorCode::RebalanceInProgress
    );
    let a2 = h.join(&a.member_id, "app", 8);
    assert!(matches!(a2, JoinOutcome::Pending(_)));
    let b2 = h.join(&b.member_id, "app", 9);
    assert!(
        matches!(b2, JoinOutcome::Ready(_)),
        "the last rejoin completes the join phase"
    );
    let (a2, b2, c) = (h.joined(a2), h.joined(b2), h.joined(c));
    assert_eq!(
        [a2.generation_id, b2.generation_id, c.generation_id],
        [2, 2, 2]
    );
    assert!(a2.is_leader() && a2.members.len() == 3);
    let split = h.sync_round(&[a2, b2, c], 6, 9);
    assert_eq!(
        split.values().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    assert_eq!(h.c.describe_group("g").state, GroupState::Stable);
}

#[test]
fn expired_session_rebalances_and_the_survivor_takes_every_partition() {
    let mut h = Harness::new(secs(3));
    let (a, b) = stable_pair(&mut h);
    // a heartbeats every 3 s; b goes silent after second 6 (session 10 s).
    for s in [9, 12, 15] {
        h.tick(s);
        h.heartbeat(&a.member_id, 1, s).expect("stable heartbeat");
    }
    h.tick(16);
    assert_eq!(
        h.c.describe_group("g").members.len(),
        1,
        "b expired at 16 s"
    );
    assert_eq!(
        code(h.heartbeat(&a.member_id, 1, 17)),
        ErrorCode::RebalanceInProgress
    );
    assert_eq!(
        code(h.heartbeat(&b.member_id, 1, 17)),
        ErrorCode::UnknownMemberId
    );
    let a2 = h.join(&a.member_id, "app", 17);
    let a2 = h.joined(a2);
    assert_eq!(a2.generation_id, 2);
    let split = h.sync_round(&[a2], 4, 17);
    assert_eq!(split[&a.member_id], vec![0, 1, 2, 3]);
}

#[test]
fn leave_rebalances_at_once_and_the_last_leave_empties_the_group() {
    let mut h = Harness::new(secs(3));
    let (a, b) = stable_pair(&mut h);
    let rows =
        h.c.leave("g", &[LeaveMember::dynamic(&b.member_id)], h.at(7))
            .expect("leave");
    assert!(rows[0].error.is_none());
    assert_eq!(
        h.c.describe_group("g").state,
        GroupState::PreparingRebalance
    );
    assert_eq!(
        code(h.heartbeat(&a.member_id, 1, 7)),
        ErrorCode::RebalanceInProgress
    );
    let a2 = h.join(&a.member_id, "app", 7);
    let a2 = h.joined(a2);
    assert_eq!(a2.generation_id, 2);
    h.sync_round(&[a2], 4, 7);

    let rows =
        h.c.leave(
            "g",
            &[
                LeaveMember::dynamic(&a.member_id),
                LeaveMember::dynamic("ghost"),
            ],
            h.at(8),
        )
        .expect("leave");
    assert!(rows[0].error.is_none());
    assert_eq!(
        rows[1].error.as_ref().map(BrokerError::code),
        Some(ErrorCode::UnknownMemberId)
    );
    let described = h.c.describe_group("g");
    assert_eq!(described.state, GroupState::Empty);
    assert!(described.members.is_empty() && described.leader.is_none());
    assert_eq!(
        described.generation_id, 3,
        "emptying the group is a generation too"
    );
    assert_eq!(
        h.c.list_groups(&[GroupState::Empty]),
        vec![GroupListing {
            group_id: "g".to_string(),
            protocol_type: "consumer".to_string(),
            state: GroupState::Empty,
        }]
    );
}

#[test]
fn leaving_while_parked_in_join_answers_the_join_unknown_member() {
    let mut h = Harness::new(secs(3));
    let a = h.join("", "app", 0);
    let b = h.join("", "app", 1);
    let (JoinOutcome::Pending(_), JoinOutcome::Pending(tb)) = (a, b) else {
        panic!("both wait in the initial delay");
    };
    let b_id = h.c.describe_group("g").members[1].member_id.clone();
    h.c.leave("g", &[LeaveMember::dynamic(b_id)], h.at(2))
        .expect("leave");
    h.collect();
    let answer = h.joins.remove(&tb).expect("b's parked join is answered");
    assert_eq!(code(answer), ErrorCode::UnknownMemberId);
}

#[test]
fn stale_generation_and_unknown_member_get_kafka_error_codes() {
    let mut h = Harness::new(secs(3));
    let (a, _b) = stable_pair(&mut h);
    assert_eq!(
        code(h.heartbeat(&a.member_id, 0, 7)),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        code(h.heartbeat("nobody", 1, 7)),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        code(h.c.heartbeat("nogroup", "x", None, 1, h.at(7))),
        ErrorCode::UnknownMemberId
    );
    let stale = h.c.sync("g", &a.member_id, None, 5, Vec::new(), h.at(7));
    assert_eq!(code(stale), ErrorCode::IllegalGeneration);
    assert_eq!(
        code(h.c.sync("g", "nobody", None, 1, Vec::new(), h.at(7))),
        ErrorCode::UnknownMemberId
    );
    let rejoin_unknown = h.join_with(request("g", "nobody", "app", &["orders"]), 7);
    assert_eq!(code(rejoin_unknown), ErrorCode::UnknownMemberId);
    let unknown_group = h.join_with(request("fresh", "some-id", "app", &["orders"]), 7);
    assert_eq!(code(unknown_group), ErrorCode::UnknownMemberId);
    assert!(
        h.c.list_groups(&[]).iter().all(|g| g.group_id != "fresh"),
        "a refused join leaves no group behind"
    );

    let mut short = request("g", "", "app", &["orders"]);
    short.session_timeout = Duration::from_millis(500);
    let err = h.join_with(short, 7).expect_err("too short");
    assert_eq!(err.code(), ErrorCode::InvalidSessionTimeout);
    assert!(err.to_string().contains("6000 ms"), "{err}");

    let mut other_type = request("g", "", "app", &["orders"]);
    other_type.protocol_type = "connect".to_string();
    assert_eq!(
        code(h.join_with(other_type, 7)),
        ErrorCode::InconsistentGroupProtocol
    );
    let mut other_protocol = request("g", "", "app", &["orders"]);
    other_protocol.protocols[0].name = "sticky".to_string();
    assert_eq!(
        code(h.join_with(other_protocol, 7)),
        ErrorCode::InconsistentGroupProtocol
    );
    assert_eq!(
        code(h.join_with(request("", "", "app", &["orders"]), 7)),
        ErrorCode::InvalidGroupId
    );

    // During a rebalance, sync is refused until the member rejoins.
    h.join("", "late", 8);
    assert_eq!(
        code(h.c.sync("g", &a.member_id, None, 1, Vec::new(), h.at(8))),
        ErrorCode::RebalanceInProgress
    );
}

#[test]
fn commit_validation_follows_kafka_rules() {
    let mut h = Harness::new(secs(3));
    // Simple consumers: generation -1 and no member id, on a group with no members.
    h.c.validate_commit("simple", "", None, -1, h.at(0))
        .expect("simple commit");
    assert_eq!(h.c.describe_group("simple").state, GroupState::Empty);
    h.c.validate_commit("simple", "", None, -1, h.at(0))
        .expect("again");
    assert_eq!(
        code(h.c.validate_commit("nogroup", "m", None, 3, h.at(0))),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        code(h.c.validate_commit("simple", "m", None, 1, h.at(0))),
        ErrorCode::UnknownMemberId
    );

    let (a, b) = stable_pair(&mut h);
    assert_eq!(
        code(h.c.validate_commit("g", "", None, -1, h.at(7))),
        ErrorCode::UnknownMemberId,
        "only members commit to a group with members"
    );
    h.c.validate_commit("g", &a.member_id, None, 1, h.at(7))
        .expect("member commit");
    assert_eq!(
        code(h.c.validate_commit("g", &a.member_id, None, 0, h.at(7))),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        code(h.c.validate_commit("g", "nobody", None, 1, h.at(7))),
        ErrorCode::UnknownMemberId
    );

    // A commit counts as a heartbeat: b commits instead of heartbeating and survives.
    h.heartbeat(&a.member_id, 1, 12).expect("hb");
    h.c.validate_commit("g", &b.member_id, None, 1, h.at(12))
        .expect("commit");
    h.tick(20);
    assert_eq!(h.c.describe_group("g").state, GroupState::Stable);

    // While preparing a rebalance the old generation may still commit (revocation);
    // once joins completed, the member must finish the rebalance first.
    h.join("", "late", 21);
    h.c.validate_commit("g", &a.member_id, None, 1, h.at(21))
        .expect("commit while preparing");
    h.join(&a.member_id, "app", 21);
    h.join(&b.member_id, "app", 21);
    assert_eq!(
        h.c.describe_group("g").state,
        GroupState::CompletingRebalance
    );
    assert_eq!(
        code(h.c.validate_commit("g", &a.member_id, None, 2, h.at(21))),
        ErrorCode::RebalanceInProgress
    );
}

#[test]
fn members_that_do_not_rejoin_are_evicted_at_the_rebalance_timeout() {
    let mut h = Harness::new(secs(3));
    let (a, b) = stable_pair(&mut h);
    let c = h.join("", "late", 10);
    let a2 = h.join(&a.member_id, "app", 11);
    // b keeps heartbeating but never rejoins; the join phase ends at 10 + 30 s.
    for s in [12, 20, 28, 36] {
        h.tick(s);
        assert_eq!(
            code(h.heartbeat(&b.member_id, 1, s)),
            ErrorCode::RebalanceInProgress
        );
    }
    h.tick(39);
    assert!(h.joins.is_empty());
    h.tick(40);
    let (a2, c) = (h.joined(a2), h.joined(c));
    assert_eq!((a2.generation_id, c.generation_id), (2, 2));
    assert_eq!(a2.members.len(), 2);
    assert_eq!(
        code(h.heartbeat(&b.member_id, 2, 41)),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn leader_that_never_syncs_is_removed_and_the_follower_leads_next() {
    let mut h = Harness::new(secs(3));
    let a = h.join("", "app", 0);
    let b = h.join("", "app", 1);
    h.tick(6);
    let (a, b) = (h.joined(a), h.joined(b));
    let SyncOutcome::Pending(tb) =
        h.c.sync("g", &b.member_id, None, 1, Vec::new(), h.at(7))
            .expect("sync")
    else {
        panic!("follower waits");
    };
    // The leader heartbeats but never syncs; the sync deadline is the rebalance timeout
    // (30 s) after the join completed at 6 s.
    for s in [10, 15, 20, 25, 30, 35] {
        h.tick(s);
        h.heartbeat(&a.member_id, 1, s)
            .expect("heartbeat in CompletingRebalance");
    }
    assert!(h.syncs.is_empty());
    h.tick(36);
    let answer = h.syncs.remove(&tb).expect("parked sync answered");
    assert_eq!(code(answer), ErrorCode::RebalanceInProgress);
    assert_eq!(
        code(h.heartbeat(&a.member_id, 1, 37)),
        ErrorCode::UnknownMemberId
    );
    let b2 = h.join(&b.member_id, "app", 37);
    let b2 = h.joined(b2);
    assert!(b2.is_leader() && b2.generation_id == 2);
}

#[test]
fn stable_follower_rejoin_is_answered_at_once_but_leader_rejoin_rebalances() {
    let mut h = Harness::new(secs(3));
    let (a, b) = stable_pair(&mut h);
    let again = h.join(&b.member_id, "app", 7);
    let JoinOutcome::Ready(r) = again else {
        panic!("a follower with unchanged protocols is answered at once");
    };
    assert_eq!(r.generation_id, 1);
    assert_eq!(h.c.describe_group("g").state, GroupState::Stable);
    let again = h.join(&a.member_id, "app", 7);
    assert!(matches!(again, JoinOutcome::Pending(_)));
    assert_eq!(
        h.c.describe_group("g").state,
        GroupState::PreparingRebalance
    );
}

#[test]
fn resent_join_supersedes_the_parked_one() {
    let mut h = Harness::new(secs(3));
    let (a, b) = stable_pair(&mut h);
    let JoinOutcome::Pending(first) = h.join(&a.member_id, "app", 7) else {
        panic!("leader rejoin waits");
    };
    let second = h.join(&a.member_id, "app", 8);
    assert_eq!(
        code(h.joins.remove(&first).expect("answered")),
        ErrorCode::RebalanceInProgress
    );
    h.join(&b.member_id, "app", 8);
    assert_eq!(h.joined(second).generation_id, 2);
}

#[test]
fn protocol_vote_picks_the_one_every_member_supports() {
    let mut h = Harness::new(Duration::ZERO);
    let sub = Subscription::new(["orders"]).encode(1).expect("encode");
    let mut a = request("g", "", "a", &["orders"]);
    a.protocols = vec![
        Protocol::new("range", sub.clone()),
        Protocol::new("roundrobin", sub.clone()),
    ];
    let mut b = request("g", "", "b", &["orders"]);
    b.protocols = vec![Protocol::new("roundrobin", sub)];
    let ra = h.join_with(a.clone(), 0).expect("join");
    let ra = h.joined(ra);
    assert_eq!(ra.protocol_name, "range", "alone, a's first choice wins");
    h.join_with(b, 1).expect("b shares roundrobin with a");
    a.member_id = ra.member_id.clone();
    let ra2 = h.join_with(a, 1).expect("rejoin");
    let ra2 = h.joined(ra2);
    assert_eq!(ra2.generation_id, 2);
    assert_eq!(
        ra2.protocol_name, "roundrobin",
        "the only protocol both support"
    );
}

#[test]
fn member_id_required_then_join_with_the_given_id() {
    let mut h = Harness::new(Duration::ZERO);
    let mut first = request("g", "", "kip394", &["orders"]);
    first.require_known_member_id = true;
    let err = h.join_with(first, 0).expect_err("member id required");
    assert_eq!(err.code(), ErrorCode::MemberIdRequired);
    let BrokerError::MemberIdRequired { member_id, .. } = err else {
        panic!("wrong variant");
    };
    assert!(member_id.starts_with("kip394-"));
    let joined = h.join(&member_id, "kip394", 1);
    let joined = h.joined(joined);
    assert_eq!(joined.member_id, member_id);
    assert_eq!(joined.generation_id, 1);

    // An id handed out but never used lapses after the session timeout.
    let mut other = request("g", "", "ghost", &["orders"]);
    other.require_known_member_id = true;
    let BrokerError::MemberIdRequired {
        member_id: ghost, ..
    } = h.join_with(other, 2).expect_err("required")
    else {
        panic!("wrong variant");
    };
    h.tick(13);
    assert_eq!(
        code(h.join_with(request("g", &ghost, "ghost", &["orders"]), 13)),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn unloading_answers_parked_requests_not_coordinator() {
    let mut h = Harness::new(secs(3));
    let JoinOutcome::Pending(t) = h.join("", "app", 0) else {
        panic!("waits in the initial delay");
    };
    h.c.unload_all();
    h.collect();
    assert_eq!(
        code(h.joins.remove(&t).expect("answered")),
        ErrorCode::NotCoordinator
    );
    assert!(h.c.list_groups(&[]).is_empty());
    assert_eq!(h.c.describe_group("g").state, GroupState::Dead);
}

#[test]
fn only_an_empty_group_can_be_deleted() {
    let mut h = Harness::new(secs(3));
    assert_eq!(code(h.c.delete_group("g")), ErrorCode::GroupIdNotFound);
    let (a, b) = stable_pair(&mut h);
    let err = h.c.delete_group("g").expect_err("has members");
    assert_eq!(err.code(), ErrorCode::NonEmptyGroup);
    h.c.leave(
        "g",
        &[
            LeaveMember::dynamic(a.member_id),
            LeaveMember::dynamic(b.member_id),
        ],
        h.at(7),
    )
    .expect("leave");
    h.c.delete_group("g").expect("empty group deleted");
    assert!(h.c.list_groups(&[]).is_empty());
}

#[test]
fn next_deadline_names_the_earliest_timer() {
    let mut h = Harness::new(secs(3));
    assert_eq!(h.c.next_deadline(), None);
    h.join("", "app", 0);
    assert_eq!(h.c.next_deadline(), Some(h.at(3)));
    h.tick(3);
    // Joined at 3 s: the session (10 s) runs out before the sync deadline (30 s).
    assert_eq!(h.c.next_deadline(), Some(h.at(13)));
}

#[test]
fn group_error_codes_cross_the_wire_unchanged() {
    for (c, n) in [
        (ErrorCode::CoordinatorNotAvailable, 15),
        (ErrorCode::NotCoordinator, 16),
        (ErrorCode::IllegalGeneration, 22),
        (ErrorCode::InconsistentGroupProtocol, 23),
        (ErrorCode::InvalidGroupId, 24),
        (ErrorCode::UnknownMemberId, 25),
        (ErrorCode::InvalidSessionTimeout, 26),
        (ErrorCode::RebalanceInProgress, 27),
        (ErrorCode::NonEmptyGroup, 68),
        (ErrorCode::GroupIdNotFound, 69),
        (ErrorCode::MemberIdRequired, 79),
        (ErrorCode::GroupMaxSizeReached, 81),
    ] {
        assert_eq!(c.as_i32(), n);
        assert_eq!(ErrorCode::from_i32(n), c);
    }
}

// ---- property: any sequence of joins, syncs, heartbeats, leaves and ticks ----

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    Advance(u64),
    /// Every joined member syncs, followers first: the common path to Stable.
    SyncAll,
    /// The static member (slot 3, instance `s3`) restarts: it joins without member id.
    Restart,
}

/// Slot 3 is a static member (KIP-345); the others are dynamic.
fn instance(i: usize) -> Option<&'static str> {
    (i == 3).then_some("s3")
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize).prop_map(Op::Join),
        3 => (0..4usize).prop_map(Op::Sync),
        2 => (0..4usize).prop_map(Op::Heartbeat),
        1 => (0..4usize).prop_map(Op::Leave),
        3 => (0..20_000u64).prop_map(Op::Advance),
        2 => Just(Op::SyncAll),
        1 => Just(Op::Restart),
    ]
}

const SLOT_TOPICS: [&[&str]; 4] = [&["orders"], &["orders", "audit"], &["audit"], &["orders"]];

fn topics() -> BTreeMap<String, i32> {
    BTreeMap::from([("orders".to_string(), 5), ("audit".to_string(), 3)])
}

#[derive(Default, Clone)]
struct Slot {
    id: Option<String>,
    joined: Option<JoinResponse>,
    join_ticket: Option<Ticket>,
    sync_ticket: Option<Ticket>,
}

fn check_invariants(c: &GroupCoordinator, last_generation: &mut i32) {
    let d = c.describe_group("g");
    if d.state == GroupState::Dead {
        return;
    }
    assert!(d.generation_id >= *last_generation, "generation went back");
    *last_generation = d.generation_id;
    let instances: Vec<&str> = d
        .members
        .iter()
        .filter_map(|m| m.group_instance_id.as_deref())
        .collect();
    assert!(
        instances.len() <= 1,
        "one static instance id, one member: {instances:?}"
    );
    match d.state {
        GroupState::Empty => assert!(d.members.is_empty() && d.leader.is_none()),
        GroupState::CompletingRebalance | GroupState::Stable => {
            assert!(!d.members.is_empty());
            let leader = d.leader.clone().expect("a leader");
            assert!(d.members.iter().any(|m| m.member_id == leader));
        }
        GroupState::PreparingRebalance | GroupState::Dead => {}
    }
    if d.state == GroupState::Stable {
        let mut seen = BTreeSet::new();
        for m in &d.members {
            assert!(
                !m.assignment.is_empty(),
                "member {} has no assignment",
                m.member_id
            );
            for tp in Assignment::decode(&m.assignment)
                .expect("decodes")
                .partitions
            {
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
    }
}

fn sync_slot(
    c: &mut GroupCoordinator,
    slot: &mut Slot,
    instance: Option<&str>,
    now: Instant,
    parked: &mut BTreeSet<Ticket>,
) {
    let Some(r) = slot.joined.clone() else {
        return;
    };
    let plan = if r.is_leader() {
        assign_group(&RoundRobinAssignor, &r.members, &topics()).expect("assign")
    } else {
        Vec::new()
    };
    match c.sync("g", &r.member_id, instance, r.generation_id, plan, now) {
        Ok(SyncOutcome::Pending(t)) => {
            parked.insert(t);
            slot.sync_ticket = Some(t);
        }
        Ok(SyncOutcome::Ready(_)) | Err(_) => {}
    }
}

fn run_ops(ops: Vec<Op>) {
    let mut c = GroupCoordinator::new(
        GroupConfig {
            initial_rebalance_delay: secs(3),
            ..GroupConfig::default()
        },
        42,
    );
    let t0 = Instant::now();
    let mut now = t0;
    let mut slots: Vec<Slot> = vec![Slot::default(); 4];
    let mut answered: BTreeSet<Ticket> = BTreeSet::new();
    let mut parked: BTreeSet<Ticket> = BTreeSet::new();
    let mut last_generation = 0;
    for op in ops.into_iter().map(Some).chain([None]) {
        let Some(op) = op else {
            // At the end the coordinator resigns: every parked request must get an answer.
            c.unload_all();
            for done in c.take_completions() {
                assert!(
                    answered.insert(done.ticket),
                    "ticket {:?} answered twice",
                    done.ticket
                );
            }
            assert_eq!(parked, answered, "parked requests and answers differ");
            break;
        };
        match op {
            Op::Join(_) | Op::Restart => {
                let (i, member_id) = match op {
                    Op::Join(i) => (i, slots[i].id.clone().unwrap_or_default()),
                    _ => (3, String::new()),
                };
                let mut req = request("g", &member_id, &format!("c{i}"), SLOT_TOPICS[i]);
                req.group_instance_id = instance(i).map(str::to_string);
                req.protocols.push(Protocol::new(
                    "roundrobin",
                    req.protocols[0].metadata.clone(),
                ));
                req.protocols.swap(0, 1);
                match c.join(req, now) {
                    Ok(JoinOutcome::Ready(r)) => {
                        slots[i].id = Some(r.member_id.clone());
                        slots[i].joined = Some(r);
                    }
                    Ok(JoinOutcome::Pending(t)) => {
                        parked.insert(t);
                        slots[i].join_ticket = Some(t);
                        let d = c.describe_group("g");
                        if let Some(instance) = instance(i) {
                            slots[i].id = d
                                .members
                                .iter()
                                .find(|m| m.group_instance_id.as_deref() == Some(instance))
                                .map(|m| m.member_id.clone());
                        } else if slots[i].id.is_none() {
                            slots[i].id = d.members.last().map(|m| m.member_id.clone());
                        }
                    }
                    Err(e) => {
                        assert!(
                            matches!(
                                e.code(),
                                ErrorCode::UnknownMemberId | ErrorCode::FencedInstanceId
                            ),
                            "{e}"
                        );
                        slots[i] = Slot::default();
                    }
                }
            }
            Op::Sync(i) => sync_slot(&mut c, &mut slots[i], instance(i), now, &mut parked),
            Op::SyncAll => {
                let mut order: Vec<usize> = (0..slots.len()).collect();
                order.sort_by_key(|&i| slots[i].joined.as_ref().is_some_and(|r| r.is_leader()));
                for i in order {
                    sync_slot(&mut c, &mut slots[i], instance(i), now, &mut parked);
                }
            }
            Op::Heartbeat(i) => {
                if let (Some(id), Some(r)) = (&slots[i].id, &slots[i].joined) {
                    let _ = c.heartbeat("g", id, instance(i), r.generation_id, now);
                }
            }
            Op::Leave(i) => {
                if let Some(id) = slots[i].id.clone() {
                    let leaving = LeaveMember {
                        member_id: id,
                        group_instance_id: instance(i).map(str::to_string),
                    };
                    c.leave("g", &[leaving], now).expect("leave");
                    slots[i] = Slot::default();
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(ms);
                c.tick(now);
            }
        }
        for done in c.take_completions() {
            assert!(
                answered.insert(done.ticket),
                "ticket {:?} answered twice",
                done.ticket
            );
            let Some(i) = slots.iter().position(|s| {
                s.join_ticket == Some(done.ticket) || s.sync_ticket == Some(done.ticket)
            }) else {
                continue;
            };
            match done.response {
                CompletionResponse::Join(Ok(r)) => {
                    slots[i].join_ticket = None;
                    slots[i].joined = Some(r);
                }
                CompletionResponse::Join(Err(e)) => {
                    slots[i].join_ticket = None;
                    if e.code() == ErrorCode::UnknownMemberId {
                        slots[i] = Slot::default();
                    }
                }
                CompletionResponse::Sync(_) => slots[i].sync_ticket = None,
            }
        }
        check_invariants(&c, &mut last_generation);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn any_sequence_keeps_the_group_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(ops);
    }
}

#[test]
fn assignors_never_assign_a_partition_twice_in_a_group_run() {
    // A fixed long run through the property harness, so a regression shows without
    // proptest's shrinking noise.
    let mut ops = Vec::new();
    for round in 0..5u64 {
        for i in 0..4 {
            ops.push(Op::Join(i));
        }
        ops.push(Op::Advance(7_000 + round));
        for i in 0..4 {
            ops.push(Op::Sync(i));
        }
        ops.push(Op::Leave(usize::try_from(round % 4).unwrap()));
        ops.push(Op::Advance(1_000));
    }
    run_ops(ops);
}

#[test]
fn a_full_group_refuses_new_members_with_group_max_size_reached() {
    let config = GroupConfig {
        initial_rebalance_delay: Duration::ZERO,
        max_group_size: 1,
        ..GroupConfig::default()
    };
    let mut c = GroupCoordinator::new(config, 1);
    let now = Instant::now();
    let first = c
        .join(request("g", "", "a", &["orders"]), now)
        .expect("join");
    let JoinOutcome::Ready(first) = first else {
        panic!("alone and no initial delay: ready at once");
    };
    let err = c
        .join(request("g", "", "b", &["orders"]), now)
        .expect_err("full");
    assert_eq!(err.code(), ErrorCode::GroupMaxSizeReached);
    // The member already in the group may still rejoin.
    c.join(request("g", &first.member_id, "a", &["orders"]), now)
        .expect("rejoin");
}

#[test]
fn a_new_members_join_is_dropped_after_the_new_member_timeout() {
    let mut h = Harness::new(Duration::ZERO);
    let mut slow = request("g", "", "slow", &["orders"]);
    slow.rebalance_timeout = secs(600);
    let a = h.join_with(slow, 0).expect("join");
    let a = h.joined(a);
    h.sync_round(std::slice::from_ref(&a), 2, 0);
    let JoinOutcome::Pending(tb) = h.join("", "new", 1) else {
        panic!("waits for a to rejoin");
    };
    // a heartbeats but never rejoins; the join phase would last 600 s.
    for s in (5..=300).step_by(5) {
        h.tick(s);
        assert!(h.joins.is_empty(), "still waiting at {s} s");
        let _ = h.heartbeat(&a.member_id, 1, s);
    }
    h.tick(301);
    let answer = h.joins.remove(&tb).expect("new member's join answered");
    assert_eq!(code(answer), ErrorCode::UnknownMemberId);
    assert_eq!(h.c.describe_group("g").members.len(), 1);
}

fn static_request(member_id: &str, instance: &str) -> JoinRequest {
    let mut req = request("g", member_id, instance, &["orders"]);
    req.group_instance_id = Some(instance.to_string());
    req
}

/// Two static members (instances `a-1`, `b-1`), stable with 4 partitions split 2/2.
fn stable_static_pair(h: &mut Harness) -> (JoinResponse, JoinResponse) {
    let a = h.join_with(static_request("", "a-1"), 0).expect("join");
    let b = h.join_with(static_request("", "b-1"), 1).expect("join");
    h.tick(6);
    let (a, b) = (h.joined(a), h.joined(b));
    h.sync_round(&[a.clone(), b.clone()], 4, 6);
    (a, b)
}

#[test]
fn restarted_static_member_takes_its_place_without_a_rebalance() {
    let mut h = Harness::new(secs(3));
    let (a, b) = stable_static_pair(&mut h);
    let before = h.c.describe_group("g");
    let old_assignment = before.members[1].assignment.clone();
    assert_eq!(before.members[1].group_instance_id.as_deref(), Some("b-1"));

    // b-1 restarts: it has lost its member id but keeps its instance id.
    let again = h.join_with(static_request("", "b-1"), 7).expect("rejoin");
    let JoinOutcome::Ready(b2) = again else {
        panic!("a static member rejoining a stable group is answered at once");
    };
    assert_ne!(b2.member_id, b.member_id);
    assert_eq!(b2.generation_id, 1, "no new generation");
    assert_eq!(b2.leader, a.member_id);
    assert!(b2.members.is_empty());
    assert_eq!(h.c.describe_group("g").state, GroupState::Stable);
    let synced =
        h.c.sync("g", &b2.member_id, Some("b-1"), 1, Vec::new(), h.at(7))
            .expect("sync");
    let SyncOutcome::Ready(synced) = synced else {
        panic!("stable: answered at once");
    };
    assert_eq!(synced.assignment, old_assignment, "it keeps its partitions");

    // The old incarnation is fenced everywhere.
    let fenced = h.c.heartbeat("g", &b.member_id, Some("b-1"), 1, h.at(8));
    assert_eq!(code(fenced), ErrorCode::FencedInstanceId);
    let fenced =
        h.c.validate_commit("g", &b.member_id, Some("b-1"), 1, h.at(8));
    assert_eq!(code(fenced), ErrorCode::FencedInstanceId);
    let rows =
        h.c.leave(
            "g",
            &[LeaveMember {
                member_id: b.member_id.clone(),
                group_instance_id: Some("b-1".to_string()),
            }],
            h.at(8),
        )
        .expect("leave");
    assert_eq!(
        rows[0].error.as_ref().map(BrokerError::code),
        Some(ErrorCode::FencedInstanceId)
    );
    assert_eq!(h.c.describe_group("g").state, GroupState::Stable);
}

#[test]
fn static_members_that_miss_a_rebalance_stay_until_their_session_expires() {
    let mut h = Harness::new(secs(3));
    let (a, b) = stable_static_pair(&mut h);
    let c = h.join("", "dynamic", 10);
    let b2 = h
        .join_with(static_request(&b.member_id, "b-1"), 10)
        .expect("rejoin");
    // a-1 keeps heartbeating but does not rejoin before the join deadline (10 + 30 s).
    for s in [15, 20, 25, 30, 35] {
        h.tick(s);
        assert_eq!(
            code(h.c.heartbeat("g", &a.member_id, Some("a-1"), 1, h.at(s))),
            ErrorCode::RebalanceInProgress
        );
    }
    h.tick(40);
    let (b2, c) = (h.joined(b2), h.joined(c));
    assert_eq!((b2.generation_id, c.generation_id), (2, 2));
    let members = h.c.describe_group("g").members;
    assert_eq!(members.len(), 3, "the static member was not evicted");
    assert!(b2.is_leader(), "leadership moves to a member that rejoined");
    // a-1 learns of the new generation and rejoins with its member id.
    assert_eq!(
        code(h.c.heartbeat("g", &a.member_id, Some("a-1"), 1, h.at(41))),
        ErrorCode::IllegalGeneration
    );
    let a2 = h
        .join_with(static_request(&a.member_id, "a-1"), 41)
        .expect("rejoin");
    assert_eq!(h.joined(a2).generation_id, 2);
}

#[test]
fn a_static_member_can_leave_by_instance_id_alone() {
    let mut h = Harness::new(secs(3));
    let (a, _b) = stable_static_pair(&mut h);
    let rows =
        h.c.leave(
            "g",
            &[LeaveMember {
                member_id: String::new(),
                group_instance_id: Some("b-1".to_string()),
            }],
            h.at(7),
        )
        .expect("leave");
    assert!(rows[0].error.is_none());
    let d = h.c.describe_group("g");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, a.member_id);
    // The instance id is free again: a new b-1 joins as a new member.
    h.join_with(static_request("", "b-1"), 8).expect("join");
    assert_eq!(h.c.describe_group("g").members.len(), 2);
}
