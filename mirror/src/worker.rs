//! The mirror worker process (`meridian mirror --topology FILE --node REGION/NAME`): a
//! thin shell that joins the deployment-wide mirror gossip, plans every enabled flow into
//! its region each round, creates remote topics, and runs one copier per source
//! partition it owns (rendezvous hashing over the live workers of its region).
//!
//! The worker keeps no durable state of its own: positions live in the remote
//! partitions (offset-preserving), so a restarted or replacement worker resumes exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::client::{Client, RetryPolicy, TopicSpec};
use tokio::sync::watch;

use crate::copy::{CopyTask, Progress, run_partition};
use crate::error::{MirrorError, broker};
use crate::heartbeat;
use crate::ownership::{owner, work_key};
use crate::plan::{Action, FlowRules, Plan, TopicListing};

/// How often flows are re-planned (new topics are picked up within this).
pub const PLAN_EVERY: Duration = Duration::from_secs(3);
/// How often the worker logs a progress line per flow.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// One flow this worker serves, with its two regions' clients.
struct FlowRuntime {
    flow: topology::Flow,
    /// The flow's checkpointer, while this worker owns it.
    checkpoints: Option<tokio::task::JoinHandle<()>>,
    rules: FlowRules,
    source: Client,
    target: Client,
    plan: Plan,
}

/// A running copier.
struct Running {
    task: CopyTask,
    stop: watch::Sender<bool>,
    progress: Arc<Mutex<Progress>>,
    handle: tokio::task::JoinHandle<()>,
}

/// Runs the worker for `view` until `shutdown` resolves.
pub async fn run(
    topology: &topology::Topology,
    view: &topology::NodeView,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MirrorError> {
    let node = format!("{}/{}", view.region, view.name);
    if view.role != topology::Role::Mirror {
        return Err(MirrorError::NotAMirror { node });
    }
    let flows: Vec<&topology::Flow> = view.flows_served.iter().filter(|f| f.enabled).collect();
    if flows.is_empty() {
        return Err(MirrorError::NoFlows {
            region: view.region.clone(),
        });
    }
    // Connections leave from the worker's own address, as peers and firewalls know it.
    broker::transport::set_node_source_ip(view.gossip_addr.ip());
    let gossip = join_gossip(topology, view).await?;
    let owned: crate::metrics::OwnedPartitions = Arc::default();
    let planned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics = broker::telemetry::serve_metrics(
        view.metrics_addr,
        Arc::new(metrics_endpoint(
            view,
            owned.clone(),
            gossip.clone(),
            planned.clone(),
        )),
    )
    .await
    .map_err(broker(format!("serve metrics on {}", view.metrics_addr)))?;
    let mut runtimes = Vec::new();
    let mut heartbeat_client = None;
    for flow in flows {
        // Each flow's connections carry the certificate naming its source region: that
        // identity alone may write `SOURCE.<topic>` in this region.
        let tls = flow_tls(view, &flow.source)?;
        let target = connect_secure(&region_bootstrap(topology, &view.region), tls.clone()).await;
        heartbeat_client.get_or_insert_with(|| target.clone());
        runtimes.push(FlowRuntime {
            flow: flow.clone(),
            checkpoints: None,
            rules: FlowRules::for_flow(topology, flow)?,
            source: connect_secure(&region_bootstrap(topology, &flow.source), tls).await,
            target,
            plan: Plan::default(),
        });
    }
    let target = heartbeat_client.expect("a worker serves at least one flow");
    tracing::info!(region = %view.region, node = %view.name, flows = runtimes.len(), "mirror worker started");
    let heartbeats = tokio::spawn(heartbeat::run(target.clone(), gossip.clone(), view.clone()));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut tick = tokio::time::interval(PLAN_EVERY);
    let mut progress_tick = tokio::time::interval(PROGRESS_EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = progress_tick.tick() => log_progress(&running),
            _ = tick.tick() => {
                let workers = live_workers(&gossip, view);
                let mut wanted: BTreeMap<String, (CopyTask, Client, Client)> = BTreeMap::new();
                for runtime in &mut runtimes {
                    if let Err(err) = replan(runtime).await {
                        tracing::warn!(flow = %runtime.rules.flow_name(), %err, "planning failed; keeping the last plan");
                    }
                    let checkpoint_key = format!("checkpoints/{}", runtime.rules.flow_name());
                    let owns_checkpoints = owner(&checkpoint_key, &workers) == Some(view.name.as_str());
                    run_checkpoints_if_owner(topology, runtime, owns_checkpoints);
                    for mirrored in &runtime.plan.mirrored {
                        for partition in 0..mirrored.partitions {
                            let key = work_key(&runtime.rules.flow_name(), &mirrored.source_topic, partition);
                            if owner(&key, &workers) == Some(view.name.as_str()) {
                                let task = CopyTask {
                                    flow: runtime.rules.flow_name(),
                                    source_topic: mirrored.source_topic.clone(),
                                    remote_topic: mirrored.remote_topic.clone(),
                                    partition,
                                };
                                wanted.insert(key, (task, runtime.source.clone(), runtime.target.clone()));
                            }
                        }
                    }
                }
                reconcile(&mut running, wanted);
                *owned.lock().expect("owned partitions lock poisoned") = running
                    .iter()
                    .map(|(key, r)| (key.clone(), (r.task.clone(), r.progress.clone())))
                    .collect();
                planned.store(true, std::sync::atomic::Ordering::Relaxed);
                let summary = flow_summary(&running);
                if let Err(err) = gossip.set(&format!("mirror/{}/{}", view.region, view.name), summary).await {
                    tracing::debug!(%err, "could not publish the flow summary in gossip");
                }
            }
        }
    }
    tracing::info!(region = %view.region, node = %view.name, copiers = running.len(), "mirror worker stopping");
    for (_, copier) in std::mem::take(&mut running) {
        let _ = copier.stop.send(true);
        let _ = copier.handle.await;
    }
    heartbeats.abort();
    metrics.abort();
    for runtime in &mut runtimes {
        if let Some(task) = runtime.checkpoints.take() {
            task.abort();
        }
    }
    if let Ok(gossip) = Arc::try_unwrap(gossip) {
        let _ = gossip.leave().await;
    }
    Ok(())
}

