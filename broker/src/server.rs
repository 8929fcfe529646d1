//! The gRPC shell: translates protobuf requests into `BrokerNode` calls and results back
//! into responses. Per-partition failures travel inside responses with their error code;
//! a request that cannot be served at all is a gRPC status carrying the code in the
//! `meridian-error-code` metadata.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tonic::{Request, Response, Status};

use crate::controller::{BrokerRegistration, Controller, ControllerConfig, ControllerHandle};
use crate::data_dir::DataDir;
use crate::error::{BrokerError, ErrorCode};
use crate::group::shell::GroupShell;
use crate::node::{BrokerNode, NewTopic};
use crate::proto::{self, broker_server};
use crate::replication::RequiredAcks;

/// Longest a fetch may long-poll, whatever the client asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
/// acks=all wait when a produce request names no timeout.
const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest acks=all wait, whatever the client asks.
const MAX_PRODUCE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often leaders check their followers' lag and propose ISR changes.
const ISR_CHECK_EVERY: Duration = Duration::from_millis(200);
/// How often high-watermark checkpoints are written.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Default response size limit when a fetch names none.
const DEFAULT_FETCH_MAX_BYTES: usize = 50 << 20;

/// Metadata key holding the numeric error code of a failed request.
pub const ERROR_CODE_KEY: &str = "meridian-error-code";

