//! The replicated metadata of a region (`ClusterState`) and the commands that change it.
//!
//! Everything here is deterministic and free of I/O: every node, voter or learner,
//! applies the same committed commands in the same order and arrives at the same state.
//! Partition assignment and leader election therefore happen *inside* `apply`, computed
//! from the state alone (never from clocks, randomness or the proposing node), so the
//! leader proposes intent ("create topic T with 6 partitions") and the log decides the
//! outcome ("partition 3 lives on 2, 3, 1 and is led by 2").
//!
//! Election rule (Kafka's): when a broker is fenced or shuts down, every partition it
//! led gets a new leader from its ISR (excluding that broker, in replica order, unfenced
//! brokers only) with `leader_epoch + 1`, and the broker leaves every ISR. If no other
//! ISR member is available the partition goes offline (`leader: None`, epoch + 1) and
//! keeps the lost broker as its last ISR member, so that the broker which holds every
//! committed record is the one re-elected when it returns, unless the topic opts into
//! `unclean.leader.election.enable=true`, in which case any unfenced replica is taken
//! (and may have lost records).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Topic config key that lets an out-of-sync replica become leader (losing records).
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// A broker as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    /// Broker id (also its Raft node id).
    pub id: u64,
    /// Name in the region.
    pub name: String,
    /// Region the broker serves.
    pub region: String,
    /// gRPC address (clients, replication and the controller's Raft traffic).
    pub grpc_addr: String,
    /// Kafka wire-protocol address, if it has one.
    pub kafka_addr: Option<String>,
    /// Incarnation of the broker: the log index of its latest registration. A broker that
    /// restarts registers again and gets a new epoch, which tells everyone its old
    /// leaderships are void.
    pub epoch: i64,
    /// A fenced broker missed its session timeout (or shut down) and leads nothing.
    pub fenced: bool,
}

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Replica brokers; the first one is the preferred leader.
    pub replicas: Vec<u64>,
    /// Current leader, `None` while the partition is offline.
    pub leader: Option<u64>,
    /// Bumped on every leader change, so stale leaders and followers can be told apart.
    pub leader_epoch: i32,
    /// In-sync replicas: the only brokers eligible for a clean election.
    pub isr: Vec<u64>,
}

/// A topic's configs and partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Per-topic config overrides, Kafka names.
    pub configs: BTreeMap<String, String>,
    /// Replication factor the topic was created with.
    pub replication_factor: u16,
    /// Partitions by index.
    pub partitions: Vec<PartitionState>,
}

impl TopicState {
    /// Whether the topic opted into unclean leader election.
    pub fn unclean_election(&self) -> bool {
        self.configs
            .get(UNCLEAN_LEADER_ELECTION)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// The whole replicated metadata of a region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Registered brokers by id.
    pub brokers: BTreeMap<u64, BrokerRecord>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicState>,
    /// Where the next topic's round-robin assignment starts, so that partition
    /// leadership of successive topics does not pile onto the lowest broker id.
    pub next_assignment_start: u64,
    /// Index of the last log entry applied to this copy (0 before any).
    pub applied_index: u64,
    /// Committed consumer group offsets: group → topic → partition → offset. The
    /// controller is the groups' offset store, so a commit survives any broker's loss
    /// and every broker answers OffsetFetch from its replicated copy.
    #[serde(default)]
    pub group_offsets: BTreeMap<String, BTreeMap<String, BTreeMap<u32, GroupOffset>>>,
    /// The last read barrier each broker passed (see `Command::Barrier`).
    #[serde(default)]
    pub barriers: BTreeMap<u64, u64>,
}

/// A committed group offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// Free-form metadata from the committer.
    pub metadata: String,
}

