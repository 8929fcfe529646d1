//! `meridian dev`: the front door. Writes a local deployment (topology, data and logs
//! under one directory), starts every node as its own child process, waits until each
//! answers, writes `ready.json`, prints the endpoints and a tour, and stops everything
//! cleanly on Ctrl-C. It restarts nothing behind the user's back: a node that dies is
//! reported and left dead, as a real crash would be.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

/// Region names `meridian dev` gives, in order.
const REGION_NAMES: &[&str] = &["us-east", "eu-west", "ap-south", "sa-east", "af-south"];

/// Start a complete local deployment.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Keep everything under DIR (topology.toml, data, logs, ready.json). Default: a new
    /// temporary directory. An existing DIR/topology.toml is reused, data included.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of regions (1 to 5).
    #[arg(long, default_value_t = 2)]
    pub regions: usize,
    /// Brokers per region (1 to 9); they form the region's controller quorum.
    #[arg(long, default_value_t = 3)]
    pub brokers: usize,
}

#[derive(Debug, Serialize)]
struct Ready {
    #[serde(skip)]
    order: Vec<String>,
    regions: BTreeMap<String, ReadyRegion>,
    nodes: Vec<ReadyNode>,
}

#[derive(Debug, Serialize)]
struct ReadyRegion {
    bootstrap: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_bootstrap: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_tls_dir: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReadyNode {
    region: String,
    name: String,
    role: &'static str,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<String>,
}

struct Running {
    region: String,
    name: String,
    child: Child,
    log: PathBuf,
    exited: bool,
}

/// Runs the local deployment until Ctrl-C or SIGTERM.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    if !(1..=REGION_NAMES.len()).contains(&args.regions) {
        return Err(super::UsageError(format!(
            "--regions must be 1 to {}, not {}",
            REGION_NAMES.len(),
            args.regions
        ))
        .into());
    }
    if !(1..=9).contains(&args.brokers) {
        return Err(
            super::UsageError(format!("--brokers must be 1 to 9, not {}", args.brokers)).into(),
        );
    }
    let (dir, _temp) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.canonicalize()?, None)
        }
        None => {
            let temp = std::env::temp_dir().join(format!("meridian-dev-{}", std::process::id()));
            std::fs::create_dir_all(&temp)?;
            (temp.clone(), Some(temp))
        }
    };
    let topology_path = dir.join("topology.toml");
    let ready_path = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready_path);
    if !topology_path.exists() {
        let text = deployment_file(args.regions, args.brokers)?;
        std::fs::write(&topology_path, text)
            .with_context(|| format!("cannot write {}", topology_path.display()))?;
    }
    let topology = topology::load(&topology_path)?;
    let client_tls_dir = ensure_certificates(&dir, &topology)?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;

    let exe = std::env::current_exe().context("cannot find the meridian executable")?;
    let mut running = Vec::new();
    let mut ready = Ready {
        order: Vec::new(),
        regions: BTreeMap::new(),
        nodes: Vec::new(),
    };
    for region in topology.regions() {
        let mut bootstrap = Vec::new();
        let mut kafka_bootstrap = Vec::new();
        let mut metrics = Vec::new();
        for broker in &region.brokers {
            let view = topology.node(&format!("{}/{}", region.name, broker.name))?;
            let (child, log) = spawn_node(
                &exe,
                &topology_path,
                &logs,
                "broker",
                &region.name,
                &broker.name,
            )?;
            if let Some(addr) = view.grpc_addr {
                bootstrap.push(addr.to_string());
            }
            if let Some(addr) = view.kafka_addr {
                kafka_bootstrap.push(addr.to_string());
            }
            let url = metrics_url(view.metrics_addr);
            metrics.push(url.clone());
            ready.nodes.push(ReadyNode {
                region: region.name.clone(),
                name: broker.name.clone(),
                role: "broker",
                pid: child.id(),
                metrics: Some(url),
            });
            running.push(Running {
                region: region.name.clone(),
                name: broker.name.clone(),
                child,
                log,
                exited: false,
            });
        }
        for mirror in &region.mirrors {
            let view = topology.node(&format!("{}/{}", region.name, mirror.name))?;
            let (child, log) = spawn_node(
                &exe,
                &topology_path,
                &logs,
                "mirror",
                &region.name,
                &mirror.name,
            )?;
            let url = metrics_url(view.metrics_addr);
            metrics.push(url.clone());
            ready.nodes.push(ReadyNode {
                region: region.name.clone(),
                name: mirror.name.clone(),
                role: "mirror",
                pid: child.id(),
                metrics: Some(url),
            });
            running.push(Running {
                region: region.name.clone(),
                name: mirror.name.clone(),
                child,
                log,
                exited: false,
            });
        }
        ready.order.push(region.name.clone());
        ready.regions.insert(
            region.name.clone(),
            ReadyRegion {
                bootstrap: bootstrap.join(","),
                kafka_bootstrap: (!kafka_bootstrap.is_empty()).then(|| kafka_bootstrap.join(",")),
                metrics,
                client_tls_dir: Some(client_tls_dir.display().to_string()),
            },
        );
    }

    let scrape_config = dir.join("prometheus.yml");
    std::fs::write(&scrape_config, scrape_config_text(&ready))
        .with_context(|| format!("cannot write {}", scrape_config.display()))?;
    let runtime = super::runtime()?;
    let outcome = runtime.block_on(async {
        let tls = broker::transport::client_tls_from_dir(&client_tls_dir)?;
        wait_until_up(&ready, &mut running, &tls).await?;
        wait_until_ready(&ready, &mut running).await?;
        let text = serde_json::to_string_pretty(&ready)?;
        let tmp = ready_path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &ready_path)?;
        print_tour(&dir, &ready);
        supervise(&mut running).await
    });
    stop_all(&mut running);
    let _ = std::fs::remove_file(&ready_path);
    outcome
}

