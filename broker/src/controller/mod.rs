//! The in-region controller quorum: the region's metadata (brokers, topics, configs,
//! partition assignment, leaders, leader epochs, ISRs) replicated with Raft (openraft 0.9).
//!
//! ```text
//!   broker ──handle.propose(cmd)──▶ local Raft? ──no──▶ ControllerApi.Propose ──▶ leader
//!                                        │yes                                     │
//!                                        ▼                                        ▼
//!   voters (controller_quorum) ◀──ControllerRaft (append/vote/snapshot)── Raft leader
//!   learners (other brokers)  ◀──┘       every node applies the log to ClusterState
//!   handle.state(): watch<Arc<ClusterState>>, updated on every node as entries apply
//!   liveness: brokers heartbeat the leader (in memory); a silent one is fenced (FenceBroker)
//! ```
//!
//! Voters are the region's `controller_quorum`; every other broker joins as a Raft
//! learner (KRaft style), so each broker holds a replicated copy of the metadata and
//! answers Metadata from it. Node id = broker id; a node's address is its broker gRPC
//! address, where the broker mounts [`ControllerHandle::services`]. The voter with the
//! lowest id initialises the cluster on first start (idempotent on restart); the leader
//! adds learners (configured ones and any broker that registers).
//!
//! Files: `state` (the deterministic state machine, election and assignment rules),
//! `store` (sled log + state machine), `network` (tonic Raft transport), `liveness`
//! (heartbeat bookkeeping), this file (start-up, the handle, the client API service).

mod liveness;
mod network;
mod state;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

pub use liveness::Liveness;
pub use network::{NetworkFactory, PeerClient, RaftService};
pub use state::{
    Applied, BrokerRecord, ClusterState, Command, CommandResult, GroupOffset, PartitionState,
    Rejection, TopicState, UNCLEAN_LEADER_ELECTION, assign_replicas,
};
pub use store::{LogStore, SnapshotBuilder, StateMachine};

use crate::controller_proto::{self as pb, controller_api_server, controller_raft_server};
use crate::error::{BrokerError, Result};
use network::Channels;

openraft::declare_raft_types!(
    /// openraft's type parameters for the controller: commands in, outcomes out,
    /// broker ids as node ids, the broker's gRPC address as the node.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A controller node: a broker id and the gRPC address its controller services live on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Broker id (the Raft node id).
    pub id: u64,
    /// `host:port` of the broker's gRPC listener.
    pub addr: String,
}

impl From<&topology::BrokerView> for Peer {
    fn from(b: &topology::BrokerView) -> Self {
        Peer {
            id: b.id,
            addr: b.grpc_addr.to_string(),
        }
    }
}

/// Everything a controller node needs to start. Build with [`ControllerConfig::new`]
/// (production defaults), adjust the timing fields if needed, and let
/// [`Controller::start`] validate it.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This broker's id; must be among `voters` or `learners`.
    pub node_id: u64,
    /// Region name, for logs and errors.
    pub region: String,
    /// Directory of the controller's own sled db (`<data_dir>/controller/`).
    pub dir: PathBuf,
    /// The region's controller quorum.
    pub voters: Vec<Peer>,
    /// Every other broker of the region (each keeps a replicated copy as a learner).
    pub learners: Vec<Peer>,
    /// A broker silent this long is fenced. Default 6 s.
    pub session_timeout: Duration,
    /// How often a broker heartbeats the controller. Default `session_timeout / 3`.
    pub broker_heartbeat_interval: Duration,
    /// Raft leader heartbeat. Default 100 ms.
    pub raft_heartbeat: Duration,
    /// Raft election timeout range. Default 400–800 ms. openraft starts an election
    /// only after the leader lease (the maximum) plus a random timeout in the range, so a
    /// dead controller is replaced 1.2–1.6 s after its last heartbeat: within the 2 s
    /// failover budget.
    pub election_timeout: (Duration, Duration),
    /// How long a broker whose attachment streams ended (its process died) may take to
    /// attach again before it is fenced (a live broker re-attaches within about 100 ms).
    /// Default 300 ms.
    pub attach_grace: Duration,
    /// Bound on `propose`/`heartbeat` before they fail with "no leader". Default 5 s.
    pub request_timeout: Duration,
    /// Take a snapshot (and purge the log) after this many entries. Default 1000.
    pub snapshot_every: u64,
    /// How often the active controller checks for partitions led away from their
    /// preferred replica and moves them back (zero: never). Default 30 s.
    pub leader_rebalance_interval: Duration,
}

/// Kafka's `leader.imbalance.per.broker.percentage`: rebalance once a broker leads fewer
/// than 90 % of the partitions it is the preferred replica of.
const LEADER_IMBALANCE_THRESHOLD: f64 = 0.10;

impl ControllerConfig {
    /// Production defaults for the given node, region, directory and members.
    pub fn new(
        node_id: u64,
        region: impl Into<String>,
        dir: impl Into<PathBuf>,
        voters: Vec<Peer>,
        learners: Vec<Peer>,
    ) -> Self {
        let session_timeout = Duration::from_secs(6);
        Self {
            node_id,
            region: region.into(),
            dir: dir.into(),
            voters,
            learners,
            session_timeout,
            broker_heartbeat_interval: session_timeout / 3,
            raft_heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
            attach_grace: Duration::from_millis(300),
            request_timeout: Duration::from_secs(5),
            snapshot_every: 1000,
            leader_rebalance_interval: Duration::from_secs(30),
        }
    }

