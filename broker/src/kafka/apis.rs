//! One function per Kafka API: the request becomes the equivalent gRPC service call
//! (same authorization, same leader and coordinator checks), and its answer the Kafka
//! response. Errors keep their Kafka codes: the service's errors already are Kafka's.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tonic::{Request, Status};

use super::{KafkaContext, Parsed, supported_apis};
use crate::error::ErrorCode;
use crate::proto;
use crate::proto::broker_server::Broker;
use crate::transport::PeerInfo;

type Answer = Result<Option<ResponseKind>, String>;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn topic(name: impl Into<String>) -> TopicName {
    TopicName(s(name))
}

/// A gRPC request carrying the Kafka connection's identity, for authorization.
fn request<T>(peer: &PeerInfo, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(peer.clone());
    request
}

/// The Kafka error code of a failed service call.
fn status_code(status: &Status, denied: i16) -> i16 {
    if let Some(code) = status
        .metadata()
        .get(crate::server::ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        return code as i16;
    }
    match status.code() {
        tonic::Code::PermissionDenied => denied,
        tonic::Code::Unavailable => ErrorCode::LeaderNotAvailable as i16,
        tonic::Code::DeadlineExceeded => ErrorCode::RequestTimedOut as i16,
        _ => ErrorCode::UnknownServerError as i16,
    }
}

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const INVALID_REQUIRED_ACKS: i16 = 21;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// Routes a decoded request to its handler.
pub(super) async fn answer(ctx: &KafkaContext, peer: &PeerInfo, parsed: Parsed) -> Answer {
    let Parsed {
        version,
        header,
        request,
        ..
    } = parsed;
    let client_id = header.client_id.map(|c| c.to_string()).unwrap_or_default();
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(
            ApiVersionsResponse::default().with_api_keys(supported_apis()),
        ),
        RequestKind::Metadata(r) => metadata(ctx, peer, r).await,
        RequestKind::Produce(r) => return produce(ctx, peer, r).await,
        RequestKind::Fetch(r) => fetch(ctx, peer, r).await,
        RequestKind::ListOffsets(r) => list_offsets(ctx, peer, r).await,
        RequestKind::CreateTopics(r) => create_topics(ctx, peer, r).await,
        RequestKind::DeleteTopics(r) => delete_topics(ctx, peer, r).await,
        RequestKind::DescribeConfigs(r) => describe_configs(ctx, peer, r).await,
        RequestKind::DescribeCluster(_) => describe_cluster(ctx),
        RequestKind::InitProducerId(r) => init_producer_id(ctx, r),
        RequestKind::FindCoordinator(r) => find_coordinator(ctx, peer, r).await,
        RequestKind::JoinGroup(r) => join_group(ctx, peer, r, version, client_id).await,
        RequestKind::SyncGroup(r) => sync_group(ctx, peer, r).await,
        RequestKind::Heartbeat(r) => heartbeat(ctx, peer, r).await,
        RequestKind::LeaveGroup(r) => leave_group(ctx, peer, r).await,
        RequestKind::OffsetCommit(r) => offset_commit(ctx, peer, r).await,
        RequestKind::OffsetFetch(r) => offset_fetch(ctx, peer, r).await,
        RequestKind::ListGroups(r) => list_groups(ctx, r),
        RequestKind::DescribeGroups(r) => describe_groups(ctx, peer, r).await,
        other => return Err(format!("{other:?} is not implemented")),
    };
    Ok(Some(response))
}

/// `host:port` of a broker's Kafka listener.
fn kafka_endpoint(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
    ))
}

