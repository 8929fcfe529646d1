//! Shared harness for integration tests: real `meridian` processes on 127.0.0.x.
#![allow(dead_code)]

pub mod deployment;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `meridian` binary under test.
pub fn meridian() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.env_remove("MERIDIAN_BOOTSTRAP")
        .env_remove("MERIDIAN_TOPOLOGY");
    cmd
}

/// Runs `meridian ARGS` with `stdin` and returns its output.
pub fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = meridian()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meridian");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("wait meridian");
    writer.join().expect("stdin writer");
    output
}

/// Runs `meridian ARGS`, asserting success, and returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let output = meridian().args(args).output().expect("run meridian");
    assert!(
        output.status.success(),
        "meridian {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// A free TCP port on `ip`.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A one-broker region (a [`Region`] of one), for tests of a single broker's behaviour.
pub struct SingleBroker {
    pub region: Region,
}

impl SingleBroker {
    /// Writes a one-broker deployment on 127.0.`third_octet`.1 with `extra_defaults`
    /// lines added to [topic_defaults], and starts the broker.
    pub fn start(third_octet: u8, extra_defaults: &str) -> Self {
        Self {
            region: Region::start(third_octet, 1, extra_defaults),
        }
    }

    /// The `--bootstrap` value for this broker.
    pub fn bootstrap(&self) -> String {
        self.region.bootstrap_of(0)
    }

    /// Starts the broker process again and waits until it listens.
    pub fn restart(&mut self) {
        self.region.spawn(0);
        let b = &self.region.brokers[0];
        wait_for_port(b.grpc, Duration::from_secs(30), &b.log);
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.region.kill9(0);
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.region.brokers[0].log).unwrap_or_default()
    }

    /// The data directory of the broker.
    pub fn data_dir(&self) -> PathBuf {
        self.region.dir.path().join("data/b1")
    }
}

/// Waits until something listens on `addr`, panicking with the log after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration, log: &Path) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after {timeout:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One broker process of a [`Region`].
pub struct BrokerProc {
    /// The Kafka listener, when the region was started with one.
    pub kafka: Option<SocketAddr>,
    pub name: String,
    pub grpc: SocketAddr,
    pub child: Option<Child>,
    pub log: PathBuf,
}

/// A region of `n` brokers on 127.0.K.1..n, every broker a real process.
pub struct Region {
    pub dir: tempfile::TempDir,
    pub topology: PathBuf,
    pub brokers: Vec<BrokerProc>,
}

impl Region {
    /// Writes the deployment file and starts every broker.
    pub fn start(third_octet: u8, n: u8, extra_defaults: &str) -> Self {
        Self::start_with(third_octet, n, extra_defaults, "")
    }

    /// Like [`Region::start`], with `extra_tables` (whole TOML tables such as
    /// `[cluster]`) written before the regions.
    pub fn start_with(third_octet: u8, n: u8, extra_defaults: &str, extra_tables: &str) -> Self {
        Self::start_full(third_octet, n, extra_defaults, extra_tables, false)
    }

    /// Like [`Region::start_with`], every broker also listening for Kafka clients
    /// (plaintext); `BrokerProc::kafka` has the address.
    pub fn start_with_kafka(third_octet: u8, n: u8, extra_defaults: &str) -> Self {
        Self::start_full(third_octet, n, extra_defaults, "", true)
    }

    /// `--bootstrap` for Kafka clients, naming every broker's Kafka listener.
    pub fn kafka_bootstrap(&self) -> String {
        self.brokers
            .iter()
            .filter_map(|b| b.kafka.map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_full(
        third_octet: u8,
        n: u8,
        extra_defaults: &str,
        extra_tables: &str,
        kafka: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!(
            r#"[deployment]
name = "test"

[tls]
dir = "tls"

[tls.listeners]
client = "off"
inter_broker = "off"
inter_region = "required"
kafka = "off"
metrics = "off"

[gossip]
keyring = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]

[topic_defaults]
partitions = 3
replication_factor = 1
min_insync_replicas = 1
{extra_defaults}

{extra_tables}

[[regions]]
name = "local"
"#
        );
        let mut brokers = Vec::new();
        for i in 1..=n {
            let ip = Ipv4Addr::new(127, 0, third_octet, i);
            let grpc = SocketAddr::from((ip, free_port(ip)));
            let name = format!("b{i}");
            text.push_str(&format!(
                "\n[[regions.brokers]]\nname = \"{name}\"\nid = {i}\ngrpc = \"{grpc}\"\ngossip = \"{}\"\nmetrics = \"{}\"\ndata_dir = \"data/{name}\"\n",
                SocketAddr::from((ip, free_port(ip))),
                SocketAddr::from((ip, free_port(ip))),
            ));
            let kafka_addr = kafka.then(|| SocketAddr::from((ip, free_port(ip))));
            if let Some(addr) = kafka_addr {
                text.push_str(&format!("kafka = \"{addr}\"\n"));
            }
            let log = dir.path().join(format!("{name}.log"));
            brokers.push(BrokerProc {
                name,
                grpc,
                kafka: kafka_addr,
                child: None,
                log,
            });
        }
        let topology = dir.path().join("topology.toml");
        std::fs::write(&topology, text).expect("write topology");
        let mut region = Self {
            dir,
            topology,
            brokers,
        };
        for i in 0..region.brokers.len() {
            region.spawn(i);
        }
        for b in &region.brokers {
            wait_for_port(b.grpc, Duration::from_secs(30), &b.log);
        }
        region
    }

    /// Starts broker `i` (0-based) again, or for the first time.
    pub fn spawn(&mut self, i: usize) {
        let b = &mut self.brokers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&b.log)
            .expect("log");
        let child = meridian()
            .args(["broker", "--topology"])
            .arg(&self.topology)
            .args(["--node", &format!("local/{}", b.name)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn broker");
        b.child = Some(child);
    }

    /// kill -9 broker `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.brokers[i].child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGSTOP broker `i`: it stays alive but answers nothing (a stalled follower).
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// SIGCONT broker `i` after [`Region::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = &self.brokers[i].child {
            let status = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// `--bootstrap` naming every broker.
    pub fn bootstrap_all(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.grpc.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--bootstrap` naming only broker `i`.
    pub fn bootstrap_of(&self, i: usize) -> String {
        self.brokers[i].grpc.to_string()
    }

    /// Every broker's log, for failure messages.
    pub fn logs(&self) -> String {
        self.brokers
            .iter()
            .map(|b| {
                format!(
                    "--- {}\n{}",
                    b.name,
                    std::fs::read_to_string(&b.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        for i in 0..self.brokers.len() {
            self.resume(i);
            self.kill9(i);
        }
    }
}
