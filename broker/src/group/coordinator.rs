//! The group coordinator state machine. See the module docs of `group` for the calling
//! convention (tickets and completions).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Completion, CompletionResponse, GroupConfig, GroupDescription, GroupListing, GroupState,
    JoinMember, JoinOutcome, JoinRequest, JoinResponse, LeaveMember, MemberDescription,
    MemberLeave, Protocol, SyncOutcome, SyncResponse, Ticket,
};
use crate::error::{BrokerError, Result};

/// One member of a group.
#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    /// Last sign of life: heartbeat, join or sync completion, commit.
    last_heartbeat: Instant,
    /// A parked JoinGroup of this member.
    awaiting_join: Option<Ticket>,
    /// A parked SyncGroup of this member.
    awaiting_sync: Option<Ticket>,
    /// Until its first join completes: when the member is dropped if that join still waits.
    new_member_deadline: Option<Instant>,
}

impl Member {
    /// When the session runs out. A member parked in join or sync is kept alive, as Kafka
    /// does: the rebalance timeout bounds those waits instead.
    fn session_deadline(&self) -> Option<Instant> {
        if self.new_member_deadline.is_some() {
            self.new_member_deadline
        } else if self.awaiting_join.is_some() || self.awaiting_sync.is_some() {
            None
        } else {
            Some(self.last_heartbeat + self.session_timeout)
        }
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }
}

/// The first rebalance of an empty group waits `delay` for more members, extended while
/// new members keep arriving, until the rebalance timeout is used up (Kafka's
/// InitialDelayedJoin).
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    delay: Duration,
    remaining: Duration,
    new_member_added: bool,
}

/// A timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Due {
    PendingMember(String),
    Join,
    Sync,
    Session(String),
}

#[derive(Debug)]
struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order; the order is the leader's member list and the leader succession.
    members: Vec<Member>,
    /// KIP-345: static instance id → its current member id.
    static_members: BTreeMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, and when they lapse.
    pending_members: Vec<(String, Instant)>,
    join_deadline: Option<Instant>,
    initial_delay: Option<InitialDelay>,
    /// Members of this generation that have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    sync_deadline: Option<Instant>,
}

