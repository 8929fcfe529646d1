//! One chaos run: write the deployment, start real brokers, run the workload while the
//! scenario's faults fire, heal everything, read every partition back, judge, report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use broker::client::{Client, RetryPolicy, TopicSpec};

use crate::check::{self, recovery::Recovery};
use crate::error::ChaosError;
use crate::harness::deployment::{Deployment, DeploymentSpec};
use crate::harness::process::NodeProcess;
use crate::harness::readback::read_topic;
use crate::harness::workload::Workload;
use crate::report::{FaultEvent, Report};
use crate::scenario::{Fault, PARTITIONS, Scenario, Target};

/// The workload topic.
pub const TOPIC: &str = "orders";
/// How long a partition may be without a live leader after its leader dies.
const LEADER_BOUND: Duration = Duration::from_secs(15);
/// How long a restarted or thawed broker may take to be back in every ISR.
const REJOIN_BOUND: Duration = Duration::from_secs(30);

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `meridian` binary.
    pub binary: PathBuf,
    /// Where the run keeps its deployment, data, logs and report.
    pub out_dir: PathBuf,
    /// First loopback third octet (runs in parallel need different ones).
    pub octet: u8,
    /// Concurrent writers.
    pub writers: u32,
    /// Records per second per writer.
    pub rate: u32,
    /// Debug switch for the checker's own test: brokers acknowledge acks=all before the
    /// high watermark (honoured by debug builds only).
    pub broken_acks: bool,
}

struct Cluster {
    nodes: BTreeMap<u64, NodeProcess>,
    client: Client,
    started: Instant,
    faults: Vec<FaultEvent>,
    recoveries: Vec<Recovery>,
}