fn broker_id(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

async fn metadata(ctx: &KafkaContext, peer: &PeerInfo, r: MetadataRequest) -> ResponseKind {
    // Null asks for every topic; an empty list for none (only brokers).
    let wanted: Option<Vec<String>> = r.topics.map(|ts| {
        ts.into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect()
    });
    let none_wanted = wanted.as_ref().is_some_and(Vec::is_empty);
    let names = wanted.clone().unwrap_or_default();
    let answered = ctx
        .service
        .metadata(request(
            peer,
            proto::MetadataRequest {
                topics: names.clone(),
            },
        ))
        .await;
    let mut response = MetadataResponse::default()
        .with_cluster_id(Some(s(format!("meridian-{}", ctx.node.identity().region))));
    let meta = match answered {
        Ok(m) => m.into_inner(),
        Err(status) => {
            let code = status_code(&status, TOPIC_AUTHORIZATION_FAILED);
            response.topics = names
                .into_iter()
                .map(|n| {
                    MetadataResponseTopic::default()
                        .with_name(Some(topic(n)))
                        .with_error_code(code)
                })
                .collect();
            return ResponseKind::Metadata(response);
        }
    };
    response.controller_id = broker_id(meta.controller_id);
    response.brokers = meta
        .brokers
        .iter()
        .filter_map(|b| {
            let (host, port) = kafka_endpoint(&b.kafka_addr)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(broker_id(b.id))
                    .with_host(s(host))
                    .with_port(port)
                    .with_rack(Some(s(b.region.clone()))),
            )
        })
        .collect();
    if none_wanted {
        return ResponseKind::Metadata(response);
    }
    response.topics = meta
        .topics
        .into_iter()
        .map(|t| {
            let internal = t.name.starts_with("_meridian.");
            MetadataResponseTopic::default()
                .with_name(Some(topic(t.name)))
                .with_error_code(t.error_code as i16)
                .with_is_internal(internal)
                .with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            let leader = if p.leader == 0 {
                                BrokerId(-1)
                            } else {
                                broker_id(p.leader)
                            };
                            let code = if p.error_code == 0 && p.leader == 0 {
                                ErrorCode::LeaderNotAvailable as i16
                            } else {
                                p.error_code as i16
                            };
                            MetadataResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_error_code(code)
                                .with_leader_id(leader)
                                .with_leader_epoch(p.leader_epoch)
                                .with_replica_nodes(p.replicas.into_iter().map(broker_id).collect())
                                .with_isr_nodes(p.isr.into_iter().map(broker_id).collect())
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::Metadata(response)
}

async fn produce(ctx: &KafkaContext, peer: &PeerInfo, r: ProduceRequest) -> Answer {
    let acks = match r.acks {
        0 => Some(proto::Acks::None),
        1 => Some(proto::Acks::Leader),
        -1 => Some(proto::Acks::All),
        _ => None,
    };
    let refuse = |code: i16, message: Option<String>| {
        ResponseKind::Produce(
            ProduceResponse::default().with_responses(
                r.topic_data
                    .iter()
                    .map(|t| {
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_partition_responses(
                                t.partition_data
                                    .iter()
                                    .map(|p| {
                                        PartitionProduceResponse::default()
                                            .with_index(p.index)
                                            .with_error_code(code)
                                            .with_base_offset(-1)
                                            .with_error_message(message.clone().map(s))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        )
    };
    if r.transactional_id.is_some() {
        return Ok(Some(refuse(
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            Some("transactions are not supported; use an idempotent producer".into()),
        )));
    }
    let Some(acks) = acks else {
        return Ok(Some(refuse(
            INVALID_REQUIRED_ACKS,
            Some(format!("acks={} is not 0, 1 or -1", r.acks)),
        )));
    };
    let grpc = proto::ProduceRequest {
        topics: r
            .topic_data
            .iter()
            .map(|t| proto::TopicRecords {
                topic: t.name.0.to_string(),
                partitions: t
                    .partition_data
                    .iter()
                    .map(|p| proto::PartitionRecords {
                        partition: p.index,
                        records: p.records.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        acks: acks.into(),
        timeout_ms: u32::try_from(r.timeout_ms).unwrap_or(0),
        keep_offsets: false,
    };
    let answered = ctx.service.produce(request(peer, grpc)).await;
    if acks == proto::Acks::None {
        return Ok(None);
    }
    let response = match answered {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Ok(Some(refuse(
                status_code(&status, TOPIC_AUTHORIZATION_FAILED),
                Some(status.message().to_string()),
            )));
        }
    };
    Ok(Some(ResponseKind::Produce(
        ProduceResponse::default().with_responses(
            response
                .topics
                .into_iter()
                .map(|t| {
                    TopicProduceResponse::default()
                        .with_name(topic(t.topic))
                        .with_partition_responses(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    PartitionProduceResponse::default()
                                        .with_index(p.partition)
                                        .with_error_code(p.error_code as i16)
                                        .with_base_offset(if p.error_code == 0 {
                                            p.base_offset
                                        } else {
                                            -1
                                        })
                                        .with_log_append_time_ms(-1)
                                        .with_log_start_offset(p.log_start_offset)
                                        .with_error_message(
                                            (!p.error_message.is_empty())
                                                .then(|| s(p.error_message)),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    )))
}

async fn fetch(ctx: &KafkaContext, peer: &PeerInfo, r: FetchRequest) -> ResponseKind {
    let grpc = proto::FetchRequest {
        topics: r
            .topics
            .iter()
            .map(|t| proto::FetchTopic {
                topic: t.topic.0.to_string(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| proto::FetchPartition {
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes,
                    })
                    .collect(),
            })
            .collect(),
        max_wait_ms: u32::try_from(r.max_wait_ms).unwrap_or(0),
        min_bytes: r.min_bytes,
        max_bytes: r.max_bytes,
        replica_id: None,
        leader_epoch: -1,
    };
    let answered = ctx.service.fetch(request(peer, grpc)).await;
    let responses = match answered {
        Ok(response) => response
            .into_inner()
            .topics
            .into_iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(topic(t.topic))
                    .with_partitions(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(p.error_code as i16)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.high_watermark)
                                    .with_log_start_offset(p.log_start_offset)
                                    .with_aborted_transactions(Some(Vec::new()))
                                    .with_preferred_read_replica(BrokerId(-1))
                                    .with_records(Some(p.records))
                            })
                            .collect(),
                    )
            })
            .collect(),
        Err(status) => {
            let code = status_code(&status, TOPIC_AUTHORIZATION_FAILED);
            r.topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(t.topic.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(code)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                        .with_preferred_read_replica(BrokerId(-1))
                                        .with_records(Some(Bytes::new()))
                                })
                                .collect(),
                        )
                })
                .collect()
        }
    };
    ResponseKind::Fetch(FetchResponse::default().with_responses(responses))
}

async fn list_offsets(ctx: &KafkaContext, peer: &PeerInfo, r: ListOffsetsRequest) -> ResponseKind {
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let name = t.name.0.to_string();
        // One service call per distinct timestamp asked for in this topic.
        let mut by_timestamp: BTreeMap<i64, Vec<i32>> = BTreeMap::new();
        for p in &t.partitions {
            by_timestamp
                .entry(p.timestamp)
                .or_default()
                .push(p.partition_index);
        }
        let mut found: BTreeMap<(i64, i32), ListOffsetsPartitionResponse> = BTreeMap::new();
        for (timestamp, partitions) in by_timestamp {
            let answered = ctx
                .service
                .list_offsets(request(
                    peer,
                    proto::ListOffsetsRequest {
                        topic: name.clone(),
                        partitions: partitions.clone(),
                        timestamp,
                    },
                ))
                .await;
            match answered {
                Ok(response) => {
                    for o in response.into_inner().partitions {
                        found.insert(
                            (timestamp, o.partition),
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(o.partition)
                                .with_error_code(o.error_code as i16)
                                .with_offset(o.offset)
                                .with_timestamp(o.timestamp)
                                .with_leader_epoch(-1),
                        );
                    }
                }
                Err(status) => {
                    let code = status_code(&status, TOPIC_AUTHORIZATION_FAILED);
                    for p in partitions {
                        found.insert(
                            (timestamp, p),
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                                .with_offset(-1)
                                .with_timestamp(-1),
                        );
                    }
                }
            }
        }
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                found
                    .remove(&(p.timestamp, p.partition_index))
                    .unwrap_or_else(|| {
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(ErrorCode::UnknownTopicOrPartition as i16)
                            .with_offset(-1)
                            .with_timestamp(-1)
                    })
            })
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
}

async fn create_topics(
    ctx: &KafkaContext,
    peer: &PeerInfo,
    r: CreateTopicsRequest,
) -> ResponseKind {
    let specs: Vec<proto::TopicSpec> = r
        .topics
        .iter()
        .map(|t| proto::TopicSpec {
            name: t.name.0.to_string(),
            partitions: t.num_partitions.max(0),
            replication_factor: i32::from(t.replication_factor).max(0),
            configs: t
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect(),
        })
        .collect();
    let answered = ctx
        .service
        .create_topics(request(
            peer,
            proto::CreateTopicsRequest {
                topics: specs,
                validate_only: r.validate_only,
            },
        ))
        .await;
    let results: Vec<CreatableTopicResult> = match answered {
        Ok(response) => response
            .into_inner()
            .results
            .into_iter()
            .map(|res| {
                let asked = r.topics.iter().find(|t| t.name.0.as_str() == res.name);
                CreatableTopicResult::default()
                    .with_name(topic(res.name.clone()))
                    .with_error_code(res.error_code as i16)
                    .with_error_message(
                        (!res.error_message.is_empty()).then(|| s(res.error_message)),
                    )
                    .with_num_partitions(asked.map_or(-1, |t| t.num_partitions))
                    .with_replication_factor(asked.map_or(-1, |t| t.replication_factor))
            })
            .collect(),
        Err(status) => r
            .topics
            .iter()
            .map(|t| {
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(status_code(&status, TOPIC_AUTHORIZATION_FAILED))
                    .with_error_message(Some(s(status.message())))
            })
            .collect(),
    };
    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
}

async fn delete_topics(
    ctx: &KafkaContext,
    peer: &PeerInfo,
    r: DeleteTopicsRequest,
) -> ResponseKind {
    let names: Vec<String> = r.topic_names.iter().map(|n| n.0.to_string()).collect();
    let answered = ctx
        .service
        .delete_topics(request(
            peer,
            proto::DeleteTopicsRequest {
                names: names.clone(),
            },
        ))
        .await;
    let responses = match answered {
        Ok(response) => response
            .into_inner()
            .results
            .into_iter()
            .map(|res| {
                DeletableTopicResult::default()
                    .with_name(Some(topic(res.name)))
                    .with_error_code(res.error_code as i16)
                    .with_error_message(
                        (!res.error_message.is_empty()).then(|| s(res.error_message)),
                    )
            })
            .collect(),
        Err(status) => names
            .into_iter()
            .map(|n| {
                DeletableTopicResult::default()
                    .with_name(Some(topic(n)))
                    .with_error_code(status_code(&status, TOPIC_AUTHORIZATION_FAILED))
            })
            .collect(),
    };
    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
}

/// Kafka's config source for a topic's own override.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;

async fn describe_configs(
    ctx: &KafkaContext,
    peer: &PeerInfo,
    r: DescribeConfigsRequest,
) -> ResponseKind {
    const TOPIC: i8 = 2;
    let mut results = Vec::with_capacity(r.resources.len());
    for resource in r.resources {
        let name = resource.resource_name.to_string();
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        if resource.resource_type == TOPIC {
            let answered = ctx
                .service
                .metadata(request(
                    peer,
                    proto::MetadataRequest {
                        topics: vec![name.clone()],
                    },
                ))
                .await;
            match answered.map(|m| m.into_inner().topics.into_iter().find(|t| t.name == name)) {
                Ok(Some(t)) if t.error_code == 0 => {
                    let keys: Option<Vec<String>> = resource
                        .configuration_keys
                        .map(|k| k.iter().map(|k| k.to_string()).collect());
                    result.configs = t
                        .configs
                        .into_iter()
                        .filter(|(k, _)| keys.as_ref().is_none_or(|keys| keys.contains(k)))
                        .map(|(k, v)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(s(k))
                                .with_value(Some(s(v)))
                                .with_config_source(DYNAMIC_TOPIC_CONFIG)
                        })
                        .collect();
                }
                Ok(Some(t)) => {
                    result.error_code = t.error_code as i16;
                    result.error_message = Some(s(t.error_message));
                }
                Ok(None) => result.error_code = ErrorCode::UnknownTopicOrPartition as i16,
                Err(status) => {
                    result.error_code = status_code(&status, TOPIC_AUTHORIZATION_FAILED);
                    result.error_message = Some(s(status.message()));
                }
            }
        }
        results.push(result);
    }
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}

fn describe_cluster(ctx: &KafkaContext) -> ResponseKind {
    let state = ctx.node.cluster();
    let brokers = state
        .brokers
        .values()
        .filter_map(|b| {
            let (host, port) = kafka_endpoint(b.kafka_addr.as_deref()?)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(broker_id(b.id))
                    .with_host(s(host))
                    .with_port(port)
                    .with_is_fenced(b.fenced),
            )
        })
        .collect();
    let controller = ctx.node.controller_id().map_or(BrokerId(-1), broker_id);
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(s(format!("meridian-{}", ctx.node.identity().region)))
            .with_controller_id(controller)
            .with_endpoint_type(1)
            .with_brokers(brokers),
    )
}

fn init_producer_id(ctx: &KafkaContext, r: InitProducerIdRequest) -> ResponseKind {
    let mut response = InitProducerIdResponse::default();
    if r.transactional_id.is_some() {
        response.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
        return ResponseKind::InitProducerId(response);
    }
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 {
        // A producer re-initialising (after a fatal sequence error): same id, next epoch.
        response.producer_id = r.producer_id;
        response.producer_epoch = r.producer_epoch.saturating_add(1);
    } else {
        response.producer_id = ProducerId(ctx.node.new_producer_id());
        response.producer_epoch = 0;
    }
    ResponseKind::InitProducerId(response)
}

async fn find_coordinator(
    ctx: &KafkaContext,
    peer: &PeerInfo,
    r: FindCoordinatorRequest,
) -> ResponseKind {
    let mut response = FindCoordinatorResponse::default().with_node_id(BrokerId(-1));
    if r.key_type != 0 {
        response.error_code = ErrorCode::CoordinatorNotAvailable as i16;
        response.error_message = Some(s("transactions are not supported"));
        return ResponseKind::FindCoordinator(response);
    }
    let answered = ctx
        .service
        .find_coordinator(request(
            peer,
            proto::FindCoordinatorRequest {
                group: r.key.to_string(),
            },
        ))
        .await;
    match answered.map(|r| r.into_inner()) {
        Ok(found) if found.error_code == 0 => {
            let endpoint = ctx
                .node
                .cluster()
                .brokers
                .get(&found.broker_id)
                .and_then(|b| kafka_endpoint(b.kafka_addr.as_deref()?));
            match endpoint {
                Some((host, port)) => {
                    response.node_id = broker_id(found.broker_id);
                    response.host = s(host);
                    response.port = port;
                }
                None => {
                    response.error_code = ErrorCode::CoordinatorNotAvailable as i16;
                    response.error_message =
                        Some(s("the group's coordinator has no Kafka listener"));
                }
            }
        }
        Ok(found) => {
            response.error_code = found.error_code as i16;
            response.error_message = Some(s(found.error_message));
        }
        Err(status) => {
            response.error_code = status_code(&status, GROUP_AUTHORIZATION_FAILED);
            response.error_message = Some(s(status.message()));
        }
    }
    ResponseKind::FindCoordinator(response)
}

async fn join_group(
    ctx: &KafkaContext,
    peer: &PeerInfo,
    r: JoinGroupRequest,
    version: i16,
    client_id: String,
) -> ResponseKind {
    let protocol_type = r.protocol_type.to_string();
    let grpc = proto::JoinGroupRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|i| i.to_string()),
        client_id,
        protocol_type: protocol_type.clone(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| proto::GroupProtocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
        session_timeout_ms: u32::try_from(r.session_timeout_ms).unwrap_or(0),
        // JoinGroup v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: u32::try_from(if version == 0 {
            r.session_timeout_ms
        } else {
            r.rebalance_timeout_ms
        })
        .unwrap_or(0),
        // KIP-394 (v4+): a new member first gets MEMBER_ID_REQUIRED with its id.
        require_known_member_id: version >= 4,
    };
    let mut response = JoinGroupResponse::default().with_generation_id(-1);
    match ctx
        .service
        .join_group(request(peer, grpc))
        .await
        .map(|r| r.into_inner())
    {
        Ok(joined) => {
            response.error_code = joined.error_code as i16;
            response.generation_id = joined.generation_id;
            response.protocol_type = Some(s(protocol_type));
            response.protocol_name = Some(s(joined.protocol_name));
            response.leader = s(joined.leader);
            response.member_id = s(joined.member_id);
            response.members = joined
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(s))
                        .with_metadata(m.metadata)
                })
                .collect();
        }
        Err(status) => response.error_code = status_code(&status, GROUP_AUTHORIZATION_FAILED),
    }
    ResponseKind::JoinGroup(response)
}

