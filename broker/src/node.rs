//! The state of one running broker: its topics and partitions, the metadata store, and
//! the operations the API shells call. No sockets here: the gRPC service (and later the
//! Kafka listener) translate requests into these calls.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;

use crate::error::{BrokerError, Result};
use crate::log::{AppendMode, AppendOutcome, PartitionLog};
use crate::metadata::{CommittedOffset, MetadataStore, TopicRecord};
use crate::partition::{FetchedData, Partition};
use crate::topic_config::TopicConfig;

/// Longest topic name Kafka allows (so names fit in file names with a partition suffix).
pub const MAX_TOPIC_NAME: usize = 249;

/// Who this broker is, as Metadata reports it.
#[derive(Debug, Clone)]
pub struct BrokerIdentity {
    /// Region the broker serves.
    pub region: String,
    /// Node name within the region.
    pub name: String,
    /// Broker id, unique in the deployment.
    pub id: u64,
    /// Advertised gRPC address.
    pub grpc_addr: String,
    /// Advertised Kafka address, if any.
    pub kafka_addr: Option<String>,
}

/// A topic hosted here.
#[derive(Debug)]
pub struct Topic {
    /// The stored description (name, partition count, overrides).
    pub record: TopicRecord,
    /// The effective configuration.
    pub config: TopicConfig,
    /// Partitions, by index.
    pub partitions: Vec<Arc<Partition>>,
}

/// What a topic creation asks for.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Partition count; `None` takes the deployment default.
    pub partitions: Option<i32>,
    /// Replication factor; `None` takes the deployment default.
    pub replication_factor: Option<i32>,
    /// Per-topic config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

/// A running broker's state.
#[derive(Debug)]
pub struct BrokerNode {
    identity: BrokerIdentity,
    data_dir: PathBuf,
    defaults: topology::TopicDefaults,
    store: MetadataStore,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Brokers in this broker's region that can hold replicas right now.
    live_brokers: i32,
}

impl BrokerNode {
    /// Claims the data directory, recovers every partition log and loads the topics.
    pub fn open(
        identity: BrokerIdentity,
        data_dir: PathBuf,
        defaults: topology::TopicDefaults,
    ) -> Result<Arc<Self>> {
        let node_name = format!("{}/{}", identity.region, identity.name);
        let store = MetadataStore::open(&data_dir, &node_name)?;
        let node = Self {
            identity,
            data_dir,
            defaults,
            store,
            topics: RwLock::new(HashMap::new()),
            live_brokers: 1,
        };
        let mut topics = HashMap::new();
        for record in node.store.topics()? {
            let topic = node.open_topic(record)?;
            topics.insert(topic.record.name.clone(), topic);
        }
        *node.topics.write().expect("topics lock poisoned") = topics;
        Ok(Arc::new(node))
    }

    /// Who this broker is.
    pub fn identity(&self) -> &BrokerIdentity {
        &self.identity
    }