/// Starts one node (`meridian broker|mirror --topology FILE --node REGION/NAME`) as a
/// child process logging to `logs/REGION-NAME.log`; returns it and its log path.
fn spawn_node(
    exe: &Path,
    topology_path: &Path,
    logs: &Path,
    role: &str,
    region: &str,
    name: &str,
) -> anyhow::Result<(Child, PathBuf)> {
    let spec = format!("{region}/{name}");
    let log = logs.join(format!("{region}-{name}.log"));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(exe)
        .args([role, "--topology"])
        .arg(topology_path)
        .args(["--node", &spec])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {role} {spec}"))?;
    Ok((child, log))
}

/// Writes the deployment file for `regions` regions of `brokers` brokers on loopback.
fn deployment_file(regions: usize, brokers: usize) -> anyhow::Result<String> {
    let mut text = String::from(
        "# Written by `meridian dev`: a local deployment on loopback addresses.\n\
         [deployment]\nname = \"dev\"\n\n\
         [tls]\ndir = \"tls\"\n\n\
         [tls.listeners]\nclient = \"required\"\ninter_broker = \"required\"\ninter_region = \"required\"\nkafka = \"required\"\nmetrics = \"off\"\n\n\
         [gossip]\n",
    );
    writeln!(text, "keyring = [\"{}\"]\n", dev_gossip_key())?;
    // Replicated by default, as operators would run it: three replicas (or as many as
    // there are brokers), two of them in sync for acks=all.
    let replication_factor = brokers.min(3);
    let min_insync = replication_factor.min(2);
    writeln!(
        text,
        "[topic_defaults]\npartitions = 3\nreplication_factor = {replication_factor}\n\
         min_insync_replicas = {min_insync}\nflush = \"batch\"\nretention_time = \"7d\"\n"
    )?;
    let mut id = 0;
    for (r, name) in REGION_NAMES.iter().take(regions).enumerate() {
        // A Raft quorum needs an odd number of voters: with an even broker count the
        // last broker follows the metadata as a learner.
        let voters = if brokers % 2 == 1 {
            brokers
        } else {
            brokers - 1
        };
        let quorum: Vec<String> = (1..=voters).map(|b| format!("\"b{b}\"")).collect();
        writeln!(
            text,
            "[[regions]]\nname = \"{name}\"\ncontroller_quorum = [{}]\n",
            quorum.join(", ")
        )?;
        for b in 1..=brokers {
            id += 1;
            let ip = Ipv4Addr::new(127, 0, (r + 1) as u8, b as u8);
            writeln!(
                text,
                "[[regions.brokers]]\nname = \"b{b}\"\nid = {id}\ngrpc = \"{}\"\nkafka = \"{}\"\ngossip = \"{}\"\nmetrics = \"{}\"\ndata_dir = \"data/{name}/b{b}\"\n",
                free_addr(ip, 9090)?,
                free_addr(ip, 9092)?,
                free_udp_addr(ip, 7946)?,
                free_addr(ip, 9100)?,
            )?;
        }
        if regions > 1 {
            // One mirror worker per region copies every other region's topics in.
            let ip = Ipv4Addr::new(127, 0, (r + 1) as u8, 10);
            writeln!(
                text,
                "[[regions.mirrors]]\nname = \"m1\"\ngossip = \"{}\"\nmetrics = \"{}\"\n",
                free_udp_addr(ip, 7946)?,
                free_addr(ip, 9100)?,
            )?;
        }
    }
    // The dev client (DIR/tls/clients/dev) may do everything a client can.
    writeln!(
        text,
        "[[acls]]\nprincipal = \"{DEV_CLIENT}\"\nactions = [\"produce\", \"consume\", \"create-topic\", \"delete-topic\", \"describe-topic\", \"group-read\", \"group-write\"]\nresource = \"*\"\n"
    )?;
    // Active/active: every region mirrors every other region's topics.
    for source in REGION_NAMES.iter().take(regions) {
        for target in REGION_NAMES.iter().take(regions).filter(|t| *t != source) {
            writeln!(
                text,
                "[[flows]]\nsource = \"{source}\"\ntarget = \"{target}\"\nenabled = true\n\
                 topics = {{ include = [\".*\"], exclude = [] }}\n\
                 groups = {{ include = [\".*\"], exclude = [] }}\n\
                 sync_group_offsets = true\ncheckpoint_interval = \"1s\"\n"
            )?;
        }
    }
    Ok(text)
}