async fn sync_group(ctx: &KafkaContext, peer: &PeerInfo, r: SyncGroupRequest) -> ResponseKind {
    let grpc = proto::SyncGroupRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|i| i.to_string()),
        generation_id: r.generation_id,
        assignments: r
            .assignments
            .into_iter()
            .map(|a| proto::MemberAssignment {
                member_id: a.member_id.to_string(),
                assignment: a.assignment,
            })
            .collect(),
    };
    let mut response = SyncGroupResponse::default()
        .with_protocol_type(r.protocol_type)
        .with_protocol_name(r.protocol_name);
    match ctx
        .service
        .sync_group(request(peer, grpc))
        .await
        .map(|r| r.into_inner())
    {
        Ok(synced) => {
            response.error_code = synced.error_code as i16;
            response.assignment = synced.assignment;
        }
        Err(status) => response.error_code = status_code(&status, GROUP_AUTHORIZATION_FAILED),
    }
    ResponseKind::SyncGroup(response)
}

async fn heartbeat(ctx: &KafkaContext, peer: &PeerInfo, r: HeartbeatRequest) -> ResponseKind {
    let grpc = proto::GroupHeartbeatRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|i| i.to_string()),
        generation_id: r.generation_id,
    };
    let code = match ctx.service.group_heartbeat(request(peer, grpc)).await {
        Ok(answer) => answer.into_inner().error_code as i16,
        Err(status) => status_code(&status, GROUP_AUTHORIZATION_FAILED),
    };
    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code))
}