/// Turns a broker error into a gRPC status that keeps its stable code.
pub fn to_status(err: &BrokerError) -> Status {
    let code = err.code();
    let grpc = match code {
        ErrorCode::UnknownTopicOrPartition => tonic::Code::NotFound,
        ErrorCode::TopicAlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidTopic
        | ErrorCode::InvalidPartitions
        | ErrorCode::InvalidReplicationFactor
        | ErrorCode::CorruptMessage
        | ErrorCode::MessageTooLarge
        | ErrorCode::InvalidRecord => tonic::Code::InvalidArgument,
        ErrorCode::OffsetOutOfRange => tonic::Code::OutOfRange,
        ErrorCode::TopicAuthorizationFailed => tonic::Code::PermissionDenied,
        ErrorCode::RequestTimedOut => tonic::Code::DeadlineExceeded,
        ErrorCode::LeaderNotAvailable
        | ErrorCode::NotLeaderOrFollower
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotController
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::NotCoordinator => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    let mut status = Status::new(grpc, err.to_string());
    if let Ok(value) = code.as_i32().to_string().parse() {
        status.metadata_mut().insert(ERROR_CODE_KEY, value);
    }
    status
}

/// How long a client request waits for a starting broker to join its cluster.
const READY_WAIT: Duration = Duration::from_secs(15);

fn error_fields(result: &Result<(), BrokerError>) -> (i32, String) {
    match result {
        Ok(()) => (0, String::new()),
        Err(err) => {
            count_partition_error(err);
            (err.code().as_i32(), err.to_string())
        }
    }
}

/// Counts a partition-level error answered inside a request, by its code.
/// One topic's outcome in an admin response (delete, grow, alter).
fn topic_result(name: String, result: &Result<(), BrokerError>) -> proto::TopicResult {
    let (error_code, error_message) = error_fields(result);
    proto::TopicResult {
        name,
        error_code,
        error_message,
    }
}

fn count_partition_error(err: &BrokerError) {
    crate::telemetry::events()
        .partition_errors
        .with_label_values(&[&format!("{:?}", err.code())])
        .inc();
}

/// Counts the bytes a fetch answer serves, and its partition errors.
fn count_fetched(topics: &[proto::FetchedTopic]) {
    let events = crate::telemetry::events();
    for topic in topics {
        let bytes: usize = topic.partitions.iter().map(|p| p.records.len()).sum();
        if bytes > 0 {
            events
                .bytes_out
                .with_label_values(&[&topic.topic])
                .inc_by(bytes as u64);
        }
        for partition in topic.partitions.iter().filter(|p| p.error_code != 0) {
            let code = ErrorCode::from_i32(partition.error_code);
            events
                .partition_errors
                .with_label_values(&[&format!("{code:?}")])
                .inc();
        }
    }
}

/// The gRPC service over one broker.
#[derive(Clone)]
pub struct BrokerService {
    node: Arc<BrokerNode>,
    gossip: Option<Arc<gossip::GossipHandle>>,
    access: Option<Arc<crate::access::Access>>,
    groups: Arc<GroupShell>,
}

impl std::fmt::Debug for BrokerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerService")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl BrokerService {
    /// Serves `node`, coordinating the groups that hash to it. Must be called inside a
    /// tokio runtime (the group coordinator's timers run there).
    pub fn new(node: Arc<BrokerNode>) -> Self {
        let groups = GroupShell::start(crate::group::GroupConfig::default());
        tokio::spawn(unload_moved_groups(
            Arc::downgrade(&node),
            Arc::downgrade(&groups),
        ));
        Self {
            node,
            gossip: None,
            access: None,
            groups,
        }
    }

    /// The group coordinator shell, shared with the Kafka listener.
    pub fn groups(&self) -> Arc<GroupShell> {
        self.groups.clone()
    }

    /// Answers Members from this broker's view of the region's gossip.
    pub fn with_gossip(mut self, gossip: Arc<gossip::GossipHandle>) -> Self {
        self.gossip = Some(gossip);
        self
    }

    /// Authorizes every request by the caller's verified identity (without it, every
    /// request is allowed: in-process tests and plaintext single-region deployments).
    pub fn with_access(mut self, access: Arc<crate::access::Access>) -> Self {
        self.access = Some(access);
        self
    }

    /// Checks `action` on `resource` for the caller of `request`.
    fn allow<T>(
        &self,
        request: &Request<T>,
        action: certs::Action,
        resource: &str,
    ) -> Result<(), Status> {
        match &self.access {
            Some(access) => access.check(request, action, resource),
            None => Ok(()),
        }
    }

    /// Whether the peer of a connection (the Kafka listener's) may `action` on
    /// `resource`, without counting a refusal.
    pub(crate) fn may_access(
        &self,
        peer: &crate::transport::PeerInfo,
        action: certs::Action,
        resource: &str,
    ) -> bool {
        let mut request = Request::new(());
        request.extensions_mut().insert(peer.clone());
        self.may(&request, action, resource)
    }

    /// Whether the caller may `action` on `resource`, without counting a refusal (for
    /// listings, which show only what the caller may see, as Kafka's Metadata does).
    fn may<T>(&self, request: &Request<T>, action: certs::Action, resource: &str) -> bool {
        match &self.access {
            Some(access) => access.may(request, action, resource),
            None => true,
        }
    }

    /// The tonic server wrapper, with message limits raised for record batches.
    pub fn into_server(self) -> broker_server::BrokerServer<Self> {
        broker_server::BrokerServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// Client requests wait (boundedly) for a starting broker to join its cluster, so
    /// that nobody sees an empty view during start-up.
    async fn ready(&self) -> Result<(), Status> {
        if self.node.is_ready() {
            return Ok(());
        }
        self.node
            .wait_ready(READY_WAIT)
            .await
            .map_err(|e| to_status(&e))
    }
}

#[tonic::async_trait]
impl broker_server::Broker for BrokerService {
    async fn create_topics(
        &self,
        request: Request<proto::CreateTopicsRequest>,
    ) -> Result<Response<proto::CreateTopicsResponse>, Status> {
        self.ready().await?;
        for spec in &request.get_ref().topics {
            self.allow(&request, certs::Action::CreateTopic, &spec.name)?;
        }
        let request = request.into_inner();
        let mut results = Vec::with_capacity(request.topics.len());
        for spec in request.topics {
            let name = spec.name.clone();
            let new = NewTopic {
                name: spec.name,
                partitions: (spec.partitions != 0).then_some(spec.partitions),
                replication_factor: (spec.replication_factor != 0)
                    .then_some(spec.replication_factor),
                configs: spec.configs.into_iter().collect(),
            };
            let result = self.node.create_topic(new, request.validate_only).await;
            results.push(topic_result(name, &result));
        }
        Ok(Response::new(proto::CreateTopicsResponse { results }))
    }

    async fn delete_topics(
        &self,
        request: Request<proto::DeleteTopicsRequest>,
    ) -> Result<Response<proto::DeleteTopicsResponse>, Status> {
        self.ready().await?;
        for name in &request.get_ref().names {
            self.allow(&request, certs::Action::DeleteTopic, name)?;
        }
        let mut results = Vec::new();
        for name in request.into_inner().names {
            let result = self.node.delete_topic(&name).await;
            results.push(topic_result(name, &result));
        }
        Ok(Response::new(proto::DeleteTopicsResponse { results }))
    }

    async fn create_partitions(
        &self,
        request: Request<proto::CreatePartitionsRequest>,
    ) -> Result<Response<proto::TopicResult>, Status> {
        self.ready().await?;
        // Growing a topic is altering it: whoever may create it may grow it.
        self.allow(
            &request,
            certs::Action::CreateTopic,
            &request.get_ref().topic,
        )?;
        let request = request.into_inner();
        let result = self
            .node
            .create_partitions(&request.topic, request.partitions)
            .await;
        Ok(Response::new(topic_result(request.topic, &result)))
    }

    async fn alter_configs(
        &self,
        request: Request<proto::AlterConfigsRequest>,
    ) -> Result<Response<proto::TopicResult>, Status> {
        self.ready().await?;
        self.allow(
            &request,
            certs::Action::CreateTopic,
            &request.get_ref().topic,
        )?;
        let request = request.into_inner();
        let result = self
            .node
            .alter_topic_configs(&request.topic, request.configs.into_iter().collect())
            .await;
        Ok(Response::new(topic_result(request.topic, &result)))
    }

    async fn metadata(
        &self,
        request: Request<proto::MetadataRequest>,
    ) -> Result<Response<proto::MetadataResponse>, Status> {
        self.ready().await?;
        // A listing shows only what the caller may describe (as Kafka's Metadata does);
        // a topic named explicitly is answered with the refusal instead.
        let named = !request.get_ref().topics.is_empty();
        let mut refused = Vec::new();
        let mut listed = Vec::new();
        for (name, topic) in self.node.topics(&request.get_ref().topics) {
            if self.may(&request, certs::Action::DescribeTopic, &name) {
                listed.push((name, topic));
            } else if named {
                let status = self
                    .allow(&request, certs::Action::DescribeTopic, &name)
                    .expect_err("refused just above");
                refused.push(proto::TopicInfo {
                    name,
                    error_code: ErrorCode::TopicAuthorizationFailed.as_i32(),
                    error_message: status.message().to_owned(),
                    ..Default::default()
                });
            }
        }
        let cluster = self.node.cluster();
        let topics: Vec<proto::TopicInfo> = listed
            .into_iter()
            .map(|(name, topic)| match topic {
                Ok(topic) => proto::TopicInfo {
                    name,
                    error_code: 0,
                    error_message: String::new(),
                    partitions: topic
                        .state
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(index, p)| proto::PartitionInfo {
                            partition: index as i32,
                            error_code: if p.leader.is_some() {
                                0
                            } else {
                                ErrorCode::LeaderNotAvailable.as_i32()
                            },
                            leader: p.leader.unwrap_or(0),
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                        })
                        .collect(),
                    configs: topic
                        .config
                        .describe()
                        .into_iter()
                        .chain(
                            topic
                                .state
                                .configs
                                .iter()
                                .filter(|(k, _)| {
                                    k.starts_with(crate::topic_config::MIRROR_CONFIG_PREFIX)
                                })
                                .map(|(k, v)| (k.clone(), v.clone())),
                        )
                        .collect(),
                },
                Err(err) => proto::TopicInfo {
                    name,
                    error_code: err.code().as_i32(),
                    error_message: err.to_string(),
                    ..Default::default()
                },
            })
            .chain(refused)
            .collect();
        let brokers = cluster
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| proto::BrokerInfo {
                id: b.id,
                name: b.name.clone(),
                region: b.region.clone(),
                grpc_addr: b.grpc_addr.clone(),
                kafka_addr: b.kafka_addr.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(proto::MetadataResponse {
            region: self.node.identity().region.clone(),
            brokers,
            controller_id: self.node.controller().metrics().leader.unwrap_or(0),
            topics,
        }))
    }

    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<Response<proto::ProduceResponse>, Status> {
        self.ready().await?;
        for topic in &request.get_ref().topics {
            self.allow(&request, certs::Action::Produce, &topic.topic)?;
        }
        let request = request.into_inner();
        let acks_none = request.acks == proto::Acks::None as i32;
        let acks = if request.acks == proto::Acks::All as i32 {
            let timeout = match request.timeout_ms {
                0 => DEFAULT_PRODUCE_TIMEOUT,
                ms => Duration::from_millis(u64::from(ms)).min(MAX_PRODUCE_TIMEOUT),
            };
            RequiredAcks::All { timeout }
        } else {
            RequiredAcks::Leader
        };
        let keep_offsets = request.keep_offsets;
        let mut pending = Vec::new();
        for topic in request.topics {
            for partition in topic.partitions {
                let node = self.node.clone();
                let name = topic.topic.clone();
                let index = partition.partition;
                let batches = partition
                    .records
                    .clone()
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                let append = async move {
                    node.produce(&name, index, batches, keep_offsets, acks)
                        .await
                };
                let bytes = partition.records.len() as u64;
                pending.push((topic.topic.clone(), index, bytes, tokio::spawn(append)));
            }
        }
        let mut topics: Vec<proto::TopicProduceResult> = Vec::new();
        for (topic, partition, bytes, task) in pending {
            let failed = |code: i32, message: String| proto::PartitionProduceResult {
                partition,
                error_code: code,
                error_message: message,
                base_offset: -1,
                last_offset: -1,
                ..Default::default()
            };
            let result = if acks_none {
                // acks=0: the producer asked not to wait; the append still runs.
                proto::PartitionProduceResult {
                    partition,
                    base_offset: -1,
                    last_offset: -1,
                    ..Default::default()
                }
            } else {
                match task.await {
                    Ok(Ok(outcome)) => {
                        if !outcome.duplicate {
                            crate::telemetry::events()
                                .bytes_in
                                .with_label_values(&[&topic])
                                .inc_by(bytes);
                        }
                        proto::PartitionProduceResult {
                            partition,
                            error_code: 0,
                            error_message: String::new(),
                            base_offset: outcome.base_offset,
                            last_offset: outcome.last_offset,
                            log_start_offset: 0,
                            duplicate: outcome.duplicate,
                        }
                    }
                    Ok(Err(err)) => {
                        count_partition_error(&err);
                        tracing::debug!(%topic, partition, %err, "produce refused");
                        failed(err.code().as_i32(), err.to_string())
                    }
                    Err(join) => failed(
                        ErrorCode::UnknownServerError.as_i32(),
                        format!("append task failed: {join}"),
                    ),
                }
            };
            match topics.iter_mut().find(|t| t.topic == topic) {
                Some(entry) => entry.partitions.push(result),
                None => topics.push(proto::TopicProduceResult {
                    topic,
                    partitions: vec![result],
                }),
            }
        }
        Ok(Response::new(proto::ProduceResponse { topics }))
    }

    async fn fetch(
        &self,
        request: Request<proto::FetchRequest>,
    ) -> Result<Response<proto::FetchResponse>, Status> {
        self.ready().await?;
        // Followers name themselves with a broker id; consumers and mirrors send none
        // (or a negative one) and read only committed data.
        if request.get_ref().replica_id.is_some_and(|id| id >= 0) {
            self.allow(&request, certs::Action::Replicate, "cluster")?;
        } else {
            for topic in &request.get_ref().topics {
                self.allow(&request, certs::Action::Consume, &topic.topic)?;
            }
        }
        let request = request.into_inner();
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FETCH_WAIT);
        let deadline = tokio::time::Instant::now() + max_wait;
        let min_bytes = usize::try_from(request.min_bytes.max(1)).unwrap_or(1);
        let max_bytes = match usize::try_from(request.max_bytes) {
            Ok(0) | Err(_) => DEFAULT_FETCH_MAX_BYTES,
            Ok(n) => n,
        };
        // A follower broker fetching for replication reads up to the log end offset.
        let replica = request
            .replica_id
            .and_then(|id| u64::try_from(id).ok())
            .map(|id| (id, request.leader_epoch));
        loop {
            let mut watches = Vec::new();
            let mut total = 0usize;
            let mut topics = Vec::with_capacity(request.topics.len());
            for topic in &request.topics {
                let mut partitions = Vec::with_capacity(topic.partitions.len());
                for wanted in &topic.partitions {
                    let budget = usize::try_from(wanted.max_bytes)
                        .ok()
                        .filter(|n| *n > 0)
                        .unwrap_or(1 << 20)
                        .min(max_bytes.saturating_sub(total).max(1));
                    let mut out = proto::FetchedPartition {
                        partition: wanted.partition,
                        ..Default::default()
                    };
                    match (
                        self.node
                            .led_partition(&topic.topic, wanted.partition)
                            .await,
                        replica,
                    ) {
                        (Ok(partition), Some((id, epoch))) => {
                            watches.push(partition.watch_log_end());
                            watches.push(partition.watch_high_watermark());
                            match partition.read_replica(
                                id,
                                epoch,
                                wanted.offset,
                                budget,
                                std::time::Instant::now(),
                            ) {
                                Ok(data) => {
                                    total += data.records.len();
                                    out.high_watermark = data.high_watermark;
                                    out.log_start_offset = data.log_start_offset;
                                    out.log_end_offset = data.log_end_offset;
                                    out.records = data.records;
                                }
                                Err(err) => {
                                    out.error_code = err.code().as_i32();
                                    out.error_message = err.to_string();
                                    out.high_watermark = partition.high_watermark();
                                    out.log_start_offset = partition.log_start_offset();
                                    out.log_end_offset = partition.log_end_offset();
                                }
                            }
                        }
                        (Ok(partition), None) => {
                            watches.push(partition.watch_high_watermark());
                            match partition.read(wanted.offset, budget) {
                                Ok(data) => {
                                    total += data.records.len();
                                    out.high_watermark = data.high_watermark;
                                    out.log_start_offset = data.log_start_offset;
                                    out.records = data.records;
                                }
                                Err(err) => {
                                    out.error_code = err.code().as_i32();
                                    out.error_message = err.to_string();
                                    out.high_watermark = partition.high_watermark();
                                    out.log_start_offset = partition.log_start_offset();
                                }
                            }
                        }
                        (Err(err), _) => {
                            out.error_code = err.code().as_i32();
                            out.error_message = err.to_string();
                        }
                    }
                    partitions.push(out);
                }
                topics.push(proto::FetchedTopic {
                    topic: topic.topic.clone(),
                    partitions,
                });
            }
            let errors = topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.error_code != 0);
            if total >= min_bytes
                || errors
                || watches.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                count_fetched(&topics);
                return Ok(Response::new(proto::FetchResponse { topics }));
            }
            // Long poll: wait for any high watermark to move, or the deadline.
            let changed = watches.iter_mut().map(|w| Box::pin(w.changed()));
            let _ = tokio::time::timeout_at(deadline, futures::future::select_all(changed)).await;
        }
    }

    async fn list_offsets(
        &self,
        request: Request<proto::ListOffsetsRequest>,
    ) -> Result<Response<proto::ListOffsetsResponse>, Status> {
        self.ready().await?;
        self.allow(
            &request,
            certs::Action::DescribeTopic,
            &request.get_ref().topic,
        )?;
        let request = request.into_inner();
        let indexes: Vec<i32> = if request.partitions.is_empty() {
            let (_, topic) = self
                .node
                .topics(std::slice::from_ref(&request.topic))
                .remove(0);
            let topic = topic.map_err(|e| to_status(&e))?;
            (0..topic.state.partitions.len() as i32).collect()
        } else {
            request.partitions.clone()
        };
        let mut partitions = Vec::with_capacity(indexes.len());
        for index in indexes {
            let found = match self.node.led_partition(&request.topic, index).await {
                Ok(p) => match request.timestamp {
                    -1 => Ok((p.high_watermark(), -1)),
                    -2 => Ok((p.log_start_offset(), -1)),
                    ts => p.offset_for_timestamp(ts).map(|o| o.unwrap_or((-1, -1))),
                },
                Err(err) => Err(err),
            };
            partitions.push(match found {
                Ok((offset, timestamp)) => proto::PartitionOffset {
                    partition: index,
                    offset,
                    timestamp,
                    ..Default::default()
                },
                Err(err) => proto::PartitionOffset {
                    partition: index,
                    error_code: err.code().as_i32(),
                    error_message: err.to_string(),
                    offset: -1,
                    timestamp: -1,
                },
            });
        }
        Ok(Response::new(proto::ListOffsetsResponse { partitions }))
    }

    async fn offset_commit(
        &self,
        request: Request<proto::OffsetCommitRequest>,
    ) -> Result<Response<proto::OffsetCommitResponse>, Status> {
        self.ready().await?;
        self.allow(
            &request,
            certs::Action::GroupWrite,
            &request.get_ref().group,
        )?;
        let request = request.into_inner();
        let offsets: Vec<_> = request
            .offsets
            .iter()
            .map(|o| (o.topic.clone(), o.partition, o.offset, o.metadata.clone()))
            .collect();
        let result = match self.validate_member_commit(&request) {
            Ok(()) => self.node.commit_offsets(&request.group, &offsets).await,
            Err(err) => Err(err),
        };
        let (error_code, error_message) = error_fields(&result);
        let offsets = request
            .offsets
            .into_iter()
            .map(|o| proto::CommittedOffset {
                error_code,
                error_message: error_message.clone(),
                ..o
            })
            .collect();
        Ok(Response::new(proto::OffsetCommitResponse { offsets }))
    }

    async fn offset_fetch(
        &self,
        request: Request<proto::OffsetFetchRequest>,
    ) -> Result<Response<proto::OffsetFetchResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::GroupRead, &request.get_ref().group)?;
        let request = request.into_inner();
        let offsets = self
            .node
            .fetch_offsets(&request.group, &request.topics)
            .await
            .into_iter()
            .map(
                |(topic, partition, offset, metadata)| proto::CommittedOffset {
                    topic,
                    partition,
                    offset,
                    metadata,
                    ..Default::default()
                },
            )
            .collect();
        Ok(Response::new(proto::OffsetFetchResponse { offsets }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<proto::InitProducerIdRequest>,
    ) -> Result<Response<proto::InitProducerIdResponse>, Status> {
        Ok(Response::new(proto::InitProducerIdResponse {
            producer_id: self.node.new_producer_id(),
            producer_epoch: 0,
        }))
    }

    async fn members(
        &self,
        _request: Request<proto::MembersRequest>,
    ) -> Result<Response<proto::MembersResponse>, Status> {
        let Some(gossip) = &self.gossip else {
            return Err(Status::unavailable("this broker runs no gossip"));
        };
        let members = gossip
            .members()
            .into_iter()
            .map(|m| proto::Member {
                name: m.identity.name.clone(),
                region: m.identity.region.clone(),
                role: match m.identity.role {
                    gossip::Role::Broker => "broker".into(),
                    gossip::Role::Mirror => "mirror".into(),
                },
                state: match m.state {
                    gossip::MemberState::Alive => "alive".into(),
                    gossip::MemberState::Suspect => "suspect".into(),
                    gossip::MemberState::Down => "down".into(),
                },
                incarnation: m.incarnation,
                gossip_addr: m.identity.gossip_addr.to_string(),
                grpc_addr: m.identity.grpc.clone().unwrap_or_default(),
                kafka_addr: m.identity.kafka.clone().unwrap_or_default(),
                metrics_addr: m.identity.metrics.clone().unwrap_or_default(),
            })
            .collect();
        let shared = gossip
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        Ok(Response::new(proto::MembersResponse { members, shared }))
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        self.ready().await?;
        let groups = group_listings(&self.node)
            .into_iter()
            .filter(|g| self.may(&request, certs::Action::GroupRead, &g.group))
            .collect();
        Ok(Response::new(proto::ListGroupsResponse { groups }))
    }
    async fn offset_for_leader_epoch(
        &self,
        request: Request<proto::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<proto::OffsetForLeaderEpochResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::Replicate, "cluster")?;
        let request = request.into_inner();
        let answer = match self
            .node
            .led_partition(&request.topic, request.partition)
            .await
        {
            Ok(partition) => {
                partition.leader_end_offset_for(request.current_leader_epoch, request.leader_epoch)
            }
            Err(err) => Err(err),
        };
        let response = match answer {
            Ok((leader_epoch, end_offset)) => proto::OffsetForLeaderEpochResponse {
                leader_epoch,
                end_offset,
                ..Default::default()
            },
            Err(err) => {
                let (error_code, error_message) = error_fields(&Err(err));
                proto::OffsetForLeaderEpochResponse {
                    error_code,
                    error_message,
                    leader_epoch: -1,
                    end_offset: -1,
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn elect_leaders(
        &self,
        request: Request<proto::ElectLeadersRequest>,
    ) -> Result<Response<proto::ElectLeadersResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::Admin, "cluster")?;
        let topics = request.into_inner().topics;
        let moved = self
            .node
            .elect_preferred_leaders((!topics.is_empty()).then_some(topics))
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(proto::ElectLeadersResponse {
            moved: moved
                .into_iter()
                .map(|(topic, partition, previous, leader)| proto::LeaderMove {
                    topic,
                    partition,
                    previous_leader: previous.unwrap_or(0),
                    leader: leader.unwrap_or(0),
                })
                .collect(),
        }))
    }

    async fn find_coordinator(
        &self,
        request: Request<proto::FindCoordinatorRequest>,
    ) -> Result<Response<proto::FindCoordinatorResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::GroupRead, &request.get_ref().group)?;
        let group = &request.get_ref().group;
        let response = match self.node.group_coordinator(group) {
            Some(b) => proto::FindCoordinatorResponse {
                broker_id: b.id,
                grpc_addr: b.grpc_addr,
                ..Default::default()
            },
            None => {
                let err = BrokerError::CoordinatorNotAvailable {
                    group: group.clone(),
                };
                proto::FindCoordinatorResponse {
                    error_code: err.code() as i32,
                    error_message: err.to_string(),
                    ..Default::default()
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn join_group(
        &self,
        request: Request<proto::JoinGroupRequest>,
    ) -> Result<Response<proto::JoinGroupResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::GroupRead, &request.get_ref().group)?;
        let host = caller_host(&request);
        let request = request.into_inner();
        if let Err(err) = self.node.check_coordinator(&request.group) {
            return Ok(Response::new(refused::<proto::JoinGroupResponse>(&err)));
        }
        Ok(Response::new(
            crate::group::wire::join(&self.groups, request, host).await,
        ))
    }

    async fn sync_group(
        &self,
        request: Request<proto::SyncGroupRequest>,
    ) -> Result<Response<proto::SyncGroupResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::GroupRead, &request.get_ref().group)?;
        let request = request.into_inner();
        if let Err(err) = self.node.check_coordinator(&request.group) {
            return Ok(Response::new(refused::<proto::SyncGroupResponse>(&err)));
        }
        Ok(Response::new(
            crate::group::wire::sync(&self.groups, request).await,
        ))
    }

    async fn group_heartbeat(
        &self,
        request: Request<proto::GroupHeartbeatRequest>,
    ) -> Result<Response<proto::GroupHeartbeatResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::GroupRead, &request.get_ref().group)?;
        let request = request.into_inner();
        if let Err(err) = self.node.check_coordinator(&request.group) {
            return Ok(Response::new(refused::<proto::GroupHeartbeatResponse>(
                &err,
            )));
        }
        Ok(Response::new(crate::group::wire::heartbeat(
            &self.groups,
            &request,
        )))
    }

    async fn leave_group(
        &self,
        request: Request<proto::LeaveGroupRequest>,
    ) -> Result<Response<proto::LeaveGroupResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::GroupRead, &request.get_ref().group)?;
        let request = request.into_inner();
        if let Err(err) = self.node.check_coordinator(&request.group) {
            return Ok(Response::new(refused::<proto::LeaveGroupResponse>(&err)));
        }
        Ok(Response::new(crate::group::wire::leave(
            &self.groups,
            &request,
        )))
    }

    async fn describe_group(
        &self,
        request: Request<proto::DescribeGroupRequest>,
    ) -> Result<Response<proto::DescribeGroupResponse>, Status> {
        self.ready().await?;
        self.allow(&request, certs::Action::GroupRead, &request.get_ref().group)?;
        let group = request.into_inner().group;
        if let Err(err) = self.node.check_coordinator(&group) {
            return Ok(Response::new(refused::<proto::DescribeGroupResponse>(&err)));
        }
        Ok(Response::new(crate::group::wire::describe(
            self.groups.describe(&group),
            self.node.identity().id,
        )))
    }
}