/// The identity of the client credentials `meridian dev` writes.
const DEV_CLIENT: &str = "meridian://us-east/client/dev";

/// A CA under DIR/ca (made once, reused by later runs on the same DIR), every node's
/// certificate under DIR/tls as the deployment file expects, and the dev client's
/// credentials; returns the client TLS directory.
fn ensure_certificates(dir: &Path, topology: &topology::Topology) -> anyhow::Result<PathBuf> {
    let ca_dir = dir.join("ca");
    let ca = if ca_dir.join(::certs::CA_KEY_FILE).exists() {
        ::certs::Ca::load(&ca_dir)?
    } else {
        let ca = ::certs::Ca::generate("meridian-dev-ca")?;
        ca.save(&ca_dir)?;
        ca
    };
    let tls = topology.base_dir.join(&topology.tls.dir);
    ::certs::issue_deployment(topology, &ca, &tls, 30)?;
    let client_dir = tls.join("clients").join("dev");
    let identity: ::certs::Identity = DEV_CLIENT.parse()?;
    ca.issue(&::certs::IssueRequest::new(identity))?
        .save(&client_dir)?;
    Ok(client_dir)
}

/// A deterministic-looking but per-run gossip key: `meridian dev` is not for secrets.
fn dev_gossip_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id());
    let mut key = String::with_capacity(44);
    for _ in 0..43 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        key.push(ALPHABET[(seed % 64) as usize] as char);
    }
    // 32 bytes encode to 43 characters and one '=' of padding; the last character
    // carries only 4 bits, so it must be one whose low 2 bits are zero.
    key.pop();
    key.push('A');
    key.push('=');
    key
}