async fn leave_group(ctx: &KafkaContext, peer: &PeerInfo, r: LeaveGroupRequest) -> ResponseKind {
    // v0-2 name one member; v3+ a list (static members by instance id).
    let members: Vec<(String, Option<String>)> = if r.members.is_empty() {
        vec![(r.member_id.to_string(), None)]
    } else {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    };
    let mut response = LeaveGroupResponse::default();
    for (member_id, group_instance_id) in members {
        let grpc = proto::LeaveGroupRequest {
            group: r.group_id.0.to_string(),
            member_id: member_id.clone(),
            group_instance_id: group_instance_id.clone(),
        };
        let code = match ctx.service.leave_group(request(peer, grpc)).await {
            Ok(answer) => answer.into_inner().error_code as i16,
            Err(status) => status_code(&status, GROUP_AUTHORIZATION_FAILED),
        };
        if matches!(
            ErrorCode::from_i32(i32::from(code)),
            ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable
        ) || code == GROUP_AUTHORIZATION_FAILED
        {
            response.error_code = code;
        }
        response.members.push(
            MemberResponse::default()
                .with_member_id(s(member_id))
                .with_group_instance_id(group_instance_id.map(s))
                .with_error_code(code),
        );
    }
    if r.members.is_empty() {
        response.error_code = response.members.first().map_or(0, |m| m.error_code);
        response.members.clear();
    }
    ResponseKind::LeaveGroup(response)
}