impl BrokerService {
    /// A commit that names a member or a generation comes from a group member: only the
    /// coordinator can tell whether that member still owns its partitions (a member that
    /// was evicted and replaced must not overwrite its successor's commits). A commit
    /// without them is a standalone consumer's or an operator's (failover) and goes
    /// through any broker.
    fn validate_member_commit(
        &self,
        request: &proto::OffsetCommitRequest,
    ) -> Result<(), BrokerError> {
        let generation = request.generation_id.unwrap_or(-1);
        if request.member_id.is_empty() && generation < 0 && request.group_instance_id.is_none() {
            return Ok(());
        }
        self.node.check_coordinator(&request.group)?;
        self.groups.validate_commit(
            &request.group,
            &request.member_id,
            request.group_instance_id.as_deref(),
            generation,
        )
    }
}

/// A membership response that carries an error code and message instead of an answer.
trait Refusable: Default {
    fn refuse(code: i32, message: String) -> Self;
}

macro_rules! refusable {
    ($($response:ty),*) => {$(
        impl Refusable for $response {
            #[allow(clippy::needless_update)] // some responses have no other fields
            fn refuse(error_code: i32, error_message: String) -> Self {
                Self { error_code, error_message, ..Default::default() }
            }
        }
    )*};
}

refusable!(
    proto::JoinGroupResponse,
    proto::SyncGroupResponse,
    proto::GroupHeartbeatResponse,
    proto::LeaveGroupResponse,
    proto::DescribeGroupResponse
);