/// A change to the metadata, proposed through the controller and applied by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker (re)joins: records its addresses and gives it a new epoch, unfenced.
    RegisterBroker {
        /// Broker id.
        id: u64,
        /// Name in the region.
        name: String,
        /// Region.
        region: String,
        /// gRPC address.
        grpc_addr: String,
        /// Kafka address, if any.
        kafka_addr: Option<String>,
    },
    /// A broker missed its session timeout: it leads nothing until it heartbeats again.
    FenceBroker {
        /// Broker id.
        id: u64,
    },
    /// A fenced broker of the given epoch heartbeats again.
    UnfenceBroker {
        /// Broker id.
        id: u64,
        /// The epoch it registered with; a stale epoch is refused.
        epoch: i64,
    },
    /// Creates a topic; replicas are assigned inside `apply` (see the module docs).
    CreateTopic {
        /// Topic name.
        name: String,
        /// Partition count.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u16,
        /// Config overrides.
        configs: BTreeMap<String, String>,
    },
    /// Grows a topic to `partitions` (Kafka's CreatePartitions): new partitions are
    /// placed like a new topic's, existing ones do not move. Never shrinks.
    CreatePartitions {
        /// Topic name.
        name: String,
        /// The new partition count.
        partitions: u32,
    },
    /// Sets (or, with an empty value, removes) per-topic config overrides
    /// (Kafka's IncrementalAlterConfigs); other overrides are kept.
    AlterTopicConfigs {
        /// Topic name.
        name: String,
        /// Keys to set; an empty value deletes the override.
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// A partition leader changes its ISR; refused unless it is the current leader at the
    /// current leader epoch.
    AlterIsr {
        /// Topic.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The leader asking.
        leader_id: u64,
        /// The leader epoch it leads under.
        leader_epoch: i32,
        /// The ISR it wants.
        new_isr: Vec<u64>,
    },
    /// Moves leadership back to preferred replicas (and revives offline partitions whose
    /// ISR has an available broker); `None` means every topic.
    ElectLeaders {
        /// Topics to rebalance, or all.
        topics: Option<Vec<String>>,
    },
    /// A broker is about to stop: moves its leaderships away and fences it.
    ControlledShutdown {
        /// Broker id.
        broker_id: u64,
    },
    /// A no-op that a broker commits before a read that must see every earlier commit
    /// (a read barrier): once its own copy shows `nonce`, it has applied everything
    /// committed before it, even if the leader that committed it has died since.
    Barrier {
        /// The broker passing the barrier.
        node: u64,
        /// Unique per barrier.
        nonce: u64,
    },
    /// Stores a group's committed offsets; all or nothing, every partition must exist.
    CommitOffsets {
        /// The group.
        group: String,
        /// (topic, partition, offset, metadata).
        offsets: Vec<(String, u32, i64, String)>,
    },
}

/// What an applied command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The command changed (or confirmed) the state.
    Done,
    /// A registration: the broker's new epoch.
    Registered {
        /// The broker epoch.
        epoch: i64,
    },
}

/// Why a committed command changed nothing. Rejections are part of the replicated
/// outcome: every node refuses the same command the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The topic exists already.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// No such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Partition asked for.
        partition: u32,
    },
    /// No such broker.
    #[error("broker {0} is not registered; it must heartbeat (register) first")]
    UnknownBroker(u64),
    /// Not enough unfenced brokers for the replication factor.
    #[error(
        "replication factor {requested} cannot be met: {available} unfenced broker(s) in the region"
    )]
    ReplicationFactor {
        /// Asked for.
        requested: u16,
        /// Available.
        available: usize,
    },
    /// The proposer is not the leader at the current leader epoch.
    #[error(
        "{topic}-{partition}: leader {leader_id} at epoch {given} is stale; the partition is at epoch {current} led by {current_leader:?}"
    )]
    StaleLeaderEpoch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Who asked.
        leader_id: u64,
        /// Epoch given.
        given: i32,
        /// Current epoch.
        current: i32,
        /// Current leader.
        current_leader: Option<u64>,
    },
    /// The broker's epoch is not its current one.
    #[error("broker {id} epoch {given} is stale (current {current}); it must register again")]
    StaleBrokerEpoch {
        /// Broker.
        id: u64,
        /// Epoch given.
        given: i64,
        /// Current epoch.
        current: i64,
    },
    /// Anything else malformed.
    #[error("{0}")]
    Invalid(String),
}

/// The outcome of one command, as replicated.
pub type CommandResult = Result<Applied, Rejection>;