/// The worker's metrics endpoint: copy progress of the partitions it owns, latency,
/// checkpoint ages, gossip health; ready once its first planning round is done.
fn metrics_endpoint(
    view: &topology::NodeView,
    owned: crate::metrics::OwnedPartitions,
    gossip: Arc<gossip::GossipHandle>,
    planned: Arc<std::sync::atomic::AtomicBool>,
) -> broker::telemetry::MetricsEndpoint {
    let mut endpoint = broker::telemetry::MetricsEndpoint::new(
        &view.region,
        &view.name,
        "mirror",
        Box::new(move || {
            if planned.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err("the first planning round has not finished".into())
            }
        }),
    );
    let gauges = crate::metrics::MirrorGauges::register(endpoint.registry());
    let gossip_metrics = broker::telemetry::GossipMetrics::register(endpoint.registry());
    // The worker's client handshakes, and its certificate's remaining life.
    let cert = view.tls.cert.exists().then(|| view.tls.cert.clone());
    let tls_metrics = broker::telemetry::TlsGauges::register(endpoint.registry(), cert.is_some());
    endpoint.on_scrape(move || {
        gauges.refresh(&owned);
        gossip_metrics.refresh(&gossip);
        tls_metrics.refresh(cert.as_deref());
    });
    endpoint
}