async fn offset_commit(
    ctx: &KafkaContext,
    peer: &PeerInfo,
    r: OffsetCommitRequest,
) -> ResponseKind {
    let grpc = proto::OffsetCommitRequest {
        group: r.group_id.0.to_string(),
        offsets: r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| proto::CommittedOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    ..Default::default()
                })
            })
            .collect(),
        member_id: r.member_id.to_string(),
        generation_id: (r.generation_id_or_member_epoch >= 0)
            .then_some(r.generation_id_or_member_epoch),
        group_instance_id: r.group_instance_id.map(|i| i.to_string()),
    };
    let answered = ctx.service.offset_commit(request(peer, grpc)).await;
    let codes: BTreeMap<(String, i32), i16> = match &answered {
        Ok(response) => response
            .get_ref()
            .offsets
            .iter()
            .map(|o| ((o.topic.clone(), o.partition), o.error_code as i16))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    let failed = answered
        .err()
        .map(|status| status_code(&status, GROUP_AUTHORIZATION_FAILED));
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            OffsetCommitResponseTopic::default()
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = failed.unwrap_or_else(|| {
                                codes
                                    .get(&(name.clone(), p.partition_index))
                                    .copied()
                                    .unwrap_or(0)
                            });
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
                .with_name(t.name)
        })
        .collect();
    ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
}

