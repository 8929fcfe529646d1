//! The state of one running broker: the partitions it hosts, its view of the region's
//! replicated metadata (from the controller), and the operations the API shells call.
//! No sockets here: the gRPC service (and later the Kafka listener) translate requests
//! into these calls.
//!
//! ```text
//!  controller (Raft) ──ClusterState──▶ reconcile ──▶ local partitions (open logs,
//!        ▲                                              │  role: leader / follower
//!        └── propose: CreateTopic, DeleteTopic,         ▼  with a fetcher task)
//!            CommitOffsets, AlterIsr     produce / fetch (leader only; replica
//!                                        fetches from followers, see `replication`)
//! ```
//!
//! A broker takes the leaderships metadata gives it only once this process has
//! registered with the controller (a copy read from disk at start may be stale).
//!
//! The controller's replicated `ClusterState` is the truth for topics, partition
//! placement, leaders and committed group offsets; every broker answers Metadata and
//! OffsetFetch from its own copy. A change proposed here returns only once this
//! broker's copy shows it, so a client reads its own writes from the same broker.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;

use crate::controller::{BrokerRecord, ClusterState, Command, ControllerHandle, TopicState};
use crate::data_dir::DataDir;
use crate::error::{BrokerError, ErrorCode, Result};
use crate::log::{AppendMode, AppendOutcome, PartitionLog};
use crate::partition::Partition;
use crate::replication::RequiredAcks;
use crate::replication::fetcher::{FetchTarget, run_fetcher};
use crate::topic_config::TopicConfig;

/// How long an idempotent batch that overtook an earlier request of its producer waits
/// for it before it is refused as out of sequence.
const SEQUENCE_TURN_WAIT: Duration = Duration::from_millis(500);
/// Longest topic name Kafka allows (so names fit in file names with a partition suffix).
pub const MAX_TOPIC_NAME: usize = 249;

/// How long a change proposed through the controller may take to show in this broker's
/// copy of the metadata before the request fails.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A topic as Metadata and `topic describe` show it.
#[derive(Debug, Clone)]
pub struct TopicView {
    /// Placement, leaders and ISR per partition, and the overrides.
    pub state: TopicState,
    /// The effective configuration (defaults plus overrides).
    pub config: TopicConfig,
}

/// A running broker's state.
pub struct BrokerNode {
    identity: BrokerIdentity,
    data_dir: PathBuf,
    defaults: topology::TopicDefaults,
    _data_dir_claim: DataDir,
    controller: ControllerHandle,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    replica_lag_max: Duration,
    /// The broker epoch this process registered with (`i64::MAX` until it has): the
    /// node takes leaderships only from metadata that shows this registration.
    registered_epoch: std::sync::atomic::AtomicI64,
    /// Serialises reconciles, so that one working from an older metadata copy cannot
    /// undo (close, delete) what a newer one opened.
    reconciling: std::sync::Mutex<()>,
}

impl std::fmt::Debug for BrokerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerNode")
            .field("identity", &self.identity)
            .finish()
    }
}

