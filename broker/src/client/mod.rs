//! `broker::client`: the typed client that the CLI, the mirror and the tests use.
//! Nobody else speaks the wire protocol by hand.
//!
//! ```text
//!  Client ── bootstrap ──▶ any broker: Metadata (brokers, topics, leaders)
//!     ├── admin: create/delete/describe topics, list offsets, group offsets
//!     ├── Producer: accumulate per partition → batches → pipelined Produce to leaders
//!     └── Consumer: Fetch from leaders → decoded records, positions, commits
//! ```
//!
//! Leaders are found from metadata; a NotLeader / LeaderNotAvailable answer refreshes
//! the metadata and retries with backoff, so a leader change is invisible to the caller.

mod consumer;
mod group;
mod producer;
mod raw;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;

use crate::error::{BrokerError, ErrorCode, Result};
use crate::proto::{self, broker_client::BrokerClient};

pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset};
pub use group::{GroupConsumer, GroupConsumerConfig};
pub use producer::{Acks, Delivery, Producer, ProducerConfig};
pub use raw::{RawAppend, RawFetch};

/// How often and how patiently requests are retried on retriable errors.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts before giving up.
    pub attempts: u32,
    /// First backoff; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 20,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// A partition's place in the cluster, as metadata reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMeta {
    /// Partition number.
    pub partition: i32,
    /// Leader broker id.
    pub leader: u64,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<u64>,
    /// In-sync replica broker ids.
    pub isr: Vec<u64>,
}

/// A topic as metadata reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Partitions in order.
    pub partitions: Vec<PartitionMeta>,
    /// Effective configs, Kafka names.
    pub configs: BTreeMap<String, String>,
}

/// A broker as metadata reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerMeta {
    /// Broker id.
    pub id: u64,
    /// Node name.
    pub name: String,
    /// Region.
    pub region: String,
    /// gRPC address.
    pub grpc_addr: String,
    /// Kafka address, if it has a Kafka listener.
    pub kafka_addr: Option<String>,
}

/// A snapshot of cluster metadata.
#[derive(Debug, Clone, Default)]
pub struct ClusterMeta {
    /// The region the cluster serves.
    pub region: String,
    /// Brokers by id.
    pub brokers: BTreeMap<u64, BrokerMeta>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// The controller's broker id.
    pub controller_id: u64,
}

/// What `create_topic` asks for.
#[derive(Debug, Clone, Default)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count; 0 = the deployment default.
    pub partitions: i32,
    /// Replication factor; 0 = the deployment default.
    pub replication_factor: i32,
    /// Per-topic config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

/// Which offset `list_offsets` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still stored.
    Earliest,
    /// The high watermark: the next offset to be written and read.
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

struct Inner {
    bootstrap: Vec<String>,
    channels: Mutex<HashMap<String, BrokerClient<Channel>>>,
    meta: Mutex<ClusterMeta>,
    retry: RetryPolicy,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A connection to one region's cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.bootstrap)
            .finish()
    }
}

pub(crate) fn remote_error(code: i32, message: String) -> BrokerError {
    BrokerError::Remote {
        code: ErrorCode::from_i32(code),
        message,
    }
}

fn status_error(addr: &str, status: tonic::Status) -> BrokerError {
    if let Some(code) = status
        .metadata()
        .get(crate::server::ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        return remote_error(code, status.message().to_owned());
    }
    let reason = match status.code() {
        tonic::Code::Unavailable => format!("unavailable ({})", status.message()),
        _ => status.to_string(),
    };
    BrokerError::Unreachable {
        addr: addr.to_owned(),
        reason,
    }
}