    /// The production config of a broker from its resolved topology view: voters are
    /// the region's `controller_quorum`, every other broker of the region is a learner,
    /// and the store lives in `<data_dir>/controller/` (apart from the broker's own
    /// metadata db). Fails for a mirror node (it has no broker id or data dir).
    pub fn for_node(view: &topology::NodeView) -> Result<Self> {
        let (Some(id), Some(data_dir)) = (view.broker_id, view.data_dir.as_ref()) else {
            return Err(BrokerError::InvalidControllerConfig {
                field: "node_id",
                reason: format!(
                    "{}/{} is not a broker; only brokers run a controller node",
                    view.region, view.name
                ),
            });
        };
        let voters: Vec<Peer> = view.controller_quorum.iter().map(Peer::from).collect();
        let learners = view
            .region_brokers
            .iter()
            .filter(|b| !voters.iter().any(|v| v.id == b.id))
            .map(Peer::from)
            .collect();
        Ok(Self::new(
            id,
            view.region.clone(),
            data_dir.join("controller"),
            voters,
            learners,
        ))
    }

    /// Checks the rules across fields; consumes and returns the config.
    pub fn validate(self) -> Result<Self> {
        let bad = |field: &'static str, reason: String| {
            Err(BrokerError::InvalidControllerConfig { field, reason })
        };
        if self.voters.is_empty() {
            return bad(
                "voters",
                "the controller quorum is empty; list 1, 3 or 5 brokers in controller_quorum"
                    .into(),
            );
        }
        let mut ids = BTreeSet::new();
        for peer in self.voters.iter().chain(&self.learners) {
            if !ids.insert(peer.id) {
                return bad(
                    "voters",
                    format!(
                        "broker id {} is listed twice among voters and learners",
                        peer.id
                    ),
                );
            }
            if peer.addr.is_empty() {
                return bad("voters", format!("broker {} has no address", peer.id));
            }
        }
        if !ids.contains(&self.node_id) {
            return bad(
                "node_id",
                format!(
                    "broker {} is neither a voter nor a learner of region {}",
                    self.node_id, self.region
                ),
            );
        }
        if self.session_timeout.is_zero() {
            return bad("session_timeout", "must be above zero".into());
        }
        if self.broker_heartbeat_interval.is_zero()
            || self.broker_heartbeat_interval >= self.session_timeout
        {
            return bad(
                "broker_heartbeat_interval",
                format!(
                    "{:?} must be above zero and below session_timeout ({:?})",
                    self.broker_heartbeat_interval, self.session_timeout
                ),
            );
        }
        let (min, max) = self.election_timeout;
        if self.raft_heartbeat.is_zero() || min <= self.raft_heartbeat || max <= min {
            return bad(
                "election_timeout",
                format!(
                    "need 0 < raft_heartbeat ({:?}) < election min ({min:?}) < election max ({max:?})",
                    self.raft_heartbeat
                ),
            );
        }
        if self.request_timeout < max {
            return bad(
                "request_timeout",
                format!(
                    "{:?} must be at least the election timeout max ({max:?}) so a proposal can outlive an election",
                    self.request_timeout
                ),
            );
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every", "must be at least 1".into());
        }
        Ok(self)
    }

    fn raft_config(&self) -> Result<openraft::Config> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: format!("meridian-{}", self.region),
            heartbeat_interval: ms(self.raft_heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            install_snapshot_timeout: ms(self.request_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_every,
            ..Default::default()
        }
        .validate()
        .map_err(|e| BrokerError::InvalidControllerConfig {
            field: "election_timeout",
            reason: e.to_string(),
        })
    }
}

/// Starts controller nodes.
pub struct Controller;

impl Controller {
    /// Opens the store under `config.dir`, starts the Raft node and its background tasks,
    /// and bootstraps the cluster if this is the lowest voter and it is uninitialised.
    /// The caller must mount [`ControllerHandle::services`] on the broker's gRPC server.
    pub async fn start(config: ControllerConfig) -> Result<ControllerHandle> {
        let config = config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let db = store::open_db(&config.dir).await?;
        let log_store = LogStore::open(&db)?;
        let (state_machine, state_rx) = StateMachine::open(&db)?;
        drop(db);
        let channels = Channels::default();
        let network = NetworkFactory {
            channels: channels.clone(),
        };
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| BrokerError::Controller {
            reason: format!("cannot start the Raft node: {e}"),
        })?;
        let inner = Arc::new(Inner {
            config,
            raft,
            state_rx,
            channels,
            liveness: Mutex::new(Liveness::default()),
            tasks: Mutex::new(Vec::new()),
            heartbeats: Mutex::new(None),
            closing: watch::channel(false).0,
            my_epoch: AtomicI64::new(0),
        });
        inner.bootstrap().await?;
        let task = tokio::spawn(Inner::run_active_controller(inner.clone()));
        inner.tasks.lock().expect("tasks lock poisoned").push(task);
        tracing::info!(
            node = inner.config.node_id,
            region = %inner.config.region,
            voters = inner.config.voters.len(),
            learners = inner.config.learners.len(),
            "controller started"
        );
        Ok(ControllerHandle { inner })
    }
}