impl ClusterState {
    /// Unfenced broker ids, ascending.
    pub fn available_brokers(&self) -> Vec<u64> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    /// A partition, if it exists.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
    }

    /// Applies one committed command at log index `index`. Deterministic.
    pub fn apply(&mut self, command: &Command, index: u64) -> CommandResult {
        self.applied_index = index;
        match command {
            Command::RegisterBroker {
                id,
                name,
                region,
                grpc_addr,
                kafka_addr,
            } => {
                if self.brokers.get(id).is_some_and(|b| !b.fenced) {
                    // A new incarnation voids the old one's leaderships.
                    self.remove_from_leadership(*id, true);
                }
                let epoch = i64::try_from(index).unwrap_or(i64::MAX);
                self.brokers.insert(
                    *id,
                    BrokerRecord {
                        id: *id,
                        name: name.clone(),
                        region: region.clone(),
                        grpc_addr: grpc_addr.clone(),
                        kafka_addr: kafka_addr.clone(),
                        epoch,
                        fenced: false,
                    },
                );
                self.elect_offline();
                Ok(Applied::Registered { epoch })
            }
            Command::FenceBroker { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(Rejection::UnknownBroker(*id))?;
                if !broker.fenced {
                    broker.fenced = true;
                    self.remove_from_leadership(*id, true);
                }
                Ok(Applied::Done)
            }
            Command::UnfenceBroker { id, epoch } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(Rejection::UnknownBroker(*id))?;
                if broker.epoch != *epoch {
                    return Err(Rejection::StaleBrokerEpoch {
                        id: *id,
                        given: *epoch,
                        current: broker.epoch,
                    });
                }
                broker.fenced = false;
                self.elect_offline();
                Ok(Applied::Done)
            }
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => self.create_topic(name, *partitions, *replication_factor, configs),
            Command::CreatePartitions { name, partitions } => {
                self.create_partitions(name, *partitions)
            }
            Command::AlterTopicConfigs { name, configs } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| Rejection::UnknownTopic(name.clone()))?;
                for (key, value) in configs {
                    if value.is_empty() {
                        topic.configs.remove(key);
                    } else {
                        topic.configs.insert(key.clone(), value.clone());
                    }
                }
                Ok(Applied::Done)
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => {
                    for topics in self.group_offsets.values_mut() {
                        topics.remove(name);
                    }
                    self.group_offsets.retain(|_, topics| !topics.is_empty());
                    Ok(Applied::Done)
                }
                None => Err(Rejection::UnknownTopic(name.clone())),
            },
            Command::Barrier { node, nonce } => {
                self.barriers.insert(*node, *nonce);
                Ok(Applied::Done)
            }
            Command::CommitOffsets { group, offsets } => {
                if group.is_empty() {
                    return Err(Rejection::Invalid("the group id is empty".into()));
                }
                for (topic, partition, _, _) in offsets {
                    let t = self
                        .topics
                        .get(topic)
                        .ok_or_else(|| Rejection::UnknownTopic(topic.clone()))?;
                    if *partition as usize >= t.partitions.len() {
                        return Err(Rejection::UnknownPartition {
                            topic: topic.clone(),
                            partition: *partition,
                        });
                    }
                }
                let stored = self.group_offsets.entry(group.clone()).or_default();
                for (topic, partition, offset, metadata) in offsets {
                    stored.entry(topic.clone()).or_default().insert(
                        *partition,
                        GroupOffset {
                            offset: *offset,
                            metadata: metadata.clone(),
                        },
                    );
                }
                Ok(Applied::Done)
            }
            Command::AlterIsr {
                topic,
                partition,
                leader_id,
                leader_epoch,
                new_isr,
            } => self.alter_isr(topic, *partition, *leader_id, *leader_epoch, new_isr),
            Command::ElectLeaders { topics } => {
                if let Some(names) = topics
                    && let Some(missing) = names.iter().find(|n| !self.topics.contains_key(*n))
                {
                    return Err(Rejection::UnknownTopic(missing.clone()));
                }
                self.elect_preferred(topics.as_deref());
                Ok(Applied::Done)
            }
            Command::ControlledShutdown { broker_id } => {
                let broker = self
                    .brokers
                    .get_mut(broker_id)
                    .ok_or(Rejection::UnknownBroker(*broker_id))?;
                broker.fenced = true;
                self.remove_from_leadership(*broker_id, false);
                Ok(Applied::Done)
            }
        }
    }

    fn create_partitions(&mut self, name: &str, partitions: u32) -> CommandResult {
        let brokers = self.available_brokers();
        let start = self.next_assignment_start;
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| Rejection::UnknownTopic(name.to_owned()))?;
        let current = topic.partitions.len() as u32;
        if partitions <= current || partitions > 100_000 {
            return Err(Rejection::Invalid(format!(
                "{name} has {current} partitions; it can only grow, to at most 100000, not to {partitions}"
            )));
        }
        let replication_factor = topic
            .partitions
            .first()
            .map_or(1, |p| p.replicas.len() as u16);
        let assignment =
            assign_replicas(&brokers, partitions - current, replication_factor, start)?;
        topic
            .partitions
            .extend(assignment.into_iter().map(|replicas| PartitionState {
                leader: replicas.first().copied(),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            }));
        self.next_assignment_start = self.next_assignment_start.wrapping_add(1);
        Ok(Applied::Done)
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &BTreeMap<String, String>,
    ) -> CommandResult {
        if self.topics.contains_key(name) {
            return Err(Rejection::TopicExists(name.to_owned()));
        }
        if let Err(err) = crate::node::validate_topic_name(name) {
            return Err(Rejection::Invalid(err.to_string()));
        }
        if partitions == 0 || partitions > 100_000 {
            return Err(Rejection::Invalid(format!(
                "a topic needs 1 to 100000 partitions, not {partitions}"
            )));
        }
        if let Some(value) = configs.get(UNCLEAN_LEADER_ELECTION)
            && !value.eq_ignore_ascii_case("true")
            && !value.eq_ignore_ascii_case("false")
        {
            return Err(Rejection::Invalid(format!(
                "{UNCLEAN_LEADER_ELECTION}={value:?} must be true or false"
            )));
        }
        let brokers = self.available_brokers();
        let assignment = assign_replicas(
            &brokers,
            partitions,
            replication_factor,
            self.next_assignment_start,
        )?;
        self.next_assignment_start = self.next_assignment_start.wrapping_add(1);
        let partitions = assignment
            .into_iter()
            .map(|replicas| PartitionState {
                leader: replicas.first().copied(),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            })
            .collect();
        self.topics.insert(
            name.to_owned(),
            TopicState {
                configs: configs.clone(),
                replication_factor,
                partitions,
            },
        );
        Ok(Applied::Done)
    }

    fn alter_isr(
        &mut self,
        topic: &str,
        partition: u32,
        leader_id: u64,
        leader_epoch: i32,
        new_isr: &[u64],
    ) -> CommandResult {
        let available: Vec<u64> = self.available_brokers();
        let state = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| Rejection::UnknownTopic(topic.to_owned()))?
            .partitions
            .get_mut(partition as usize)
            .ok_or_else(|| Rejection::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })?;
        if state.leader != Some(leader_id) || state.leader_epoch != leader_epoch {
            return Err(Rejection::StaleLeaderEpoch {
                topic: topic.to_owned(),
                partition,
                leader_id,
                given: leader_epoch,
                current: state.leader_epoch,
                current_leader: state.leader,
            });
        }
        if !new_isr.contains(&leader_id) {
            return Err(Rejection::Invalid(format!(
                "the new ISR {new_isr:?} of {topic}-{partition} must contain its leader {leader_id}"
            )));
        }
        if let Some(bad) = new_isr.iter().find(|id| !state.replicas.contains(id)) {
            return Err(Rejection::Invalid(format!(
                "broker {bad} is not a replica of {topic}-{partition} (replicas {:?})",
                state.replicas
            )));
        }
        if let Some(bad) = new_isr
            .iter()
            .find(|id| !state.isr.contains(id) && !available.contains(id))
        {
            return Err(Rejection::Invalid(format!(
                "broker {bad} is fenced and cannot join the ISR of {topic}-{partition}"
            )));
        }
        // Keep replica order so the ISR reads the same everywhere.
        state.isr = state
            .replicas
            .iter()
            .copied()
            .filter(|id| new_isr.contains(id))
            .collect();
        Ok(Applied::Done)
    }

    /// Moves every leadership away from `broker` and drops it from every ISR. With
    /// `allow_offline` (the broker is gone) a partition with no other ISR member goes
    /// offline (or is taken uncleanly if the topic allows); without it (a controlled
    /// shutdown, the broker still serves) such a partition keeps its leader.
    fn remove_from_leadership(&mut self, broker: u64, allow_offline: bool) {
        let available = self.available_brokers();
        let available = |id: u64| id != broker && available.contains(&id);
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for p in &mut topic.partitions {
                if p.leader == Some(broker) {
                    elect_away(p, broker, &available, unclean, allow_offline);
                } else if p.isr.contains(&broker) && p.isr.len() > 1 {
                    p.isr.retain(|id| *id != broker);
                }
            }
        }
    }

    /// Offline partitions get a leader from their ISR if one is available again.
    fn elect_offline(&mut self) {
        let available = self.available_brokers();
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for p in topic.partitions.iter_mut().filter(|p| p.leader.is_none()) {
                let clean = p.isr.iter().copied().find(|id| available.contains(id));
                let chosen = clean.or_else(|| {
                    unclean
                        .then(|| p.replicas.iter().copied().find(|id| available.contains(id)))
                        .flatten()
                });
                if let Some(leader) = chosen {
                    p.leader = Some(leader);
                    p.leader_epoch += 1;
                    if clean.is_none() {
                        p.isr = vec![leader];
                    }
                }
            }
        }
    }

    /// Whether some broker leads too few of the partitions it is the preferred replica
    /// of: more than `threshold` (Kafka's `leader.imbalance.per.broker.percentage`, 10 %)
    /// of them are led by another broker although the preferred one is available and in
    /// sync, so an election would move them back.
    pub fn leader_imbalance_exceeds(&self, threshold: f64) -> bool {
        let available = self.available_brokers();
        let mut preferred: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
        for p in self.topics.values().flat_map(|t| &t.partitions) {
            let Some(&first) = p.replicas.first() else {
                continue;
            };
            let entry = preferred.entry(first).or_default();
            entry.0 += 1;
            if p.leader != Some(first) && p.isr.contains(&first) && available.contains(&first) {
                entry.1 += 1;
            }
        }
        preferred.values().any(|(total, misplaced)| {
            *misplaced > 0 && *misplaced as f64 / *total as f64 > threshold
        })
    }

    fn elect_preferred(&mut self, topics: Option<&[String]>) {
        self.elect_offline();
        let available = self.available_brokers();
        for (name, topic) in &mut self.topics {
            if topics.is_some_and(|names| !names.contains(name)) {
                continue;
            }
            for p in &mut topic.partitions {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                if p.leader != Some(preferred)
                    && p.isr.contains(&preferred)
                    && available.contains(&preferred)
                {
                    p.leader = Some(preferred);
                    p.leader_epoch += 1;
                }
            }
        }
    }
}

