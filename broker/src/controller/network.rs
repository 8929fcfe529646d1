//! Raft traffic over tonic: the client side (`NetworkFactory`, one `PeerClient` per
//! target) and the server side (`RaftService`). openraft's messages travel as
//! serde_json inside a `RaftPayload`; the answer carries openraft's own `Result`, so a
//! remote Raft error reaches the local Raft unchanged. A peer that cannot be reached (or
//! whose controller is stopped) is reported as `Unreachable`, which makes openraft back
//! off instead of hammering it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::TypeConfig;
use crate::controller_proto::controller_api_client::ControllerApiClient;
use crate::controller_proto::controller_raft_client::ControllerRaftClient;
use crate::controller_proto::{RaftPayload, controller_raft_server};

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest Raft message accepted (a snapshot of a large region's metadata).
const MAX_MESSAGE: usize = 64 << 20;

/// A transport failure, as an error type openraft can wrap.
#[derive(Debug, thiserror::Error)]
#[error("controller peer {addr}: {reason}")]
pub(crate) struct TransportError {
    addr: String,
    reason: String,
}

/// Lazily connected channels to peers, shared by Raft replication and request
/// forwarding, so each peer costs one HTTP/2 connection.
#[derive(Clone, Default)]
pub(crate) struct Channels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    pub(crate) fn get(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock().expect("channels lock poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel =
            crate::transport::channel(addr, crate::transport::node_client_tls(), CONNECT_TIMEOUT)
                .map_err(|e| TransportError {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn api(&self, addr: &str) -> Result<ControllerApiClient<Channel>, TransportError> {
        Ok(ControllerApiClient::new(self.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    fn raft(&self, addr: &str) -> Result<ControllerRaftClient<Channel>, TransportError> {
        Ok(ControllerRaftClient::new(self.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

/// Makes a `PeerClient` per replication target.
pub struct NetworkFactory {
    pub(crate) channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// Sends one peer's Raft messages.
pub struct PeerClient {
    target: u64,
    addr: String,
    channels: Channels,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Install,
    Full,
}

/// A whole snapshot in one message.
#[derive(Serialize, Deserialize)]
struct FullSnapshot {
    vote: Vote<u64>,
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

enum CallError {
    Unreachable(TransportError),
    Network(TransportError),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<u64, BasicNode, E> {
        match self {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig, Fatal<u64>> {
        match self {
            CallError::Unreachable(e) => StreamingError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => StreamingError::Network(NetworkError::new(&e)),
        }
    }
}

impl PeerClient {
    fn error(&self, reason: impl ToString) -> TransportError {
        TransportError {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    async fn call<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        rpc: Rpc,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let payload = serde_json::to_vec(request)
            .map_err(|e| CallError::Network(self.error(format!("encode: {e}"))))?;
        let mut client = self
            .channels
            .raft(&self.addr)
            .map_err(CallError::Unreachable)?;
        let mut request = Request::new(RaftPayload {
            payload: payload.into(),
        });
        request.set_timeout(ttl);
        let response = tokio::time::timeout(ttl, async {
            match rpc {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::Install => client.install_snapshot(request).await,
                Rpc::Full => client.full_snapshot(request).await,
            }
        })
        .await
        .map_err(|_| CallError::Network(self.error(format!("no answer within {ttl:?}"))))?
        .map_err(|status| CallError::Unreachable(self.error(status.message())))?;
        serde_json::from_slice(&response.into_inner().payload)
            .map_err(|e| CallError::Network(self.error(format!("decode: {e}"))))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let answer: Result<AppendEntriesResponse<u64>, RaftError<u64>> = self
            .call(Rpc::Append, &rpc, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let answer: Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> =
            self.call(Rpc::Install, &rpc, option.hard_ttl())
                .await
                .map_err(CallError::into_rpc)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let answer: Result<VoteResponse<u64>, RaftError<u64>> = self
            .call(Rpc::Vote, &rpc, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let message = FullSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let answer: Result<SnapshotResponse<u64>, Fatal<u64>> = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = self.call(Rpc::Full, &message, option.hard_ttl()) => {
                answer.map_err(CallError::into_streaming)?
            }
        };
        answer.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// Serves Raft messages to the local Raft node.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft<TypeConfig>,
}

impl RaftService {
    pub(crate) fn new(raft: Raft<TypeConfig>) -> Self {
        Self { raft }
    }

    /// The tonic server wrapper, with limits raised for snapshots.
    pub(crate) fn into_server(self) -> controller_raft_server::ControllerRaftServer<Self> {
        controller_raft_server::ControllerRaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

fn decode<T: for<'de> Deserialize<'de>>(request: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable controller message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|payload| {
            Response::new(RaftPayload {
                payload: payload.into(),
            })
        })
        .map_err(|e| Status::internal(format!("cannot encode controller message: {e}")))
}

/// A stopped Raft node answers like an absent one, so peers back off.
fn stopped<E>(result: &Result<impl Sized, RaftError<u64, E>>) -> Option<Status> {
    match result {
        Err(RaftError::Fatal(fatal)) => Some(Status::unavailable(format!(
            "the controller on this broker is stopped: {fatal}"
        ))),
        _ => None,
    }
}

#[tonic::async_trait]
impl controller_raft_server::ControllerRaft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        let result = self.raft.append_entries(rpc).await;
        if let Some(status) = stopped(&result) {
            return Err(status);
        }
        encode(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<u64> = decode(request)?;
        let result = self.raft.vote(rpc).await;
        if let Some(status) = stopped(&result) {
            return Err(status);
        }
        encode(&result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        let result = self.raft.install_snapshot(rpc).await;
        if let Some(status) = stopped(&result) {
            return Err(status);
        }
        encode(&result)
    }

    async fn full_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let message: FullSnapshot = decode(request)?;
        let snapshot = Snapshot {
            meta: message.meta,
            snapshot: Box::new(std::io::Cursor::new(message.data)),
        };
        let result = self
            .raft
            .install_full_snapshot(message.vote, snapshot)
            .await;
        if let Err(fatal) = &result {
            return Err(Status::unavailable(format!(
                "the controller on this broker is stopped: {fatal}"
            )));
        }
        encode(&result)
    }
}
