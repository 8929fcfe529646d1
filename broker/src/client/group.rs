//! A consumer that is a member of a consumer group: it joins through the group's
//! coordinator, reads only the partitions the group assigned it, heartbeats, and when
//! the group rebalances (a member came or went) commits what it read and rejoins.
//!
//! Eager rebalancing, as Kafka's classic protocol: every member commits and gives up its
//! partitions before the new generation is assigned, so two members never read the same
//! partition in one generation, and a partition's new owner starts at the committed
//! offset. A member killed without committing leaves its partitions at its last commit:
//! the next owner re-reads from there (at least once; nothing is skipped).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::client::{Client, ConsumedRecord, Consumer, ConsumerConfig, StartOffset, remote_error};
use crate::error::{BrokerError, ErrorCode, Result};
use crate::group::JoinMember;
use crate::group::assignor::{Assignment, Subscription, assign_group, assignor_by_name};
use crate::proto;

/// How a group member reads.
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// The group.
    pub group: String,
    /// The topics the member subscribes to.
    pub topics: Vec<String>,
    /// The assignor it proposes: `range` (Kafka's default) or `roundrobin`.
    pub assignor: String,
    /// Where to start on a partition the group never committed.
    pub start: StartOffset,
    /// How long the coordinator waits without a heartbeat before it removes the member
    /// (and gives its partitions to the others).
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin.
    pub rebalance_timeout: Duration,
    /// How often the member heartbeats (a third of the session timeout or less).
    pub heartbeat_interval: Duration,
    /// The client id; member ids start with it.
    pub client_id: String,
    /// Longest a fetch waits for data.
    pub max_wait: Duration,
}

impl GroupConsumerConfig {
    /// Joins `group` reading `topics`, with a 10 s session (a dead member's partitions
    /// move within about that) and the range assignor.
    pub fn new(group: impl Into<String>, topics: Vec<String>) -> Self {
        GroupConsumerConfig {
            group: group.into(),
            topics,
            assignor: "range".to_string(),
            start: StartOffset::Earliest,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
            client_id: "meridian".to_string(),
            max_wait: Duration::from_millis(500),
        }
    }
}

/// The member's place in the current generation.
#[derive(Debug, Clone)]
struct Generation {
    coordinator: String,
    member_id: String,
    generation_id: i32,
}

/// A consumer group member.
#[derive(Debug)]
pub struct GroupConsumer {
    client: Client,
    config: GroupConsumerConfig,
    /// Kept across rejoins, so the coordinator recognises the member.
    member_id: String,
    generation: Option<Generation>,
    /// Set by the heartbeat task when the coordinator asks for a rejoin (or is gone).
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    readers: Vec<Consumer>,
}