impl BrokerRegistration {
    /// The registration of the broker a topology view describes, if it is a broker.
    pub fn for_node(view: &topology::NodeView) -> Option<Self> {
        Some(Self {
            id: view.broker_id?,
            name: view.name.clone(),
            region: view.region.clone(),
            grpc_addr: view.grpc_addr?.to_string(),
            kafka_addr: view.kafka_addr.map(|a| a.to_string()),
        })
    }
}

/// Who a broker is, as it registers with the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    /// Broker id.
    pub id: u64,
    /// Name in the region.
    pub name: String,
    /// Region.
    pub region: String,
    /// gRPC address.
    pub grpc_addr: String,
    /// Kafka address, if any.
    pub kafka_addr: Option<String>,
}

/// What the controller answered to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The broker's current epoch (its registration).
    pub broker_epoch: i64,
    /// Whether the broker is fenced (it should not lead anything).
    pub fenced: bool,
}

/// A snapshot of the controller node's Raft view, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerMetrics {
    /// This node.
    pub node_id: u64,
    /// Current Raft term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Whether this node is the active controller.
    pub is_leader: bool,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Last index applied to this node's `ClusterState`.
    pub last_applied_index: Option<u64>,
    /// Last index covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Log entries up to this index were purged (only a snapshot can replace them).
    pub purged_index: Option<u64>,
    /// Voter ids in the current membership.
    pub voters: Vec<u64>,
    /// Learner ids in the current membership.
    pub learners: Vec<u64>,
}

/// The broker's handle on its controller node. Cheap to clone.
#[derive(Clone)]
pub struct ControllerHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ControllerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerHandle")
            .field("node_id", &self.inner.config.node_id)
            .field("region", &self.inner.config.region)
            .finish()
    }
}

