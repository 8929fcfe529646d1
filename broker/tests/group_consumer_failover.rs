//! Two consumers share a group through the public group API only (as the gRPC service and
//! the Kafka listener will): they split the partitions; one dies silently; the survivor
//! takes every partition and its commits are accepted, while the dead one's are refused.
//! Virtual time: no sockets, no sleeps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::ErrorCode;
use broker::group::assignor::{Assignment, RoundRobinAssignor, Subscription, assign_group};
use broker::group::{
    CompletionResponse, GroupConfig, GroupCoordinator, GroupState, JoinOutcome, JoinRequest,
    JoinResponse, Protocol, SyncOutcome, SyncResponse, Ticket,
};

/// A consumer as a client library would run it against the coordinator.
struct Consumer {
    client_id: &'static str,
    member_id: String,
    joined: Option<JoinResponse>,
    partitions: Vec<i32>,
}

impl Consumer {
    fn new(client_id: &'static str) -> Self {
        Consumer {
            client_id,
            member_id: String::new(),
            joined: None,
            partitions: Vec::new(),
        }
    }

    fn request(&self) -> JoinRequest {
        let subscription = Subscription::new(["orders"]).encode(1).unwrap();
        let mut req = JoinRequest::new("billing", self.client_id);
        req.member_id = self.member_id.clone();
        req.protocols = vec![Protocol::new("roundrobin", subscription)];
        req.session_timeout = Duration::from_secs(10);
        req.rebalance_timeout = Duration::from_secs(20);
        req
    }
}

/// Parked tickets and what they were answered with.
#[derive(Default)]
struct Replies {
    joins: BTreeMap<Ticket, JoinResponse>,
    syncs: BTreeMap<Ticket, SyncResponse>,
}

impl Replies {
    fn deliver(&mut self, c: &mut GroupCoordinator) {
        for done in c.take_completions() {
            match done.response {
                CompletionResponse::Join(r) => {
                    self.joins.insert(done.ticket, r.unwrap());
                }
                CompletionResponse::Sync(r) => {
                    self.syncs.insert(done.ticket, r.unwrap());
                }
            }
        }
    }
}

fn partitions(assignment: &[u8]) -> Vec<i32> {
    Assignment::decode(assignment)
        .unwrap()
        .partitions
        .iter()
        .map(|tp| tp.partition)
        .collect()
}

/// Joins every consumer (all must be answered by the time the last one joins or `tick_at`
/// passes), then syncs followers first and the leader last.
fn rebalance(
    c: &mut GroupCoordinator,
    replies: &mut Replies,
    consumers: &mut [&mut Consumer],
    now: Instant,
    tick_at: Instant,
) {
    let mut tickets = Vec::new();
    for consumer in consumers.iter_mut() {
        match c.join(consumer.request(), now).unwrap() {
            JoinOutcome::Ready(r) => tickets.push(Err(r)),
            JoinOutcome::Pending(t) => tickets.push(Ok(t)),
        }
        replies.deliver(c);
    }
    c.tick(tick_at);
    replies.deliver(c);
    for (consumer, ticket) in consumers.iter_mut().zip(tickets) {
        let r = match ticket {
            Ok(t) => replies.joins.remove(&t).expect("join answered"),
            Err(r) => r,
        };
        consumer.member_id = r.member_id.clone();
        consumer.joined = Some(r);
    }
    let topics = BTreeMap::from([("orders".to_string(), 6)]);
    let mut order: Vec<usize> = (0..consumers.len()).collect();
    order.sort_by_key(|&i| consumers[i].joined.as_ref().unwrap().is_leader());
    let mut parked = Vec::new();
    for i in order {
        let r = consumers[i].joined.clone().unwrap();
        let plan = if r.is_leader() {
            assign_group(&RoundRobinAssignor, &r.members, &topics).unwrap()
        } else {
            Vec::new()
        };
        match c
            .sync(
                "billing",
                &r.member_id,
                None,
                r.generation_id,
                plan,
                tick_at,
            )
            .unwrap()
        {
            SyncOutcome::Ready(s) => consumers[i].partitions = partitions(&s.assignment),
            SyncOutcome::Pending(t) => parked.push((i, t)),
        }
        replies.deliver(c);
    }
    for (i, t) in parked {
        let s = replies.syncs.remove(&t).expect("sync answered");
        consumers[i].partitions = partitions(&s.assignment);
    }
}

#[test]
fn survivor_takes_over_every_partition_after_a_consumer_dies() {
    let mut c = GroupCoordinator::new(GroupConfig::default(), 2026);
    let mut replies = Replies::default();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut a = Consumer::new("consumer-a");
    let mut b = Consumer::new("consumer-b");

    // Both start together: one generation after the 3 s initial delay (extended once).
    rebalance(&mut c, &mut replies, &mut [&mut a, &mut b], at(0), at(6));
    assert_eq!(a.joined.as_ref().unwrap().generation_id, 1);
    assert_eq!(a.partitions.len() + b.partitions.len(), 6);
    assert_eq!((a.partitions.len(), b.partitions.len()), (3, 3));
    let description = c.describe_group("billing");
    assert_eq!(description.state, GroupState::Stable);
    assert_eq!(description.protocol_name, "roundrobin");

    // b is killed (kill -9: no LeaveGroup); a keeps heartbeating and committing.
    for s in [9, 12, 15] {
        c.tick(at(s));
        replies.deliver(&mut c);
        c.heartbeat("billing", &a.member_id, None, 1, at(s))
            .unwrap();
        c.validate_commit("billing", &a.member_id, None, 1, at(s))
            .unwrap();
    }
    c.tick(at(17));
    let err = c
        .heartbeat("billing", &a.member_id, None, 1, at(17))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RebalanceInProgress);

    rebalance(&mut c, &mut replies, &mut [&mut a], at(17), at(17));
    assert_eq!(a.joined.as_ref().unwrap().generation_id, 2);
    assert_eq!(a.partitions, vec![0, 1, 2, 3, 4, 5]);
    c.validate_commit("billing", &a.member_id, None, 2, at(18))
        .expect("the survivor commits in the new generation");
    let refused = c.validate_commit("billing", &b.member_id, None, 1, at(18));
    assert_eq!(refused.unwrap_err().code(), ErrorCode::UnknownMemberId);
    let listed = c.list_groups(&[]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, GroupState::Stable);
}
