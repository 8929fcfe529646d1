//! The gRPC shell: translates protobuf requests into `BrokerNode` calls and results back
//! into responses. Per-partition failures travel inside responses with their error code;
//! a request that cannot be served at all is a gRPC status carrying the code in the
//! `meridian-error-code` metadata.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tonic::{Request, Response, Status};

use crate::error::{BrokerError, ErrorCode};
use crate::metadata::CommittedOffset;
use crate::node::{BrokerNode, NewTopic};
use crate::proto::{self, broker_server};

/// Longest a fetch may long-poll, whatever the client asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
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
        | ErrorCode::NotEnoughReplicas => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    let mut status = Status::new(grpc, err.to_string());
    if let Ok(value) = code.as_i32().to_string().parse() {
        status.metadata_mut().insert(ERROR_CODE_KEY, value);
    }
    status
}

fn error_fields(result: &Result<(), BrokerError>) -> (i32, String) {
    match result {
        Ok(()) => (0, String::new()),
        Err(err) => (err.code().as_i32(), err.to_string()),
    }
}

/// The gRPC service over one broker.
#[derive(Debug, Clone)]
pub struct BrokerService {
    node: Arc<BrokerNode>,
}

impl BrokerService {
    /// Serves `node`.
    pub fn new(node: Arc<BrokerNode>) -> Self {
        Self { node }
    }