impl ControllerHandle {
    /// The last applied metadata; every node (voter or learner) updates it as entries
    /// apply, and it keeps serving the last copy when the quorum is lost.
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.state_rx.clone()
    }

    /// The current copy of the metadata.
    pub fn current(&self) -> Arc<ClusterState> {
        self.inner.state_rx.borrow().clone()
    }

    /// Commits a command through the Raft leader (forwarding if this node is not it) and
    /// returns its outcome. Fails within `request_timeout` with
    /// [`BrokerError::ControllerUnavailable`] when no leader can commit it.
    pub async fn propose(&self, command: Command) -> Result<Applied> {
        match self.inner.route(Call::Propose(command)).await? {
            Answer::Propose(result) => result.map_err(into_broker_error),
            Answer::Heartbeat(_) => Err(BrokerError::Controller {
                reason: "a proposal was answered as a heartbeat".into(),
            }),
        }
    }

    /// Sends one heartbeat for this node's own broker to the active controller, which
    /// registers or unfences it as needed. The handle remembers the broker epoch it was
    /// given, so `broker.id` must be this node's id.
    pub async fn heartbeat(&self, broker: &BrokerRegistration) -> Result<HeartbeatReply> {
        if broker.id != self.inner.config.node_id {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "controller node {} can only heartbeat for its own broker, not broker {}",
                    self.inner.config.node_id, broker.id
                ),
            });
        }
        let epoch = self.inner.my_epoch.load(Ordering::Relaxed);
        match self
            .inner
            .route(Call::Heartbeat(broker.clone(), epoch))
            .await?
        {
            Answer::Heartbeat(reply) => {
                self.inner
                    .my_epoch
                    .store(reply.broker_epoch, Ordering::Relaxed);
                Ok(reply)
            }
            Answer::Propose(_) => Err(BrokerError::Controller {
                reason: "a heartbeat was answered as a proposal".into(),
            }),
        }
    }

    /// Heartbeats for `broker` every `broker_heartbeat_interval` until
    /// [`Self::stop_heartbeats`], [`Self::controlled_shutdown`] or [`Self::shutdown`].
    pub fn start_heartbeats(&self, broker: BrokerRegistration) {
        let handle = self.clone();
        let every = self.inner.config.broker_heartbeat_interval;
        let task = tokio::spawn(async move {
            let attachment = tokio::spawn(hold_attachment(handle.inner.clone()));
            let _stop_attachment = AbortOnDrop(attachment);
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(err) = handle.heartbeat(&broker).await {
                    tracing::warn!(broker = broker.id, %err, "controller heartbeat failed");
                }
            }
        });
        if let Some(old) = self
            .inner
            .heartbeats
            .lock()
            .expect("heartbeats lock poisoned")
            .replace(task)
        {
            old.abort();
        }
    }

    /// Stops the heartbeat task: the controller fences this broker after its session.
    pub fn stop_heartbeats(&self) {
        if let Some(task) = self
            .inner
            .heartbeats
            .lock()
            .expect("heartbeats lock poisoned")
            .take()
        {
            task.abort();
        }
    }

    /// Before the broker stops: stops heartbeating and has the controller move this
    /// broker's leaderships away (and fence it), so clients fail over before the exit.
    pub async fn controlled_shutdown(&self) -> Result<()> {
        self.stop_heartbeats();
        self.propose(Command::ControlledShutdown {
            broker_id: self.inner.config.node_id,
        })
        .await
        .map(|_| ())
    }

    /// Gossip declared broker `name` of this region down: the active controller fences it
    /// at once instead of waiting out its session timeout, so its partitions get new
    /// leaders sooner. Elsewhere (or for a broker already fenced, or unknown) a no-op.
    /// A wrong hint heals itself: a live broker's next heartbeat unfences it.
    pub async fn fence_on_gossip_hint(&self, name: &str) -> Result<bool> {
        if !self.is_leader() {
            return Ok(false);
        }
        let state = self.current();
        let Some(broker) = state.brokers.values().find(|b| b.name == name && !b.fenced) else {
            return Ok(false);
        };
        let id = broker.id;
        tracing::warn!(broker = id, name, region = %self.inner.config.region, "fencing broker: gossip declared it down (before its session timeout)");
        self.propose(Command::FenceBroker { id }).await?;
        Ok(true)
    }

    /// Whether this node is the active controller (Raft leader) right now.
    pub fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }

    /// The node's Raft view.
    pub fn metrics(&self) -> ControllerMetrics {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        ControllerMetrics {
            node_id: m.id,
            term: m.current_term,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|id| id.index),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// The two tonic services to mount on the broker's gRPC server: Raft traffic and
    /// the client API (propose, heartbeat, state).
    pub fn services(
        &self,
    ) -> (
        controller_raft_server::ControllerRaftServer<RaftService>,
        controller_api_server::ControllerApiServer<ApiService>,
    ) {
        (
            RaftService::new(self.inner.raft.clone()).into_server(),
            controller_api_server::ControllerApiServer::new(ApiService {
                inner: self.inner.clone(),
            })
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
        )
    }

    /// Ends the attachment streams other brokers hold to this node, so that the gRPC
    /// server can stop gracefully (call it when the broker starts shutting down).
    pub fn close_attachments(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Stops heartbeats, background tasks and the Raft node; `state()` receivers keep
    /// the last applied copy. The store is released once openraft's tasks have ended.
    pub async fn shutdown(&self) -> Result<()> {
        self.close_attachments();
        self.stop_heartbeats();
        for task in self
            .inner
            .tasks
            .lock()
            .expect("tasks lock poisoned")
            .drain(..)
        {
            task.abort();
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| BrokerError::Controller {
                reason: format!("the Raft node did not stop cleanly: {e}"),
            })?;
        tracing::info!(node = self.inner.config.node_id, "controller stopped");
        Ok(())
    }
}

fn into_broker_error(rejection: Rejection) -> BrokerError {
    match rejection {
        Rejection::TopicExists(topic) => BrokerError::TopicExists { topic },
        Rejection::UnknownTopic(topic) => BrokerError::UnknownTopic { topic },
        Rejection::ReplicationFactor {
            requested,
            available,
        } => BrokerError::InvalidReplicationFactor {
            requested: i32::from(requested),
            available: i32::try_from(available).unwrap_or(i32::MAX),
        },
        Rejection::StaleLeaderEpoch {
            topic,
            partition,
            leader_id,
            given,
            current,
            ..
        } => BrokerError::StaleLeaderEpoch {
            topic,
            partition,
            leader_id,
            given,
            current,
        },
        Rejection::StaleBrokerEpoch { id, given, current } => BrokerError::StaleBrokerEpoch {
            broker: id,
            given,
            current,
        },
        other @ (Rejection::UnknownPartition { .. }
        | Rejection::UnknownBroker(_)
        | Rejection::Invalid(_)) => BrokerError::ControllerRejected {
            reason: other.to_string(),
        },
    }
}

/// A request that must reach the active controller.
#[derive(Debug, Clone)]
enum Call {
    Propose(Command),
    Heartbeat(BrokerRegistration, i64),
}

/// Its answer.
#[derive(Debug, Clone)]
enum Answer {
    Propose(CommandResult),
    Heartbeat(HeartbeatReply),
}

/// Where a request ended up.
enum Routed {
    Answer(Answer),
    NotLeader(Option<(u64, String)>),
}

struct Inner {
    config: ControllerConfig,
    raft: Raft<TypeConfig>,
    state_rx: watch::Receiver<Arc<ClusterState>>,
    channels: Channels,
    liveness: Mutex<Liveness>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    heartbeats: Mutex<Option<JoinHandle<()>>>,
    my_epoch: AtomicI64,
    /// Set when the node stops: attachment streams end, so the gRPC server's graceful
    /// shutdown is not held open by them.
    closing: watch::Sender<bool>,
}

impl Inner {
    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    fn leader_hint(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    async fn bootstrap(&self) -> Result<()> {
        let lowest = self.config.voters.iter().map(|p| p.id).min();
        if lowest != Some(self.config.node_id) {
            return Ok(());
        }
        let initialized =
            self.raft
                .is_initialized()
                .await
                .map_err(|e| BrokerError::Controller {
                    reason: format!("the Raft node stopped during start-up: {e}"),
                })?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = self
            .config
            .voters
            .iter()
            .map(|p| (p.id, BasicNode::new(&p.addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(region = %self.config.region, "controller quorum initialised");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(err) => Err(BrokerError::Controller {
                reason: format!("cannot initialise the controller quorum: {err}"),
            }),
        }
    }

    /// Sends a request to the active controller: locally if this node leads, else to
    /// the leader it knows of, following hints until `request_timeout`.
    async fn route(&self, call: Call) -> Result<Answer> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut target: Option<(u64, String)> = None;
        // With no leader hint, ask the voters in turn: a learner that has not been added
        // yet knows no leader, but any voter does (or will, after the election).
        let others: Vec<(u64, String)> = self
            .config
            .voters
            .iter()
            .filter(|p| p.id != self.config.node_id)
            .map(|p| (p.id, p.addr.clone()))
            .collect();
        let mut turn = 0usize;
        let mut next_voter = || {
            turn += 1;
            // Every (len + 1)-th turn asks this node itself.
            others.get(turn % (others.len() + 1)).cloned()
        };
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(self.no_leader().await);
            }
            let attempt = async {
                match &target {
                    None => self.call_local(&call).await,
                    Some((_, addr)) => self.call_remote(addr, &call).await,
                }
            };
            let routed = match tokio::time::timeout(remaining, attempt).await {
                Err(_) => return Err(self.no_leader().await),
                Ok(routed) => routed,
            };
            match routed {
                Ok(Routed::Answer(answer)) => return Ok(answer),
                Ok(Routed::NotLeader(Some(hint)))
                    if hint.0 != self.config.node_id && Some(&hint) != target.as_ref() =>
                {
                    target = Some(hint);
                }
                Ok(Routed::NotLeader(_)) => {
                    target = next_voter();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => {
                    tracing::debug!(%err, "controller request failed; retrying");
                    target = next_voter();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn call_local(&self, call: &Call) -> Result<Routed> {
        match call {
            Call::Propose(command) => self.propose_local(command.clone()).await,
            Call::Heartbeat(broker, epoch) => self.heartbeat_local(broker, *epoch).await,
        }
    }

    async fn propose_local(&self, command: Command) -> Result<Routed> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(Routed::Answer(Answer::Propose(response.data))),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Ok(
                Routed::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr))),
            ),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(BrokerError::Controller {
                    reason: e.to_string(),
                })
            }
            Err(RaftError::Fatal(fatal)) => Err(BrokerError::Controller {
                reason: format!("the controller on this broker is stopped: {fatal}"),
            }),
        }
    }

    async fn heartbeat_local(&self, broker: &BrokerRegistration, epoch: i64) -> Result<Routed> {
        if !self.is_leader() {
            return Ok(Routed::NotLeader(self.leader_hint()));
        }
        self.liveness
            .lock()
            .expect("liveness lock poisoned")
            .observe(broker.id, Instant::now());
        let current = self.state_rx.borrow().brokers.get(&broker.id).cloned();
        let command = match current {
            Some(record)
                if record.epoch == epoch
                    && record.grpc_addr == broker.grpc_addr
                    && record.kafka_addr == broker.kafka_addr
                    && record.name == broker.name =>
            {
                if !record.fenced {
                    return Ok(Routed::Answer(Answer::Heartbeat(HeartbeatReply {
                        broker_epoch: record.epoch,
                        fenced: false,
                    })));
                }
                tracing::info!(broker = broker.id, "unfencing broker: it heartbeats again");
                Command::UnfenceBroker {
                    id: broker.id,
                    epoch,
                }
            }
            _ => {
                tracing::info!(broker = broker.id, name = %broker.name, "registering broker");
                Command::RegisterBroker {
                    id: broker.id,
                    name: broker.name.clone(),
                    region: broker.region.clone(),
                    grpc_addr: broker.grpc_addr.clone(),
                    kafka_addr: broker.kafka_addr.clone(),
                }
            }
        };
        match self.propose_local(command).await? {
            Routed::Answer(Answer::Propose(Ok(Applied::Registered { epoch }))) => {
                Ok(Routed::Answer(Answer::Heartbeat(HeartbeatReply {
                    broker_epoch: epoch,
                    fenced: false,
                })))
            }
            Routed::Answer(Answer::Propose(Ok(_))) => {
                Ok(Routed::Answer(Answer::Heartbeat(HeartbeatReply {
                    broker_epoch: epoch,
                    fenced: false,
                })))
            }
            // The broker re-registered meanwhile: start over with epoch 0 next time.
            Routed::Answer(Answer::Propose(Err(Rejection::StaleBrokerEpoch { .. }))) => {
                Ok(Routed::Answer(Answer::Heartbeat(HeartbeatReply {
                    broker_epoch: 0,
                    fenced: true,
                })))
            }
            Routed::Answer(Answer::Propose(Err(rejection))) => Err(into_broker_error(rejection)),
            other => Ok(other),
        }
    }

    async fn call_remote(&self, addr: &str, call: &Call) -> Result<Routed> {
        let unreachable = |reason: String| BrokerError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let mut client = self
            .channels
            .api(addr)
            .map_err(|e| unreachable(e.to_string()))?;
        match call {
            Call::Propose(command) => {
                let command = serde_json::to_vec(command).map_err(|e| BrokerError::Controller {
                    reason: format!("cannot encode command: {e}"),
                })?;
                let response = client
                    .propose(pb::ProposeRequest {
                        command: command.into(),
                    })
                    .await
                    .map_err(|s| unreachable(s.message().to_owned()))?
                    .into_inner();
                match pb::Outcome::try_from(response.outcome) {
                    Ok(pb::Outcome::NotLeader) => Ok(Routed::NotLeader(hint(response.leader))),
                    Ok(pb::Outcome::Applied) => {
                        let applied: Applied = decode_json(&response.result)?;
                        Ok(Routed::Answer(Answer::Propose(Ok(applied))))
                    }
                    Ok(pb::Outcome::Rejected) => {
                        let rejection: Rejection = decode_json(&response.result)?;
                        Ok(Routed::Answer(Answer::Propose(Err(rejection))))
                    }
                    Err(_) => Err(BrokerError::Controller {
                        reason: format!("unknown propose outcome {}", response.outcome),
                    }),
                }
            }
            Call::Heartbeat(broker, epoch) => {
                let response = client
                    .heartbeat(pb::HeartbeatRequest {
                        broker_id: broker.id,
                        broker_epoch: *epoch,
                        name: broker.name.clone(),
                        region: broker.region.clone(),
                        grpc_addr: broker.grpc_addr.clone(),
                        kafka_addr: broker.kafka_addr.clone().unwrap_or_default(),
                    })
                    .await
                    .map_err(|s| unreachable(s.message().to_owned()))?
                    .into_inner();
                match pb::Outcome::try_from(response.outcome) {
                    Ok(pb::Outcome::NotLeader) => Ok(Routed::NotLeader(hint(response.leader))),
                    Ok(pb::Outcome::Applied) => {
                        Ok(Routed::Answer(Answer::Heartbeat(HeartbeatReply {
                            broker_epoch: response.broker_epoch,
                            fenced: response.fenced,
                        })))
                    }
                    _ => Err(BrokerError::ControllerRejected {
                        reason: response.rejection,
                    }),
                }
            }
        }
    }

    /// The "no leader" error, with how many voters answer a ping right now.
    async fn no_leader(&self) -> BrokerError {
        let probes = self.config.voters.iter().map(|peer| async move {
            if peer.id == self.config.node_id {
                return true;
            }
            let Ok(mut client) = self.channels.api(&peer.addr) else {
                return false;
            };
            matches!(
                tokio::time::timeout(Duration::from_millis(300), client.ping(pb::PingRequest {}))
                    .await,
                Ok(Ok(_))
            )
        });
        let reachable = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        let err = BrokerError::ControllerUnavailable {
            region: self.config.region.clone(),
            reachable,
            voters: self.config.voters.len(),
        };
        tracing::warn!(node = self.config.node_id, %err, "controller request failed");
        err
    }

    /// The active controller's duties, on every node but acted on only by the leader:
    /// fence brokers that missed their session, and add brokers as Raft learners.
    async fn run_active_controller(self: Arc<Self>) {
        let tick = (self.config.session_timeout / 5)
            .min(self.config.attach_grace / 5)
            .max(Duration::from_millis(20));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        let mut next_rebalance_check = Instant::now() + self.config.leader_rebalance_interval;
        loop {
            ticker.tick().await;
            let leader = self.is_leader();
            let state = self.state_rx.borrow().clone();
            let expired = {
                let mut liveness = self.liveness.lock().expect("liveness lock poisoned");
                if !leader {
                    if was_leader {
                        liveness.clear();
                    }
                    was_leader = false;
                    continue;
                }
                if !was_leader {
                    liveness.reset(&state, Instant::now());
                    tracing::info!(node = self.config.node_id, region = %self.config.region, "became the active controller");
                }
                was_leader = true;
                let now = Instant::now();
                let disconnected = liveness.disconnected(&state, now, self.config.attach_grace);
                for id in &disconnected {
                    tracing::warn!(broker = id, grace = ?self.config.attach_grace, "fencing broker: its connection to the controller closed and it did not attach again (process gone)");
                }
                let mut expired = liveness.expired(&state, now, self.config.session_timeout);
                for id in &expired {
                    tracing::warn!(broker = id, session_timeout = ?self.config.session_timeout, "fencing broker: missed its session timeout");
                }
                expired.extend(disconnected);
                expired.sort_unstable();
                expired.dedup();
                expired
            };
            for id in expired {
                let fenced = tokio::time::timeout(
                    self.config.request_timeout,
                    self.propose_local(Command::FenceBroker { id }),
                )
                .await;
                if !matches!(fenced, Ok(Ok(Routed::Answer(_)))) {
                    tracing::warn!(broker = id, "could not fence broker; will retry");
                }
            }
            self.add_learners(&state).await;
            if !self.config.leader_rebalance_interval.is_zero()
                && Instant::now() >= next_rebalance_check
            {
                next_rebalance_check = Instant::now() + self.config.leader_rebalance_interval;
                self.rebalance_leaders(&state).await;
            }
        }
    }

    /// Moves leaderships back to preferred replicas when the imbalance passes Kafka's
    /// threshold (a broker that returned after a failure leads nothing until then).
    async fn rebalance_leaders(&self, state: &ClusterState) {
        if !state.leader_imbalance_exceeds(LEADER_IMBALANCE_THRESHOLD) {
            return;
        }
        tracing::info!(region = %self.config.region, "moving leaderships back to preferred replicas");
        let elected = tokio::time::timeout(
            self.config.request_timeout,
            self.propose_local(Command::ElectLeaders { topics: None }),
        )
        .await;
        if !matches!(elected, Ok(Ok(Routed::Answer(_)))) {
            tracing::warn!(region = %self.config.region, "could not move leaderships back to preferred replicas; will retry");
        }
    }

    async fn add_learners(&self, state: &ClusterState) {
        let known: BTreeSet<u64> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let wanted = self
            .config
            .learners
            .iter()
            .map(|p| (p.id, p.addr.clone()))
            .chain(state.brokers.values().map(|b| (b.id, b.grpc_addr.clone())))
            .filter(|(id, addr)| !known.contains(id) && !addr.is_empty())
            .collect::<BTreeMap<_, _>>();
        for (id, addr) in wanted {
            let added = tokio::time::timeout(
                self.config.request_timeout,
                self.raft.add_learner(id, BasicNode::new(&addr), false),
            )
            .await;
            match added {
                Ok(Ok(_)) => tracing::info!(learner = id, %addr, "added controller learner"),
                Ok(Err(err)) => tracing::debug!(learner = id, %err, "could not add learner yet"),
                Err(_) => tracing::debug!(learner = id, "adding learner timed out"),
            }
        }
    }
}

