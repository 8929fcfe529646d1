//! One chaos run: write the deployment, start real brokers, run the workload while the
//! scenario's faults fire, heal everything, read every partition back, judge, report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use broker::client::{Client, OffsetSpec, RetryPolicy, TopicSpec};

use crate::check::{self, recovery::Recovery};
use crate::error::ChaosError;
use crate::harness::deployment::{Deployment, DeploymentSpec};
use crate::harness::disk::SmallDisk;
use crate::harness::group_reader::{GroupReader, ReaderLog};
use crate::harness::network::{ActiveFault, Network, NetworkMode};
use crate::harness::process::NodeProcess;
use crate::harness::proxy::LinkProxy;
use crate::harness::readback::read_topic;
use crate::harness::workload::Workload;
use crate::report::{FailoverFigures, FaultEvent, Report};
use crate::scenario::{Fault, PARTITIONS, Scenario, Target};

/// The workload topic.
pub const TOPIC: &str = "orders";
/// How long a partition may be without a live leader after its leader dies.
const LEADER_BOUND: Duration = Duration::from_secs(15);
/// How long a restarted or thawed broker may take to be back in every ISR.
const REJOIN_BOUND: Duration = Duration::from_secs(30);
/// How long the mirror may take to copy everything once the faults have healed.
const MIRROR_CATCH_UP_BOUND: Duration = Duration::from_secs(60);
/// The size of each r1 broker's data filesystem in runs with a full-disk fault: room for
/// a 30-minute soak's log, small enough to fill in a moment.
const SMALL_DISK_MB: u32 = 512;
/// How long a running broker may take to serve a rotated certificate (its files are
/// re-read every second).
const ROTATION_BOUND: Duration = Duration::from_secs(15);
/// The consumer group of the failover step.
pub const GROUP: &str = "chaos-readers";
/// How long the group may take, from the failover command's start, to read in r2.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);

/// Samples the mirror's total lag every second, keeping the largest seen.
async fn sample_mirror_lag(source: Client, remote: Client, max: Arc<AtomicI64>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(lag) = mirror_lag(&source, &remote).await {
            max.fetch_max(lag as i64, Ordering::Relaxed);
        }
    }
}

/// The mirror's total lag now: source high watermarks minus the remote copy's ends.
async fn mirror_lag(source: &Client, remote: &Client) -> Option<u64> {
    let ends = source.list_offsets(TOPIC, OffsetSpec::Latest).await.ok()?;
    let copied = remote
        .list_offsets(&format!("r1.{TOPIC}"), OffsetSpec::Latest)
        .await
        .ok()?;
    Some(
        ends.iter()
            .map(|(p, end)| (end - copied.get(p).copied().unwrap_or(0)).max(0) as u64)
            .sum(),
    )
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `meridian` binary.
    pub binary: PathBuf,
    /// Where the run keeps its deployment, data, logs and report.
    pub out_dir: PathBuf,
    /// First region's third address octet (runs in parallel need different ones; also
    /// names a namespaced run's namespaces).
    pub octet: u8,
    /// Loopback addresses or a network namespace per region.
    pub network: NetworkMode,
    /// Concurrent writers.
    pub writers: u32,
    /// Records per second per writer.
    pub rate: u32,
    /// Debug switch for the checker's own test: brokers acknowledge acks=all before the
    /// high watermark (honoured by debug builds only).
    pub broken_acks: bool,
}