/// The answer to a membership request this broker cannot serve (another broker
/// coordinates the group): NOT_COORDINATOR, so the client finds the coordinator again.
fn refused<R: Refusable>(err: &BrokerError) -> R {
    R::refuse(err.code().as_i32(), err.to_string())
}

/// The caller's host as describe shows it (Kafka shows `/ip`).
fn caller_host<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<crate::transport::PeerInfo>()
        .and_then(|peer| peer.remote)
        .or_else(|| request.remote_addr())
        .map(|addr| format!("/{}", addr.ip()))
        .unwrap_or_default()
}

/// Drops the groups whose coordinator moved to another broker (this broker was fenced,
/// or one with a higher hash returned), so that their members rejoin the new
/// coordinator instead of heartbeating into a stale generation here.
async fn unload_moved_groups(
    node: std::sync::Weak<BrokerNode>,
    groups: std::sync::Weak<GroupShell>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        let (Some(node), Some(groups)) = (node.upgrade(), groups.upgrade()) else {
            return;
        };
        if !node.is_ready() {
            continue;
        }
        groups.unload_where(|group| node.check_coordinator(group).is_err());
    }
}

/// Groups known to the region, with the topics they committed offsets on.
fn group_listings(node: &BrokerNode) -> Vec<proto::GroupListing> {
    node.cluster()
        .group_offsets
        .iter()
        .map(|(group, topics)| proto::GroupListing {
            group: group.clone(),
            topics: topics.keys().cloned().collect(),
        })
        .collect()
}