async fn offset_fetch(ctx: &KafkaContext, peer: &PeerInfo, r: OffsetFetchRequest) -> ResponseKind {
    let wanted: Option<Vec<(String, Vec<i32>)>> = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let names = wanted
        .as_ref()
        .map(|w| w.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let answered = ctx
        .service
        .offset_fetch(request(
            peer,
            proto::OffsetFetchRequest {
                group: r.group_id.0.to_string(),
                topics: names,
            },
        ))
        .await;
    let committed: Vec<proto::CommittedOffset> = match answered {
        Ok(response) => response.into_inner().offsets,
        Err(status) => {
            return ResponseKind::OffsetFetch(
                OffsetFetchResponse::default()
                    .with_error_code(status_code(&status, GROUP_AUTHORIZATION_FAILED)),
            );
        }
    };
    let mut by_topic: BTreeMap<String, BTreeMap<i32, (i64, String)>> = BTreeMap::new();
    for o in committed {
        by_topic
            .entry(o.topic)
            .or_default()
            .insert(o.partition, (o.offset, o.metadata));
    }
    // Every partition asked for is answered; one never committed reads -1.
    let asked: Vec<(String, Vec<i32>)> = match wanted {
        Some(w) => w,
        None => by_topic
            .iter()
            .map(|(t, parts)| (t.clone(), parts.keys().copied().collect()))
            .collect(),
    };
    let topics = asked
        .into_iter()
        .map(|(name, partitions)| {
            let stored = by_topic.get(&name);
            OffsetFetchResponseTopic::default()
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            let (offset, metadata) = stored
                                .and_then(|s| s.get(&p))
                                .cloned()
                                .unwrap_or((-1, String::new()));
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(-1)
                                .with_metadata(Some(s(metadata)))
                        })
                        .collect(),
                )
                .with_name(topic(name))
        })
        .collect();
    ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_topics(topics))
}