impl Group {
    fn new(id: &str) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            static_members: BTreeMap::new(),
            pending_members: Vec::new(),
            join_deadline: None,
            initial_delay: None,
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
        }
    }

    fn member_index(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == member_id)
    }

    fn pending_index(&self, member_id: &str) -> Option<usize> {
        self.pending_members
            .iter()
            .position(|(id, _)| id == member_id)
    }

    /// KIP-345: the instance id belongs to a different (newer) member id.
    fn check_fenced(&self, member_id: &str, instance_id: Option<&str>) -> Result<()> {
        match instance_id.and_then(|i| self.static_members.get(i).map(|m| (i, m))) {
            Some((instance, current)) if current != member_id => {
                Err(BrokerError::FencedInstanceId {
                    group: self.id.clone(),
                    instance_id: instance.to_string(),
                    member_id: member_id.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn unknown_member(&self, member_id: &str) -> BrokerError {
        BrokerError::UnknownMember {
            group: self.id.clone(),
            member_id: member_id.to_string(),
        }
    }

    fn rebalancing(&self) -> BrokerError {
        BrokerError::RebalanceInProgress {
            group: self.id.clone(),
        }
    }

    fn check_generation(&self, generation: i32) -> Result<()> {
        if generation == self.generation {
            Ok(())
        } else {
            Err(BrokerError::IllegalGeneration {
                group: self.id.clone(),
                generation,
                current: self.generation,
            })
        }
    }

    /// Protocols every member (except `joining`, which is replacing its own) supports.
    fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[Protocol],
        joining: &str,
    ) -> Result<()> {
        let inconsistent = |reason: String| BrokerError::InconsistentGroupProtocol {
            group: self.id.clone(),
            reason,
        };
        if protocol_type.is_empty() || protocols.is_empty() {
            return Err(inconsistent(
                "a member must give a protocol type and at least one protocol".to_string(),
            ));
        }
        let others: Vec<&Member> = self.members.iter().filter(|m| m.id != joining).collect();
        if others.is_empty() {
            return Ok(());
        }
        let group_type = self.protocol_type.as_deref().unwrap_or_default();
        if group_type != protocol_type {
            return Err(inconsistent(format!(
                "protocol type {protocol_type:?} differs from the group's {group_type:?}"
            )));
        }
        let shared = protocols.iter().any(|p| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        });
        if shared {
            Ok(())
        } else {
            let names: Vec<&str> = protocols.iter().map(|p| p.name.as_str()).collect();
            Err(inconsistent(format!(
                "none of the protocols {names:?} is supported by every current member"
            )))
        }
    }

    /// Kafka's vote: candidates are the protocols every member supports; each member votes
    /// for its most preferred candidate; most votes wins. Ties go to the candidate the
    /// leader prefers (Kafka leaves ties to hash order; we keep it deterministic).
    fn select_protocol(&self) -> String {
        let Some(first) = self.members.first() else {
            return String::new();
        };
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|q| q.name == *name))
            })
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &self.members {
            if let Some(p) = m
                .protocols
                .iter()
                .find(|p| candidates.contains(&p.name.as_str()))
            {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let leader = self
            .leader
            .as_deref()
            .and_then(|l| self.members.iter().find(|m| m.id == l))
            .unwrap_or(first);
        let rank = |name: &str| {
            leader
                .protocols
                .iter()
                .position(|p| p.name == name)
                .unwrap_or(usize::MAX)
        };
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| rank(b.0).cmp(&rank(a.0))))
            .map(|(name, _)| name.to_string())
            .unwrap_or_default()
    }

    fn join_response(&self, member: &Member) -> JoinResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.is_leader(&member.id);
        JoinResponse {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member.id.clone(),
            members: if is_leader {
                self.members
                    .iter()
                    .map(|m| JoinMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol_name.clone().unwrap_or_default(),
            assignment,
        }
    }

    /// The earliest timer of this group, if any.
    fn next_due(&self) -> Option<(Instant, Due)> {
        let mut due: Vec<(Instant, Due)> = Vec::new();
        for (id, deadline) in &self.pending_members {
            due.push((*deadline, Due::PendingMember(id.clone())));
        }
        if self.state == GroupState::PreparingRebalance
            && let Some(deadline) = self.join_deadline
        {
            due.push((deadline, Due::Join));
        }
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && !self.pending_sync.is_empty()
            && let Some(deadline) = self.sync_deadline
        {
            due.push((deadline, Due::Sync));
        }
        for m in &self.members {
            if let Some(deadline) = m.session_deadline() {
                due.push((deadline, Due::Session(m.id.clone())));
            }
        }
        due.into_iter().min_by_key(|(at, _)| *at)
    }

    /// Starts a rebalance from Empty, Stable or CompletingRebalance.
    fn prepare_rebalance(&mut self, now: Instant, config: &GroupConfig, out: &mut Vec<Completion>) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being computed is void: parked syncs learn to rejoin. Their
            // sessions restart now (they were kept alive while parked), as Kafka does.
            for m in &mut self.members {
                m.assignment = Bytes::new();
                if let Some(ticket) = m.awaiting_sync.take() {
                    m.last_heartbeat = now;
                    out.push(Completion {
                        ticket,
                        response: CompletionResponse::Sync(Err(BrokerError::RebalanceInProgress {
                            group: self.id.clone(),
                        })),
                    });
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let timeout = self.rebalance_timeout();
        if self.state == GroupState::Empty && !config.initial_rebalance_delay.is_zero() {
            let delay = config.initial_rebalance_delay;
            self.join_deadline = Some(now + delay);
            self.initial_delay = Some(InitialDelay {
                delay,
                remaining: timeout.saturating_sub(delay),
                new_member_added: false,
            });
        } else {
            self.join_deadline = Some(now + timeout);
            self.initial_delay = None;
        }
        tracing::info!(
            group = %self.id,
            from = %self.state,
            generation = self.generation,
            members = self.members.len(),
            "group rebalance started"
        );
        self.state = GroupState::PreparingRebalance;
        // Kafka tries the delayed join at once: with no members left it completes now.
        self.try_complete_join(now, out);
    }

    fn maybe_prepare_rebalance(
        &mut self,
        now: Instant,
        config: &GroupConfig,
        out: &mut Vec<Completion>,
    ) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, config, out);
        }
    }

    /// Completes the join phase early when every member has rejoined (not during the
    /// initial delay, which always runs its course).
    fn try_complete_join(&mut self, now: Instant, out: &mut Vec<Completion>) {
        let all_joined = self.members.iter().all(|m| m.awaiting_join.is_some())
            && self.pending_members.is_empty();
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && all_joined
        {
            self.complete_join(now, out);
        }
    }

    /// Ends the join phase: dynamic members that did not rejoin are evicted (static ones
    /// stay until their session expires), the generation moves on, and every parked join
    /// is answered.
    fn complete_join(&mut self, now: Instant, out: &mut Vec<Completion>) {
        let (stay, gone): (Vec<Member>, Vec<Member>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| m.awaiting_join.is_some() || m.instance_id.is_some());
        for m in &gone {
            tracing::info!(group = %self.id, member = %m.id, "member evicted: did not rejoin within the rebalance timeout");
        }
        self.members = stay;
        if self
            .leader
            .as_deref()
            .is_none_or(|l| self.member_index(l).is_none())
        {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        if !self.members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_none()) {
            // Only static members that have not rejoined: wait another rebalance timeout
            // (their sessions expire meanwhile if they are gone), as Kafka does.
            self.join_deadline = Some(now + self.rebalance_timeout());
            return;
        }
        let leader_joined = self.leader.as_deref().is_some_and(|l| {
            self.members
                .iter()
                .any(|m| m.id == l && m.awaiting_join.is_some())
        });
        if !leader_joined {
            self.leader = self
                .members
                .iter()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.id.clone());
        }
        self.join_deadline = None;
        self.initial_delay = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            tracing::info!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol_name = Some(self.select_protocol());
        self.state = GroupState::CompletingRebalance;
        self.pending_sync = self.members.iter().map(|m| m.id.clone()).collect();
        self.sync_deadline = Some(now + self.rebalance_timeout());
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            protocol = self.protocol_name.as_deref().unwrap_or_default(),
            leader = self.leader.as_deref().unwrap_or_default(),
            members = self.members.len(),
            "group joins complete, awaiting assignment"
        );
        for i in 0..self.members.len() {
            let response = self.join_response(&self.members[i]);
            let m = &mut self.members[i];
            m.last_heartbeat = now;
            m.new_member_deadline = None;
            if let Some(ticket) = m.awaiting_join.take() {
                out.push(Completion {
                    ticket,
                    response: CompletionResponse::Join(Ok(response)),
                });
            }
        }
    }

    /// Removes a member (leave, session expiry, missed sync) and moves the group on.
    fn remove_member(
        &mut self,
        member_id: &str,
        now: Instant,
        config: &GroupConfig,
        out: &mut Vec<Completion>,
    ) {
        let Some(index) = self.member_index(member_id) else {
            return;
        };
        let member = self.members.remove(index);
        if let Some(ticket) = member.awaiting_join {
            out.push(Completion {
                ticket,
                response: CompletionResponse::Join(Err(self.unknown_member(member_id))),
            });
        }
        if let Some(ticket) = member.awaiting_sync {
            out.push(Completion {
                ticket,
                response: CompletionResponse::Sync(Err(self.unknown_member(member_id))),
            });
        }
        self.pending_sync.remove(member_id);
        if let Some(instance) = &member.instance_id {
            self.static_members.remove(instance);
        }
        if self.is_leader(member_id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, config, out)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn handle_due(
        &mut self,
        at: Instant,
        due: Due,
        config: &GroupConfig,
        out: &mut Vec<Completion>,
    ) {
        match due {
            Due::PendingMember(id) => {
                if let Some(i) = self.pending_index(&id) {
                    self.pending_members.remove(i);
                    tracing::info!(group = %self.id, member = %id, "pending member expired: it never joined with its member id");
                }
                self.try_complete_join(at, out);
            }
            Due::Join => match self.initial_delay {
                Some(mut initial) if initial.new_member_added && !initial.remaining.is_zero() => {
                    let step = initial.delay.min(initial.remaining);
                    initial.remaining -= step;
                    initial.new_member_added = false;
                    self.initial_delay = Some(initial);
                    self.join_deadline = Some(at + step);
                }
                _ => self.complete_join(at, out),
            },
            Due::Sync => {
                let missing = std::mem::take(&mut self.pending_sync);
                self.sync_deadline = None;
                tracing::info!(group = %self.id, generation = self.generation, ?missing, "members did not sync within the rebalance timeout; removing them");
                for id in missing {
                    self.remove_member(&id, at, config, out);
                }
            }
            Due::Session(id) => {
                tracing::info!(group = %self.id, member = %id, "member session expired (or its first join waited too long)");
                self.remove_member(&id, at, config, out);
            }
        }
    }
}