/// Turns gossip's failure detection into fencing hints for the controller: a broker of
/// this region that SWIM declares down is fenced by the active controller without
/// waiting for its session timeout (the controller ignores the hint elsewhere). The view
/// is re-read every few seconds too, so a controller elected after the event (the dead
/// broker may have been the controller) still acts on it.
async fn fence_on_gossip_hints(
    membership: Arc<gossip::GossipHandle>,
    controller: ControllerHandle,
    region: String,
) {
    let mut events = membership.subscribe();
    let mut rescan = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            event = events.recv() => {
                if matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            _ = rescan.tick() => {}
        }
        let brokers: Vec<gossip::Member> = membership
            .members()
            .into_iter()
            .filter(|m| m.identity.role == gossip::Role::Broker && m.identity.region == region)
            .collect();
        // A restarted broker rejoins with a higher incarnation while its old one may still
        // be listed as down: only a name with no live incarnation is a hint.
        let down: std::collections::BTreeSet<String> = brokers
            .iter()
            .filter(|m| m.state == gossip::MemberState::Down)
            .filter(|m| {
                !brokers.iter().any(|other| {
                    other.identity.name == m.identity.name
                        && other.state != gossip::MemberState::Down
                })
            })
            .map(|m| m.identity.name.clone())
            .collect();
        for name in down {
            if let Err(err) = controller.fence_on_gossip_hint(&name).await {
                tracing::warn!(%region, broker = %name, %err, "could not act on the gossip hint; the session timeout still applies");
            }
        }
    }
}