impl Client {
    /// Connects to a cluster through any of `bootstrap` (`host:port`, comma-separated
    /// lists allowed) and loads its metadata.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        Self::connect_with_retry(bootstrap, RetryPolicy::default()).await
    }

    /// Like [`Client::connect`], with its own retry policy for requests to leaders. An
    /// application that must know whether each attempt was appended (without producer
    /// idempotence) uses `attempts: 1` and retries itself.
    pub async fn connect_with_retry(bootstrap: &str, retry: RetryPolicy) -> Result<Self> {
        Self::connect_secure(bootstrap, retry, None).await
    }

    /// Like [`Client::connect_with_retry`], over mutual TLS when `tls` is given (see
    /// [`crate::transport::client_tls_from_dir`]): every broker is verified against the
    /// deployment CA and sees this client's identity.
    pub async fn connect_secure(
        bootstrap: &str,
        retry: RetryPolicy,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self> {
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if bootstrap.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "no bootstrap address given; pass --bootstrap HOST:PORT".into(),
            });
        }
        let client = Self {
            inner: Arc::new(Inner {
                bootstrap,
                channels: Mutex::new(HashMap::new()),
                meta: Mutex::new(ClusterMeta::default()),
                retry,
                tls,
            }),
        };
        client.refresh_metadata().await?;
        Ok(client)
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The gRPC stub for an address, connecting lazily and reusing the connection.
    pub(crate) fn stub(&self, addr: &str) -> Result<BrokerClient<Channel>> {
        let mut channels = self.inner.channels.lock().expect("channel cache poisoned");
        if let Some(stub) = channels.get(addr) {
            return Ok(stub.clone());
        }
        let channel =
            crate::transport::channel(addr, self.inner.tls.clone(), Duration::from_secs(5))?;
        let stub = BrokerClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        channels.insert(addr.to_owned(), stub.clone());
        Ok(stub)
    }

    /// Reloads metadata from the first bootstrap (or known) broker that answers.
    pub async fn refresh_metadata(&self) -> Result<ClusterMeta> {
        let mut candidates: Vec<String> = self
            .inner
            .meta
            .lock()
            .expect("metadata poisoned")
            .brokers
            .values()
            .map(|b| b.grpc_addr.clone())
            .collect();
        candidates.extend(self.inner.bootstrap.iter().cloned());
        let mut last_error = None;
        for addr in candidates {
            let mut stub = self.stub(&addr)?;
            match stub
                .metadata(proto::MetadataRequest { topics: vec![] })
                .await
            {
                Ok(response) => {
                    let meta = convert_metadata(response.into_inner());
                    *self.inner.meta.lock().expect("metadata poisoned") = meta.clone();
                    return Ok(meta);
                }
                Err(status) => last_error = Some(status_error(&addr, status)),
            }
        }
        Err(last_error.unwrap_or_else(|| BrokerError::Unreachable {
            addr: self.inner.bootstrap.join(","),
            reason: "no broker answered".into(),
        }))
    }

    /// The last metadata loaded.
    pub fn cached_metadata(&self) -> ClusterMeta {
        self.inner.meta.lock().expect("metadata poisoned").clone()
    }

    /// A topic's metadata, refreshing once if it is not known yet.
    pub async fn topic(&self, name: &str) -> Result<TopicMeta> {
        if let Some(topic) = self.cached_metadata().topics.get(name) {
            return Ok(topic.clone());
        }
        if let Some(topic) = self.refresh_metadata().await?.topics.get(name) {
            return Ok(topic.clone());
        }
        Err(self.why_unlisted(name).await)
    }

    /// Why `name` is not in the listing: asked for by name, a broker answers with the
    /// topic's own error (a refusal names the identity and the rule), else it is unknown.
    async fn why_unlisted(&self, name: &str) -> BrokerError {
        let unknown = BrokerError::UnknownTopic {
            topic: name.to_owned(),
        };
        let Some(addr) = self.inner.bootstrap.first().cloned() else {
            return unknown;
        };
        let Ok(mut stub) = self.stub(&addr) else {
            return unknown;
        };
        let request = proto::MetadataRequest {
            topics: vec![name.to_owned()],
        };
        match stub.metadata(request).await {
            Ok(response) => response
                .into_inner()
                .topics
                .into_iter()
                .find(|t| {
                    t.name == name && t.error_code == ErrorCode::TopicAuthorizationFailed.as_i32()
                })
                .map_or(unknown, |t| remote_error(t.error_code, t.error_message)),
            Err(_) => unknown,
        }
    }

    /// The gRPC address of a partition's leader.
    pub(crate) async fn leader_addr(&self, topic: &str, partition: i32) -> Result<String> {
        let meta = self.topic(topic).await?;
        let count = meta.partitions.len() as i32;
        let leader = meta
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .ok_or(BrokerError::InvalidPartition {
                topic: topic.to_owned(),
                partition,
                count,
            })?;
        self.cached_metadata()
            .brokers
            .get(&leader)
            .map(|b| b.grpc_addr.clone())
            .ok_or_else(|| BrokerError::Remote {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("leader {leader} of {topic}-{partition} is not a known broker"),
            })
    }

    /// Sends a request every broker can answer (admin, group offsets) to the known
    /// brokers in turn, moving on while one is unreachable, so that a dead broker (still
    /// in metadata until its session times out) is invisible to the caller.
    pub(crate) async fn with_any_broker<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(BrokerClient<Channel>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut candidates: Vec<String> = self
            .cached_metadata()
            .brokers
            .values()
            .map(|b| b.grpc_addr.clone())
            .collect();
        for addr in &self.inner.bootstrap {
            if !candidates.contains(addr) {
                candidates.push(addr.clone());
            }
        }
        let mut last_error = None;
        for addr in candidates {
            match call(self.stub(&addr)?, addr).await {
                Err(err @ BrokerError::Unreachable { .. }) => last_error = Some(err),
                other => return other,
            }
        }
        let _ = self.refresh_metadata().await;
        Err(last_error.unwrap_or_else(|| BrokerError::Unreachable {
            addr: self.inner.bootstrap.join(","),
            reason: "no broker answered".into(),
        }))
    }

    /// `with_any_broker` for one unary RPC: clones `request` for each broker tried and
    /// maps a failed status to the broker's error.
    async fn call_any<Req, Resp, F, Fut>(&self, request: Req, call: F) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(BrokerClient<Channel>, Req) -> Fut,
        Fut:
            std::future::Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.with_any_broker(|stub, addr| {
            let pending = call(stub, request.clone());
            async move {
                pending
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| status_error(&addr, s))
            }
        })
        .await
    }

    /// Creates topics; per-topic failures are returned in order, not as one error.
    pub async fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Result<Vec<(String, Result<()>)>> {
        let request = proto::CreateTopicsRequest {
            topics: specs
                .into_iter()
                .map(|s| proto::TopicSpec {
                    name: s.name,
                    partitions: s.partitions,
                    replication_factor: s.replication_factor,
                    configs: s.configs.into_iter().collect(),
                })
                .collect(),
            validate_only,
        };
        let response = self
            .call_any(
                request,
                |mut stub, r| async move { stub.create_topics(r).await },
            )
            .await?;
        self.refresh_metadata().await?;
        Ok(response.results.into_iter().map(topic_result).collect())
    }

    /// Creates one topic.
    pub async fn create_topic(&self, spec: TopicSpec) -> Result<()> {
        self.create_topics(vec![spec], false).await?.remove(0).1
    }

    /// Deletes topics; per-topic failures are returned in order.
    pub async fn delete_topics(&self, names: Vec<String>) -> Result<Vec<(String, Result<()>)>> {
        let request = proto::DeleteTopicsRequest { names };
        let response = self
            .call_any(
                request,
                |mut stub, r| async move { stub.delete_topics(r).await },
            )
            .await?;
        self.refresh_metadata().await?;
        Ok(response.results.into_iter().map(topic_result).collect())
    }

    /// Grows `topic` to `partitions` partitions.
    pub async fn create_partitions(&self, topic: &str, partitions: i32) -> Result<()> {
        let request = proto::CreatePartitionsRequest {
            topic: topic.to_owned(),
            partitions,
        };
        let response = self
            .call_any(request, |mut stub, r| async move {
                stub.create_partitions(r).await
            })
            .await?;
        self.refresh_metadata().await?;
        topic_result(response).1
    }

    /// Sets per-topic config overrides (an empty value removes one).
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        let request = proto::AlterConfigsRequest {
            topic: topic.to_owned(),
            configs: configs.into_iter().collect(),
        };
        let response = self
            .call_any(
                request,
                |mut stub, r| async move { stub.alter_configs(r).await },
            )
            .await?;
        self.refresh_metadata().await?;
        topic_result(response).1
    }

    /// Preferred leader election over `topics` (empty: all): the partitions whose
    /// leader moved back to its preferred replica.
    pub async fn elect_leaders(&self, topics: Vec<String>) -> Result<Vec<proto::LeaderMove>> {
        let request = proto::ElectLeadersRequest { topics };
        let response = self
            .call_any(
                request,
                |mut stub, r| async move { stub.elect_leaders(r).await },
            )
            .await?;
        self.refresh_metadata().await?;
        Ok(response.moved)
    }

    /// Offsets of every partition of a topic, by partition.
    pub async fn list_offsets(&self, topic: &str, spec: OffsetSpec) -> Result<BTreeMap<i32, i64>> {
        let meta = self.topic(topic).await?;
        let all: Vec<i32> = meta.partitions.iter().map(|p| p.partition).collect();
        self.list_offsets_of(topic, &all, spec).await
    }

    /// Offsets of some partitions of a topic (asking only their leaders), by partition.
    pub async fn list_offsets_of(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<i32, i64>> {
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ts) => ts,
        };
        let mut out = BTreeMap::new();
        for &index in partitions {
            let offset = self
                .with_leader(topic, index, |mut stub, addr| async move {
                    let response = stub
                        .list_offsets(proto::ListOffsetsRequest {
                            topic: topic.to_owned(),
                            partitions: vec![index],
                            timestamp,
                        })
                        .await
                        .map_err(|s| status_error(&addr, s))?
                        .into_inner();
                    let p = response.partitions.into_iter().next().ok_or_else(|| {
                        BrokerError::InvalidRequest {
                            reason: format!(
                                "the broker's answer has no offset for {topic}-{index}"
                            ),
                        }
                    })?;
                    if p.error_code != 0 {
                        return Err(remote_error(p.error_code, p.error_message));
                    }
                    Ok(p.offset)
                })
                .await?;
            out.insert(index, offset);
        }
        Ok(out)
    }

    /// Commits a group's offsets (the next offset to read, per partition).
    pub async fn commit_offsets(&self, group: &str, offsets: &[(String, i32, i64)]) -> Result<()> {
        let request = proto::OffsetCommitRequest {
            group: group.to_owned(),
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| proto::CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let response = self
            .call_any(
                request,
                |mut stub, r| async move { stub.offset_commit(r).await },
            )
            .await?;
        match response.offsets.into_iter().find(|o| o.error_code != 0) {
            Some(failed) => Err(remote_error(failed.error_code, failed.error_message)),
            None => Ok(()),
        }
    }

    /// The gRPC address of the broker coordinating `group`'s membership.
    pub async fn find_coordinator(&self, group: &str) -> Result<String> {
        let request = proto::FindCoordinatorRequest {
            group: group.to_owned(),
        };
        let response = self
            .call_any(request, |mut stub, r| async move {
                stub.find_coordinator(r).await
            })
            .await?;
        if response.error_code != 0 {
            return Err(remote_error(response.error_code, response.error_message));
        }
        Ok(response.grpc_addr)
    }

    /// A group's membership as its coordinator sees it: state, generation, members and
    /// their assignments (`Dead` with no members for a group nobody is in).
    pub async fn describe_group(&self, group: &str) -> Result<proto::DescribeGroupResponse> {
        let mut backoff = self.retry_policy().backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = async {
                let coordinator = self.find_coordinator(group).await?;
                let response = self
                    .stub(&coordinator)?
                    .describe_group(proto::DescribeGroupRequest {
                        group: group.to_owned(),
                    })
                    .await
                    .map_err(|s| status_error(&coordinator, s))?
                    .into_inner();
                if response.error_code != 0 {
                    return Err(remote_error(response.error_code, response.error_message));
                }
                Ok(response)
            }
            .await;
            match outcome {
                Err(err) if is_retriable(&err) && attempts < self.retry_policy().attempts => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry_policy().max_backoff);
                }
                other => return other,
            }
        }
    }

    /// A group's committed offsets: (topic, partition) → next offset to read.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<BTreeMap<(String, i32), i64>> {
        let request = proto::OffsetFetchRequest {
            group: group.to_owned(),
            topics: topics.to_vec(),
        };
        let response = self
            .call_any(
                request,
                |mut stub, r| async move { stub.offset_fetch(r).await },
            )
            .await?;
        Ok(response
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect())
    }

    /// A producer id for idempotent produce, unique in the region.
    pub async fn init_producer_id(&self) -> Result<i64> {
        let response = self
            .call_any(proto::InitProducerIdRequest {}, |mut stub, r| async move {
                stub.init_producer_id(r).await
            })
            .await?;
        Ok(response.producer_id)
    }

    /// The membership view of the broker that answers (its region's gossip).
    pub async fn members(&self) -> Result<Vec<proto::Member>> {
        Ok(self.membership().await?.members)
    }

    /// The membership view and the gossip's shared state (CRDT map) of a broker.
    pub async fn membership(&self) -> Result<proto::MembersResponse> {
        self.call_any(proto::MembersRequest {}, |mut stub, r| async move {
            stub.members(r).await
        })
        .await
    }

    /// Every group with committed offsets, with the topics it committed on.
    pub async fn list_groups(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let response = self
            .call_any(proto::ListGroupsRequest {}, |mut stub, r| async move {
                stub.list_groups(r).await
            })
            .await?;
        Ok(response
            .groups
            .into_iter()
            .map(|g| (g.group, g.topics))
            .collect())
    }

    /// Sends a request to a partition's leader, refreshing metadata and retrying with
    /// backoff while the error is retriable (leader moved, not available yet).
    pub(crate) async fn with_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: i32,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(BrokerClient<Channel>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let policy = self.retry_policy().clone();
        let mut backoff = policy.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match self.leader_addr(topic, partition).await {
                Ok(addr) => call(self.stub(&addr)?, addr).await,
                Err(err) => Err(err),
            };
            match outcome {
                Err(err) if attempt < policy.attempts && is_retriable(&err) => {
                    tracing::debug!(topic, partition, %err, attempt, "retrying after a retriable error");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                    let _ = self.refresh_metadata().await;
                }
                other => return other,
            }
        }
    }
}