/// The preferred port on `ip` if it is free, else any free port there.
fn free_addr(ip: Ipv4Addr, preferred: u16) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((ip, preferred))
        .or_else(|_| TcpListener::bind((ip, 0)))
        .with_context(|| format!("cannot bind any port on {ip}; is the loopback range usable?"))?;
    Ok(listener.local_addr()?)
}

fn free_udp_addr(ip: Ipv4Addr, preferred: u16) -> anyhow::Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind((ip, preferred))
        .or_else(|_| std::net::UdpSocket::bind((ip, 0)))
        .with_context(|| format!("cannot bind any UDP port on {ip}"))?;
    Ok(socket.local_addr()?)
}

async fn wait_until_up(
    ready: &Ready,
    running: &mut [Running],
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (region, info) in &ready.regions {
        let expected = info.bootstrap.split(',').count();
        for addr in info.bootstrap.split(',') {
            loop {
                for node in running.iter_mut() {
                    if let Some(status) = node.child.try_wait()? {
                        bail!(
                            "node {}/{} exited during start-up ({status}); its log is {}",
                            node.region,
                            node.name,
                            node.log.display()
                        );
                    }
                }
                // Up means: it answers, and the whole region's cluster has formed.
                let quick = broker::client::RetryPolicy {
                    attempts: 1,
                    ..broker::client::RetryPolicy::default()
                };
                if let Ok(client) =
                    broker::client::Client::connect_secure(addr, quick, Some(tls.clone())).await
                    && client.cached_metadata().brokers.len() >= expected
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "broker {addr} in {region} did not answer within 60 s; see the logs under {}",
                        running[0]
                            .log
                            .parent()
                            .map(Path::display)
                            .map(|d| d.to_string())
                            .unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

/// `http://ADDR/metrics`, as Prometheus and people reach it.
fn metrics_url(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

/// A Prometheus scrape config for every node of the deployment, labelled with its
/// region, node name and role (the dashboards in deploy/ group by them).
fn scrape_config_text(ready: &Ready) -> String {
    let mut text = String::from(
        "# Written by `meridian dev`: prometheus --config.file=THIS_FILE\n\
         # Alert rules: deploy/prometheus/alerts.yml in the Meridian repository.\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         scrape_configs:\n  - job_name: meridian\n    metrics_path: /metrics\n    static_configs:\n",
    );
    for node in &ready.nodes {
        let Some(url) = &node.metrics else { continue };
        let target = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        let _ = write!(
            text,
            "      - targets: [\"{target}\"]\n        labels: {{region: \"{}\", node: \"{}\", role: \"{}\"}}\n",
            node.region, node.name, node.role
        );
    }
    text
}

/// Waits until every node's `/readyz` answers 200 (a broker registered with its
/// controller, a mirror worker through its first planning round).
async fn wait_until_ready(ready: &Ready, running: &mut [Running]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &ready.nodes {
        let Some(url) = &node.metrics else { continue };
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string();
        loop {
            if let Some(exited) = running.iter_mut().find_map(|n| match n.child.try_wait() {
                Ok(Some(status)) => Some((n.region.clone(), n.name.clone(), status, n.log.clone())),
                _ => None,
            }) {
                bail!(
                    "node {}/{} exited during start-up ({}); its log is {}",
                    exited.0,
                    exited.1,
                    exited.2,
                    exited.3.display()
                );
            }
            if matches!(http_get(&addr, "/readyz").await, Ok((200, _))) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} {}/{} is not ready after 60 s (http://{addr}/readyz); see its log",
                    node.role,
                    node.region,
                    node.name
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// A plain HTTP/1.0 GET: the status code and body. Enough for `/readyz` on loopback.
pub(crate) async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("not an HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn print_tour(dir: &Path, ready: &Ready) {
    println!("Meridian dev deployment is up in {}", dir.display());
    println!();
    for region in &ready.order {
        println!(
            "  region {region:<10} bootstrap {}",
            ready.regions[region].bootstrap
        );
    }
    for node in &ready.nodes {
        println!(
            "  {:<6} {}/{} pid {:<7} metrics {}",
            node.role,
            node.region,
            node.name,
            node.pid,
            node.metrics.as_deref().unwrap_or("-")
        );
    }
    let first = &ready.order[0];
    let b = &ready.regions[first].bootstrap;
    let me = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "meridian".into());
    println!();
    println!("Try it (in another terminal; every connection is mutual TLS):");
    if let Some(tls) = &ready.regions[first].client_tls_dir {
        println!("  export MERIDIAN_TLS_DIR={tls}");
    }
    println!("  {me} topic create orders --partitions 3 --bootstrap {b}");
    println!(
        "  seq 1 1000 | sed 's/.*/key-&:order-&/' | {me} produce orders --key-separator : --acks all --bootstrap {b}"
    );
    println!(
        "  {me} consume orders --from-beginning --exit-at-end --format json --bootstrap {b} | head"
    );
    println!("  {me} topic describe orders --bootstrap {b}");
    println!("  {me} members --bootstrap {b}");
    if let Some(second) = ready.order.get(1) {
        let b2 = &ready.regions[second].bootstrap;
        let topology = dir.join("topology.toml");
        let t = topology.display();
        println!();
        println!(
            "Mirroring (active/active, offsets preserved): {first}'s orders appear in {second} as {first}.orders"
        );
        println!(
            "  {me} consume {first}.orders --from-beginning --exit-at-end --format json --bootstrap {b2} | head -3"
        );
        println!("  {me} mirror status --topology {t}");
        println!(
            "  {me} consume orders --group billing --from-beginning --max 500 --bootstrap {b}"
        );
        println!("  {me} failover --topology {t} --group billing --from {first} --to {second}");
        println!(
            "  {me} consume {first}.orders --group billing --exit-at-end --bootstrap {b2} | head -3   # resumes exactly where billing stopped in us-east"
        );
    }
    println!();
    println!("Region {first} is shown; every region has its own bootstrap above.");
    println!();
    println!("Watch it:");
    if let Some(url) = ready.nodes.first().and_then(|n| n.metrics.as_ref()) {
        println!("  curl -s {url} | grep ^meridian_");
    }
    println!(
        "  prometheus --config.file={}/prometheus.yml   # scrape config for every node",
        dir.display()
    );
    if let Some(kafka) = &ready.regions[first].kafka_bootstrap {
        let tls = ready.regions[first].client_tls_dir.as_deref().unwrap_or("");
        println!();
        println!("Kafka clients (mutual TLS, the dev client's certificate):");
        println!(
            "  kcat -L -b {kafka} -X security.protocol=ssl -X ssl.ca.location={tls}/ca.pem -X ssl.certificate.location={tls}/cert.pem -X ssl.key.location={tls}/key.pem"
        );
    }
    println!(
        "Topology: {}/topology.toml   logs: {}/logs   ready: {}/ready.json",
        dir.display(),
        dir.display(),
        dir.display()
    );
    println!("Press Ctrl-C to stop.");
}

/// Waits for Ctrl-C/SIGTERM, reporting (never restarting) nodes that exit meanwhile.
async fn supervise(running: &mut [Running]) -> anyhow::Result<()> {
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = ticker.tick() => {
                for node in running.iter_mut().filter(|n| !n.exited) {
                    if let Some(status) = node.child.try_wait()? {
                        node.exited = true;
                        eprintln!(
                            "dev: {}/{} exited ({status}); not restarting it. Its log: {}",
                            node.region, node.name, node.log.display()
                        );
                    }
                }
            }
        }
    }
}

/// SIGTERM to every node, then SIGKILL to any still running after 10 s.
fn stop_all(running: &mut [Running]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for node in running.iter_mut() {
        if matches!(node.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(node.child.id() as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in running.iter_mut() {
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!(
                        "dev: {}/{} did not stop within 10 s; killing it",
                        node.region, node.name
                    );
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    eprintln!("dev: stopped");
}