/// Joins the region's SWIM gossip (foca, encrypted with the deployment's keyring) so
/// that `meridian members` shows who is alive. The incarnation is the start time, so a
/// restarted broker rejoins above its previous self.
async fn join_gossip(
    view: &topology::NodeView,
    grpc_addr: SocketAddr,
) -> Result<gossip::GossipHandle, BrokerError> {
    let gossip_err = |e: gossip::GossipError| BrokerError::InvalidRequest {
        reason: format!("cannot join the gossip on {}: {e}", view.gossip_addr),
    };
    let mut identity = gossip::NodeIdentity::new(
        &view.name,
        &view.region,
        gossip::Role::Broker,
        view.gossip_addr,
    );
    identity.grpc = Some(grpc_addr.to_string());
    identity.kafka = view.kafka_addr.map(|a| a.to_string());
    identity.metrics = Some(view.metrics_addr.to_string());
    identity.incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let keys: Vec<[u8; 32]> = view.gossip.keyring.iter().map(|k| k.0).collect();
    let keyring = gossip::Keyring::from_keys(&keys).map_err(gossip_err)?;
    let size = view.region_brokers.len().max(1) as u32;
    let config = match view.gossip.profile {
        topology::GossipProfile::Lan => gossip::GossipConfig::lan(size),
        topology::GossipProfile::Wan => gossip::GossipConfig::wan(size),
    };
    let handle = gossip::Gossip::start(identity, keyring, config)
        .await
        .map_err(gossip_err)?;
    let seeds: Vec<SocketAddr> = view
        .gossip_seeds
        .iter()
        .copied()
        .filter(|s| *s != view.gossip_addr)
        .collect();
    if !seeds.is_empty() {
        handle.join(&seeds).await.map_err(gossip_err)?;
    }
    Ok(handle)
}