/// Keeps the flow's checkpointer running on exactly the worker that owns it (one per
/// flow in the target region), restarting it if it stopped on an error.
fn run_checkpoints_if_owner(topology: &topology::Topology, runtime: &mut FlowRuntime, owns: bool) {
    let running = runtime
        .checkpoints
        .as_ref()
        .is_some_and(|t| !t.is_finished());
    if !owns {
        if let Some(task) = runtime.checkpoints.take() {
            tracing::info!(flow = %runtime.rules.flow_name(), "checkpoints handed over to another worker");
            task.abort();
            crate::metrics::forget_checkpoints(&runtime.rules.flow_name());
        }
        return;
    }
    if running {
        return;
    }
    let translator = match crate::translate::OffsetTranslator::new(topology, &runtime.flow) {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(flow = %runtime.rules.flow_name(), %err, "cannot checkpoint this flow");
            return;
        }
    };
    let (source, target, flow) = (
        runtime.source.clone(),
        runtime.target.clone(),
        runtime.flow.clone(),
    );
    let name = runtime.rules.flow_name();
    tracing::info!(flow = %name, "following the source groups' committed offsets (checkpoints)");
    runtime.checkpoints = Some(tokio::spawn(async move {
        if let Err(err) = crate::checkpoint::run_checkpoints(source, target, flow, translator).await
        {
            tracing::warn!(flow = %name, %err, "checkpoints stopped; restarting on the next round");
        }
    }));
}

/// Starts copiers for newly owned partitions and stops those no longer owned.
fn reconcile(
    running: &mut BTreeMap<String, Running>,
    wanted: BTreeMap<String, (CopyTask, Client, Client)>,
) {
    let gone: Vec<String> = running
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(copier) = running.remove(&key) {
            tracing::info!(work = %key, "partition handed over to another worker");
            let _ = copier.stop.send(true);
        }
    }
    for (key, (task, source, target)) in wanted {
        if running.get(&key).is_some_and(|r| !r.handle.is_finished()) {
            continue;
        }
        tracing::info!(work = %key, "taking partition");
        let (stop, stopped) = watch::channel(false);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let task_for_metrics = task.clone();
        let handle = tokio::spawn(run_partition(
            task,
            source,
            target,
            progress.clone(),
            stopped,
        ));
        running.insert(
            key,
            Running {
                task: task_for_metrics,
                stop,
                progress,
                handle,
            },
        );
    }
}

/// One flow's totals over the partitions this worker copies.
#[derive(Debug, Default)]
struct FlowTotals {
    partitions: usize,
    lag: i64,
    copied: u64,
    gaps: usize,
    heartbeat_latency_ms: Option<i64>,
}

/// Totals per flow (work keys are `FLOW/TOPIC/PARTITION`), for logs and gossip.
fn flow_totals(running: &BTreeMap<String, Running>) -> BTreeMap<String, FlowTotals> {
    let mut by_flow: BTreeMap<String, FlowTotals> = BTreeMap::new();
    for (key, copier) in running {
        let progress = copier.progress.lock().expect("progress").clone();
        let flow = key.split('/').next().unwrap_or_default().to_string();
        let totals = by_flow.entry(flow).or_default();
        totals.partitions += 1;
        totals.lag += progress.lag();
        totals.copied += progress.copied_records;
        totals.gaps += progress.gaps.len();
        if progress.heartbeat_latency_ms.is_some() {
            totals.heartbeat_latency_ms = progress.heartbeat_latency_ms;
        }
    }
    by_flow
}