    /// The tonic server wrapper, with message limits raised for record batches.
    pub fn into_server(self) -> broker_server::BrokerServer<Self> {
        broker_server::BrokerServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

#[tonic::async_trait]
impl broker_server::Broker for BrokerService {
    async fn create_topics(
        &self,
        request: Request<proto::CreateTopicsRequest>,
    ) -> Result<Response<proto::CreateTopicsResponse>, Status> {
        let request = request.into_inner();
        let results = request
            .topics
            .into_iter()
            .map(|spec| {
                let name = spec.name.clone();
                let new = NewTopic {
                    name: spec.name,
                    partitions: (spec.partitions != 0).then_some(spec.partitions),
                    replication_factor: (spec.replication_factor != 0)
                        .then_some(spec.replication_factor),
                    configs: spec.configs.into_iter().collect(),
                };
                let (error_code, error_message) =
                    error_fields(&self.node.create_topic(new, request.validate_only));
                proto::TopicResult {
                    name,
                    error_code,
                    error_message,
                }
            })
            .collect();
        Ok(Response::new(proto::CreateTopicsResponse { results }))
    }

    async fn delete_topics(
        &self,
        request: Request<proto::DeleteTopicsRequest>,
    ) -> Result<Response<proto::DeleteTopicsResponse>, Status> {
        let results = request
            .into_inner()
            .names
            .into_iter()
            .map(|name| {
                let (error_code, error_message) = error_fields(&self.node.delete_topic(&name));
                proto::TopicResult {
                    name,
                    error_code,
                    error_message,
                }
            })
            .collect();
        Ok(Response::new(proto::DeleteTopicsResponse { results }))
    }

    async fn metadata(
        &self,
        request: Request<proto::MetadataRequest>,
    ) -> Result<Response<proto::MetadataResponse>, Status> {
        let request = request.into_inner();
        let me = self.node.identity();
        let topics = self
            .node
            .topics(&request.topics)
            .into_iter()
            .map(|(name, topic)| match topic {
                Ok(topic) => proto::TopicInfo {
                    name,
                    error_code: 0,
                    error_message: String::new(),
                    partitions: topic
                        .partitions
                        .iter()
                        .map(|p| proto::PartitionInfo {
                            partition: p.index(),
                            error_code: 0,
                            leader: me.id,
                            leader_epoch: 0,
                            replicas: vec![me.id],
                            isr: vec![me.id],
                        })
                        .collect(),
                    configs: topic.config.describe().into_iter().collect(),
                },
                Err(err) => proto::TopicInfo {
                    name,
                    error_code: err.code().as_i32(),
                    error_message: err.to_string(),
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(proto::MetadataResponse {
            region: me.region.clone(),
            brokers: vec![proto::BrokerInfo {
                id: me.id,
                name: me.name.clone(),
                region: me.region.clone(),
                grpc_addr: me.grpc_addr.clone(),
                kafka_addr: me.kafka_addr.clone().unwrap_or_default(),
            }],
            controller_id: me.id,
            topics,
        }))
    }

    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<Response<proto::ProduceResponse>, Status> {
        let request = request.into_inner();
        let acks_none = request.acks == proto::Acks::None as i32;
        let keep_offsets = request.keep_offsets;
        let mut pending = Vec::new();
        for topic in request.topics {
            for partition in topic.partitions {
                let node = self.node.clone();
                let name = topic.topic.clone();
                let index = partition.partition;
                let batches = BytesMut::from(&partition.records[..]);
                let append = async move { node.produce(&name, index, batches, keep_offsets).await };
                pending.push((topic.topic.clone(), index, tokio::spawn(append)));
            }
        }
        let mut topics: Vec<proto::TopicProduceResult> = Vec::new();
        for (topic, partition, task) in pending {
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
                    Ok(Ok(outcome)) => proto::PartitionProduceResult {
                        partition,
                        error_code: 0,
                        error_message: String::new(),
                        base_offset: outcome.base_offset,
                        last_offset: outcome.last_offset,
                        log_start_offset: 0,
                        duplicate: outcome.duplicate,
                    },
                    Ok(Err(err)) => {
                        tracing::debug!(%topic, partition, %err, "produce refused");
                        proto::PartitionProduceResult {
                            partition,
                            error_code: err.code().as_i32(),
                            error_message: err.to_string(),
                            base_offset: -1,
                            last_offset: -1,
                            ..Default::default()
                        }
                    }
                    Err(join) => proto::PartitionProduceResult {
                        partition,
                        error_code: ErrorCode::UnknownServerError.as_i32(),
                        error_message: format!("append task failed: {join}"),
                        base_offset: -1,
                        last_offset: -1,
                        ..Default::default()
                    },
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
        let request = request.into_inner();
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FETCH_WAIT);
        let deadline = tokio::time::Instant::now() + max_wait;
        let min_bytes = usize::try_from(request.min_bytes.max(1)).unwrap_or(1);
        let max_bytes = match usize::try_from(request.max_bytes) {
            Ok(0) | Err(_) => DEFAULT_FETCH_MAX_BYTES,
            Ok(n) => n,
        };
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
                    match self.node.partition(&topic.topic, wanted.partition) {
                        Ok(partition) => {
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
                        Err(err) => {
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
        let request = request.into_inner();
        let indexes: Vec<i32> = if request.partitions.is_empty() {
            let (_, topic) = self
                .node
                .topics(std::slice::from_ref(&request.topic))
                .remove(0);
            let topic = topic.map_err(|e| to_status(&e))?;
            (0..topic.partitions.len() as i32).collect()
        } else {
            request.partitions.clone()
        };
        let partitions = indexes
            .into_iter()
            .map(|index| {
                let found = self.node.partition(&request.topic, index).and_then(|p| {
                    Ok(match request.timestamp {
                        -1 => (p.high_watermark(), -1),
                        -2 => (p.log_start_offset(), -1),
                        ts => p.offset_for_timestamp(ts)?.unwrap_or((-1, -1)),
                    })
                });
                match found {
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
                }
            })
            .collect();
        Ok(Response::new(proto::ListOffsetsResponse { partitions }))
    }

    async fn offset_commit(
        &self,
        request: Request<proto::OffsetCommitRequest>,
    ) -> Result<Response<proto::OffsetCommitResponse>, Status> {
        let request = request.into_inner();
        let offsets: Vec<_> = request
            .offsets
            .iter()
            .map(|o| {
                let committed = CommittedOffset {
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                };
                (o.topic.clone(), o.partition, committed)
            })
            .collect();
        let (error_code, error_message) =
            error_fields(&self.node.commit_offsets(&request.group, &offsets));
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
        let request = request.into_inner();
        let offsets = self
            .node
            .fetch_offsets(&request.group, &request.topics)
            .map_err(|e| to_status(&e))?
            .into_iter()
            .map(|(topic, partition, c)| proto::CommittedOffset {
                topic,
                partition,
                offset: c.offset,
                metadata: c.metadata,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(proto::OffsetFetchResponse { offsets }))
    }
}

/// Runs a broker node for `view` until `shutdown` resolves.
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
    let identity = crate::node::BrokerIdentity {
        region: view.region.clone(),
        name: view.name.clone(),
        id: view.broker_id.unwrap_or_default(),
        grpc_addr: grpc_addr.to_string(),
        kafka_addr: view.kafka_addr.map(|a| a.to_string()),
    };
    let node = BrokerNode::open(identity, data_dir, view.topic_defaults.clone())?;
    let housekeeping = tokio::spawn(node.clone().run_housekeeping(Duration::from_secs(5)));
    let listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(|e| BrokerError::Unreachable {
            addr: grpc_addr.to_string(),
            reason: format!("cannot listen: {e}"),
        })?;
    tracing::info!(region = %view.region, node = %view.name, %grpc_addr, "broker listening");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(BrokerService::new(node).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    housekeeping.abort();
    result.map_err(|e| BrokerError::Unreachable {
        addr: grpc_addr.to_string(),
        reason: e.to_string(),
    })
}