    fn open_topic(&self, record: TopicRecord) -> Result<Arc<Topic>> {
        let config = TopicConfig::from_defaults(&self.defaults).with_overrides(&record.configs)?;
        let mut partitions = Vec::with_capacity(record.partitions as usize);
        for index in 0..record.partitions {
            let dir = self.data_dir.join(format!("{}-{index}", record.name));
            let (log, report) = PartitionLog::open(&dir, config.log_config())?;
            if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
                tracing::warn!(
                    topic = %record.name,
                    partition = index,
                    truncated_bytes = report.truncated_bytes,
                    rebuilt_indexes = report.rebuilt_indexes,
                    "recovered partition log"
                );
            }
            partitions.push(Partition::start(&record.name, index, log, config.flush));
        }
        Ok(Arc::new(Topic {
            record,
            config,
            partitions,
        }))
    }

    /// Creates a topic durably; with `validate_only`, only checks it.
    pub fn create_topic(&self, new: NewTopic, validate_only: bool) -> Result<()> {
        validate_topic_name(&new.name)?;
        let partitions = new.partitions.unwrap_or(self.defaults.partitions as i32);
        if !(1..=100_000).contains(&partitions) {
            return Err(BrokerError::InvalidRequest {
                reason: format!("a topic needs 1 to 100000 partitions, not {partitions}"),
            });
        }
        let replication_factor = new
            .replication_factor
            .unwrap_or(i32::from(self.defaults.replication_factor));
        if replication_factor < 1 || replication_factor > self.live_brokers {
            return Err(BrokerError::InvalidReplicationFactor {
                requested: replication_factor,
                available: self.live_brokers,
            });
        }
        let config = TopicConfig::from_defaults(&self.defaults).with_overrides(&new.configs)?;
        if config.min_insync_replicas > replication_factor {
            return Err(BrokerError::InvalidConfig {
                key: "min.insync.replicas".into(),
                value: config.min_insync_replicas.to_string(),
                reason: format!("it is above the replication factor {replication_factor}"),
            });
        }
        let mut topics = self.topics.write().expect("topics lock poisoned");
        if topics.contains_key(&new.name) {
            return Err(BrokerError::TopicExists { topic: new.name });
        }
        if validate_only {
            return Ok(());
        }
        let record = TopicRecord {
            name: new.name.clone(),
            partitions,
            replication_factor,
            configs: new.configs,
        };
        let topic = self.open_topic(record.clone())?;
        self.store.put_topic(&record)?;
        tracing::info!(topic = %record.name, partitions, replication_factor, "created topic");
        topics.insert(new.name, topic);
        Ok(())
    }

    /// Deletes a topic, its data and its committed offsets.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let topic = self
            .topics
            .write()
            .expect("topics lock poisoned")
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownTopic {
                topic: name.to_owned(),
            })?;
        self.store.delete_topic(name)?;
        for partition in &topic.partitions {
            let dir = self.data_dir.join(format!("{name}-{}", partition.index()));
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(topic = name, dir = %dir.display(), %err, "could not remove deleted partition's directory");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Every topic, or the named ones (an unknown name is an error for that name).
    pub fn topics(&self, names: &[String]) -> Vec<(String, Result<Arc<Topic>>)> {
        let topics = self.topics.read().expect("topics lock poisoned");
        if names.is_empty() {
            let mut all: Vec<_> = topics
                .iter()
                .map(|(n, t)| (n.clone(), Ok(t.clone())))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            return all;
        }
        names
            .iter()
            .map(|name| {
                let found = topics
                    .get(name)
                    .cloned()
                    .ok_or_else(|| BrokerError::UnknownTopic {
                        topic: name.clone(),
                    });
                (name.clone(), found)
            })
            .collect()
    }

    /// Finds a partition, creating the topic first when the deployment allows auto-creation.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>> {
        let found = self
            .topics
            .read()
            .expect("topics lock poisoned")
            .get(topic)
            .cloned();
        let found = match found {
            Some(found) => found,
            None if self.defaults.auto_create_topics => {
                match self.create_topic(
                    NewTopic {
                        name: topic.to_owned(),
                        ..NewTopic::default()
                    },
                    false,
                ) {
                    Ok(()) | Err(BrokerError::TopicExists { .. }) => {}
                    Err(err) => return Err(err),
                }
                self.topics
                    .read()
                    .expect("topics lock poisoned")
                    .get(topic)
                    .cloned()
                    .ok_or_else(|| BrokerError::UnknownTopic {
                        topic: topic.to_owned(),
                    })?
            }
            None => {
                return Err(BrokerError::UnknownTopic {
                    topic: topic.to_owned(),
                });
            }
        };
        let count = found.partitions.len() as i32;
        usize::try_from(partition)
            .ok()
            .and_then(|i| found.partitions.get(i).cloned())
            .ok_or(BrokerError::InvalidPartition {
                topic: topic.to_owned(),
                partition,
                count,
            })
    }

    /// Appends to a partition (the leader's side of Produce).
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
        keep_offsets: bool,
    ) -> Result<AppendOutcome> {
        let partition = self.partition(topic, partition)?;
        let mode = if keep_offsets {
            AppendMode::KeepOffsets
        } else {
            AppendMode::AssignOffsets
        };
        partition.append(batches, mode).await
    }

    /// Reads a partition from an offset.
    pub fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedData> {
        self.partition(topic, partition)?.read(offset, max_bytes)
    }

    /// Stores a group's committed offsets durably; every partition must exist.
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, CommittedOffset)],
    ) -> Result<()> {
        if group.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "the group id is empty".into(),
            });
        }
        for (topic, partition, _) in offsets {
            self.partition(topic, *partition)?;
        }
        self.store.commit_offsets(group, offsets)
    }

    /// A group's committed offsets.
    pub fn fetch_offsets(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Vec<(String, i32, CommittedOffset)>> {
        self.store.fetch_offsets(group, topics)
    }

    /// Runs retention and age-based rolling on every partition, forever.
    pub async fn run_housekeeping(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            let node = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let now = SystemTime::now();
                for (_, topic) in node.topics(&[]) {
                    let Ok(topic) = topic else { continue };
                    for partition in &topic.partitions {
                        if let Err(err) = partition.housekeeping(now) {
                            tracing::error!(topic = %topic.record.name, partition = partition.index(), %err, "housekeeping failed");
                        }
                    }
                }
            })
            .await;
        }
    }
}

/// Kafka's topic-name rules, so names map to directories and Kafka tools accept them.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are reserved".to_owned())
    } else if name.len() > MAX_TOPIC_NAME {
        Some(format!(
            "it is {} characters long; the limit is {MAX_TOPIC_NAME}",
            name.len()
        ))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("{c:?} is not allowed; use letters, digits, '.', '_' and '-'"))
    };
    match reason {
        Some(reason) => Err(BrokerError::InvalidTopicName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v2_eu-1").is_ok());
        for bad in ["", ".", "..", "a/b", "with space", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