/// Consumer group coordination for every group this broker coordinates: Kafka's classic
/// JoinGroup / SyncGroup / Heartbeat / LeaveGroup / OffsetCommit rules without I/O, so the
/// gRPC service and the Kafka listener share one tested core.
///
/// Contract with the shell: pass the current time into every call; after every call,
/// deliver [`GroupCoordinator::take_completions`] to the parked requests they name; call
/// [`GroupCoordinator::tick`] at [`GroupCoordinator::next_deadline`] (or periodically).
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    outbox: Vec<Completion>,
    next_ticket: u64,
    rng: u64,
}

impl GroupCoordinator {
    /// A coordinator with no groups. `seed` drives member id generation, so that a run
    /// replays exactly; pass something random in production.
    pub fn new(config: GroupConfig, seed: u64) -> Self {
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            outbox: Vec::new(),
            next_ticket: 1,
            rng: seed,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Answers for parked joins and syncs that the last calls completed; deliver them
    /// after every call.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.outbox)
    }

    /// When [`GroupCoordinator::tick`] next has work: the earliest session expiry, join or
    /// sync deadline over all groups.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.groups
            .values()
            .filter_map(|g| g.next_due().map(|(at, _)| at))
            .min()
    }

    fn new_ticket(&mut self) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        ticket
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: small, seeded, good enough for unique-looking ids.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `{client_id}-{uuid}` as Kafka forms member ids.
    fn new_member_id(&mut self, client_id: &str) -> String {
        let a = self.next_random();
        let b = self.next_random();
        format!(
            "{client_id}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            (a & 0x0fff) | 0x4000,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Takes this call's own completion out of the outbox, if the call completed it.
    fn take_own(&mut self, ticket: Ticket) -> Option<CompletionResponse> {
        let i = self.outbox.iter().position(|c| c.ticket == ticket)?;
        Some(self.outbox.remove(i).response)
    }

    fn check_group_id(group_id: &str) -> Result<()> {
        if group_id.is_empty() {
            Err(BrokerError::InvalidGroupId {
                group: group_id.to_string(),
            })
        } else {
            Ok(())
        }
    }

    /// JoinGroup. A new member (empty member id) gets an id `{client_id}-{uuid}`; with
    /// `require_known_member_id` it gets MEMBER_ID_REQUIRED carrying that id first
    /// (KIP-394). A join starts a rebalance unless it is a follower rejoining a Stable
    /// group with unchanged protocols (answered at once with the current generation).
    pub fn join(&mut self, req: JoinRequest, now: Instant) -> Result<JoinOutcome> {
        Self::check_group_id(&req.group_id)?;
        let (min, max) = (
            self.config.min_session_timeout,
            self.config.max_session_timeout,
        );
        if req.session_timeout < min || req.session_timeout > max {
            return Err(BrokerError::InvalidSessionTimeout {
                timeout_ms: u64::try_from(req.session_timeout.as_millis()).unwrap_or(u64::MAX),
                min_ms: u64::try_from(min.as_millis()).unwrap_or(u64::MAX),
                max_ms: u64::try_from(max.as_millis()).unwrap_or(u64::MAX),
            });
        }
        let created = !self.groups.contains_key(&req.group_id);
        if created {
            if !req.member_id.is_empty() {
                return Err(BrokerError::UnknownMember {
                    group: req.group_id.clone(),
                    member_id: req.member_id.clone(),
                });
            }
            self.groups
                .insert(req.group_id.clone(), Group::new(&req.group_id));
        }
        let group_id = req.group_id.clone();
        let result = self.join_inner(req, now);
        if result.is_err() && created {
            let unused = self.groups.get(&group_id).is_some_and(|g| {
                g.members.is_empty() && g.pending_members.is_empty() && g.generation == 0
            });
            if unused {
                self.groups.remove(&group_id);
            }
        }
        result
    }

    fn join_inner(&mut self, req: JoinRequest, now: Instant) -> Result<JoinOutcome> {
        let ticket = self.new_ticket();
        let new_id = if req.member_id.is_empty() {
            Some(self.new_member_id(&req.client_id))
        } else {
            None
        };
        let config = self.config.clone();
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return Err(BrokerError::UnknownMember {
                group: req.group_id.clone(),
                member_id: req.member_id.clone(),
            });
        };
        if group.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable {
                group: group.id.clone(),
            });
        }
        let instance = req.group_instance_id.as_deref();
        // KIP-345: a static member restarting with no member id takes its old place.
        let replacing = match (&new_id, instance) {
            (Some(_), Some(i)) => group.static_members.get(i).cloned(),
            _ => None,
        };
        let joining = replacing.as_deref().unwrap_or(&req.member_id);
        group.supports_protocols(&req.protocol_type, &req.protocols, joining)?;
        let out = &mut self.outbox;
        if let (Some(new_id), Some(old_id)) = (&new_id, &replacing) {
            let outcome =
                replace_static_member(group, &req, old_id, new_id, ticket, now, &config, out);
            if let Some(response) = outcome {
                return Ok(JoinOutcome::Ready(response));
            }
            return match self.take_own(ticket) {
                Some(CompletionResponse::Join(result)) => result.map(JoinOutcome::Ready),
                Some(CompletionResponse::Sync(_)) | None => Ok(JoinOutcome::Pending(ticket)),
            };
        }
        if new_id.is_some() && group.members.len() >= config.max_group_size {
            return Err(BrokerError::GroupMaxSizeReached {
                group: group.id.clone(),
                max: config.max_group_size,
            });
        }
        if let Some(id) = new_id {
            if req.require_known_member_id && instance.is_none() {
                group
                    .pending_members
                    .push((id.clone(), now + req.session_timeout));
                tracing::debug!(group = %group.id, member = %id, "member id required: new member must rejoin with its id");
                return Err(BrokerError::MemberIdRequired {
                    group: group.id.clone(),
                    member_id: id,
                });
            }
            add_member_and_rebalance(group, &req, id, ticket, now, &config, out);
        } else if let Some(i) = group.pending_index(&req.member_id) {
            group.pending_members.remove(i);
            add_member_and_rebalance(
                group,
                &req,
                req.member_id.clone(),
                ticket,
                now,
                &config,
                out,
            );
        } else {
            group.check_fenced(&req.member_id, instance)?;
            let instance_unknown = instance.is_some_and(|i| !group.static_members.contains_key(i));
            let Some(index) = group
                .member_index(&req.member_id)
                .filter(|_| !instance_unknown)
            else {
                return Err(group.unknown_member(&req.member_id));
            };
            let unchanged = group.members[index].protocols == req.protocols;
            match group.state {
                GroupState::PreparingRebalance => {
                    update_member_and_rebalance(group, index, &req, ticket, now, &config, out)
                }
                GroupState::CompletingRebalance if unchanged => {
                    // A resent join: answer with the generation it already joined.
                    return Ok(JoinOutcome::Ready(
                        group.join_response(&group.members[index]),
                    ));
                }
                GroupState::Stable if unchanged && !group.is_leader(&req.member_id) => {
                    return Ok(JoinOutcome::Ready(
                        group.join_response(&group.members[index]),
                    ));
                }
                GroupState::CompletingRebalance | GroupState::Stable => {
                    update_member_and_rebalance(group, index, &req, ticket, now, &config, out)
                }
                GroupState::Empty | GroupState::Dead => {
                    return Err(group.unknown_member(&req.member_id));
                }
            }
        }
        match self.take_own(ticket) {
            Some(CompletionResponse::Join(result)) => result.map(JoinOutcome::Ready),
            Some(CompletionResponse::Sync(_)) | None => Ok(JoinOutcome::Pending(ticket)),
        }
    }

    /// SyncGroup. The leader's call carries the assignment of every member (members it
    /// leaves out get an empty assignment; unknown ids are ignored) and moves the group to
    /// Stable; followers wait for it. In Stable, a sync answers the current assignment.
    pub fn sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<SyncOutcome> {
        Self::check_group_id(group_id)?;
        let ticket = self.new_ticket();
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(BrokerError::UnknownMember {
                group: group_id.to_string(),
                member_id: member_id.to_string(),
            });
        };
        if group.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable {
                group: group.id.clone(),
            });
        }
        group.check_fenced(member_id, group_instance_id)?;
        if group.member_index(member_id).is_none() {
            return Err(group.unknown_member(member_id));
        }
        group.check_generation(generation)?;
        match group.state {
            GroupState::Empty | GroupState::Dead => Err(group.unknown_member(member_id)),
            GroupState::PreparingRebalance => Err(group.rebalancing()),
            GroupState::Stable => {
                group.pending_sync.remove(member_id);
                if group.pending_sync.is_empty() {
                    group.sync_deadline = None;
                }
                let member = group.member_mut(member_id).expect("checked above");
                member.last_heartbeat = now;
                let assignment = member.assignment.clone();
                Ok(SyncOutcome::Ready(group.sync_response(assignment)))
            }
            GroupState::CompletingRebalance => {
                group.pending_sync.remove(member_id);
                let rebalancing = group.rebalancing();
                let member = group.member_mut(member_id).expect("checked above");
                member.last_heartbeat = now;
                if let Some(old) = member.awaiting_sync.replace(ticket) {
                    self.outbox.push(Completion {
                        ticket: old,
                        response: CompletionResponse::Sync(Err(rebalancing)),
                    });
                }
                if group.is_leader(member_id) {
                    let mut by_member: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    for m in &mut group.members {
                        m.assignment = by_member.remove(&m.id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    if group.pending_sync.is_empty() {
                        group.sync_deadline = None;
                    }
                    tracing::info!(group = %group.id, generation = group.generation, members = group.members.len(), "group is stable");
                    for i in 0..group.members.len() {
                        let response = group.sync_response(group.members[i].assignment.clone());
                        let m = &mut group.members[i];
                        if let Some(t) = m.awaiting_sync.take() {
                            m.last_heartbeat = now;
                            self.outbox.push(Completion {
                                ticket: t,
                                response: CompletionResponse::Sync(Ok(response)),
                            });
                        }
                    }
                }
                match self.take_own(ticket) {
                    Some(CompletionResponse::Sync(result)) => result.map(SyncOutcome::Ready),
                    Some(CompletionResponse::Join(_)) | None => Ok(SyncOutcome::Pending(ticket)),
                }
            }
        }
    }

    /// Heartbeat: keeps the member's session alive. Answers REBALANCE_IN_PROGRESS while a
    /// rebalance waits for joins (the session is still refreshed), so the member rejoins.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<()> {
        Self::check_group_id(group_id)?;
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(BrokerError::UnknownMember {
                group: group_id.to_string(),
                member_id: member_id.to_string(),
            });
        };
        if group.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable {
                group: group.id.clone(),
            });
        }
        group.check_fenced(member_id, group_instance_id)?;
        if group.member_index(member_id).is_none() {
            return Err(group.unknown_member(member_id));
        }
        group.check_generation(generation)?;
        let state = group.state;
        if let Some(m) = group.member_mut(member_id) {
            m.last_heartbeat = now;
        }
        match state {
            GroupState::PreparingRebalance => Err(group.rebalancing()),
            GroupState::Empty | GroupState::Dead => Err(group.unknown_member(member_id)),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup for one or more members (v3+ batches them). Each member is removed
    /// at once and the group rebalances right away, without waiting for a session to run
    /// out. A static member may be named by instance id alone. Rows carry per-member
    /// errors: UNKNOWN_MEMBER_ID, or FENCED_INSTANCE_ID for a stale static incarnation.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[LeaveMember],
        now: Instant,
    ) -> Result<Vec<MemberLeave>> {
        Self::check_group_id(group_id)?;
        let config = self.config.clone();
        let Some(group) = self.groups.get_mut(group_id) else {
            return Ok(members
                .iter()
                .map(|m| MemberLeave {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    error: Some(BrokerError::UnknownMember {
                        group: group_id.to_string(),
                        member_id: m.member_id.clone(),
                    }),
                })
                .collect());
        };
        if group.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable {
                group: group.id.clone(),
            });
        }
        let mut results = Vec::with_capacity(members.len());
        for leaving in members {
            let instance = leaving.group_instance_id.as_deref();
            let by_instance = instance.and_then(|i| group.static_members.get(i).cloned());
            let error = if !leaving.member_id.is_empty()
                && let Err(fenced) = group.check_fenced(&leaving.member_id, instance)
            {
                Some(fenced)
            } else if let Some(i) = group.pending_index(&leaving.member_id) {
                group.pending_members.remove(i);
                group.try_complete_join(now, &mut self.outbox);
                None
            } else if let Some(id) = by_instance.or_else(|| {
                group
                    .member_index(&leaving.member_id)
                    .map(|_| leaving.member_id.clone())
            }) {
                tracing::info!(group = %group.id, member = %id, "member left the group");
                group.remove_member(&id, now, &config, &mut self.outbox);
                None
            } else {
                Some(group.unknown_member(&leaving.member_id))
            };
            results.push(MemberLeave {
                member_id: leaving.member_id.clone(),
                group_instance_id: leaving.group_instance_id.clone(),
                error,
            });
        }
        Ok(results)
    }

    /// Runs every timer due at or before `now`, in time order: pending member ids lapse,
    /// sessions expire (the member is removed and the group rebalances), joins complete at
    /// the rebalance timeout (evicting members that did not rejoin), members that did not
    /// sync in time are removed.
    pub fn tick(&mut self, now: Instant) {
        let config = self.config.clone();
        for group in self.groups.values_mut() {
            while let Some((at, due)) = group.next_due() {
                if at > now {
                    break;
                }
                group.handle_due(at, due, &config, &mut self.outbox);
            }
        }
    }

    /// Whether an OffsetCommit may be stored (the offsets themselves go to the metadata
    /// store). Members commit with their member id and current generation (a valid commit
    /// also counts as a heartbeat); while the group has no members, anyone may commit with
    /// generation -1 and an empty member id ("simple" consumers that assign partitions
    /// themselves), which creates the group if needed, as Kafka does.
    pub fn validate_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<()> {
        Self::check_group_id(group_id)?;
        let Some(group) = self.groups.get_mut(group_id) else {
            if generation < 0 {
                self.groups
                    .insert(group_id.to_string(), Group::new(group_id));
                return Ok(());
            }
            return Err(BrokerError::IllegalGeneration {
                group: group_id.to_string(),
                generation,
                current: 0,
            });
        };
        if group.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable {
                group: group.id.clone(),
            });
        }
        if generation >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            group.check_fenced(member_id, group_instance_id)?;
            if group.member_index(member_id).is_none() {
                return Err(group.unknown_member(member_id));
            }
            group.check_generation(generation)?;
            if group.state == GroupState::CompletingRebalance {
                return Err(group.rebalancing());
            }
            if let Some(m) = group.member_mut(member_id) {
                m.last_heartbeat = now;
            }
            Ok(())
        } else if group.state != GroupState::Empty {
            // Only members may commit to a group that has members.
            Err(group.unknown_member(member_id))
        } else {
            Ok(())
        }
    }

    /// ListGroups, optionally only the groups in `states` (KIP-518); empty means all.
    pub fn list_groups(&self, states: &[GroupState]) -> Vec<GroupListing> {
        self.groups
            .values()
            .filter(|g| states.is_empty() || states.contains(&g.state))
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// DescribeGroups for one group. A group that does not exist reads as Dead with no
    /// members, as Kafka answers. Metadata and assignments are shown only in Stable.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation_id: -1,
                leader: None,
                members: Vec::new(),
            };
        };
        let stable = group.state == GroupState::Stable;
        let protocol = group.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: group.id.clone(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            generation_id: group.generation,
            leader: group.leader.clone(),
            members: group
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout: m.session_timeout,
                    rebalance_timeout: m.rebalance_timeout,
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// DeleteGroups for one group: only an Empty group can go (its offsets are the
    /// broker's to delete). GROUP_ID_NOT_FOUND if unknown, NON_EMPTY_GROUP if it has members.
    pub fn delete_group(&mut self, group_id: &str) -> Result<()> {
        Self::check_group_id(group_id)?;
        let Some(group) = self.groups.get(group_id) else {
            return Err(BrokerError::GroupNotFound {
                group: group_id.to_string(),
            });
        };
        if group.state != GroupState::Empty || !group.members.is_empty() {
            return Err(BrokerError::NonEmptyGroup {
                group: group_id.to_string(),
                members: group.members.len(),
            });
        }
        self.groups.remove(group_id);
        tracing::info!(group = %group_id, "group deleted");
        Ok(())
    }

    /// This broker stops coordinating every group (it lost the coordinator role, or shuts
    /// down): parked joins and syncs are answered NOT_COORDINATOR so clients find the new
    /// coordinator, and all group state is dropped (members rejoin there).
    pub fn unload_all(&mut self) {
        self.unload_where(|_| true);
    }

    /// This broker stops coordinating the groups `moved` picks (their coordinator moved
    /// to another broker), as [`GroupCoordinator::unload_all`] does for all.
    pub fn unload_where(&mut self, mut moved: impl FnMut(&str) -> bool) {
        let ids: Vec<String> = self.groups.keys().filter(|id| moved(id)).cloned().collect();
        for id in ids {
            let Some(group) = self.groups.remove(&id) else {
                continue;
            };
            for m in group.members {
                let not_coordinator = || BrokerError::NotCoordinator { group: id.clone() };
                if let Some(ticket) = m.awaiting_join {
                    self.outbox.push(Completion {
                        ticket,
                        response: CompletionResponse::Join(Err(not_coordinator())),
                    });
                }
                if let Some(ticket) = m.awaiting_sync {
                    self.outbox.push(Completion {
                        ticket,
                        response: CompletionResponse::Sync(Err(not_coordinator())),
                    });
                }
            }
            tracing::info!(group = %id, "group unloaded");
        }
    }
}