/// The broker's metrics endpoint: event counters, scrape-time gauges over `node`, gossip
/// health; ready once the broker has registered with its controller.
fn broker_metrics(
    view: &topology::NodeView,
    node: Arc<BrokerNode>,
    membership: Arc<gossip::GossipHandle>,
    cert_path: Option<std::path::PathBuf>,
) -> crate::telemetry::MetricsEndpoint {
    use crate::telemetry::{BrokerGauges, GossipMetrics, MetricsEndpoint, events};
    let ready_node = node.clone();
    let mut endpoint = MetricsEndpoint::new(
        &view.region,
        &view.name,
        "broker",
        Box::new(move || {
            if ready_node.is_ready() {
                Ok(())
            } else {
                Err("not registered with the controller yet".into())
            }
        }),
    );
    events().register(endpoint.registry());
    let gauges = BrokerGauges::register(endpoint.registry());
    let gossip_metrics = GossipMetrics::register(endpoint.registry());
    let tls_metrics =
        crate::telemetry::TlsGauges::register(endpoint.registry(), cert_path.is_some());
    endpoint.on_scrape(move || {
        gauges.refresh(&node);
        gossip_metrics.refresh(&membership);
        tls_metrics.refresh(cert_path.as_deref());
    });
    endpoint
}

/// What the Kafka listener accepts, from the file's `tls.listeners.kafka` mode: TLS
/// needs the node's certificate (the same identity and CA as its gRPC listener).
fn kafka_listener_security(
    view: &topology::NodeView,
    node_tls: Option<&crate::transport::NodeTls>,
) -> Result<
    (
        crate::transport::ListenerSecurity,
        Option<Arc<rustls::ServerConfig>>,
    ),
    BrokerError,
> {
    use crate::transport::ListenerSecurity;
    match (view.tls.listeners.kafka, node_tls) {
        (topology::TlsMode::Off, _) => Ok((ListenerSecurity::Plaintext, None)),
        (topology::TlsMode::Optional, None) => Ok((ListenerSecurity::Plaintext, None)),
        (topology::TlsMode::Optional, Some(tls)) => {
            Ok((ListenerSecurity::TlsOrPlaintext, Some(tls.server.clone())))
        }
        (topology::TlsMode::Required, Some(tls)) => {
            Ok((ListenerSecurity::TlsOnly, Some(tls.server.clone())))
        }
        (topology::TlsMode::Required, None) => Err(BrokerError::InvalidRequest {
            reason: format!(
                "tls.listeners.kafka is \"required\" but {}/{} has no certificate; run `meridian certs issue-deployment` or set it to \"optional\"",
                view.region, view.name
            ),
        }),
    }
}