fn list_groups(ctx: &KafkaContext, r: ListGroupsRequest) -> ResponseKind {
    let states: Vec<String> = r.states_filter.iter().map(|s| s.to_string()).collect();
    let mut listed: BTreeMap<String, (String, String)> = ctx
        .groups
        .list(&[])
        .into_iter()
        .map(|g| (g.group_id, (g.protocol_type, g.state.as_str().to_string())))
        .collect();
    // Groups with committed offsets and no members, that this broker coordinates.
    for group in ctx.node.cluster().group_offsets.keys() {
        if !listed.contains_key(group) && ctx.node.check_coordinator(group).is_ok() {
            listed.insert(group.clone(), ("consumer".into(), "Empty".into()));
        }
    }
    let groups = listed
        .into_iter()
        .filter(|(_, (_, state))| states.is_empty() || states.contains(state))
        .map(|(id, (protocol_type, state))| {
            ListedGroup::default()
                .with_group_id(GroupId(s(id)))
                .with_protocol_type(s(protocol_type))
                .with_group_state(s(state))
        })
        .collect();
    ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(groups))
}

async fn describe_groups(
    ctx: &KafkaContext,
    peer: &PeerInfo,
    r: DescribeGroupsRequest,
) -> ResponseKind {
    let mut groups = Vec::with_capacity(r.groups.len());
    for id in r.groups {
        let name = id.0.to_string();
        let mut described = DescribedGroup::default().with_group_id(id);
        if !ctx
            .service
            .may_access(peer, certs::Action::GroupRead, &name)
        {
            described.error_code = GROUP_AUTHORIZATION_FAILED;
        } else if let Err(err) = ctx.node.check_coordinator(&name) {
            described.error_code = err.code() as i16;
        } else {
            let d = ctx.groups.describe(&name);
            described.group_state = s(d.state.as_str());
            described.protocol_type = s(d.protocol_type);
            described.protocol_data = s(d.protocol_name);
            described.members = d
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(s))
                        .with_client_id(s(m.client_id))
                        .with_client_host(s(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
        }
        groups.push(described);
    }
    ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
}