/// Whether an error may go away by itself (a leader change, a restarting broker).
pub fn is_retriable(err: &BrokerError) -> bool {
    match err {
        BrokerError::Remote { code, .. } => code.is_retriable(),
        BrokerError::Unreachable { .. } => true,
        _ => false,
    }
}

pub(crate) fn status_to_error(addr: &str, status: tonic::Status) -> BrokerError {
    status_error(addr, status)
}

fn topic_result(r: proto::TopicResult) -> (String, Result<()>) {
    let result = if r.error_code == 0 {
        Ok(())
    } else {
        Err(remote_error(r.error_code, r.error_message))
    };
    (r.name, result)
}

fn convert_metadata(response: proto::MetadataResponse) -> ClusterMeta {
    ClusterMeta {
        region: response.region,
        controller_id: response.controller_id,
        brokers: response
            .brokers
            .into_iter()
            .map(|b| {
                let meta = BrokerMeta {
                    id: b.id,
                    name: b.name,
                    region: b.region,
                    grpc_addr: b.grpc_addr,
                    kafka_addr: (!b.kafka_addr.is_empty()).then_some(b.kafka_addr),
                };
                (meta.id, meta)
            })
            .collect(),
        topics: response
            .topics
            .into_iter()
            .filter(|t| t.error_code == 0)
            .map(|t| {
                let meta = TopicMeta {
                    name: t.name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionMeta {
                            partition: p.partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas,
                            isr: p.isr,
                        })
                        .collect(),
                    configs: t.configs.into_iter().collect(),
                };
                (meta.name.clone(), meta)
            })
            .collect(),
    }
}