fn hint(leader: Option<pb::LeaderHint>) -> Option<(u64, String)> {
    leader
        .filter(|h| h.known && !h.leader_addr.is_empty())
        .map(|h| (h.leader_id, h.leader_addr))
}

fn to_hint(hint: Option<(u64, String)>) -> Option<pb::LeaderHint> {
    Some(match hint {
        Some((leader_id, leader_addr)) => pb::LeaderHint {
            known: true,
            leader_id,
            leader_addr,
        },
        None => pb::LeaderHint::default(),
    })
}

fn decode_json<T: for<'de> serde::Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| BrokerError::Controller {
        reason: format!("undecodable controller answer: {e}"),
    })
}

/// The controller's client API (`ControllerApi`), served on every node.
#[derive(Clone)]
pub struct ApiService {
    inner: Arc<Inner>,
}

fn to_status(err: &BrokerError) -> Status {
    crate::server::to_status(err)
}

/// Aborts a task when dropped, so a helper task ends with its owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The broker side of attachment: keeps a stream open to every other controller voter,
/// re-attaching at once when one ends, so that whichever voter leads now or after an
/// election knows when this process dies.
async fn hold_attachment(inner: Arc<Inner>) {
    let me = inner.config.node_id;
    let voters: Vec<(u64, String)> = inner
        .config
        .voters
        .iter()
        .filter(|p| p.id != me)
        .map(|p| (p.id, p.addr.clone()))
        .collect();
    let holds = voters.into_iter().map(|(voter, addr)| {
        let inner = inner.clone();
        async move {
            loop {
                if let Ok(mut client) = inner.channels.api(&addr)
                    && let Ok(response) = client.attach(pb::AttachRequest { broker_id: me }).await
                {
                    tracing::debug!(broker = me, voter, "attached to a controller voter");
                    let mut beats = response.into_inner();
                    while let Ok(Some(_)) = beats.message().await {}
                    tracing::debug!(broker = me, voter, "attachment to a controller voter ended");
                }
                tokio::time::sleep(ATTACH_RETRY).await;
            }
        }
    });
    futures::future::join_all(holds).await;
}

