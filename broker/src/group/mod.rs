//! Consumer groups: Kafka's classic group protocol as a pure state machine, and the
//! client-side assignors.
//!
//! ```text
//!   shell (gRPC / Kafka listener)                 GroupCoordinator (no I/O, no clock)
//!   ───────────────────────────────               ─────────────────────────────────────
//!   JoinGroup  ──join(req, now)────────────────▶  Ready(response) | Pending(ticket)
//!   SyncGroup  ──sync(.., now)─────────────────▶  Ready(response) | Pending(ticket)
//!   Heartbeat / LeaveGroup / OffsetCommit ─────▶  immediate answers
//!   timer at next_deadline() ──tick(now)───────▶  sessions expire, joins complete
//!   after EVERY call: take_completions() ──────▶  Vec<Completion { ticket, response }>
//!                                                  the shell answers the parked requests
//! ```
//!
//! Kafka's JoinGroup and SyncGroup block until the rebalance reaches the next step. The
//! coordinator never blocks: a call that has to wait returns a [`Ticket`], and the call
//! (or tick) that later completes the step queues a [`Completion`] for that ticket. The
//! shell keeps `ticket → reply channel`, and after every call it delivers
//! [`GroupCoordinator::take_completions`]. If a join or sync completes within its own call,
//! it is answered directly (`Ready`) and no completion is queued for it.
//!
//! Time is an argument (`now: Instant`) to every call, and member ids come from a seeded
//! generator, so a test replays exactly. The states and transitions follow Kafka's
//! `GroupCoordinator` / `GroupMetadata` (classic protocol, KIP-62 separate rebalance and
//! session timeouts, KIP-345 static membership, KIP-394 member id required on first join,
//! pending-sync expiry).
//!
//! Group offsets are stored by the broker's metadata store; the coordinator only decides
//! whether a commit is allowed ([`GroupCoordinator::validate_commit`]).
//!
//! A shell in a few lines (one member, so its join completes at once):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use broker::group::assignor::{assign_group, RangeAssignor, Subscription};
//! use broker::group::{GroupConfig, GroupCoordinator, JoinOutcome, JoinRequest, Protocol, SyncOutcome};
//!
//! let config = GroupConfig { initial_rebalance_delay: Duration::ZERO, ..GroupConfig::default() };
//! let mut coordinator = GroupCoordinator::new(config, 42);
//! let now = Instant::now();
//! let subscription = Subscription::new(["orders"]).encode(1).unwrap();
//! let mut join = JoinRequest::new("billing", "consumer-1");
//! join.protocols = vec![Protocol::new("range", subscription)];
//! let JoinOutcome::Ready(joined) = coordinator.join(join, now).unwrap() else { unreachable!() };
//! for done in coordinator.take_completions() { /* answer done.ticket's request */ }
//! // The leader assigns (client side) and sends the plan with its sync.
//! let topics = [("orders".to_string(), 3)].into_iter().collect();
//! let plan = assign_group(&RangeAssignor, &joined.members, &topics).unwrap();
//! let synced = coordinator.sync("billing", &joined.member_id, None, joined.generation_id, plan, now).unwrap();
//! assert!(matches!(synced, SyncOutcome::Ready(_)));
//! // Tick when the next timer is due.
//! if let Some(at) = coordinator.next_deadline() { coordinator.tick(at); }
//! ```

pub mod assignor;
mod coordinator;
pub mod shell;
pub mod wire;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::error::BrokerError;

pub use coordinator::GroupCoordinator;

/// Where a group is in its rebalance cycle. The names are Kafka's, so that operators and
/// Kafka tools read `describe` output the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    /// No members; the group may still own committed offsets.
    Empty,
    /// A rebalance started: the coordinator waits for every member to (re)join.
    PreparingRebalance,
    /// Joins are complete: the coordinator waits for the leader's assignment (SyncGroup).
    CompletingRebalance,
    /// Every member has its assignment; members heartbeat.
    Stable,
    /// The group is gone (deleted, or its coordinator moved); also what `describe` says of
    /// a group that does not exist, as Kafka does.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state, as shown by ListGroups / DescribeGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Coordinator limits; the defaults are Kafka's broker defaults so Kafka clients behave as
/// they would against Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub min_session_timeout: Duration,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub max_session_timeout: Duration,
    /// How long the first rebalance of an empty group waits for more members before it
    /// completes (`group.initial.rebalance.delay.ms`), so that a fleet of consumers starting
    /// together gets one generation instead of one per member. Zero turns it off.
    pub initial_rebalance_delay: Duration,
    /// Most members a group may have (`group.max.size`); a new member beyond it gets
    /// GROUP_MAX_SIZE_REACHED.
    pub max_group_size: usize,
    /// How long a new member's first join may wait before it is dropped: its client may
    /// have given up and retried, and a dropped socket is not visible to the coordinator
    /// (Kafka's fixed 5 minutes, `NewMemberJoinTimeoutMs`).
    pub new_member_join_timeout: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(30 * 60),
            initial_rebalance_delay: Duration::from_secs(3),
            max_group_size: usize::MAX,
            new_member_join_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// One protocol a member supports (for consumers: an assignor name such as `range`, and
/// its subscription bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// The protocol (assignor) name.
    pub name: String,
    /// Opaque metadata; for consumers, a ConsumerProtocol subscription.
    pub metadata: Bytes,
}