fn add_member_and_rebalance(
    group: &mut Group,
    req: &JoinRequest,
    member_id: String,
    ticket: Ticket,
    now: Instant,
    config: &GroupConfig,
    out: &mut Vec<Completion>,
) {
    if group.members.is_empty() {
        group.protocol_type = Some(req.protocol_type.clone());
    }
    if group.leader.is_none() {
        group.leader = Some(member_id.clone());
    }
    tracing::info!(group = %group.id, member = %member_id, client_id = %req.client_id, "member joined");
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), member_id.clone());
    }
    group.members.push(Member {
        instance_id: req.group_instance_id.clone(),
        id: member_id,
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        session_timeout: req.session_timeout,
        rebalance_timeout: req.rebalance_timeout,
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        last_heartbeat: now,
        awaiting_join: Some(ticket),
        awaiting_sync: None,
        new_member_deadline: Some(now + config.new_member_join_timeout),
    });
    if group.state == GroupState::PreparingRebalance
        && group.generation == 0
        && let Some(initial) = group.initial_delay.as_mut()
    {
        initial.new_member_added = true;
    }
    group.maybe_prepare_rebalance(now, config, out);
    group.try_complete_join(now, out);
}

/// KIP-345: a static member rejoined without its member id (it restarted). Its old
/// incarnation is fenced, the new member id takes over its place, and in Stable with
/// unchanged protocols no rebalance happens: it is answered at once with the current
/// generation, naming the previous leader id so that it does not recompute an assignment.
/// Returns that immediate answer, or None if the join now waits for a rebalance.
#[allow(clippy::too_many_arguments)]
fn replace_static_member(
    group: &mut Group,
    req: &JoinRequest,
    old_id: &str,
    new_id: &str,
    ticket: Ticket,
    now: Instant,
    config: &GroupConfig,
    out: &mut Vec<Completion>,
) -> Option<JoinResponse> {
    let instance = req.group_instance_id.clone().unwrap_or_default();
    let index = group.member_index(old_id)?;
    let previous_leader = group.leader.clone().unwrap_or_default();
    let fenced = || BrokerError::FencedInstanceId {
        group: group.id.clone(),
        instance_id: instance.clone(),
        member_id: old_id.to_string(),
    };
    let (old_join, old_sync) = (
        group.members[index].awaiting_join.take(),
        group.members[index].awaiting_sync.take(),
    );
    if let Some(t) = old_join {
        out.push(Completion {
            ticket: t,
            response: CompletionResponse::Join(Err(fenced())),
        });
    }
    if let Some(t) = old_sync {
        out.push(Completion {
            ticket: t,
            response: CompletionResponse::Sync(Err(fenced())),
        });
    }
    tracing::info!(group = %group.id, instance = %instance, old = %old_id, new = %new_id, "static member rejoined with a new member id; old one fenced");
    group.members[index].id = new_id.to_string();
    group.static_members.insert(instance, new_id.to_string());
    if group.is_leader(old_id) {
        group.leader = Some(new_id.to_string());
    }
    if group.pending_sync.remove(old_id) {
        group.pending_sync.insert(new_id.to_string());
    }
    let unchanged = group.members[index].protocols == req.protocols;
    if group.state == GroupState::Stable && unchanged {
        let m = &mut group.members[index];
        m.last_heartbeat = now;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        return Some(JoinResponse {
            leader: previous_leader,
            members: Vec::new(),
            ..group.join_response(&group.members[index])
        });
    }
    update_member_and_rebalance(group, index, req, ticket, now, config, out);
    None
}

fn update_member_and_rebalance(
    group: &mut Group,
    index: usize,
    req: &JoinRequest,
    ticket: Ticket,
    now: Instant,
    config: &GroupConfig,
    out: &mut Vec<Completion>,
) {
    let rebalancing = group.rebalancing();
    let m = &mut group.members[index];
    m.protocols = req.protocols.clone();
    m.session_timeout = req.session_timeout;
    m.rebalance_timeout = req.rebalance_timeout;
    m.last_heartbeat = now;
    if let Some(old) = m.awaiting_join.replace(ticket) {
        // The client resent its join; the earlier request is superseded.
        out.push(Completion {
            ticket: old,
            response: CompletionResponse::Join(Err(rebalancing)),
        });
    }
    group.maybe_prepare_rebalance(now, config, out);
    group.try_complete_join(now, out);
}

#[cfg(test)]
mod tests;