struct Cluster {
    /// Every process by region/name.
    nodes: BTreeMap<String, NodeProcess>,
    /// Broker id → region/name.
    ids: BTreeMap<u64, String>,
    /// The workload region (r1).
    client: Client,
    /// The mirror's target region (r2), when the scenario mirrors.
    remote: Option<Client>,
    started: Instant,
    faults: Vec<FaultEvent>,
    recoveries: Vec<Recovery>,
    /// The `meridian` binary and the deployment file, for the CLI steps.
    binary: PathBuf,
    topology: PathBuf,
    run_dir: PathBuf,
    /// Every broker's name and gRPC address (certificate probes).
    brokers: Vec<(String, std::net::SocketAddr)>,
    failover: FailoverStep,
    /// r1 brokers' small data filesystems (runs with a full-disk fault, as root); else why
    /// not.
    disks: Result<BTreeMap<String, SmallDisk>, String>,
    /// The proxy on the inter-region link (runs with a latency fault, as root); else why
    /// not.
    link: Result<LinkProxy, String>,
    /// Where the regions live; network faults cut or thin the links between them. Last,
    /// so that it is torn down after the processes and the proxy.
    network: Network,
}

/// The consumer group of the failover step: reading in r1 until the step, then in r2.
#[derive(Default)]
struct FailoverStep {
    before: Option<GroupReader>,
    after: Option<GroupReader>,
    /// What the r1 member delivered, once stopped.
    before_log: Option<ReaderLog>,
    /// Mirror lag (records) when the step began.
    rpo_records: u64,
    started: Option<Instant>,
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
    SmallDisk::unmount_leftovers(&run_dir);
    let _ = std::fs::remove_dir_all(&run_dir);
    let spec = if scenario.mirrored {
        DeploymentSpec {
            flows: vec![(1, 2)],
            ..DeploymentSpec::active_active(config.octet, 1)
        }
    } else {
        DeploymentSpec::brokers_only(1, config.octet)
    };
    let spec = DeploymentSpec {
        prefix: config.network.prefix(),
        ..spec
    };
    let deployment = Deployment::write(&run_dir, &spec)?;
    let network = Network::create(config.network, &deployment)?;
    let disks = if scenario.fills_disks() {
        small_disks(&deployment, &run_dir)
    } else {
        Err("the scenario fills no disk".into())
    };
    // Inter-region connections go through the link proxy from the start when the
    // scenario adds latency, so that the mirror's long-lived connections are shaped too.
    let link = if scenario.mirrored && scenario.shapes_the_link() {
        match LinkProxy::available() {
            Ok(()) => network
                .link_proxy(scenario.seed)
                .await
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        }
    } else {
        Err("the scenario adds no latency".into())
    };
    let mut nodes = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for b in &deployment.brokers {
        let name = format!("{}/{}", b.region, b.name);
        let mut node = NodeProcess::new(
            &config.binary,
            &deployment.topology,
            &run_dir,
            &name,
            "broker",
        );
        if config.broken_acks {
            node.set_env("MERIDIAN_DEBUG_ACK_BEFORE_HW", "1");
        }
        if let Some(ns) = network.namespace_of(&b.region) {
            node.set_namespace(ns);
        }
        node.start()?;
        ids.insert(b.id, name.clone());
        nodes.insert(name, node);
    }
    let region = deployment.regions[0].clone();
    let retry = RetryPolicy {
        attempts: 200,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    let bootstrap = deployment.bootstrap(&region);
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    let connect = |bootstrap: String| {
        let retry = retry.clone();
        async move {
            loop {
                match Client::connect_with_retry(&bootstrap, retry.clone()).await {
                    Ok(client) => break Ok(client),
                    Err(source) if Instant::now() > connect_deadline => {
                        break Err(ChaosError::Cluster {
                            what: format!("connect to {bootstrap}"),
                            source,
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    };
    let client = connect(bootstrap).await?;
    create_topic(&client).await?;
    let remote = match deployment.regions.get(1) {
        Some(target) if scenario.mirrored => {
            let remote = connect(deployment.bootstrap(target)).await?;
            for m in &deployment.mirrors {
                let name = format!("{}/{}", m.region, m.name);
                let mut node = NodeProcess::new(
                    &config.binary,
                    &deployment.topology,
                    &run_dir,
                    &name,
                    "mirror",
                );
                if let Some(ns) = network.namespace_of(&m.region) {
                    node.set_namespace(ns);
                }
                node.start()?;
                nodes.insert(name, node);
            }
            Some(remote)
        }
        _ => None,
    };
    tracing::info!(
        scenario = %scenario.name,
        seed = scenario.seed,
        network = network.mode().name(),
        "cluster up; workload starts"
    );
    let mut cluster = Cluster {
        nodes,
        ids,
        client: client.clone(),
        remote: remote.clone(),
        started: Instant::now(),
        faults: Vec::new(),
        recoveries: Vec::new(),
        binary: config.binary.clone(),
        topology: deployment.topology.clone(),
        run_dir: run_dir.clone(),
        brokers: deployment
            .brokers
            .iter()
            .map(|b| (format!("{}/{}", b.region, b.name), b.grpc))
            .collect(),
        failover: FailoverStep::default(),
        disks,
        link,
        network,
    };
    let workload = Workload::start(client.clone(), &region, TOPIC, config.writers, config.rate);
    if scenario.faults.iter().any(|f| f.fault == Fault::Failover) {
        cluster.failover.before = Some(GroupReader::start(client.clone(), &region, TOPIC, GROUP));
    }
    let max_lag = Arc::new(AtomicI64::new(0));
    let sampler = remote
        .clone()
        .map(|remote| tokio::spawn(sample_mirror_lag(client.clone(), remote, max_lag.clone())));
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
    let mut verdicts = vec![durability.verdict, order];
    let mut failover = None;
    if let (Some(remote), Some(target)) = (&remote, deployment.regions.get(1)) {
        let remote_topic = format!("{region}.{TOPIC}");
        let since = Instant::now();
        let caught_up = wait_until(MIRROR_CATCH_UP_BOUND, || async {
            let source = client.list_offsets(TOPIC, OffsetSpec::Latest).await.ok()?;
            let copied = remote
                .list_offsets(&remote_topic, OffsetSpec::Latest)
                .await
                .ok()?;
            source
                .iter()
                .all(|(p, end)| copied.get(p) == Some(end))
                .then_some(())
        })
        .await;
        cluster.record_recovery(
            "mirror caught up after the last fault".into(),
            since,
            caught_up.is_some(),
            MIRROR_CATCH_UP_BOUND,
        );
        let copies = read_topic(remote, target, &remote_topic, Duration::from_secs(60)).await?;
        let pairs: Vec<_> = logs
            .iter()
            .filter_map(|source| {
                copies
                    .iter()
                    .find(|c| c.id.partition == source.id.partition)
                    .map(|remote| check::mirror_exact::MirrorPair { source, remote })
            })
            .collect();
        verdicts.push(check::mirror_exact::check(&pairs, true).verdict);
        let mut layout = BTreeMap::new();
        for (name, c) in [(region.clone(), &client), (target.clone(), remote)] {
            let meta = c
                .refresh_metadata()
                .await
                .map_err(|source| ChaosError::Cluster {
                    what: format!("list topics of {name}"),
                    source,
                })?;
            layout.insert(name, meta.topics.keys().cloned().collect());
        }
        verdicts.push(check::no_loops::check(&layout, &deployment.regions, "."));
        if let Some((verdict, figures)) = cluster.finish_failover(&logs, &copies).await {
            verdicts.push(verdict);
            failover = Some(figures);
        }
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let recovery = check::recovery::check(&cluster.recoveries);
    verdicts.push(recovery);
    let report = Report {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        replay: format!(
            "cargo run -p chaos-tests -- --scenario {} --seed {} --duration {}s --network {}",
            scenario.name,
            scenario.seed,
            scenario.duration.as_secs(),
            cluster.network.mode().name()
        ),
        network: cluster.network.mode().name().into(),
        duration_ms: cluster.started.elapsed().as_millis() as u64,
        faults: cluster.faults.clone(),
        produced: log.produced.load(Ordering::Relaxed),
        acknowledged: acks.len() as u64,
        lost: durability.lost,
        duplicated: durability.duplicated,
        recoveries: cluster.recoveries.clone(),
        max_mirror_lag_records: max_lag.load(Ordering::Relaxed),
        failover,
        verdicts,
    };
    for node in cluster.nodes.values_mut() {
        node.stop();
    }
    report
        .write(&config.out_dir)
        .map_err(crate::error::io("write the report"))?;
    Ok(report)
}

/// Mounts a small filesystem as every r1 broker's data directory, or says why not.
fn small_disks(
    deployment: &Deployment,
    run_dir: &std::path::Path,
) -> Result<BTreeMap<String, SmallDisk>, String> {
    SmallDisk::available()?;
    let mut disks = BTreeMap::new();
    for b in deployment.brokers.iter().filter(|b| b.region == "r1") {
        let dir = run_dir.join("data").join(&b.region).join(&b.name);
        let disk = SmallDisk::mount(&dir, SMALL_DISK_MB).map_err(|e| e.to_string())?;
        disks.insert(format!("{}/{}", b.region, b.name), disk);
    }
    Ok(disks)
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
    /// Records a timed recovery: done (within `bound`) or not, timed from `since`.
    fn record_recovery(&mut self, what: String, since: Instant, done: bool, bound: Duration) {
        self.recoveries.push(Recovery {
            what,
            took_ms: done.then(|| since.elapsed().as_millis() as u64),
            bound_ms: bound.as_millis() as u64,
        });
    }

    fn note(&mut self, kind: &str, target: String) {
        tracing::warn!(fault = kind, %target, "injecting a fault");
        self.faults.push(FaultEvent {
            at_ms: self.started.elapsed().as_millis() as u64,
            kind: kind.into(),
            target,
        });
    }

    fn name(&self, id: u64) -> Option<String> {
        self.ids.get(&id).cloned()
    }

    fn node(&mut self, name: &str) -> Option<&mut NodeProcess> {
        self.nodes.get_mut(name)
    }

    /// The client and topic a target's partition lives in.
    fn side(&self, target: Target) -> Option<(Client, String)> {
        match target {
            Target::RemoteLeaderOf(_) => self.remote.clone().map(|c| (c, format!("r1.{TOPIC}"))),
            _ => Some((self.client.clone(), TOPIC.to_string())),
        }
    }

    /// Resolves a target to a node name from live metadata.
    async fn resolve(&self, target: Target) -> Option<String> {
        if target == Target::MirrorWorker {
            return self.nodes.keys().find(|n| n.starts_with("r2/m")).cloned();
        }
        let (client, topic) = self.side(target)?;
        let meta = client.refresh_metadata().await.ok()?;
        let partition = |p: i32| {
            meta.topics
                .get(&topic)?
                .partitions
                .iter()
                .find(|m| m.partition == p)
                .cloned()
        };
        let id = match target {
            Target::LeaderOf(p) | Target::RemoteLeaderOf(p) => partition(p).map(|m| m.leader),
            Target::FollowerOf(p) => {
                partition(p).and_then(|m| m.replicas.iter().copied().find(|r| *r != m.leader))
            }
            Target::Controller => Some(meta.controller_id),
            Target::MirrorWorker => None,
        }?;
        self.name(id)
    }

    async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::KillRestart { target, down } => {
                let Some(name) = self.resolve(target).await else {
                    return;
                };
                let side = self.side(target);
                let led = match &side {
                    Some((client, topic)) => led_partitions(client, topic, &name, &self.ids).await,
                    None => Vec::new(),
                };
                self.note(fault.kind(), name.clone());
                let killed = Instant::now();
                if let Some(node) = self.node(&name) {
                    node.kill9();
                }
                if let Some((client, topic)) = side.filter(|_| target != Target::MirrorWorker) {
                    self.time_leaders_moved(&client, &topic, &name, &led, killed)
                        .await;
                }
                tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
                if let Some(node) = self.node(&name) {
                    let _ = node.start();
                }
                if target != Target::MirrorWorker {
                    self.time_rejoin(&name, Instant::now()).await;
                }
            }
            Fault::Stall { target, stalled } => {
                let Some(name) = self.resolve(target).await else {
                    return;
                };
                self.note(fault.kind(), name.clone());
                if let Some(node) = self.node(&name) {
                    node.stall();
                }
                tokio::time::sleep(stalled).await;
                if let Some(node) = self.node(&name) {
                    node.resume();
                }
                self.time_rejoin(&name, Instant::now()).await;
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
                let (Some(leader), followers) = (
                    self.name(p.leader),
                    p.replicas
                        .iter()
                        .filter(|r| **r != p.leader)
                        .filter_map(|r| self.name(*r))
                        .collect::<Vec<_>>(),
                ) else {
                    return;
                };
                self.note(
                    fault.kind(),
                    format!("{TOPIC}-{partition}, leader {leader}"),
                );
                for f in &followers {
                    if let Some(node) = self.node(f) {
                        node.stall();
                    }
                }
                tokio::time::sleep(stalled).await;
                if let Some(node) = self.node(&leader) {
                    node.kill9();
                }
                for f in &followers {
                    if let Some(node) = self.node(f) {
                        node.resume();
                    }
                }
                let killed = Instant::now();
                let client = self.client.clone();
                self.time_leaders_moved(&client, TOPIC, &leader, &[partition], killed)
                    .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Some(node) = self.node(&leader) {
                    let _ = node.start();
                }
                self.time_rejoin(&leader, Instant::now()).await;
            }
            Fault::RegionCut { lasting } => {
                self.network_fault(fault.kind(), lasting, true, |network| network.cut_regions())
                    .await;
            }
            Fault::RegionLoss { percent, lasting } => {
                self.network_fault(fault.kind(), lasting, true, |network| {
                    network.lossy_regions(percent)
                })
                .await;
            }
            Fault::RegionLatency {
                delay,
                jitter,
                lasting,
            } => {
                let shaping = match &self.link {
                    Ok(link) => link.shaping.clone(),
                    Err(why) => {
                        let why = why.clone();
                        self.note(fault.kind(), format!("SKIPPED: {why}"));
                        return;
                    }
                };
                self.note(
                    fault.kind(),
                    format!(
                        "{}: +{} ms, jitter up to {} ms, each way",
                        self.network.describe_link(),
                        delay.as_millis(),
                        jitter.as_millis()
                    ),
                );
                let held_before = shaping.chunks_held();
                shaping.set(delay, jitter);
                tokio::time::sleep(lasting).await;
                shaping.clear();
                if let Some(event) = self.faults.last_mut() {
                    let held = shaping.chunks_held() - held_before;
                    event.target.push_str(&format!("; {held} chunks held"));
                }
                self.time_mirror_catch_up("the added latency").await;
            }
            Fault::GossipLoss { percent, lasting } => {
                self.network_fault(fault.kind(), lasting, false, |network| {
                    network.lossy_gossip(percent)
                })
                .await;
            }
            Fault::DiskFull { target, lasting } => self.fill_disk(target, lasting).await,
            Fault::CertRotation => self.rotate_certificates().await,
            Fault::Failover => self.fail_over().await,
        }
    }

    /// Fills a broker's data filesystem for `lasting`, empties it, restarts the broker if
    /// it exited (as its supervisor would) and times its return to every ISR.
    async fn fill_disk(&mut self, target: Target, lasting: Duration) {
        let kind = Fault::DiskFull { target, lasting }.kind();
        let Some(name) = self.resolve(target).await else {
            return;
        };
        let filled = match &self.disks {
            Err(why) => Err(why.clone()),
            Ok(disks) => match disks.get(&name) {
                None => Err(format!("{name} has no small disk")),
                Some(disk) => disk.fill().map_err(|e| e.to_string()),
            },
        };
        match filled {
            Err(why) => {
                self.note(kind, format!("SKIPPED: {why}"));
                return;
            }
            Ok(bytes) => self.note(kind, format!("{name} ({} MiB filler)", bytes >> 20)),
        }
        tokio::time::sleep(lasting).await;
        if let Ok(disks) = &self.disks
            && let Some(disk) = disks.get(&name)
        {
            disk.free();
        }
        let exited = self.node(&name).is_some_and(|node| !node.is_running());
        if exited {
            tracing::warn!(node = %name, "the broker exited on the full disk; restarting it");
            if let Some(node) = self.node(&name) {
                let _ = node.start();
            }
        }
        let rejoin_from = Instant::now();
        self.time_rejoin(&name, rejoin_from).await;
        if exited && let Some(last) = self.recoveries.last_mut() {
            last.what
                .push_str(" (it exited on the full disk and was restarted)");
        }
    }

    /// Issues every node's certificate again and times how long until each broker serves
    /// its new one to a fresh mTLS handshake (the processes are not restarted).
    async fn rotate_certificates(&mut self) {
        use crate::harness::rotation;
        self.note(Fault::CertRotation.kind(), "every node, same CA".into());
        let started = Instant::now();
        if let Err(err) = rotation::rotate(&self.topology, &self.run_dir) {
            tracing::error!(%err, "could not rotate the certificates");
            self.record_recovery(
                "certificates rotated".into(),
                started,
                false,
                ROTATION_BOUND,
            );
            return;
        }
        let tls = self.run_dir.join("tls");
        let client_dir = tls.join("clients").join("admin");
        for (name, addr) in self.brokers.clone() {
            let wanted = rotation::serial_on_disk(&tls.join(&name)).ok();
            let served = wait_until(ROTATION_BOUND, || async {
                let serial = rotation::served_serial(addr, &client_dir).await.ok()?;
                (Some(&serial) == wanted.as_ref()).then_some(())
            })
            .await;
            self.record_recovery(
                format!("{name} serves its rotated certificate"),
                started,
                served.is_some(),
                ROTATION_BOUND,
            );
        }
    }

    /// The failover step: the r1 member commits what it delivered and leaves (the
    /// application is being moved), `meridian failover --wait-for-lag-zero` translates
    /// the group's offsets into r2, and a member in r2 reads the remote copy from there.
    async fn fail_over(&mut self) {
        let (Some(before), Some(remote)) = (self.failover.before.take(), self.remote.clone())
        else {
            return;
        };
        self.note(Fault::Failover.kind(), format!("group {GROUP}"));
        let started = Instant::now();
        self.failover.started = Some(started);
        self.failover.rpo_records = mirror_lag(&self.client, &remote).await.unwrap_or(0);
        self.failover.before_log = Some(before.stop().await);
        let command = tokio::process::Command::new(&self.binary)
            .arg("failover")
            .arg("--topology")
            .arg(&self.topology)
            .args(["--group", GROUP, "--from", "r1", "--to", "r2"])
            .arg("--wait-for-lag-zero")
            .output();
        let ran = tokio::time::timeout(FAILOVER_BOUND, command).await;
        let succeeded = match &ran {
            Ok(Ok(out)) if out.status.success() => true,
            Ok(Ok(out)) => {
                tracing::error!(
                    stdout = %String::from_utf8_lossy(&out.stdout),
                    stderr = %String::from_utf8_lossy(&out.stderr),
                    "meridian failover failed"
                );
                false
            }
            Ok(Err(err)) => {
                tracing::error!(%err, "could not run meridian failover");
                false
            }
            Err(_) => {
                tracing::error!("meridian failover did not finish in time");
                false
            }
        };
        self.record_recovery(
            format!("meridian failover of group {GROUP} from r1 to r2"),
            started,
            succeeded,
            FAILOVER_BOUND,
        );
        let after = GroupReader::start(remote, "r2", &format!("r1.{TOPIC}"), GROUP);
        let reading = wait_until(FAILOVER_BOUND, || async { after.first_delivery().await }).await;
        self.recoveries.push(Recovery {
            what: format!("group {GROUP} reading in r2 after the failover began"),
            took_ms: reading.map(|at| at.duration_since(started).as_millis() as u64),
            bound_ms: FAILOVER_BOUND.as_millis() as u64,
        });
        self.failover.after = Some(after);
    }

    /// After the run: lets the r2 member read to the end of the remote copy, stops it,
    /// and judges both members' deliveries against the source log.
    async fn finish_failover(
        &mut self,
        source_logs: &[crate::history::PartitionLog],
        copies: &[crate::history::PartitionLog],
    ) -> Option<(check::Verdict, FailoverFigures)> {
        let after = self.failover.after.take()?;
        let before = self.failover.before_log.take()?;
        let ends: BTreeMap<i32, i64> = copies
            .iter()
            .map(|c| (c.id.partition, c.high_watermark))
            .collect();
        let since = Instant::now();
        let read_all = wait_until(MIRROR_CATCH_UP_BOUND, || async {
            let at = after.positions().await;
            ends.iter()
                .all(|(p, end)| *end == 0 || at.get(p).is_some_and(|pos| pos >= end))
                .then_some(())
        })
        .await;
        self.record_recovery(
            format!("group {GROUP} read the remote copy to its end in r2"),
            since,
            read_all.is_some(),
            MIRROR_CATCH_UP_BOUND,
        );
        let rto_ms = match (after.first_delivery().await, self.failover.started) {
            (Some(first), Some(started)) => first.duration_since(started).as_millis() as u64,
            _ => 0,
        };
        let after = after.stop().await;
        let mut deliveries = before.deliveries;
        deliveries.extend(after.deliveries);
        let findings = check::failover_once::check(
            source_logs,
            &BTreeMap::new(),
            |remote| remote.strip_prefix("r1.").map(str::to_string),
            &deliveries,
        );
        let figures = FailoverFigures {
            rpo_records: self.failover.rpo_records,
            skipped: findings.skipped,
            redelivered: findings.redelivered,
            in_region_replays: before.replays_dropped + after.replays_dropped,
            rto_ms,
        };
        Some((findings.verdict, figures))
    }

    /// Applies a network fault for `lasting` between the regions (or inside the
    /// workload region), when this machine can (root and iptables); otherwise the
    /// report records it as skipped, with why.
    async fn network_fault(
        &mut self,
        kind: &str,
        lasting: Duration,
        between_regions: bool,
        apply: impl FnOnce(&Network) -> Result<(ActiveFault, String), ChaosError>,
    ) {
        if between_regions && self.network.regions() < 2 {
            return;
        }
        if let Err(why) = crate::harness::partition::Cut::available() {
            self.note(kind, format!("SKIPPED: {why}"));
            return;
        }
        match apply(&self.network) {
            Ok((fault, target)) => {
                self.note(kind, target);
                tokio::time::sleep(lasting).await;
                match fault.heal() {
                    Ok(met) => {
                        if let Some(event) = self.faults.last_mut() {
                            event.target.push_str(&format!("; {met}"));
                        }
                    }
                    Err(err) => tracing::error!(%err, "could not heal the network fault"),
                }
            }
            Err(err) => {
                tracing::error!(%err, "could not apply the network fault");
                self.note(kind, format!("FAILED to apply: {err}"));
            }
        }
        if between_regions {
            self.time_mirror_catch_up(kind).await;
        }
    }

    /// Times how long the mirror takes, once a link fault is over, to copy everything
    /// the source had committed when it ended.
    async fn time_mirror_catch_up(&mut self, after: &str) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let since = Instant::now();
        let Ok(ends) = self.client.list_offsets(TOPIC, OffsetSpec::Latest).await else {
            return;
        };
        let remote_topic = format!("r1.{TOPIC}");
        let caught_up = wait_until(MIRROR_CATCH_UP_BOUND, || async {
            let copied = remote
                .list_offsets(&remote_topic, OffsetSpec::Latest)
                .await
                .ok()?;
            ends.iter()
                .all(|(p, end)| copied.get(p).is_some_and(|c| c >= end))
                .then_some(())
        })
        .await;
        self.record_recovery(
            format!("mirror caught up after {after}"),
            since,
            caught_up.is_some(),
            MIRROR_CATCH_UP_BOUND,
        );
    }

    /// Times how long the partitions `dead` led take to get another leader.
    async fn time_leaders_moved(
        &mut self,
        client: &Client,
        topic: &str,
        dead: &str,
        partitions: &[i32],
        since: Instant,
    ) {
        if partitions.is_empty() {
            return;
        }
        let wanted: BTreeSet<i32> = partitions.iter().copied().collect();
        let dead_id = self.ids.iter().find(|(_, n)| *n == dead).map(|(id, _)| *id);
        let moved = wait_until(LEADER_BOUND, || async {
            let meta = client.refresh_metadata().await.ok()?;
            let t = meta.topics.get(topic)?;
            t.partitions
                .iter()
                .filter(|p| wanted.contains(&p.partition))
                .all(|p| Some(p.leader) != dead_id && p.leader != 0)
                .then_some(())
        })
        .await;
        self.record_recovery(
            format!("new leaders for {topic} {partitions:?} after {dead} died"),
            since,
            moved.is_some(),
            LEADER_BOUND,
        );
    }

    /// Times how long broker `name` takes to be back in the ISR of every partition of its
    /// region's workload topic (or remote copy) it replicates.
    async fn time_rejoin(&mut self, name: &str, since: Instant) {
        let Some(id) = self.ids.iter().find(|(_, n)| *n == name).map(|(id, _)| *id) else {
            return;
        };
        let (client, topic) = if name.starts_with("r2/") {
            match &self.remote {
                Some(remote) => (remote.clone(), format!("r1.{TOPIC}")),
                None => return,
            }
        } else {
            (self.client.clone(), TOPIC.to_string())
        };
        let back = wait_until(REJOIN_BOUND, || async {
            let meta = client.refresh_metadata().await.ok()?;
            let t = meta.topics.get(&topic)?;
            t.partitions
                .iter()
                .filter(|p| p.replicas.contains(&id))
                .all(|p| p.isr.contains(&id))
                .then_some(())
        })
        .await;
        self.record_recovery(
            format!("{name} back in every ISR"),
            since,
            back.is_some(),
            REJOIN_BOUND,
        );
    }

    /// Thaws and restarts everything, then waits for full ISRs.
    async fn heal_all(&mut self) -> Result<(), ChaosError> {
        let mut restarted = Vec::new();
        for (name, node) in &mut self.nodes {
            node.resume();
            if !node.is_running() {
                node.start()?;
                restarted.push(name.clone());
            }
        }
        for name in restarted {
            self.time_rejoin(&name, Instant::now()).await;
        }
        Ok(())
    }
}

/// The partitions of `topic` that broker `name` leads.
async fn led_partitions(
    client: &Client,
    topic: &str,
    name: &str,
    ids: &BTreeMap<u64, String>,
) -> Vec<i32> {
    let Some(id) = ids.iter().find(|(_, n)| *n == name).map(|(id, _)| *id) else {
        return vec![];
    };
    let Ok(meta) = client.refresh_metadata().await else {
        return vec![];
    };
    meta.topics
        .get(topic)
        .map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.leader == id)
                .map(|p| p.partition)
                .collect()
        })
        .unwrap_or_default()
}