/// Pause between attachment attempts.
const ATTACH_RETRY: Duration = Duration::from_millis(100);
/// How often an attachment stream carries a beat.
const ATTACH_BEAT: Duration = Duration::from_millis(250);

/// Marks a broker attached for as long as its stream lives: tonic drops the stream
/// when the connection closes, and the drop records the detachment.
struct Attachment {
    inner: Arc<Inner>,
    broker: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.inner
            .liveness
            .lock()
            .expect("liveness lock poisoned")
            .detach(self.broker, Instant::now());
    }
}

type AttachStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = std::result::Result<pb::AttachBeat, Status>> + Send>,
>;

#[tonic::async_trait]
impl controller_api_server::ControllerApi for ApiService {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<pb::AttachRequest>,
    ) -> std::result::Result<Response<AttachStream>, Status> {
        let broker = request.into_inner().broker_id;
        self.inner
            .liveness
            .lock()
            .expect("liveness lock poisoned")
            .attach(broker);
        let attachment = Attachment {
            inner: self.inner.clone(),
            broker,
        };
        let closing = self.inner.closing.subscribe();
        let beats = futures::stream::unfold(
            (attachment, closing),
            |(attachment, mut closing)| async move {
                if *closing.borrow() {
                    return None;
                }
                tokio::select! {
                    () = tokio::time::sleep(ATTACH_BEAT) => Some((Ok(pb::AttachBeat {}), (attachment, closing))),
                    _ = closing.changed() => None,
                }
            },
        );
        Ok(Response::new(Box::pin(beats)))
    }

    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> std::result::Result<Response<pb::ProposeResponse>, Status> {
        let command: Command = serde_json::from_slice(&request.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        let routed = self
            .inner
            .propose_local(command)
            .await
            .map_err(|e| to_status(&e))?;
        let encode = |v: serde_json::Result<Vec<u8>>| {
            v.map_err(|e| Status::internal(format!("cannot encode outcome: {e}")))
        };
        let response = match routed {
            Routed::NotLeader(leader) => pb::ProposeResponse {
                outcome: pb::Outcome::NotLeader.into(),
                result: Default::default(),
                leader: to_hint(leader),
            },
            Routed::Answer(Answer::Propose(Ok(applied))) => pb::ProposeResponse {
                outcome: pb::Outcome::Applied.into(),
                result: encode(serde_json::to_vec(&applied))?.into(),
                leader: None,
            },
            Routed::Answer(Answer::Propose(Err(rejection))) => pb::ProposeResponse {
                outcome: pb::Outcome::Rejected.into(),
                result: encode(serde_json::to_vec(&rejection))?.into(),
                leader: None,
            },
            Routed::Answer(Answer::Heartbeat(_)) => {
                return Err(Status::internal("a proposal was answered as a heartbeat"));
            }
        };
        Ok(Response::new(response))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> std::result::Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let broker = BrokerRegistration {
            id: r.broker_id,
            name: r.name,
            region: r.region,
            grpc_addr: r.grpc_addr,
            kafka_addr: (!r.kafka_addr.is_empty()).then_some(r.kafka_addr),
        };
        let response = match self.inner.heartbeat_local(&broker, r.broker_epoch).await {
            Ok(Routed::Answer(Answer::Heartbeat(reply))) => pb::HeartbeatResponse {
                outcome: pb::Outcome::Applied.into(),
                broker_epoch: reply.broker_epoch,
                fenced: reply.fenced,
                ..Default::default()
            },
            Ok(Routed::NotLeader(leader)) => pb::HeartbeatResponse {
                outcome: pb::Outcome::NotLeader.into(),
                leader: to_hint(leader),
                ..Default::default()
            },
            Ok(Routed::Answer(Answer::Propose(_))) => {
                return Err(Status::internal("a heartbeat was answered as a proposal"));
            }
            Err(err) => pb::HeartbeatResponse {
                outcome: pb::Outcome::Rejected.into(),
                rejection: err.to_string(),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn get_state(
        &self,
        _request: Request<pb::GetStateRequest>,
    ) -> std::result::Result<Response<pb::GetStateResponse>, Status> {
        let state = self.inner.state_rx.borrow().clone();
        let bytes = serde_json::to_vec(&*state)
            .map_err(|e| Status::internal(format!("cannot encode state: {e}")))?;
        Ok(Response::new(pb::GetStateResponse {
            state: bytes.into(),
        }))
    }

    async fn ping(
        &self,
        _request: Request<pb::PingRequest>,
    ) -> std::result::Result<Response<pb::PingResponse>, Status> {
        if self.inner.raft.is_initialized().await.is_err() {
            return Err(Status::unavailable(
                "the controller on this broker is stopped",
            ));
        }
        let term = self.inner.raft.metrics().borrow().current_term;
        Ok(Response::new(pb::PingResponse {
            node_id: self.inner.config.node_id,
            term,
            leader: to_hint(self.inner.leader_hint()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(ids: &[u64]) -> Vec<Peer> {
        ids.iter()
            .map(|id| Peer {
                id: *id,
                addr: format!("127.0.0.1:{}", 9000 + id),
            })
            .collect()
    }

    fn config(node: u64) -> ControllerConfig {
        ControllerConfig::new(node, "r", "/tmp/x", peers(&[1, 2, 3]), peers(&[4]))
    }

    #[test]
    fn node_view_makes_the_quorum_voters_and_other_brokers_learners() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/active-active.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        // Shrink us-east's quorum to one voter so b2 and b3 are learners.
        let text = text.replacen(
            r#"controller_quorum = ["b1", "b2", "b3"]"#,
            r#"controller_quorum = ["b1"]"#,
            1,
        );
        let topology = topology::parse(&text, &example).unwrap();
        let view = topology.node("us-east/b3").unwrap();
        let config = ControllerConfig::for_node(&view)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.node_id, 103);
        assert_eq!(
            config.voters.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![101]
        );
        assert_eq!(
            config.learners.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![102, 103]
        );
        assert_eq!(
            config.learners[1..],
            vec![Peer {
                id: 103,
                addr: "127.0.1.3:9090".into()
            }]
        );
        assert!(config.dir.ends_with("data/us-east/b3/controller"));
        let registration = BrokerRegistration::for_node(&view).unwrap();
        assert_eq!(registration.grpc_addr, "127.0.1.3:9090");
        assert_eq!(registration.kafka_addr.as_deref(), Some("127.0.1.3:9092"));
        let mirror = topology.node("us-east/m1").unwrap();
        assert!(ControllerConfig::for_node(&mirror).is_err());
    }

    #[test]
    fn validate_accepts_the_defaults_for_voters_and_learners() {
        assert!(config(1).validate().is_ok());
        assert!(config(4).validate().is_ok());
    }

    #[test]
    fn validate_rejects_a_node_outside_the_region() {
        let err = config(9).validate().unwrap_err();
        assert!(
            matches!(
                err,
                BrokerError::InvalidControllerConfig {
                    field: "node_id",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_an_empty_quorum_and_duplicate_ids() {
        let mut empty = config(4);
        empty.voters.clear();
        assert!(empty.validate().is_err());
        let mut twice = config(1);
        twice.learners = peers(&[3]);
        let err = twice.validate().unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn validate_rejects_election_timeout_not_above_heartbeat() {
        let mut c = config(1);
        c.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
        c.raft_heartbeat = Duration::from_millis(200);
        assert!(c.validate().is_err());
    }

    #[test]
    fn validate_rejects_heartbeats_slower_than_the_session() {
        let mut c = config(1);
        c.broker_heartbeat_interval = c.session_timeout;
        let err = c.validate().unwrap_err();
        assert!(
            matches!(
                err,
                BrokerError::InvalidControllerConfig {
                    field: "broker_heartbeat_interval",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_a_request_timeout_shorter_than_an_election() {
        let mut c = config(1);
        c.request_timeout = Duration::from_millis(500);
        assert!(c.validate().is_err());
    }
}