impl BrokerNode {
    /// A broker over a claimed data directory and a started controller node;
    /// `replica_lag_max` is how long a follower of a partition it leads may go without
    /// catching up before it is dropped from the ISR.
    pub fn new(
        identity: BrokerIdentity,
        data_dir: PathBuf,
        defaults: topology::TopicDefaults,
        claim: DataDir,
        controller: ControllerHandle,
        replica_lag_max: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            identity,
            data_dir,
            defaults,
            _data_dir_claim: claim,
            controller,
            partitions: RwLock::new(HashMap::new()),
            replica_lag_max,
            registered_epoch: std::sync::atomic::AtomicI64::new(i64::MAX),
            reconciling: std::sync::Mutex::new(()),
        })
    }

    /// This process registered with the controller at `broker_epoch`: from now on it
    /// takes the leaderships that metadata showing that registration gives it. Blocking
    /// (reconciles at once).
    pub fn registered(&self, broker_epoch: i64) {
        self.registered_epoch
            .store(broker_epoch, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            broker = self.identity.id,
            broker_epoch,
            "registered with the controller"
        );
        self.reconcile(&self.cluster());
    }

    /// Whether `state` was written after this process registered (so its leaderships
    /// are current, not a copy left on disk from before a restart).
    fn state_is_current(&self, state: &ClusterState) -> bool {
        let registered = self
            .registered_epoch
            .load(std::sync::atomic::Ordering::SeqCst);
        state
            .brokers
            .get(&self.identity.id)
            .is_some_and(|b| b.epoch >= registered)
    }

    /// Who this broker is.
    pub fn identity(&self) -> &BrokerIdentity {
        &self.identity
    }

    /// This broker's controller node.
    pub fn controller(&self) -> &ControllerHandle {
        &self.controller
    }

    /// The region's metadata as this broker last applied it.
    pub fn cluster(&self) -> Arc<ClusterState> {
        self.controller.current()
    }

    /// Whether this broker has joined its cluster (registered and not fenced), so that
    /// it can serve clients.
    pub fn is_ready(&self) -> bool {
        self.cluster()
            .brokers
            .get(&self.identity.id)
            .is_some_and(|b| !b.fenced)
    }

    /// Waits until the broker has joined its cluster, or fails with a retriable error.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let id = self.identity.id;
        self.wait_for_state(timeout, |s| s.brokers.get(&id).is_some_and(|b| !b.fenced))
            .await
            .map_err(|_| BrokerError::Remote {
                code: ErrorCode::LeaderNotAvailable,
                message: format!(
                    "broker {} has not joined the controller quorum of region {} yet",
                    self.identity.name, self.identity.region
                ),
            })
    }

    async fn wait_for_state(
        &self,
        timeout: Duration,
        done: impl Fn(&ClusterState) -> bool,
    ) -> std::result::Result<(), ()> {
        let mut state = self.controller.state();
        let wait = async {
            loop {
                if done(&state.borrow_and_update()) {
                    return;
                }
                if state.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ())
    }

    /// Opens the log of every partition this broker holds a replica of, gives each its
    /// role (leader, or follower with a fetcher) at the current leader epoch, and closes
    /// the ones whose topic was deleted (removing their data). Called on every metadata
    /// change.
    pub fn reconcile(&self, state: &ClusterState) {
        let _serial = self.reconciling.lock().expect("reconcile lock poisoned");
        // Callers may hold an older copy than the latest applied one: use the newest.
        let latest = self.cluster();
        let state: &ClusterState = if latest.applied_index > state.applied_index {
            &latest
        } else {
            state
        };
        let me = self.identity.id;
        let mut wanted = Vec::new();
        for (name, topic) in &state.topics {
            for (index, partition) in topic.partitions.iter().enumerate() {
                if partition.replicas.contains(&me) {
                    wanted.push((name.clone(), index as i32, topic));
                }
            }
        }
        let mut opened = Vec::new();
        {
            let hosted = self.partitions.read().expect("partitions lock poisoned");
            for (name, index, topic) in &wanted {
                if !hosted.contains_key(&(name.clone(), *index)) {
                    opened.push((name.clone(), *index, (*topic).clone()));
                }
            }
        }
        for (name, index, topic) in opened {
            match self.open_partition(&name, index, &topic) {
                Ok(partition) => {
                    self.partitions
                        .write()
                        .expect("partitions lock poisoned")
                        .insert((name, index), partition);
                }
                Err(err) => {
                    tracing::error!(topic = %name, partition = index, %err, "cannot open partition log")
                }
            }
        }
        let now = Instant::now();
        let current = self.state_is_current(state);
        for (name, index, topic) in &wanted {
            let Some(partition) = self.hosted(name, *index) else {
                continue;
            };
            let placement = &topic.partitions[*index as usize];
            let epoch = placement.leader_epoch;
            match placement.leader {
                Some(leader) if leader == me && !current => {
                    tracing::debug!(topic = %name, partition = index, epoch, "not leading before this broker has registered");
                }
                Some(leader) if leader == me => {
                    partition.become_leader(
                        me,
                        epoch,
                        &placement.replicas,
                        &placement.isr,
                        self.replica_lag_max,
                        now,
                    );
                }
                leader => {
                    if partition.become_follower(leader, epoch)
                        && let Some(leader) = leader
                    {
                        match state.brokers.get(&leader) {
                            Some(broker) => {
                                let target = FetchTarget {
                                    replica_id: me,
                                    leader,
                                    leader_addr: broker.grpc_addr.clone(),
                                    epoch,
                                };
                                partition.set_fetcher(tokio::spawn(run_fetcher(
                                    Arc::downgrade(&partition),
                                    target,
                                )));
                            }
                            None => {
                                tracing::error!(topic = %name, partition = index, leader, "the leader is not a registered broker; not fetching")
                            }
                        }
                    }
                }
            }
        }
        let gone: Vec<(String, i32)> = self
            .partitions
            .read()
            .expect("partitions lock poisoned")
            .keys()
            .filter(|(name, index)| !wanted.iter().any(|(n, i, _)| n == name && i == index))
            .cloned()
            .collect();
        for key in gone {
            self.partitions
                .write()
                .expect("partitions lock poisoned")
                .remove(&key);
            let dir = self.data_dir.join(format!("{}-{}", key.0, key.1));
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(topic = %key.0, partition = key.1, "deleted partition data")
                }
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), %err, "cannot remove a deleted partition's data")
                }
            }
        }
    }

    fn open_partition(&self, name: &str, index: i32, topic: &TopicState) -> Result<Arc<Partition>> {
        let config = TopicConfig::from_defaults(&self.defaults).with_overrides(&topic.configs)?;
        let dir = self.data_dir.join(format!("{name}-{index}"));
        let (log, report) = PartitionLog::open(&dir, config.log_config())?;
        if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
            tracing::warn!(
                topic = %name,
                partition = index,
                truncated_bytes = report.truncated_bytes,
                rebuilt_indexes = report.rebuilt_indexes,
                "recovered partition log"
            );
        }
        Ok(Partition::start(
            name,
            index,
            log,
            config.flush,
            usize::try_from(config.min_insync_replicas).unwrap_or(1),
        ))
    }

    /// Creates a topic through the controller; with `validate_only`, only checks it.
    pub async fn create_topic(&self, new: NewTopic, validate_only: bool) -> Result<()> {
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
        let available = self.cluster().available_brokers().len() as i32;
        if replication_factor < 1 || replication_factor > available {
            return Err(BrokerError::InvalidReplicationFactor {
                requested: replication_factor,
                available,
            });
        }
        let config = TopicConfig::from_defaults(&self.defaults).with_overrides(&new.configs)?;
        config.log_config().validate()?;
        if config.min_insync_replicas > replication_factor {
            return Err(BrokerError::InvalidConfig {
                key: "min.insync.replicas".into(),
                value: config.min_insync_replicas.to_string(),
                reason: format!("it is above the replication factor {replication_factor}"),
            });
        }
        if self.cluster().topics.contains_key(&new.name) {
            return Err(BrokerError::TopicExists { topic: new.name });
        }
        if validate_only {
            return Ok(());
        }
        self.controller
            .propose(Command::CreateTopic {
                name: new.name.clone(),
                partitions: partitions as u32,
                replication_factor: replication_factor as u16,
                configs: new.configs,
            })
            .await?;
        let name = new.name.clone();
        self.wait_applied(|s| s.topics.contains_key(&name)).await?;
        tracing::info!(topic = %new.name, partitions, replication_factor, "created topic");
        Ok(())
    }

    async fn wait_applied(&self, done: impl Fn(&ClusterState) -> bool) -> Result<()> {
        self.wait_for_state(APPLY_TIMEOUT, done).await.map_err(|_| BrokerError::Remote {
            code: ErrorCode::RequestTimedOut,
            message: format!(
                "the change was committed but broker {} had not applied it after {APPLY_TIMEOUT:?}",
                self.identity.name
            ),
        })
    }

    /// Deletes a topic (its data on every replica, and its committed offsets).
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        if !self.cluster().topics.contains_key(name) {
            return Err(BrokerError::UnknownTopic {
                topic: name.to_owned(),
            });
        }
        self.controller
            .propose(Command::DeleteTopic {
                name: name.to_owned(),
            })
            .await?;
        self.wait_applied(|s| !s.topics.contains_key(name)).await?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Preferred leader election: leadership goes back to each partition's first
    /// replica where it is available and in the ISR (offline partitions get a leader
    /// from their ISR if one is back). Returns the partitions whose leader changed:
    /// `(topic, partition, previous leader, leader)`.
    pub async fn elect_preferred_leaders(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<Vec<(String, i32, Option<u64>, Option<u64>)>> {
        let before = self.cluster();
        if let Some(names) = &topics
            && let Some(unknown) = names.iter().find(|n| !before.topics.contains_key(*n))
        {
            return Err(BrokerError::UnknownTopic {
                topic: unknown.clone(),
            });
        }
        self.controller
            .propose(Command::ElectLeaders { topics })
            .await?;
        self.read_barrier().await?;
        let after = self.cluster();
        let mut moved = Vec::new();
        for (name, topic) in &after.topics {
            let Some(old) = before.topics.get(name) else {
                continue;
            };
            for (i, p) in topic.partitions.iter().enumerate() {
                let previous = old.partitions.get(i).and_then(|o| o.leader);
                if previous != p.leader {
                    moved.push((name.clone(), i as i32, previous, p.leader));
                }
            }
        }
        for (topic, partition, previous, leader) in &moved {
            tracing::info!(%topic, partition, ?previous, ?leader, "preferred leader elected");
        }
        Ok(moved)
    }

    /// Grows `name` to `partitions` partitions; answers once this broker's copy shows
    /// them (the new ones open wherever they are placed, at offset 0).
    pub async fn create_partitions(&self, name: &str, partitions: i32) -> Result<()> {
        let Some(topic) = self.cluster().topics.get(name).cloned() else {
            return Err(BrokerError::UnknownTopic {
                topic: name.to_owned(),
            });
        };
        let count = u32::try_from(partitions).map_err(|_| BrokerError::InvalidRequest {
            reason: format!("{partitions} is not a partition count"),
        })?;
        if count as usize <= topic.partitions.len() {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "{name} already has {} partitions; a topic can only grow",
                    topic.partitions.len()
                ),
            });
        }
        self.controller
            .propose(Command::CreatePartitions {
                name: name.to_owned(),
                partitions: count,
            })
            .await?;
        self.wait_applied(|s| {
            s.topics
                .get(name)
                .is_some_and(|t| t.partitions.len() >= count as usize)
        })
        .await?;
        tracing::info!(topic = name, partitions, "topic grew");
        Ok(())
    }

    /// Sets per-topic config overrides (an empty value removes one), checked against
    /// the deployment's defaults first so that a bad value is refused, not stored.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        let Some(topic) = self.cluster().topics.get(name).cloned() else {
            return Err(BrokerError::UnknownTopic {
                topic: name.to_owned(),
            });
        };
        let mut merged = topic.configs.clone();
        for (key, value) in &configs {
            if value.is_empty() {
                merged.remove(key);
            } else {
                merged.insert(key.clone(), value.clone());
            }
        }
        TopicConfig::from_defaults(&self.defaults).with_overrides(&merged)?;
        self.controller
            .propose(Command::AlterTopicConfigs {
                name: name.to_owned(),
                configs,
            })
            .await?;
        self.wait_applied(|s| s.topics.get(name).is_some_and(|t| t.configs == merged))
            .await?;
        tracing::info!(topic = name, "topic configs changed");
        Ok(())
    }

    /// Every topic, or the named ones (an unknown name is an error for that name).
    pub fn topics(&self, names: &[String]) -> Vec<(String, Result<TopicView>)> {
        let state = self.cluster();
        let view = |topic: &TopicState| {
            TopicConfig::from_defaults(&self.defaults)
                .with_overrides(&topic.configs)
                .map(|config| TopicView {
                    state: topic.clone(),
                    config,
                })
        };
        if names.is_empty() {
            return state
                .topics
                .iter()
                .map(|(n, t)| (n.clone(), view(t)))
                .collect();
        }
        names
            .iter()
            .map(|name| {
                let found = match state.topics.get(name) {
                    Some(t) => view(t),
                    None => Err(BrokerError::UnknownTopic {
                        topic: name.clone(),
                    }),
                };
                (name.clone(), found)
            })
            .collect()
    }

    /// The partition, if this broker leads it; otherwise the precise reason why not
    /// (unknown topic or partition, offline, or led by another broker).
    pub async fn led_partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>> {
        let state = self.cluster();
        let Some(topic_state) = state.topics.get(topic) else {
            if self.defaults.auto_create_topics {
                let new = NewTopic {
                    name: topic.to_owned(),
                    ..NewTopic::default()
                };
                match self.create_topic(new, false).await {
                    Ok(()) | Err(BrokerError::TopicExists { .. }) => {}
                    Err(err) => return Err(err),
                }
                return Box::pin(self.led_partition(topic, partition)).await;
            }
            return Err(BrokerError::UnknownTopic {
                topic: topic.to_owned(),
            });
        };
        let count = topic_state.partitions.len() as i32;
        let placement = usize::try_from(partition)
            .ok()
            .and_then(|i| topic_state.partitions.get(i))
            .ok_or(BrokerError::InvalidPartition {
                topic: topic.to_owned(),
                partition,
                count,
            })?;
        match placement.leader {
            Some(leader) if leader == self.identity.id => {}
            Some(leader) => {
                return Err(BrokerError::Remote {
                    code: ErrorCode::NotLeaderOrFollower,
                    message: format!(
                        "{topic}-{partition} is led by broker {leader}, not {}",
                        self.identity.id
                    ),
                });
            }
            None => {
                return Err(BrokerError::Remote {
                    code: ErrorCode::LeaderNotAvailable,
                    message: format!(
                        "{topic}-{partition} has no leader: its replicas are all down"
                    ),
                });
            }
        }
        let epoch = placement.leader_epoch;
        if let Some(found) = self.hosted(topic, partition)
            && found.leader_epoch() == Some(epoch)
        {
            return Ok(found);
        }
        // Metadata applied but not reconciled yet: open it / take the role now.
        self.reconcile(&state);
        let found = self
            .hosted(topic, partition)
            .ok_or_else(|| BrokerError::PartitionOffline {
                partition: format!("{topic}-{partition}"),
                reason: format!(
                    "its log could not be opened on broker {} (see its log)",
                    self.identity.name
                ),
            })?;
        if found.leader_epoch() != Some(epoch) {
            return Err(BrokerError::Remote {
                code: ErrorCode::NotLeaderOrFollower,
                message: format!(
                    "{topic}-{partition}: broker {} is taking over leadership at epoch {epoch}; retry",
                    self.identity.id
                ),
            });
        }
        Ok(found)
    }

    fn hosted(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned")
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Appends to a partition this broker leads (the leader's side of Produce). With
    /// acks=all: refused (nothing appended) with NotEnoughReplicas below
    /// `min.insync.replicas`, and answered only once the high watermark passes the
    /// batches, else failed after the timeout.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
        keep_offsets: bool,
        acks: RequiredAcks,
    ) -> Result<AppendOutcome> {
        let partition = self.led_partition(topic, partition).await?;
        let mode = if keep_offsets {
            AppendMode::KeepOffsets
        } else {
            AppendMode::AssignOffsets
        };
        if let RequiredAcks::All { .. } = acks {
            partition.check_min_insync(Instant::now())?;
        }
        if mode == AppendMode::AssignOffsets {
            partition
                .wait_for_sequence_turn(&batches, SEQUENCE_TURN_WAIT)
                .await;
        }
        let (outcome, epoch) = partition.append_as_leader(batches, mode).await?;
        if let RequiredAcks::All { timeout } = acks {
            partition
                .wait_committed(outcome.last_offset, epoch, timeout)
                .await?;
        }
        Ok(outcome)
    }

    /// Every partition replica this broker stores (leader or follower), for metrics.
    pub fn hosted_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// The hosted partition, whatever this broker's role in it (for tests and tools).
    pub fn hosted_partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.hosted(topic, partition)
    }

    /// Proposes the ISR changes the partitions this broker leads want (through the
    /// controller, epoch-checked) and writes high-watermark checkpoints, forever.
    pub async fn run_replication(self: Arc<Self>, every: Duration, checkpoint_every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_checkpoint = Instant::now();
        loop {
            ticker.tick().await;
            let hosted: Vec<Arc<Partition>> = self
                .partitions
                .read()
                .expect("partitions lock poisoned")
                .values()
                .cloned()
                .collect();
            let now = Instant::now();
            for partition in &hosted {
                let Some((epoch, new_isr)) = partition.desired_isr(now) else {
                    continue;
                };
                let command = Command::AlterIsr {
                    topic: partition.topic().to_owned(),
                    partition: partition.index() as u32,
                    leader_id: self.identity.id,
                    leader_epoch: epoch,
                    new_isr: new_isr.clone(),
                };
                match self.controller.propose(command).await {
                    Ok(_) => {
                        tracing::info!(topic = %partition.topic(), partition = partition.index(), epoch, isr = ?new_isr, "ISR changed")
                    }
                    Err(err) => {
                        tracing::warn!(topic = %partition.topic(), partition = partition.index(), epoch, isr = ?new_isr, %err, "ISR change refused")
                    }
                }
            }
            if last_checkpoint.elapsed() >= checkpoint_every {
                last_checkpoint = Instant::now();
                let node = self.clone();
                let _ = tokio::task::spawn_blocking(move || node.checkpoint_all()).await;
            }
        }
    }

    /// Writes every hosted partition's high-watermark checkpoint (periodically, and on
    /// shutdown so a restart starts from the latest). Blocking.
    pub fn checkpoint_all(&self) {
        let hosted: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .expect("partitions lock poisoned")
            .values()
            .cloned()
            .collect();
        for partition in hosted {
            if let Err(err) = partition.write_checkpoint() {
                tracing::warn!(topic = %partition.topic(), partition = partition.index(), %err, "cannot write the high-watermark checkpoint");
            }
        }
    }

    /// Stores a group's committed offsets through the controller; every partition must
    /// exist. Returns once this broker's copy shows them.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64, String)],
    ) -> Result<()> {
        if group.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "the group id is empty".into(),
            });
        }
        let mut command_offsets = Vec::with_capacity(offsets.len());
        for (topic, partition, offset, metadata) in offsets {
            let index = u32::try_from(*partition).map_err(|_| BrokerError::InvalidPartition {
                topic: topic.clone(),
                partition: *partition,
                count: 0,
            })?;
            command_offsets.push((topic.clone(), index, *offset, metadata.clone()));
        }
        self.controller
            .propose(Command::CommitOffsets {
                group: group.to_owned(),
                offsets: command_offsets.clone(),
            })
            .await?;
        self.wait_applied(|s| {
            command_offsets.iter().all(|(t, p, o, _)| {
                s.group_offsets
                    .get(group)
                    .and_then(|topics| topics.get(t))
                    .and_then(|parts| parts.get(p))
                    .is_some_and(|stored| stored.offset == *o)
            })
        })
        .await
    }

    /// The active controller's broker id, if the quorum has a leader.
    pub fn controller_id(&self) -> Option<u64> {
        self.controller.metrics().leader
    }

    /// A producer id for InitProducerId, unique in the region without a round trip:
    /// this broker's id in the top bits, then a millisecond clock that never repeats a
    /// value on this broker (strictly increasing even within one millisecond or across
    /// a restart, as long as the wall clock does not go back).
    pub fn new_producer_id(&self) -> i64 {
        use std::sync::atomic::{AtomicI64, Ordering};
        static LAST: AtomicI64 = AtomicI64::new(0);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut taken = LAST.load(Ordering::Relaxed);
        let stamp = loop {
            let next = now.max(taken + 1);
            match LAST.compare_exchange(taken, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(current) => taken = current,
            }
        };
        let broker = (self.identity.id & 0x7_ffff) as i64;
        (broker << 44) | (stamp & ((1 << 44) - 1))
    }

    /// The broker that coordinates `group`'s membership: the rendezvous-hash owner of the
    /// group among the region's unfenced brokers. Every broker computes the same answer
    /// from its replicated metadata, so FindCoordinator needs no extra state; when the
    /// coordinator is fenced only its groups move, and their members rejoin (committed
    /// offsets live in the controller, so they survive the move).
    pub fn group_coordinator(&self, group: &str) -> Option<BrokerRecord> {
        let state = self.cluster();
        let live: Vec<String> = state
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id.to_string())
            .collect();
        let owner: u64 = crate::rendezvous::owner(group, &live)?.parse().ok()?;
        state.brokers.get(&owner).cloned()
    }

    /// Refuses a membership request for a group another broker coordinates, so that the
    /// client finds the coordinator again (NOT_COORDINATOR, retriable).
    pub fn check_coordinator(&self, group: &str) -> Result<()> {
        match self.group_coordinator(group) {
            Some(b) if b.id == self.identity.id => Ok(()),
            Some(_) => Err(BrokerError::NotCoordinator {
                group: group.to_owned(),
            }),
            None => Err(BrokerError::CoordinatorNotAvailable {
                group: group.to_owned(),
            }),
        }
    }

    /// A group's committed offsets, from this broker's replicated copy after a read
    /// barrier, so that a commit acknowledged by any broker is seen here. Without a
    /// quorum the barrier cannot pass: the local copy is served then, which may be older
    /// (a consumer re-reads some records) but never newer than what was committed.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        topics: &[String],
    ) -> Vec<(String, i32, i64, String)> {
        if let Err(err) = self.read_barrier().await {
            tracing::warn!(group, %err, "serving group offsets without a read barrier; they may be stale");
        }
        let state = self.cluster();
        let Some(stored) = state.group_offsets.get(group) else {
            return Vec::new();
        };
        stored
            .iter()
            .filter(|(topic, _)| topics.is_empty() || topics.contains(topic))
            .flat_map(|(topic, parts)| {
                parts
                    .iter()
                    .map(move |(p, o)| (topic.clone(), *p as i32, o.offset, o.metadata.clone()))
            })
            .collect()
    }

    /// Commits a barrier through the controller and waits until this broker's copy has
    /// applied it: everything committed before it is then visible here.
    async fn read_barrier(&self) -> Result<()> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            .wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let node = self.identity.id;
        self.controller
            .propose(Command::Barrier { node, nonce })
            .await?;
        self.wait_applied(|s| s.barriers.get(&node) == Some(&nonce))
            .await
    }

    /// Runs retention and age-based rolling on every hosted partition, forever.
    pub async fn run_housekeeping(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            let node = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let now = SystemTime::now();
                let hosted: Vec<Arc<Partition>> =
                    node.partitions.read().expect("partitions lock poisoned").values().cloned().collect();
                for partition in hosted {
                    if let Err(err) = partition.housekeeping(now) {
                        tracing::error!(topic = %partition.topic(), partition = partition.index(), %err, "housekeeping failed");
                    }
                }
            })
            .await;
        }
    }

    /// Keeps the hosted partitions in line with the replicated metadata, forever.
    pub async fn run_reconciler(self: Arc<Self>) {
        let mut state = self.controller.state();
        loop {
            let current = state.borrow_and_update().clone();
            let node = self.clone();
            let _ = tokio::task::spawn_blocking(move || node.reconcile(&current)).await;
            if state.changed().await.is_err() {
                return;
            }
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