/// Runs `scenario` and returns its report (also written under `config.out_dir`).
pub async fn run(scenario: &Scenario, config: &RunConfig) -> Result<Report, ChaosError> {
    if !config.binary.exists() {
        return Err(ChaosError::BinaryMissing {
            path: config.binary.display().to_string(),
        });
    }
    let run_dir = config
        .out_dir
        .join(format!("run-{}-{}", scenario.name, scenario.seed));
    let _ = std::fs::remove_dir_all(&run_dir);
    let spec = DeploymentSpec::brokers_only(1, config.octet);
    let deployment = Deployment::write(&run_dir, &spec)?;
    let mut nodes = BTreeMap::new();
    for b in &deployment.brokers {
        let mut node = NodeProcess::new(
            &config.binary,
            &deployment.topology,
            &run_dir,
            &format!("{}/{}", b.region, b.name),
            "broker",
        );
        if config.broken_acks {
            node.set_env("MERIDIAN_DEBUG_ACK_BEFORE_HW", "1");
        }
        node.start()?;
        nodes.insert(b.id, node);
    }
    let region = deployment.regions[0].clone();
    let retry = RetryPolicy {
        attempts: 200,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    let bootstrap = deployment.bootstrap(&region);
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        match Client::connect_with_retry(&bootstrap, retry.clone()).await {
            Ok(client) => break client,
            Err(source) if Instant::now() > connect_deadline => {
                return Err(ChaosError::Cluster {
                    what: format!("connect to {bootstrap}"),
                    source,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    create_topic(&client).await?;
    tracing::info!(scenario = %scenario.name, seed = scenario.seed, "cluster up; workload starts");
    let mut cluster = Cluster {
        nodes,
        client: client.clone(),
        started: Instant::now(),
        faults: Vec::new(),
        recoveries: Vec::new(),
    };
    let workload = Workload::start(client.clone(), &region, TOPIC, config.writers, config.rate);
    for scheduled in &scenario.faults {
        let wait = scheduled.at.saturating_sub(cluster.started.elapsed());
        tokio::time::sleep(wait).await;
        cluster.inject(scheduled.fault).await;
    }
    tokio::time::sleep(scenario.duration.saturating_sub(cluster.started.elapsed())).await;
    let log = workload.stop().await;
    cluster.heal_all().await?;
    let logs = read_topic(&client, &region, TOPIC, Duration::from_secs(60)).await?;
    let acks = log.acks.lock().await.clone();
    let durability = check::acked_durable::check(&acks, &logs);
    let order = check::order::check(&logs);
    let recovery = check::recovery::check(&cluster.recoveries);
    let report = Report {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        replay: format!(
            "cargo run -p chaos-tests -- --scenario {} --seed {} --duration {}s",
            scenario.name,
            scenario.seed,
            scenario.duration.as_secs()
        ),
        duration_ms: cluster.started.elapsed().as_millis() as u64,
        faults: cluster.faults.clone(),
        produced: log.produced.load(Ordering::Relaxed),
        acknowledged: acks.len() as u64,
        lost: durability.lost,
        duplicated: durability.duplicated,
        recoveries: cluster.recoveries.clone(),
        max_mirror_lag_records: 0,
        failover: None,
        verdicts: vec![durability.verdict, order, recovery],
    };
    for node in cluster.nodes.values_mut() {
        node.stop();
    }
    report
        .write(&config.out_dir)
        .map_err(crate::error::io("write the report"))?;
    Ok(report)
}

async fn create_topic(client: &Client) -> Result<(), ChaosError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spec = TopicSpec {
            name: TOPIC.into(),
            partitions: PARTITIONS,
            ..TopicSpec::default()
        };
        match client.create_topic(spec).await {
            Ok(()) => break,
            Err(e) if e.to_string().contains("already exists") => break,
            Err(source) if Instant::now() > deadline => {
                return Err(ChaosError::Cluster {
                    what: format!("create topic {TOPIC}"),
                    source,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    // Every partition has a leader and a full ISR before the workload starts.
    let synced = wait_until(Duration::from_secs(60), || async {
        let meta = client.refresh_metadata().await.ok()?;
        let topic = meta.topics.get(TOPIC)?;
        (topic.partitions.len() == PARTITIONS as usize
            && topic
                .partitions
                .iter()
                .all(|p| p.isr.len() == p.replicas.len()))
        .then_some(())
    })
    .await;
    synced.ok_or_else(|| ChaosError::NotReady {
        node: format!("topic {TOPIC}"),
        seconds: 60,
        log_tail: "its replicas never all joined the ISR".into(),
    })
}

/// Polls `probe` every 100 ms until it returns `Some`, or `None` after `bound`.
async fn wait_until<T, F, Fut>(bound: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Cluster {
    fn note(&mut self, kind: &str, target: String) {
        tracing::warn!(fault = kind, %target, "injecting a fault");
        self.faults.push(FaultEvent {
            at_ms: self.started.elapsed().as_millis() as u64,
            kind: kind.into(),
            target,
        });
    }

    fn name(&self, id: u64) -> String {
        self.nodes
            .get(&id)
            .map_or(format!("broker {id}"), |n| n.node.clone())
    }

    fn node(&mut self, id: u64) -> Option<&mut NodeProcess> {
        self.nodes.get_mut(&id)
    }

    /// Resolves a target to a broker id from live metadata.
    async fn resolve(&self, target: Target) -> Option<u64> {
        let meta = self.client.refresh_metadata().await.ok()?;
        let partition = |p: i32| {
            meta.topics
                .get(TOPIC)?
                .partitions
                .iter()
                .find(|m| m.partition == p)
                .cloned()
        };
        match target {
            Target::LeaderOf(p) => partition(p).map(|m| m.leader),
            Target::FollowerOf(p) => {
                partition(p).and_then(|m| m.replicas.iter().copied().find(|r| *r != m.leader))
            }
            Target::Controller => Some(meta.controller_id),
        }
        .filter(|id| self.nodes.contains_key(id))
    }

    async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::KillRestart { target, down } => {
                let Some(id) = self.resolve(target).await else {
                    return;
                };
                let led = self.led_partitions(id).await;
                self.note(fault.kind(), self.name(id));
                let killed = Instant::now();
                if let Some(node) = self.node(id) {
                    node.kill9();
                }
                self.time_leaders_moved(id, &led, killed).await;
                tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
                if let Some(node) = self.node(id) {
                    let _ = node.start();
                }
                self.time_rejoin(id, Instant::now()).await;
            }
            Fault::Stall { target, stalled } => {
                let Some(id) = self.resolve(target).await else {
                    return;
                };
                self.note(fault.kind(), self.name(id));
                if let Some(node) = self.node(id) {
                    node.stall();
                }
                tokio::time::sleep(stalled).await;
                if let Some(node) = self.node(id) {
                    node.resume();
                }
                self.time_rejoin(id, Instant::now()).await;
            }
            Fault::StallFollowersKillLeader { partition, stalled } => {
                let Ok(meta) = self.client.refresh_metadata().await else {
                    return;
                };
                let Some(p) = meta
                    .topics
                    .get(TOPIC)
                    .and_then(|t| t.partitions.iter().find(|m| m.partition == partition))
                    .cloned()
                else {
                    return;
                };
                let followers: Vec<u64> = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| *r != p.leader)
                    .collect();
                let target = format!("{TOPIC}-{partition}, leader {}", self.name(p.leader));
                self.note(fault.kind(), target);
                for f in &followers {
                    if let Some(node) = self.node(*f) {
                        node.stall();
                    }
                }
                tokio::time::sleep(stalled).await;
                if let Some(node) = self.node(p.leader) {
                    node.kill9();
                }
                for f in &followers {
                    if let Some(node) = self.node(*f) {
                        node.resume();
                    }
                }
                let killed = Instant::now();
                self.time_leaders_moved(p.leader, &[partition], killed)
                    .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Some(node) = self.node(p.leader) {
                    let _ = node.start();
                }
                self.time_rejoin(p.leader, Instant::now()).await;
            }
        }
    }

    async fn led_partitions(&self, id: u64) -> Vec<i32> {
        let Ok(meta) = self.client.refresh_metadata().await else {
            return vec![];
        };
        meta.topics
            .get(TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.leader == id)
                    .map(|p| p.partition)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Times how long the partitions `dead` led take to get another leader.
    async fn time_leaders_moved(&mut self, dead: u64, partitions: &[i32], since: Instant) {
        if partitions.is_empty() {
            return;
        }
        let wanted: BTreeSet<i32> = partitions.iter().copied().collect();
        let client = self.client.clone();
        let moved = wait_until(LEADER_BOUND, || async {
            let meta = client.refresh_metadata().await.ok()?;
            let topic = meta.topics.get(TOPIC)?;
            topic
                .partitions
                .iter()
                .filter(|p| wanted.contains(&p.partition))
                .all(|p| p.leader != dead && p.leader != 0)
                .then_some(())
        })
        .await;
        self.recoveries.push(Recovery {
            what: format!(
                "new leaders for {partitions:?} after {} died",
                self.name(dead)
            ),
            took_ms: moved.map(|()| since.elapsed().as_millis() as u64),
            bound_ms: LEADER_BOUND.as_millis() as u64,
        });
    }

    /// Times how long `id` takes to be back in the ISR of every partition it replicates.
    async fn time_rejoin(&mut self, id: u64, since: Instant) {
        let client = self.client.clone();
        let back = wait_until(REJOIN_BOUND, || async {
            let meta = client.refresh_metadata().await.ok()?;
            let topic = meta.topics.get(TOPIC)?;
            topic
                .partitions
                .iter()
                .filter(|p| p.replicas.contains(&id))
                .all(|p| p.isr.contains(&id))
                .then_some(())
        })
        .await;
        self.recoveries.push(Recovery {
            what: format!("{} back in every ISR", self.name(id)),
            took_ms: back.map(|()| since.elapsed().as_millis() as u64),
            bound_ms: REJOIN_BOUND.as_millis() as u64,
        });
    }

    /// Thaws and restarts everything, then waits for full ISRs.
    async fn heal_all(&mut self) -> Result<(), ChaosError> {
        let mut restarted = Vec::new();
        for (id, node) in &mut self.nodes {
            node.resume();
            if !node.is_running() {
                node.start()?;
                restarted.push(*id);
            }
        }
        for id in restarted {
            self.time_rejoin(id, Instant::now()).await;
        }
        Ok(())
    }
}