impl GroupConsumer {
    /// A member that has not joined yet; the first [`GroupConsumer::poll`] joins.
    pub fn new(client: Client, config: GroupConsumerConfig) -> Result<Self> {
        if assignor_by_name(&config.assignor).is_none() {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "unknown assignor {:?}; use range or roundrobin",
                    config.assignor
                ),
            });
        }
        if config.topics.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "a group member must subscribe to at least one topic".into(),
            });
        }
        Ok(GroupConsumer {
            client,
            config,
            member_id: String::new(),
            generation: None,
            rejoin: Arc::new(AtomicBool::new(true)),
            heartbeat: None,
            readers: Vec::new(),
        })
    }

    /// The member id and generation, once joined.
    pub fn membership(&self) -> Option<(&str, i32)> {
        self.generation
            .as_ref()
            .map(|g| (g.member_id.as_str(), g.generation_id))
    }

    /// The partitions this member reads in the current generation, by topic.
    pub fn assignment(&self) -> BTreeMap<String, Vec<i32>> {
        self.readers
            .iter()
            .map(|r| {
                (
                    r.topic().to_string(),
                    r.positions().keys().copied().collect(),
                )
            })
            .collect()
    }

    /// Next records of the assigned partitions (waiting up to `max_wait`); joins or
    /// rejoins first when the group asks for it. The positions advance past what is
    /// returned: the next [`GroupConsumer::commit`] commits them.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>> {
        if self.rejoin.load(Ordering::Acquire) || self.generation.is_none() {
            self.rejoin_group().await?;
        }
        if self.readers.is_empty() {
            // More members than partitions: this one idles but stays in the group.
            tokio::time::sleep(self.config.max_wait).await;
            return Ok(Vec::new());
        }
        let polls = self.readers.iter_mut().map(Consumer::poll);
        let mut out = Vec::new();
        for result in futures::future::join_all(polls).await {
            out.extend(result?);
        }
        Ok(out)
    }

    /// Moves an assigned partition's position, e.g. back to the first record the caller
    /// did not use, so that the next commit does not pass it.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(reader) = self.readers.iter_mut().find(|r| r.topic() == topic) {
            reader.seek(partition, offset);
        }
    }

    /// Whether every assigned partition has been read up to its high watermark now
    /// (false before the first join).
    pub async fn caught_up(&self) -> Result<bool> {
        if self.generation.is_none() {
            return Ok(false);
        }
        for reader in &self.readers {
            let ends = reader.end_offsets().await?;
            if !ends
                .iter()
                .all(|(p, end)| reader.positions().get(p).is_some_and(|pos| pos >= end))
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Commits the positions of the assigned partitions as this member of this
    /// generation. A member evicted meanwhile gets UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION
    /// and must not overwrite the new owner's commits; the next poll rejoins.
    pub async fn commit(&self) -> Result<()> {
        let Some(generation) = &self.generation else {
            return Ok(());
        };
        let offsets: Vec<proto::CommittedOffset> = self
            .readers
            .iter()
            .flat_map(|r| {
                r.positions()
                    .iter()
                    .map(|(p, o)| proto::CommittedOffset {
                        topic: r.topic().to_string(),
                        partition: *p,
                        offset: *o,
                        ..Default::default()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let request = proto::OffsetCommitRequest {
            group: self.config.group.clone(),
            offsets,
            member_id: generation.member_id.clone(),
            generation_id: Some(generation.generation_id),
            group_instance_id: None,
        };
        let mut stub = self.client.stub(&generation.coordinator)?;
        let response = stub
            .offset_commit(request)
            .await
            .map_err(|s| crate::client::status_to_error(&generation.coordinator, s))?
            .into_inner();
        match response.offsets.into_iter().find(|o| o.error_code != 0) {
            Some(failed) => {
                let err = remote_error(failed.error_code, failed.error_message);
                if matches!(
                    err.code(),
                    ErrorCode::UnknownMemberId
                        | ErrorCode::IllegalGeneration
                        | ErrorCode::RebalanceInProgress
                        | ErrorCode::NotCoordinator
                ) {
                    self.rejoin.store(true, Ordering::Release);
                }
                Err(err)
            }
            None => Ok(()),
        }
    }

    /// Commits and leaves the group, so the others take over its partitions at once
    /// instead of after its session timeout.
    pub async fn close(mut self) -> Result<()> {
        let committed = self.commit().await;
        self.stop_heartbeat();
        if let Some(generation) = self.generation.take() {
            let request = proto::LeaveGroupRequest {
                group: self.config.group.clone(),
                member_id: generation.member_id.clone(),
                group_instance_id: None,
            };
            let mut stub = self.client.stub(&generation.coordinator)?;
            let response = stub
                .leave_group(request)
                .await
                .map_err(|s| crate::client::status_to_error(&generation.coordinator, s))?
                .into_inner();
            if response.error_code != 0 {
                tracing::warn!(group = %self.config.group, error = %response.error_message, "leaving the group failed; its session will expire");
            }
        }
        committed
    }

    fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    /// Gives up the current assignment (committing it first) and joins the next
    /// generation, retrying through coordinator moves and concurrent rebalances.
    async fn rejoin_group(&mut self) -> Result<()> {
        if self.generation.is_some()
            && let Err(err) = self.commit().await
        {
            tracing::info!(group = %self.config.group, %err, "could not commit before rejoining; the next owner re-reads from the last commit");
        }
        self.stop_heartbeat();
        self.readers.clear();
        self.generation = None;
        self.rejoin.store(false, Ordering::Release);
        let policy = self.client.retry_policy().clone();
        let mut backoff = policy.backoff;
        let deadline = tokio::time::Instant::now()
            + self.config.rebalance_timeout
            + self.config.session_timeout * 2;
        loop {
            match self.join_once().await {
                Ok(()) => return Ok(()),
                Err(err) if crate::client::is_retriable(&err) || is_rejoin(&err) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(err);
                    }
                    tracing::debug!(group = %self.config.group, %err, "joining the group again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One JoinGroup + SyncGroup round.
    async fn join_once(&mut self) -> Result<()> {
        let coordinator = self.client.find_coordinator(&self.config.group).await?;
        let mut stub = self.client.stub(&coordinator)?;
        let subscription = Subscription::new(self.config.topics.iter().cloned()).encode(1)?;
        let timeout_ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let joined = loop {
            let request = proto::JoinGroupRequest {
                group: self.config.group.clone(),
                member_id: self.member_id.clone(),
                group_instance_id: None,
                client_id: self.config.client_id.clone(),
                protocol_type: "consumer".into(),
                protocols: vec![proto::GroupProtocol {
                    name: self.config.assignor.clone(),
                    metadata: subscription.clone(),
                }],
                session_timeout_ms: timeout_ms(self.config.session_timeout),
                rebalance_timeout_ms: timeout_ms(self.config.rebalance_timeout),
                require_known_member_id: true,
            };
            let response = stub
                .join_group(request)
                .await
                .map_err(|s| crate::client::status_to_error(&coordinator, s))?
                .into_inner();
            match ErrorCode::from_i32(response.error_code) {
                ErrorCode::None => break response,
                ErrorCode::MemberIdRequired => self.member_id = response.member_id,
                code => {
                    if code == ErrorCode::UnknownMemberId {
                        self.member_id.clear();
                    }
                    return Err(remote_error(response.error_code, response.error_message));
                }
            }
        };
        self.member_id = joined.member_id.clone();
        let assignments = if joined.leader == joined.member_id {
            self.assign(&joined).await?
        } else {
            Vec::new()
        };
        let synced = stub
            .sync_group(proto::SyncGroupRequest {
                group: self.config.group.clone(),
                member_id: joined.member_id.clone(),
                group_instance_id: None,
                generation_id: joined.generation_id,
                assignments,
            })
            .await
            .map_err(|s| crate::client::status_to_error(&coordinator, s))?
            .into_inner();
        if synced.error_code != 0 {
            if synced.error_code == ErrorCode::UnknownMemberId as i32 {
                self.member_id.clear();
            }
            return Err(remote_error(synced.error_code, synced.error_message));
        }
        let assignment = Assignment::decode(&synced.assignment)?;
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for tp in assignment.partitions {
            by_topic.entry(tp.topic).or_default().push(tp.partition);
        }
        let generation = Generation {
            coordinator: coordinator.clone(),
            member_id: joined.member_id.clone(),
            generation_id: joined.generation_id,
        };
        tracing::info!(
            group = %self.config.group,
            member = %generation.member_id,
            generation = generation.generation_id,
            assigned = ?by_topic,
            "joined the group"
        );
        let mut readers = Vec::with_capacity(by_topic.len());
        for (topic, partitions) in by_topic {
            let mut config = ConsumerConfig::new(topic);
            config.partitions = Some(partitions);
            config.start = self.config.start;
            config.group = Some(self.config.group.clone());
            config.max_wait = self.config.max_wait;
            readers.push(Consumer::new(self.client.clone(), config).await?);
        }
        self.readers = readers;
        self.heartbeat = Some(tokio::spawn(heartbeat(
            self.client.clone(),
            self.config.group.clone(),
            generation.clone(),
            self.config.heartbeat_interval,
            self.config.session_timeout,
            self.rejoin.clone(),
        )));
        self.generation = Some(generation);
        Ok(())
    }

    /// The leader's share of the work: the partition counts of every subscribed topic,
    /// then the chosen assignor.
    async fn assign(
        &self,
        joined: &proto::JoinGroupResponse,
    ) -> Result<Vec<proto::MemberAssignment>> {
        let assignor =
            assignor_by_name(&joined.protocol_name).ok_or_else(|| BrokerError::InvalidRequest {
                reason: format!(
                    "the group chose assignor {:?}, which this client does not have",
                    joined.protocol_name
                ),
            })?;
        let members: Vec<JoinMember> = joined
            .members
            .iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata.clone(),
            })
            .collect();
        let mut topics = std::collections::BTreeSet::new();
        for m in &members {
            topics.extend(Subscription::decode(&m.metadata)?.topics);
        }
        let mut partitions_per_topic = BTreeMap::new();
        for topic in topics {
            match self.client.topic(&topic).await {
                Ok(meta) => {
                    partitions_per_topic.insert(topic, meta.partitions.len() as i32);
                }
                Err(err) => {
                    tracing::warn!(group = %self.config.group, %topic, %err, "subscribed topic is not readable; assigning without it");
                }
            }
        }
        Ok(assign_group(assignor, &members, &partitions_per_topic)?
            .into_iter()
            .map(|(member_id, assignment)| proto::MemberAssignment {
                member_id,
                assignment,
            })
            .collect())
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// Whether an error means "join the group again" rather than "give up".
fn is_rejoin(err: &BrokerError) -> bool {
    matches!(
        err.code(),
        ErrorCode::RebalanceInProgress
            | ErrorCode::UnknownMemberId
            | ErrorCode::IllegalGeneration
            | ErrorCode::MemberIdRequired
    )
}

/// Heartbeats until the coordinator asks for a rejoin, then raises the rejoin flag for
/// the next poll. A heartbeat that cannot reach the coordinator is retried until the
/// session would have expired, unless the group's coordinator moved meanwhile (the new
/// one does not know this member): either way the member rejoins.
async fn heartbeat(
    client: Client,
    group: String,
    generation: Generation,
    every: Duration,
    session_timeout: Duration,
    rejoin: Arc<AtomicBool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut last_answer = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let request = proto::GroupHeartbeatRequest {
            group: group.clone(),
            member_id: generation.member_id.clone(),
            group_instance_id: None,
            generation_id: generation.generation_id,
        };
        let outcome = match client.stub(&generation.coordinator) {
            Ok(mut stub) => stub
                .group_heartbeat(request)
                .await
                .map(|r| r.into_inner().error_code)
                .map_err(|s| crate::client::status_to_error(&generation.coordinator, s)),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(0) => last_answer = tokio::time::Instant::now(),
            Ok(code) => {
                tracing::info!(%group, code = ?ErrorCode::from_i32(code), "the group asks this member to rejoin");
                rejoin.store(true, Ordering::Release);
                return;
            }
            Err(err) => {
                let moved = client
                    .find_coordinator(&group)
                    .await
                    .is_ok_and(|addr| addr != generation.coordinator);
                if moved || last_answer.elapsed() >= session_timeout {
                    tracing::warn!(%group, %err, moved, "lost the group coordinator; rejoining");
                    rejoin.store(true, Ordering::Release);
                    return;
                }
                tracing::debug!(%group, %err, "heartbeat failed; retrying");
            }
        }
    }
}

/// A member is driven from spawned tasks (applications, the chaos harness): its futures
/// must be `Send`. This fails to compile otherwise.
#[allow(dead_code)]
fn group_member_futures_are_send(member: &mut GroupConsumer) {
    fn send<T: Send>(_: &T) {}
    let poll = member.poll();
    send(&poll);
}