/// Runs a broker node for `view` until `shutdown` resolves: claims the data directory,
/// starts the controller node (its Raft and API services share the broker's gRPC
/// listener), joins the cluster with heartbeats, and on shutdown hands its leaderships
/// over (controlled shutdown) before it stops.
pub async fn serve(
    view: &topology::NodeView,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BrokerError> {
    let grpc_addr: SocketAddr = view.grpc_addr.ok_or_else(|| BrokerError::InvalidRequest {
        reason: format!(
            "{}/{} is not a broker (it has no grpc address)",
            view.region, view.name
        ),
    })?;
    let data_dir = view
        .data_dir
        .clone()
        .ok_or_else(|| BrokerError::InvalidRequest {
            reason: format!("{}/{} has no data_dir", view.region, view.name),
        })?;
    let claim = DataDir::claim(&data_dir, &format!("{}/{}", view.region, view.name))?;
    crate::transport::set_node_source_ip(grpc_addr.ip());
    let node_tls = crate::transport::NodeTls::load(view)?;
    if let Some(tls) = &node_tls {
        crate::transport::set_node_client_tls(tls.client.clone());
        tracing::info!(region = %view.region, node = %view.name, identity = %tls.identity, security = ?tls.security, "mutual TLS on");
    }
    let access = Arc::new(crate::access::Access::for_node(view)?);
    let listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(|e| BrokerError::Unreachable {
            addr: grpc_addr.to_string(),
            reason: format!("cannot listen: {e}"),
        })?;
    let mut controller_config = ControllerConfig::for_node(view)?;
    controller_config.session_timeout = view.cluster.session_timeout;
    controller_config.leader_rebalance_interval = view.cluster.leader_rebalance_interval;
    controller_config.broker_heartbeat_interval = view.cluster.session_timeout / 3;
    let controller = Controller::start(controller_config).await?;
    let identity = crate::node::BrokerIdentity {
        region: view.region.clone(),
        name: view.name.clone(),
        id: view.broker_id.unwrap_or_default(),
        grpc_addr: grpc_addr.to_string(),
        kafka_addr: view.kafka_addr.map(|a| a.to_string()),
    };
    let node = BrokerNode::new(
        identity,
        data_dir,
        view.topic_defaults.clone(),
        claim,
        controller.clone(),
        view.cluster.replica_lag_max,
    );
    let housekeeping = tokio::spawn(node.clone().run_housekeeping(Duration::from_secs(5)));
    let reconciler = tokio::spawn(node.clone().run_reconciler());
    let replication = tokio::spawn(
        node.clone()
            .run_replication(ISR_CHECK_EVERY, CHECKPOINT_EVERY),
    );
    let (raft_service, api_service) = controller.services();
    let registration =
        BrokerRegistration::for_node(view).ok_or_else(|| BrokerError::InvalidRequest {
            reason: format!("{}/{} is not a broker", view.region, view.name),
        })?;
    // The first heartbeat registers this incarnation (a new broker epoch); until it is
    // answered the node leads nothing, so a stale metadata copy read from disk at start
    // cannot make it act as a leader that was replaced while it was down.
    let registering = {
        let (controller, node) = (controller.clone(), node.clone());
        tokio::spawn(async move {
            loop {
                match controller.heartbeat(&registration).await {
                    Ok(reply) => {
                        let node = node.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            node.registered(reply.broker_epoch)
                        })
                        .await;
                        break;
                    }
                    Err(err) => {
                        tracing::debug!(%err, "first controller heartbeat failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            controller.start_heartbeats(registration);
        })
    };
    let registering_abort = registering.abort_handle();
    let membership = Arc::new(join_gossip(view, grpc_addr).await?);
    let gossip_hints = tokio::spawn(fence_on_gossip_hints(
        membership.clone(),
        controller.clone(),
        view.region.clone(),
    ));
    let metrics = crate::telemetry::serve_metrics(
        view.metrics_addr,
        Arc::new(broker_metrics(
            view,
            node.clone(),
            membership.clone(),
            node_tls.as_ref().map(|t| t.cert_path.clone()),
        )),
    )
    .await?;
    tracing::info!(region = %view.region, node = %view.name, %grpc_addr, "broker listening");

    let stopping = {
        let controller = controller.clone();
        let region = view.region.clone();
        let name = view.name.clone();
        async move {
            shutdown.await;
            registering_abort.abort();
            tracing::info!(%region, node = %name, "shutting down: handing leaderships over");
            if let Err(err) = controller.controlled_shutdown().await {
                tracing::warn!(%region, node = %name, %err, "controlled shutdown failed; stopping anyway");
            }
            controller.close_attachments();
        }
    };
    let incoming = match &node_tls {
        Some(tls) => crate::transport::incoming(listener, tls.security, Some(tls.server.clone())),
        None => crate::transport::incoming(
            listener,
            crate::transport::ListenerSecurity::Plaintext,
            None,
        ),
    };
    let service = BrokerService::new(node.clone())
        .with_gossip(membership.clone())
        .with_access(access.clone());
    let kafka = match view.kafka_addr {
        Some(addr) => {
            let (security, tls) = kafka_listener_security(view, node_tls.as_ref())?;
            let ctx = crate::kafka::KafkaContext::new(service.clone(), node.clone());
            Some(tokio::spawn(async move {
                if let Err(err) = crate::kafka::run_listener(addr, security, tls, ctx).await {
                    tracing::error!(%err, "the Kafka listener stopped");
                }
            }))
        }
        None => None,
    };
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(crate::telemetry::RequestMetricsLayer)
        .layer(crate::access::ControllerGuardLayer::new(access.clone()))
        .add_service(service.into_server())
        .add_service(raft_service)
        .add_service(api_service)
        .serve_with_incoming_shutdown(incoming, stopping)
        .await;
    if let Some(kafka) = kafka {
        kafka.abort();
    }
    housekeeping.abort();
    reconciler.abort();
    metrics.abort();
    gossip_hints.abort();
    replication.abort();
    // Leave gracefully when no connection task still holds the service; otherwise the
    // others see this broker go down by failure detection instead.
    if let Ok(membership) = Arc::try_unwrap(membership)
        && let Err(err) = membership.leave().await
    {
        tracing::debug!(%err, "gossip leave");
    }
    let _ = tokio::task::spawn_blocking(move || node.checkpoint_all()).await;
    if let Err(err) = controller.shutdown().await {
        tracing::warn!(%err, "controller shutdown");
    }
    result.map_err(|e| BrokerError::Unreachable {
        addr: grpc_addr.to_string(),
        reason: e.to_string(),
    })
}
