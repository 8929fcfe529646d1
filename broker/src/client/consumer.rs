//! The consumer: fetches from partition leaders, decodes batches into records, tracks a
//! position per partition and commits it for a group.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::{Client, OffsetSpec, remote_error, status_to_error};
use crate::error::{BrokerError, Result};
use crate::proto;
use crate::record::{StoredRecord, decode_batches};

/// Where a consumer starts on a partition with no committed group offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first offset still stored.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// This exact offset.
    Offset(i64),
}

/// What a consumer reads and how.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The topic.
    pub topic: String,
    /// Partitions to read; `None` reads every partition.
    pub partitions: Option<Vec<i32>>,
    /// Where to start without a committed offset.
    pub start: StartOffset,
    /// Group whose committed offsets take precedence over `start` and receive commits.
    pub group: Option<String>,
    /// Longest a fetch waits for data.
    pub max_wait: Duration,
    /// Most bytes fetched per partition and request.
    pub max_partition_bytes: i32,
}

impl ConsumerConfig {
    /// Reads every partition of `topic` from the start.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            partitions: None,
            start: StartOffset::Earliest,
            group: None,
            max_wait: Duration::from_millis(500),
            max_partition_bytes: 4 << 20,
        }
    }
}

/// A record with the partition it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumedRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record, with its offset.
    pub record: StoredRecord,
}

/// Reads one topic.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    positions: BTreeMap<i32, i64>,
}

impl Consumer {
    /// Resolves the start position of every partition.
    pub async fn new(client: Client, config: ConsumerConfig) -> Result<Self> {
        let meta = client.topic(&config.topic).await?;
        let all: Vec<i32> = meta.partitions.iter().map(|p| p.partition).collect();
        let chosen = match &config.partitions {
            Some(wanted) => {
                for p in wanted {
                    if !all.contains(p) {
                        return Err(BrokerError::InvalidPartition {
                            topic: config.topic.clone(),
                            partition: *p,
                            count: all.len() as i32,
                        });
                    }
                }
                wanted.clone()
            }
            None => all,
        };
        let committed = match &config.group {
            Some(group) => {
                client
                    .fetch_offsets(group, std::slice::from_ref(&config.topic))
                    .await?
            }
            None => BTreeMap::new(),
        };
        let uncommitted: Vec<i32> = chosen
            .iter()
            .copied()
            .filter(|p| !committed.contains_key(&(config.topic.clone(), *p)))
            .collect();
        let fallback = match config.start {
            StartOffset::Earliest => Some(
                client
                    .list_offsets_of(&config.topic, &uncommitted, OffsetSpec::Earliest)
                    .await?,
            ),
            StartOffset::Latest => Some(
                client
                    .list_offsets_of(&config.topic, &uncommitted, OffsetSpec::Latest)
                    .await?,
            ),
            StartOffset::Offset(_) => None,
        };
        let positions = chosen
            .into_iter()
            .map(|p| {
                let start = committed
                    .get(&(config.topic.clone(), p))
                    .copied()
                    .or_else(|| match config.start {
                        StartOffset::Offset(o) => Some(o),
                        _ => fallback.as_ref().and_then(|f| f.get(&p).copied()),
                    })
                    .unwrap_or(0);
                (p, start)
            })
            .collect();
        Ok(Self {
            client,
            config,
            positions,
        })
    }

    /// The topic this consumer reads.
    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// The next offset to read, per partition.
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// Moves a partition's position, e.g. back to the first record the caller did not use.
    pub fn seek(&mut self, partition: i32, offset: i64) {
        if let Some(position) = self.positions.get_mut(&partition) {
            *position = offset;
        }
    }

    /// Fetches what is available (waiting up to `max_wait`) and advances the positions.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>> {
        // One request per leader, all partitions it leads.
        let mut by_leader: BTreeMap<String, Vec<proto::FetchPartition>> = BTreeMap::new();
        for (&partition, &offset) in &self.positions {
            let addr = self
                .client
                .leader_addr(&self.config.topic, partition)
                .await?;
            by_leader
                .entry(addr)
                .or_default()
                .push(proto::FetchPartition {
                    partition,
                    offset,
                    max_bytes: self.config.max_partition_bytes,
                });
        }
        let requests = by_leader.into_iter().map(|(addr, partitions)| {
            let client = self.client.clone();
            let request = proto::FetchRequest {
                topics: vec![proto::FetchTopic {
                    topic: self.config.topic.clone(),
                    partitions,
                }],
                max_wait_ms: u32::try_from(self.config.max_wait.as_millis()).unwrap_or(u32::MAX),
                min_bytes: 1,
                max_bytes: 0,
                // A consumer, not a follower replica: reads below the high watermark.
                replica_id: Some(-1),
                leader_epoch: -1,
            };
            async move {
                let mut stub = client.stub(&addr)?;
                stub.fetch(request)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| status_to_error(&addr, s))
            }
        });
        let responses = futures::future::join_all(requests).await;
        let mut out = Vec::new();
        let mut retriable = None;
        for response in responses {
            let response = match response {
                Ok(r) => r,
                Err(err) if crate::client::is_retriable(&err) => {
                    retriable = Some(err);
                    continue;
                }
                Err(err) => return Err(err),
            };
            for topic in response.topics {
                for fetched in topic.partitions {
                    if fetched.error_code != 0 {
                        let err = remote_error(fetched.error_code, fetched.error_message);
                        if crate::client::is_retriable(&err) {
                            retriable = Some(err);
                            continue;
                        }
                        return Err(err);
                    }
                    let position = self.positions.get(&fetched.partition).copied().unwrap_or(0);
                    let mut next = position;
                    for record in decode_batches(&fetched.records)? {
                        if record.offset < position {
                            continue;
                        }
                        next = record.offset + 1;
                        out.push(ConsumedRecord {
                            topic: self.config.topic.clone(),
                            partition: fetched.partition,
                            record,
                        });
                    }
                    self.positions.insert(fetched.partition, next);
                }
            }
        }
        if out.is_empty()
            && let Some(err) = retriable
        {
            tracing::debug!(%err, "fetch hit a retriable error; refreshing metadata");
            tokio::time::sleep(self.client.retry_policy().backoff).await;
            let _ = self.client.refresh_metadata().await;
        }
        Ok(out)
    }

    /// Commits the current positions for the consumer's group.
    pub async fn commit(&self) -> Result<()> {
        let Some(group) = &self.config.group else {
            return Err(BrokerError::InvalidRequest {
                reason: "this consumer has no group to commit for; pass --group".into(),
            });
        };
        let offsets: Vec<_> = self
            .positions
            .iter()
            .map(|(p, o)| (self.config.topic.clone(), *p, *o))
            .collect();
        self.client.commit_offsets(group, &offsets).await
    }

    /// The high watermark of each partition read, to know when everything was consumed.
    pub async fn end_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        let mine: Vec<i32> = self.positions.keys().copied().collect();
        self.client
            .list_offsets_of(&self.config.topic, &mine, OffsetSpec::Latest)
            .await
    }
}
