//! Client-side partition assignors and Kafka's ConsumerProtocol encoding.
//!
//! In Kafka's classic protocol the group leader (a client) computes the assignment, so
//! these run in OUR client, not in the coordinator. `range` and `roundrobin` give the same
//! output as Kafka's `RangeAssignor` / `RoundRobinAssignor` for the same input (members
//! ordered as Kafka orders them: static members by instance id first, then the others by
//! member id; racks are not used), and subscriptions and
//! assignments use Kafka's ConsumerProtocol bytes (a big-endian i16 version, then the
//! message), so Kafka consumers and ours can share a group.
//!
//! ```text
//!  member: Subscription::encode ──JoinGroup metadata──▶ leader: assign_group(assignor, ..)
//!  leader ──SyncGroup(member → Assignment::encode)──▶ member: Assignment::decode
//! ```

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedTopic,
};
use kafka_protocol::messages::consumer_protocol_subscription::{
    ConsumerProtocolSubscription, TopicPartition as OwnedTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::JoinMember;
use crate::error::{BrokerError, Result};

/// The ConsumerProtocol version we write: 1 carries owned partitions (for cooperative
/// assignors later) and every Kafka client since 2.4 reads it.
pub const CONSUMER_PROTOCOL_VERSION: i16 = 1;

/// The newest ConsumerProtocol version this build decodes; newer bytes are read as this
/// version, which Kafka's format allows (fields are only appended).
const MAX_CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// Builds a topic-partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// What a consumer subscribes to: the JoinGroup metadata of the `consumer` protocol type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Topics the consumer wants.
    pub topics: Vec<String>,
    /// Assignor-specific data.
    pub user_data: Option<Bytes>,
    /// Partitions the consumer owns now (version 1+; for cooperative assignors).
    pub owned_partitions: Vec<TopicPartition>,
    /// The member's static instance id, from the JoinGroup member list (not part of the
    /// encoded bytes). Kafka's assignors order static members by it, first, so a restarted
    /// static member gets the same partitions back.
    pub group_instance_id: Option<String>,
}

/// What a consumer is given: the SyncGroup assignment of the `consumer` protocol type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions, sorted by topic then partition.
    pub partitions: Vec<TopicPartition>,
    /// Assignor-specific data.
    pub user_data: Option<Bytes>,
}

fn check_version(version: i16) -> Result<()> {
    if (0..=MAX_CONSUMER_PROTOCOL_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(BrokerError::InvalidRequest {
            reason: format!(
                "ConsumerProtocol version {version} cannot be written; use 0 to {MAX_CONSUMER_PROTOCOL_VERSION}"
            ),
        })
    }
}

fn read_version(bytes: &mut Bytes, what: &str) -> Result<i16> {
    if bytes.remaining() < 2 {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "{what} is {} byte(s) long, too short for a ConsumerProtocol version",
                bytes.remaining()
            ),
        });
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(BrokerError::InvalidRequest {
            reason: format!("{what} has negative ConsumerProtocol version {version}"),
        });
    }
    Ok(version.min(MAX_CONSUMER_PROTOCOL_VERSION))
}

fn to_bytes<M: Encodable>(message: &M, version: i16, what: &str) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| BrokerError::InvalidRequest {
            reason: format!("cannot encode {what}: {e}"),
        })?;
    Ok(buf.freeze())
}

fn group_by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    by_topic
}

impl Subscription {
    /// A subscription to `topics`.
    pub fn new<S: Into<String>>(topics: impl IntoIterator<Item = S>) -> Self {
        Subscription {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Kafka ConsumerProtocol bytes at `version` (0..=3; fields a version lacks are dropped).
    pub fn encode(&self, version: i16) -> Result<Bytes> {
        check_version(version)?;
        let message = ConsumerProtocolSubscription::default()
            .with_topics(
                self.topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(
                group_by_topic(&self.owned_partitions)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OwnedTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        to_bytes(&message, version, "subscription")
    }

    /// Reads ConsumerProtocol subscription bytes from any Kafka client.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut buf = Bytes::copy_from_slice(bytes);
        let version = read_version(&mut buf, "subscription")?;
        let message = ConsumerProtocolSubscription::decode(&mut buf, version).map_err(|e| {
            BrokerError::InvalidRequest {
                reason: format!("malformed ConsumerProtocol subscription (version {version}): {e}"),
            }
        })?;
        Ok(Subscription {
            group_instance_id: None,
            topics: message.topics.iter().map(|t| t.to_string()).collect(),
            user_data: message.user_data,
            owned_partitions: message
                .owned_partitions
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(|p| TopicPartition::new(tp.topic.0.to_string(), *p))
                })
                .collect(),
        })
    }
}

impl Assignment {
    /// Kafka ConsumerProtocol bytes at `version` (0..=3).
    pub fn encode(&self, version: i16) -> Result<Bytes> {
        check_version(version)?;
        let message = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                group_by_topic(&self.partitions)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        AssignedTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_user_data(self.user_data.clone());
        to_bytes(&message, version, "assignment")
    }

    /// Reads ConsumerProtocol assignment bytes. Empty bytes (what the coordinator gives a
    /// member the leader left out) read as an empty assignment, as Kafka clients do.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Ok(Assignment::default());
        }
        let mut buf = Bytes::copy_from_slice(bytes);
        let version = read_version(&mut buf, "assignment")?;
        let message = ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| {
            BrokerError::InvalidRequest {
                reason: format!("malformed ConsumerProtocol assignment (version {version}): {e}"),
            }
        })?;
        let mut partitions: Vec<TopicPartition> = message
            .assigned_partitions
            .iter()
            .flat_map(|tp| {
                tp.partitions
                    .iter()
                    .map(|p| TopicPartition::new(tp.topic.0.to_string(), *p))
            })
            .collect();
        partitions.sort();
        Ok(Assignment {
            partitions,
            user_data: message.user_data,
        })
    }
}