/// This worker's per-flow summary for the gossip's shared state (`meridian members`
/// shows it): partitions owned, records behind, latest heartbeat latency. Kept under
/// the shared state's entry size.
fn flow_summary(running: &BTreeMap<String, Running>) -> String {
    let mut text = flow_totals(running)
        .iter()
        .map(|(flow, t)| {
            let latency = t
                .heartbeat_latency_ms
                .map_or("-".to_owned(), |ms| format!("{ms} ms"));
            format!(
                "{flow}: {} partitions, lag {}, heartbeat {latency}",
                t.partitions, t.lag
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        text = "no partitions owned".to_owned();
    }
    text.truncate(gossip::MAX_ENTRY_BYTES - 100);
    text
}

fn log_progress(running: &BTreeMap<String, Running>) {
    for (flow, t) in flow_totals(running) {
        tracing::info!(%flow, partitions = t.partitions, lag_records = t.lag, copied_records = t.copied, retention_gaps = t.gaps, heartbeat_latency_ms = t.heartbeat_latency_ms.unwrap_or(-1), "mirror progress");
    }
}

/// Lists both regions and creates what the plan says is missing.
async fn replan(runtime: &mut FlowRuntime) -> Result<(), MirrorError> {
    let source = list_topics(&runtime.source)
        .await
        .map_err(broker(format!("list topics in {}", runtime.rules.source)))?;
    let target = list_topics(&runtime.target)
        .await
        .map_err(broker(format!("list topics in {}", runtime.rules.target)))?;
    let plan = runtime.rules.plan(&source, &target);
    for action in &plan.actions {
        match action {
            Action::Create {
                remote_topic,
                partitions,
                configs,
            } => {
                let spec = TopicSpec {
                    name: remote_topic.clone(),
                    partitions: *partitions,
                    configs: configs.clone(),
                    ..TopicSpec::default()
                };
                match runtime.target.create_topic(spec).await {
                    Ok(()) => {
                        tracing::info!(flow = %runtime.rules.flow_name(), topic = %remote_topic, partitions, "created remote topic")
                    }
                    Err(err) if err.to_string().contains("already exists") => {}
                    Err(err) => {
                        tracing::warn!(flow = %runtime.rules.flow_name(), topic = %remote_topic, %err, "cannot create remote topic")
                    }
                }
            }
            Action::PartitionsBehind {
                remote_topic,
                remote,
                source,
            } => match runtime
                .target
                .create_partitions(remote_topic, *source)
                .await
            {
                Ok(()) => {
                    tracing::info!(flow = %runtime.rules.flow_name(), topic = %remote_topic, from = remote, to = source, "grew the remote topic to the source's partition count")
                }
                Err(err) => {
                    tracing::warn!(flow = %runtime.rules.flow_name(), topic = %remote_topic, remote, source, %err, "cannot grow the remote topic; its extra source partitions are not mirrored yet")
                }
            },
            Action::SyncConfigs {
                remote_topic,
                configs,
            } => match runtime
                .target
                .alter_topic_configs(remote_topic, configs.clone())
                .await
            {
                Ok(()) => {
                    tracing::info!(flow = %runtime.rules.flow_name(), topic = %remote_topic, ?configs, "synced the source's config changes to the remote topic")
                }
                Err(err) => {
                    tracing::warn!(flow = %runtime.rules.flow_name(), topic = %remote_topic, %err, "cannot sync configs to the remote topic")
                }
            },
            Action::SourceDeleted {
                remote_topic,
                delete: true,
            } => match runtime
                .target
                .delete_topics(vec![remote_topic.clone()])
                .await
            {
                Ok(results) => match results.into_iter().next().map(|(_, r)| r) {
                    Some(Ok(())) | None => {
                        tracing::warn!(flow = %runtime.rules.flow_name(), topic = %remote_topic, "the source topic was deleted; deleted the remote topic (delete_remote_topics)")
                    }
                    Some(Err(err)) => {
                        tracing::warn!(flow = %runtime.rules.flow_name(), topic = %remote_topic, %err, "cannot delete the remote topic")
                    }
                },
                Err(err) => {
                    tracing::warn!(flow = %runtime.rules.flow_name(), topic = %remote_topic, %err, "cannot delete the remote topic")
                }
            },
            Action::SourceDeleted {
                remote_topic,
                delete: false,
            } => {
                tracing::warn!(topic = %remote_topic, "the source topic of this remote topic was deleted; the remote topic is kept (set delete_remote_topics on the flow to delete it)");
            }
        }
    }
    if plan.mirrored != runtime.plan.mirrored {
        tracing::info!(flow = %runtime.rules.flow_name(), topics = plan.mirrored.len(), skipped = plan.skipped.len(), "flow plan changed");
    }
    runtime.plan = plan;
    Ok(())
}

async fn list_topics(client: &Client) -> Result<Vec<TopicListing>, broker::BrokerError> {
    let meta = client.refresh_metadata().await?;
    Ok(meta
        .topics
        .values()
        .map(|t| TopicListing {
            name: t.name.clone(),
            partitions: t.partitions.len() as i32,
            configs: t.configs.clone(),
        })
        .collect())
}

/// The live mirror workers of this worker's region, itself included, by name.
pub(crate) fn live_workers(
    gossip: &gossip::GossipHandle,
    view: &topology::NodeView,
) -> Vec<String> {
    let mut names: BTreeSet<String> = gossip
        .members()
        .into_iter()
        .filter(|m| m.identity.role == gossip::Role::Mirror && m.identity.region == view.region)
        .filter(|m| m.state != gossip::MemberState::Down)
        .map(|m| m.identity.name)
        .collect();
    names.insert(view.name.clone());
    names.into_iter().collect()
}

/// `--bootstrap` for a region of the deployment: every broker's gRPC address.
pub fn region_bootstrap(topology: &topology::Topology, region: &str) -> String {
    topology
        .regions()
        .iter()
        .find(|r| r.name == region)
        .map(|r| {
            r.brokers
                .iter()
                .map(|b| b.grpc.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The client TLS of the flows from `source`: the worker's `from-SOURCE` certificate
/// directory, or its node directory. Inter-region traffic is always mutual TLS, so a
/// worker without a certificate refuses to start.
fn flow_tls(
    view: &topology::NodeView,
    source: &str,
) -> Result<Option<Arc<rustls::ClientConfig>>, MirrorError> {
    let node_dir = view
        .tls
        .cert
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let per_source = certs::mirror_source_dir(&node_dir, source);
    let dir = if per_source.join(certs::CERT_FILE).exists() {
        per_source
    } else if view.tls.cert.exists() {
        node_dir
    } else {
        return Err(MirrorError::Tls {
            reason: format!(
                "{}/{} has no certificate at {} (nor {}): inter-region traffic is always mutual TLS. Issue the deployment's certificates with `meridian certs issue-deployment --topology FILE --ca CA_DIR`",
                view.region,
                view.name,
                view.tls.cert.display(),
                per_source.join(certs::CERT_FILE).display()
            ),
        });
    };
    let tls = broker::transport::client_tls_from_dir(&dir).map_err(|e| MirrorError::Tls {
        reason: e.to_string(),
    })?;
    Ok(Some(tls))
}

/// A client for a region, retrying until one of its brokers answers: a worker started
/// before the brokers (or during a region outage) waits instead of failing.
pub async fn connect(bootstrap: &str) -> Client {
    connect_secure(bootstrap, None).await
}

/// [`connect`] over mutual TLS with `tls`.
pub async fn connect_secure(bootstrap: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Client {
    let retry = RetryPolicy {
        attempts: 10,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    loop {
        match Client::connect_secure(bootstrap, retry.clone(), tls.clone()).await {
            Ok(client) => return client,
            Err(err) => {
                tracing::warn!(%bootstrap, %err, "region unreachable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Joins the gossip of every mirror worker in the deployment.
async fn join_gossip(
    topology: &topology::Topology,
    view: &topology::NodeView,
) -> Result<Arc<gossip::GossipHandle>, MirrorError> {
    let err = |e: gossip::GossipError| MirrorError::Gossip {
        addr: view.gossip_addr.to_string(),
        reason: e.to_string(),
    };
    let mut identity = gossip::NodeIdentity::new(
        &view.name,
        &view.region,
        gossip::Role::Mirror,
        view.gossip_addr,
    );
    identity.metrics = Some(view.metrics_addr.to_string());
    identity.incarnation = crate::copy::now_ms().max(1) as u64;
    let keys: Vec<[u8; 32]> = view.gossip.keyring.iter().map(|k| k.0).collect();
    let keyring = gossip::Keyring::from_keys(&keys).map_err(err)?;
    let seeds: Vec<SocketAddr> = topology
        .regions()
        .iter()
        .flat_map(|r| r.mirrors.iter().map(|m| m.gossip))
        .filter(|a| *a != view.gossip_addr)
        .collect();
    let size = (seeds.len() + 1) as u32;
    let config = match view.gossip.profile {
        topology::GossipProfile::Lan => gossip::GossipConfig::lan(size),
        topology::GossipProfile::Wan => gossip::GossipConfig::wan(size),
    };
    let handle = gossip::Gossip::start(identity, keyring, config)
        .await
        .map_err(err)?;
    if !seeds.is_empty() {
        handle.join(&seeds).await.map_err(err)?;
    }
    Ok(Arc::new(handle))
}