impl Protocol {
    /// Builds a protocol entry.
    pub fn new(name: impl Into<String>, metadata: impl Into<Bytes>) -> Self {
        Protocol {
            name: name.into(),
            metadata: metadata.into(),
        }
    }
}

/// A JoinGroup request, field for field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The group to join.
    pub group_id: String,
    /// The member id from an earlier join, or "" for a new member.
    pub member_id: String,
    /// KIP-345 static membership (`group.instance.id`): a consumer restarted with the same
    /// instance id takes its old place without a rebalance, and is not evicted for missing
    /// a rebalance, only when its session expires.
    pub group_instance_id: Option<String>,
    /// The client's id; new member ids start with it.
    pub client_id: String,
    /// The client's host, shown by describe.
    pub client_host: String,
    /// The protocol type, `consumer` for consumers; every member must use the same.
    pub protocol_type: String,
    /// The protocols the member supports, most preferred first.
    pub protocols: Vec<Protocol>,
    /// How long without a heartbeat before the member is removed.
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin (KIP-62).
    pub rebalance_timeout: Duration,
    /// KIP-394 (JoinGroup v4+): answer a first join without a member id with
    /// MEMBER_ID_REQUIRED and a member id to join with.
    pub require_known_member_id: bool,
}

impl JoinRequest {
    /// A consumer-type join of a new member with Kafka's client defaults (45 s session,
    /// 5 min rebalance timeout) and no KIP-394 round trip.
    pub fn new(group_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        JoinRequest {
            group_id: group_id.into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: client_id.into(),
            client_host: String::new(),
            protocol_type: "consumer".to_string(),
            protocols: Vec::new(),
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            require_known_member_id: false,
        }
    }
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    /// The member id.
    pub member_id: String,
    /// Its static instance id, if any (assignors may use it for stable placement).
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A successful JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// The generation this member joined.
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol chosen for this generation (supported by every member).
    pub protocol_name: String,
    /// The leader's member id; the leader computes the assignment.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with its metadata, in join order, for the leader; empty for followers.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    /// Whether this member leads the generation and must send the assignment.
    pub fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }
}

/// A successful SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol of this generation.
    pub protocol_name: String,
    /// This member's assignment bytes (empty if the leader gave it none).
    pub assignment: Bytes,
}

/// Identifies a parked JoinGroup or SyncGroup request; the shell maps it to the reply
/// channel of the request and answers it when a [`Completion`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What a join call answers.
#[derive(Debug)]
pub enum JoinOutcome {
    /// The join completed within the call.
    Ready(JoinResponse),
    /// The join waits for the rebalance; a later completion answers the ticket.
    Pending(Ticket),
}

/// What a sync call answers.
#[derive(Debug)]
pub enum SyncOutcome {
    /// The member's assignment is known.
    Ready(SyncResponse),
    /// The sync waits for the leader's assignment; a later completion answers the ticket.
    Pending(Ticket),
}

/// The answer to a parked request.
#[derive(Debug)]
pub enum CompletionResponse {
    /// The answer to a parked JoinGroup.
    Join(Result<JoinResponse, BrokerError>),
    /// The answer to a parked SyncGroup.
    Sync(Result<SyncResponse, BrokerError>),
}

/// A parked request and its answer, for the shell to deliver.
#[derive(Debug)]
pub struct Completion {
    /// The ticket the request was parked under.
    pub ticket: Ticket,
    /// Its answer.
    pub response: CompletionResponse,
}

/// One member named in a LeaveGroup request: by member id, or (static members) by
/// instance id with or without the member id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    /// The member id, or "" to name a static member by instance id only.
    pub member_id: String,
    /// The static member's `group.instance.id`, if it has one.
    pub group_instance_id: Option<String>,
}

impl LeaveMember {
    /// A dynamic member, by member id.
    pub fn dynamic(member_id: impl Into<String>) -> Self {
        LeaveMember {
            member_id: member_id.into(),
            group_instance_id: None,
        }
    }
}

/// The result for one member of a LeaveGroup request (LeaveGroup v3+ answers per member).
#[derive(Debug)]
pub struct MemberLeave {
    /// The member id named in the request.
    pub member_id: String,
    /// The instance id named in the request.
    pub group_instance_id: Option<String>,
    /// Why it could not leave, if it could not (UNKNOWN_MEMBER_ID).
    pub error: Option<BrokerError>,
}

/// One row of ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// Its protocol type ("" while it never had members, e.g. offsets-only groups).
    pub protocol_type: String,
    /// Its state.
    pub state: GroupState,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static instance id, if it is a static member.
    pub group_instance_id: Option<String>,
    /// The client id it joined with.
    pub client_id: String,
    /// The host it joined from.
    pub client_host: String,
    /// Its session timeout.
    pub session_timeout: Duration,
    /// Its rebalance timeout.
    pub rebalance_timeout: Duration,
    /// Its metadata for the selected protocol (only in Stable, as Kafka does).
    pub metadata: Bytes,
    /// Its assignment (only in Stable, as Kafka does).
    pub assignment: Bytes,
}

/// DescribeGroups for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Its state; `Dead` for a group that does not exist.
    pub state: GroupState,
    /// Its protocol type.
    pub protocol_type: String,
    /// The protocol of the current generation ("" unless Stable, as Kafka does).
    pub protocol_name: String,
    /// The current generation.
    pub generation_id: i32,
    /// The leader's member id, if there are members.
    pub leader: Option<String>,
    /// The members, in join order.
    pub members: Vec<MemberDescription>,
}