/// A partition assignment strategy, named as Kafka names it in JoinGroup protocols.
/// `Send + Sync` so that a group member's poll, which holds one across awaits, can run in
/// a spawned task.
pub trait Assignor: Send + Sync {
    /// The protocol name (`range`, `roundrobin`).
    fn name(&self) -> &'static str;

    /// Assigns the partitions of subscribed topics. `partitions_per_topic` gives each
    /// known topic's partition count (topics missing there are skipped, as Kafka does);
    /// the result has an entry, possibly empty, for every member.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment>;
}

/// Kafka's `MemberInfo` order: static members first, by instance id; then the others by
/// member id.
fn member_order(subscriptions: &BTreeMap<String, Subscription>) -> Vec<(&str, &Subscription)> {
    let mut members: Vec<(&str, &Subscription)> =
        subscriptions.iter().map(|(m, s)| (m.as_str(), s)).collect();
    members.sort_by(|(ma, sa), (mb, sb)| {
        let key = |m: &'_ str, s: &'_ Subscription| {
            (
                s.group_instance_id.is_none(),
                s.group_instance_id.clone(),
                m.to_string(),
            )
        };
        key(ma, sa).cmp(&key(mb, sb))
    });
    members
}

fn empty_assignments(
    subscriptions: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect()
}

fn finish(assigned: BTreeMap<String, Vec<TopicPartition>>) -> BTreeMap<String, Assignment> {
    assigned
        .into_iter()
        .map(|(member, mut partitions)| {
            partitions.sort();
            (
                member,
                Assignment {
                    partitions,
                    user_data: None,
                },
            )
        })
        .collect()
}

/// Kafka's RangeAssignor: per topic, the members subscribed to it (sorted by member id)
/// get consecutive ranges of partitions; the first `partitions % members` get one more.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment> {
        let mut assigned = empty_assignments(subscriptions);
        let mut members_per_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (member, subscription) in member_order(subscriptions) {
            for topic in subscription.topics.iter().collect::<BTreeSet<_>>() {
                members_per_topic
                    .entry(topic.as_str())
                    .or_default()
                    .push(member);
            }
        }
        for (topic, members) in members_per_topic {
            let Some(&count) = partitions_per_topic.get(topic) else {
                continue;
            };
            let count = usize::try_from(count).unwrap_or(0);
            let per_member = count / members.len();
            let extra = count % members.len();
            for (i, member) in members.iter().enumerate() {
                let start = per_member * i + i.min(extra);
                let length = per_member + usize::from(i < extra);
                let list = assigned
                    .get_mut(*member)
                    .expect("every member has an entry");
                for p in start..start + length {
                    list.push(TopicPartition::new(
                        topic,
                        i32::try_from(p).unwrap_or(i32::MAX),
                    ));
                }
            }
        }
        finish(assigned)
    }
}

/// Kafka's RoundRobinAssignor: all partitions of all subscribed topics, sorted by topic
/// then partition, dealt one by one to members in member id order, skipping members not
/// subscribed to the partition's topic; the dealer keeps its place between topics.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment> {
        let mut assigned = empty_assignments(subscriptions);
        let members: Vec<(&str, BTreeSet<&str>)> = member_order(subscriptions)
            .into_iter()
            .map(|(m, s)| (m, s.topics.iter().map(String::as_str).collect()))
            .collect();
        let topics: BTreeSet<&str> = members
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        let mut next = 0usize;
        for topic in topics {
            let Some(&count) = partitions_per_topic.get(topic) else {
                continue;
            };
            for partition in 0..count.max(0) {
                // Some member is subscribed to `topic`, so this loop ends.
                while !members[next % members.len()].1.contains(topic) {
                    next += 1;
                }
                let member = members[next % members.len()].0;
                next += 1;
                assigned
                    .get_mut(member)
                    .expect("every member has an entry")
                    .push(TopicPartition::new(topic, partition));
            }
        }
        finish(assigned)
    }
}

/// The assignor for a protocol name chosen by the coordinator, if this build has it.
pub fn assignor_by_name(name: &str) -> Option<&'static dyn Assignor> {
    match name {
        "range" => Some(&RangeAssignor),
        "roundrobin" => Some(&RoundRobinAssignor),
        _ => None,
    }
}

/// The leader's whole job after JoinGroup: decode every member's subscription, run the
/// assignor, and encode each member's assignment for SyncGroup.
pub fn assign_group(
    assignor: &dyn Assignor,
    members: &[JoinMember],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> Result<Vec<(String, Bytes)>> {
    let mut subscriptions = BTreeMap::new();
    for m in members {
        let mut subscription =
            Subscription::decode(&m.metadata).map_err(|e| BrokerError::InvalidRequest {
                reason: format!("member {:?} sent a bad subscription: {e}", m.member_id),
            })?;
        subscription.group_instance_id = m.group_instance_id.clone();
        subscriptions.insert(m.member_id.clone(), subscription);
    }
    assignor
        .assign(partitions_per_topic, &subscriptions)
        .into_iter()
        .map(|(member, assignment)| Ok((member, assignment.encode(CONSUMER_PROTOCOL_VERSION)?)))
        .collect()
}

#[cfg(test)]
mod tests;