/// Elects a new leader for `p` whose leader `gone` is leaving; see the module docs.
fn elect_away(
    p: &mut PartitionState,
    gone: u64,
    available: &dyn Fn(u64) -> bool,
    unclean: bool,
    allow_offline: bool,
) {
    let clean = p
        .replicas
        .iter()
        .copied()
        .find(|id| p.isr.contains(id) && available(*id));
    if let Some(leader) = clean {
        p.leader = Some(leader);
        p.leader_epoch += 1;
        p.isr.retain(|id| *id != gone);
        return;
    }
    if !allow_offline {
        return;
    }
    let unclean_choice = unclean
        .then(|| p.replicas.iter().copied().find(|id| available(*id)))
        .flatten();
    p.leader_epoch += 1;
    match unclean_choice {
        Some(leader) => {
            p.leader = Some(leader);
            p.isr = vec![leader];
        }
        None => {
            // Offline; the lost leader stays the last ISR member (it holds every
            // committed record) so it is re-elected when it returns.
            p.leader = None;
            p.isr = vec![gone];
        }
    }
}

/// Round-robin replica assignment over `brokers` (sorted ascending): partition `p`
/// gets `rf` consecutive brokers starting at `start + p`, so leaders (first replicas)
/// spread evenly and successive topics start on different brokers.
pub fn assign_replicas(
    brokers: &[u64],
    partitions: u32,
    replication_factor: u16,
    start: u64,
) -> Result<Vec<Vec<u64>>, Rejection> {
    let rf = usize::from(replication_factor);
    if rf == 0 || rf > brokers.len() {
        return Err(Rejection::ReplicationFactor {
            requested: replication_factor,
            available: brokers.len(),
        });
    }
    let n = brokers.len() as u64;
    Ok((0..u64::from(partitions))
        .map(|p| {
            (0..rf as u64)
                .map(|j| brokers[((start + p + j) % n) as usize])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(state: &mut ClusterState, id: u64, index: u64) {
        state
            .apply(
                &Command::RegisterBroker {
                    id,
                    name: format!("b{id}"),
                    region: "r".into(),
                    grpc_addr: format!("127.0.0.{id}:9000"),
                    kafka_addr: None,
                },
                index,
            )
            .unwrap();
    }

    fn cluster(ids: &[u64]) -> ClusterState {
        let mut state = ClusterState::default();
        for (i, id) in ids.iter().enumerate() {
            register(&mut state, *id, i as u64 + 1);
        }
        state
    }

    fn create(state: &mut ClusterState, name: &str, partitions: u32, rf: u16, unclean: bool) {
        let mut configs = BTreeMap::new();
        if unclean {
            configs.insert(UNCLEAN_LEADER_ELECTION.to_owned(), "true".to_owned());
        }
        state
            .apply(
                &Command::CreateTopic {
                    name: name.into(),
                    partitions,
                    replication_factor: rf,
                    configs,
                },
                100,
            )
            .unwrap();
    }

    #[test]
    fn assignment_spreads_leaders_and_replicas_evenly() {
        let brokers = [1, 2, 3];
        let a = assign_replicas(&brokers, 6, 2, 0).unwrap();
        let mut leaders = BTreeMap::<u64, usize>::new();
        let mut replicas = BTreeMap::<u64, usize>::new();
        for r in &a {
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1], "a broker holds one replica per partition");
            *leaders.entry(r[0]).or_default() += 1;
            for id in r {
                *replicas.entry(*id).or_default() += 1;
            }
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(
            replicas.values().copied().collect::<Vec<_>>(),
            vec![4, 4, 4]
        );
    }

    #[test]
    fn successive_topics_start_on_different_brokers() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "a", 1, 1, false);
        create(&mut state, "b", 1, 1, false);
        let a = state.partition("a", 0).unwrap().leader;
        let b = state.partition("b", 0).unwrap().leader;
        assert_ne!(a, b);
    }

    #[test]
    fn assignment_refuses_replication_factor_above_unfenced_brokers() {
        let mut state = cluster(&[1, 2, 3]);
        state.apply(&Command::FenceBroker { id: 3 }, 10).unwrap();
        let err = state
            .apply(
                &Command::CreateTopic {
                    name: "t".into(),
                    partitions: 1,
                    replication_factor: 3,
                    configs: BTreeMap::new(),
                },
                11,
            )
            .unwrap_err();
        assert_eq!(
            err,
            Rejection::ReplicationFactor {
                requested: 3,
                available: 2
            }
        );
        assert!(state.topics.is_empty());
    }

    #[test]
    fn created_partitions_are_led_by_their_preferred_replica_with_full_isr() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 3, 3, false);
        for p in &state.topics["t"].partitions {
            assert_eq!(p.leader, Some(p.replicas[0]));
            assert_eq!(p.isr, p.replicas);
            assert_eq!(p.leader_epoch, 0);
        }
    }

    #[test]
    fn fencing_a_leader_elects_from_isr_and_bumps_epoch() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 3, 3, false);
        let led_by_1: Vec<usize> = (0..3)
            .filter(|i| state.topics["t"].partitions[*i].leader == Some(1))
            .collect();
        assert!(!led_by_1.is_empty());
        let before = state.topics["t"].clone();
        state.apply(&Command::FenceBroker { id: 1 }, 200).unwrap();
        for (i, p) in state.topics["t"].partitions.iter().enumerate() {
            assert!(!p.isr.contains(&1), "broker 1 left the ISR of {i}");
            if led_by_1.contains(&i) {
                let leader = p.leader.unwrap();
                assert_ne!(leader, 1);
                assert!(before.partitions[i].isr.contains(&leader));
                assert_eq!(p.leader_epoch, before.partitions[i].leader_epoch + 1);
            } else {
                assert_eq!(p.leader, before.partitions[i].leader);
                assert_eq!(p.leader_epoch, before.partitions[i].leader_epoch);
            }
        }
    }

    #[test]
    fn election_skips_isr_members_that_are_fenced() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 1, 3, false);
        let replicas = state.topics["t"].partitions[0].replicas.clone();
        state
            .apply(&Command::FenceBroker { id: replicas[1] }, 200)
            .unwrap();
        state
            .apply(&Command::FenceBroker { id: replicas[0] }, 201)
            .unwrap();
        let p = &state.topics["t"].partitions[0];
        assert_eq!(p.leader, Some(replicas[2]));
        assert_eq!(p.isr, vec![replicas[2]]);
    }

    #[test]
    fn last_isr_member_lost_makes_partition_offline_without_unclean_election() {
        let mut state = cluster(&[1, 2]);
        create(&mut state, "t", 1, 2, false);
        let p0 = state.topics["t"].partitions[0].clone();
        let (leader, follower) = (p0.replicas[0], p0.replicas[1]);
        // The follower falls out of the ISR, then the leader dies.
        state
            .apply(
                &Command::AlterIsr {
                    topic: "t".into(),
                    partition: 0,
                    leader_id: leader,
                    leader_epoch: 0,
                    new_isr: vec![leader],
                },
                200,
            )
            .unwrap();
        state
            .apply(&Command::FenceBroker { id: leader }, 201)
            .unwrap();
        let p = &state.topics["t"].partitions[0];
        assert_eq!(
            p.leader, None,
            "the out-of-sync follower {follower} must not lead"
        );
        assert_eq!(p.isr, vec![leader]);
        assert_eq!(p.leader_epoch, 1);
        // The lost leader returns and is re-elected: it has every committed record.
        let epoch = state.brokers[&leader].epoch;
        state
            .apply(&Command::UnfenceBroker { id: leader, epoch }, 202)
            .unwrap();
        let p = &state.topics["t"].partitions[0];
        assert_eq!(p.leader, Some(leader));
        assert_eq!(p.leader_epoch, 2);
    }

    #[test]
    fn unclean_election_is_opt_in_per_topic() {
        let mut state = cluster(&[1, 2]);
        create(&mut state, "t", 1, 2, true);
        let p0 = state.topics["t"].partitions[0].clone();
        let (leader, follower) = (p0.replicas[0], p0.replicas[1]);
        state
            .apply(
                &Command::AlterIsr {
                    topic: "t".into(),
                    partition: 0,
                    leader_id: leader,
                    leader_epoch: 0,
                    new_isr: vec![leader],
                },
                200,
            )
            .unwrap();
        state
            .apply(&Command::FenceBroker { id: leader }, 201)
            .unwrap();
        let p = &state.topics["t"].partitions[0];
        assert_eq!(p.leader, Some(follower));
        assert_eq!(p.isr, vec![follower]);
        assert_eq!(p.leader_epoch, 1);
    }

    #[test]
    fn alter_isr_with_stale_epoch_is_refused_and_changes_nothing() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 1, 3, false);
        let old_leader = state.topics["t"].partitions[0].leader.unwrap();
        state
            .apply(&Command::FenceBroker { id: old_leader }, 200)
            .unwrap();
        let before = state.topics["t"].clone();
        let err = state
            .apply(
                &Command::AlterIsr {
                    topic: "t".into(),
                    partition: 0,
                    leader_id: old_leader,
                    leader_epoch: 0,
                    new_isr: vec![old_leader],
                },
                201,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            Rejection::StaleLeaderEpoch {
                current: 1,
                given: 0,
                ..
            }
        ));
        assert_eq!(state.topics["t"], before);
    }

    #[test]
    fn alter_isr_refuses_fenced_brokers_joining() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 1, 3, false);
        let p0 = state.topics["t"].partitions[0].clone();
        let (leader, f) = (p0.replicas[0], p0.replicas[1]);
        state.apply(&Command::FenceBroker { id: f }, 200).unwrap();
        let err = state
            .apply(
                &Command::AlterIsr {
                    topic: "t".into(),
                    partition: 0,
                    leader_id: leader,
                    leader_epoch: 0,
                    new_isr: p0.replicas.clone(),
                },
                201,
            )
            .unwrap_err();
        assert!(matches!(err, Rejection::Invalid(_)), "{err:?}");
    }

    #[test]
    fn preferred_leader_election_moves_leadership_back() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 3, 3, false);
        state.apply(&Command::FenceBroker { id: 1 }, 200).unwrap();
        let epoch = state.brokers[&1].epoch;
        state
            .apply(&Command::UnfenceBroker { id: 1, epoch }, 201)
            .unwrap();
        // Broker 1 is back but out of the ISR: it cannot be preferred yet.
        state
            .apply(&Command::ElectLeaders { topics: None }, 202)
            .unwrap();
        let p1 = state.topics["t"]
            .partitions
            .iter()
            .position(|p| p.replicas[0] == 1)
            .unwrap();
        assert_ne!(state.topics["t"].partitions[p1].leader, Some(1));
        // The leader adds it back to the ISR; now rebalancing moves leadership home.
        let p = state.topics["t"].partitions[p1].clone();
        state
            .apply(
                &Command::AlterIsr {
                    topic: "t".into(),
                    partition: p1 as u32,
                    leader_id: p.leader.unwrap(),
                    leader_epoch: p.leader_epoch,
                    new_isr: p.replicas.clone(),
                },
                203,
            )
            .unwrap();
        state
            .apply(&Command::ElectLeaders { topics: None }, 204)
            .unwrap();
        for p in &state.topics["t"].partitions {
            assert_eq!(p.leader, Some(p.replicas[0]));
        }
        assert_eq!(
            state.topics["t"].partitions[p1].leader_epoch,
            p.leader_epoch + 1
        );
    }

    #[test]
    fn controlled_shutdown_moves_leadership_away_and_fences() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 3, 3, false);
        create(&mut state, "solo", 1, 1, false);
        let solo_leader = state.topics["solo"].partitions[0].leader.unwrap();
        state
            .apply(&Command::ControlledShutdown { broker_id: 2 }, 200)
            .unwrap();
        assert!(state.brokers[&2].fenced);
        for p in &state.topics["t"].partitions {
            assert_ne!(p.leader, Some(2));
            assert!(!p.isr.contains(&2));
        }
        if solo_leader == 2 {
            // Nowhere to move: it keeps leading until it is gone.
            assert_eq!(state.topics["solo"].partitions[0].leader, Some(2));
        }
    }

    #[test]
    fn reregistration_voids_old_leaderships() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 3, 3, false);
        let old_epoch = state.brokers[&1].epoch;
        register(&mut state, 1, 300);
        assert_ne!(state.brokers[&1].epoch, old_epoch);
        assert!(
            state.topics["t"]
                .partitions
                .iter()
                .all(|p| p.leader != Some(1))
        );
        let err = state
            .apply(
                &Command::UnfenceBroker {
                    id: 1,
                    epoch: old_epoch,
                },
                301,
            )
            .unwrap_err();
        assert!(matches!(err, Rejection::StaleBrokerEpoch { .. }));
    }

    #[test]
    fn the_same_commands_give_the_same_state() {
        let run = || {
            let mut state = cluster(&[3, 1, 2]);
            create(&mut state, "t", 5, 2, false);
            state.apply(&Command::FenceBroker { id: 2 }, 200).unwrap();
            state
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn leader_imbalance_counts_only_preferred_replicas_that_could_lead() {
        let mut state = cluster(&[1, 2, 3]);
        create(&mut state, "t", 3, 3, false);
        assert!(
            !state.leader_imbalance_exceeds(0.1),
            "fresh topics are balanced"
        );
        let victim = state.topics["t"].partitions[0].replicas[0];
        state
            .apply(&Command::FenceBroker { id: victim }, 11)
            .unwrap();
        assert!(
            !state.leader_imbalance_exceeds(0.1),
            "a fenced preferred replica cannot take its leadership back"
        );
        state
            .apply(
                &Command::UnfenceBroker {
                    id: victim,
                    epoch: state.brokers[&victim].epoch,
                },
                12,
            )
            .unwrap();
        assert!(
            !state.leader_imbalance_exceeds(0.1),
            "back but not in sync yet: it cannot lead"
        );
        let p = state.topics["t"].partitions[0].clone();
        let leader = p.leader.unwrap();
        let mut isr = p.isr.clone();
        isr.push(victim);
        state
            .apply(
                &Command::AlterIsr {
                    topic: "t".into(),
                    partition: 0,
                    leader_id: leader,
                    leader_epoch: p.leader_epoch,
                    new_isr: isr,
                },
                13,
            )
            .unwrap();
        assert!(
            state.leader_imbalance_exceeds(0.1),
            "back and in sync: imbalanced"
        );
        state
            .apply(&Command::ElectLeaders { topics: None }, 14)
            .unwrap();
        assert_eq!(state.topics["t"].partitions[0].leader, Some(victim));
        assert!(!state.leader_imbalance_exceeds(0.1));
    }

    #[test]
    fn topics_grow_partitions_and_change_configs_but_never_shrink() {
        let mut state = cluster(&[1, 2, 3]);
        state
            .apply(
                &Command::CreateTopic {
                    name: "t".into(),
                    partitions: 2,
                    replication_factor: 2,
                    configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
                },
                10,
            )
            .unwrap();
        let before = state.topics["t"].partitions.clone();
        state
            .apply(
                &Command::CreatePartitions {
                    name: "t".into(),
                    partitions: 5,
                },
                11,
            )
            .unwrap();
        let after = &state.topics["t"].partitions;
        assert_eq!(after.len(), 5);
        assert_eq!(
            after[..2],
            before[..],
            "existing partitions stay where they are"
        );
        assert!(
            after
                .iter()
                .all(|p| p.replicas.len() == 2 && p.leader.is_some())
        );
        assert!(
            state
                .apply(
                    &Command::CreatePartitions {
                        name: "t".into(),
                        partitions: 4
                    },
                    12
                )
                .is_err()
        );
        state
            .apply(
                &Command::AlterTopicConfigs {
                    name: "t".into(),
                    configs: BTreeMap::from([
                        ("retention.ms".into(), String::new()),
                        ("retention.bytes".into(), "5".into()),
                    ]),
                },
                13,
            )
            .unwrap();
        assert_eq!(
            state.topics["t"].configs,
            BTreeMap::from([("retention.bytes".to_string(), "5".to_string())])
        );
    }
}
