//! The Kafka wire protocol: real Kafka clients (kcat, librdkafka, kafka-python, the Java
//! client) talk to a Meridian broker on its `kafka` address, unchanged.
//!
//! ```text
//!  TCP (+TLS) ─▶ frame::split_frame ─▶ parse (kafka-protocol types) ─▶ apis::* ─┐
//!                                                                             │
//!      the same BrokerService the gRPC listener serves (authorization, long   │
//!      polls, acks=all, leader checks) and the same group coordinator ◀──────┘
//! ```
//!
//! This module is a translation shell: every request becomes the equivalent call on
//! [`crate::server::BrokerService`] (or [`crate::group::shell::GroupShell`]) with the
//! connection's verified identity attached, so topics, offsets, groups and ACLs are the
//! same whether a client speaks gRPC or Kafka. Stored RecordBatch v2 bytes go out as
//! they are. Requests on one connection are answered in order, one at a time (as Kafka
//! does). ApiVersions advertises exactly the versions below; anything else (unknown API
//! key, unsupported version, undecodable request, bad frame length) closes the
//! connection, never the broker.

mod apis;
pub mod frame;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::group::shell::GroupShell;
use crate::node::BrokerNode;
use crate::server::BrokerService;
use crate::transport::PeerInfo;

pub use frame::{MAX_FRAME_BYTES, split_frame};

/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// The APIs and versions this listener implements: what ApiVersions advertises, so a
/// client never sends a request it would be refused.
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 8),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 9),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 0, 5),
    (ApiKey::DeleteTopics, 0, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::DescribeCluster, 0, 1),
];

/// The ApiVersions list.
pub fn supported_apis() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(api, min, max)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

fn supports(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(a, min, max)| *a == api && (*min..=*max).contains(&version))
}

/// A decoded request.
#[derive(Debug)]
pub struct Parsed {
    /// Its API.
    pub api: ApiKey,
    /// Its version.
    pub version: i16,
    /// Its header (correlation id, client id).
    pub header: RequestHeader,
    /// Its body.
    pub request: RequestKind,
}

/// What to do with one frame.
#[derive(Debug)]
pub enum Outcome {
    /// Write this response frame.
    Respond(Bytes),
    /// Write nothing (a produce with acks=0 gets no response, as in Kafka).
    Silent,
    /// Close the connection, for this reason (logged).
    Close(String),
}

/// Decodes a request frame, or says why the connection must close. Pure: the fuzz
/// tests drive it with arbitrary bytes. An ApiVersions request of a version this
/// broker does not know is answered (v0, UNSUPPORTED_VERSION, our versions) so the
/// client can retry with one it shares, as Kafka does.
pub fn parse(mut body: Bytes) -> Result<Parsed, Outcome> {
    if body.len() < 8 {
        return Err(Outcome::Close(format!(
            "request of {} bytes has no header",
            body.len()
        )));
    }
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    let api =
        ApiKey::try_from(key).map_err(|_| Outcome::Close(format!("unknown api key {key}")))?;
    if !supports(api, version) {
        if api == ApiKey::ApiVersions {
            let response = ResponseKind::ApiVersions(
                ApiVersionsResponse::default()
                    .with_error_code(UNSUPPORTED_VERSION)
                    .with_api_keys(supported_apis()),
            );
            return Err(
                match frame::encode_response(api, 0, correlation_id, &response) {
                    Ok(bytes) => Outcome::Respond(bytes),
                    Err(e) => Outcome::Close(e),
                },
            );
        }
        return Err(Outcome::Close(format!(
            "{api:?} v{version} is not supported (ApiVersions lists what is)"
        )));
    }
    let header = RequestHeader::decode(&mut body, api.request_header_version(version))
        .map_err(|e| Outcome::Close(format!("bad {api:?} request header: {e}")))?;
    let request = RequestKind::decode(api, &mut body, version)
        .map_err(|e| Outcome::Close(format!("bad {api:?} v{version} request: {e}")))?;
    Ok(Parsed {
        api,
        version,
        header,
        request,
    })
}

/// What every connection shares: the broker's service, node and group coordinator.
#[derive(Clone)]
pub struct KafkaContext {
    service: BrokerService,
    node: Arc<BrokerNode>,
    groups: Arc<GroupShell>,
}

impl std::fmt::Debug for KafkaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaContext").finish_non_exhaustive()
    }
}

impl KafkaContext {
    /// Serves Kafka clients with the same service (and its access rules) as gRPC.
    pub fn new(service: BrokerService, node: Arc<BrokerNode>) -> Self {
        let groups = service.groups();
        KafkaContext {
            service,
            node,
            groups,
        }
    }
}

/// Answers one frame.
pub async fn handle(ctx: &KafkaContext, peer: &PeerInfo, body: Bytes) -> Outcome {
    let parsed = match parse(body) {
        Ok(parsed) => parsed,
        Err(outcome) => return outcome,
    };
    let (api, version, correlation_id) = (parsed.api, parsed.version, parsed.header.correlation_id);
    match apis::answer(ctx, peer, parsed).await {
        Ok(Some(response)) => match frame::encode_response(api, version, correlation_id, &response)
        {
            Ok(bytes) => Outcome::Respond(bytes),
            Err(e) => Outcome::Close(e),
        },
        Ok(None) => Outcome::Silent,
        Err(reason) => Outcome::Close(reason),
    }
}

/// Serves one connection until the peer closes it or sends garbage.
pub async fn serve_connection<S>(mut stream: S, ctx: KafkaContext, peer: PeerInfo)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let who = peer
        .remote
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            let body = match split_frame(&mut buf) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(err) => {
                    tracing::info!(peer = %who, %err, "closing kafka connection");
                    return;
                }
            };
            match handle(&ctx, &peer, body).await {
                Outcome::Respond(out) => {
                    if let Err(err) = stream.write_all(&out).await {
                        tracing::debug!(peer = %who, %err, "kafka connection write failed");
                        return;
                    }
                }
                Outcome::Silent => {}
                Outcome::Close(reason) => {
                    tracing::info!(peer = %who, %reason, "closing kafka connection");
                    return;
                }
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(peer = %who, %err, "kafka connection read failed");
                return;
            }
        }
    }
}

/// Accepts Kafka connections on `addr` (TLS per `security`, as the gRPC listener does)
/// until the task is aborted, one task per connection.
pub async fn run_listener(
    addr: SocketAddr,
    security: crate::transport::ListenerSecurity,
    tls: Option<Arc<rustls::ServerConfig>>,
    ctx: KafkaContext,
) -> Result<(), crate::BrokerError> {
    use tokio_stream::StreamExt;
    use tonic::transport::server::Connected;
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| crate::BrokerError::Unreachable {
                addr: addr.to_string(),
                reason: format!("cannot listen for Kafka clients: {e}"),
            })?;
    tracing::info!(%addr, ?security, "kafka listener up");
    let mut incoming = crate::transport::incoming(listener, security, tls);
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(conn) => {
                let peer = conn.connect_info();
                let ctx = ctx.clone();
                tokio::spawn(serve_connection(conn, ctx, peer));
            }
            Err(err) => tracing::debug!(%err, "kafka connection refused"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
