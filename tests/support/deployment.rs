//! A deployment of real `meridian` processes written by the chaos harness: start,
//! reach, create topics and produce, for the multi-region integration tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use broker::client::{Acks, Client, OffsetSpec, Producer, ProducerConfig, RetryPolicy, TopicSpec};
use broker::record::Record;
use bytes::Bytes;
use chaos_tests::check::mirror_exact;
use chaos_tests::harness::deployment::{Deployment, DeploymentSpec};
use chaos_tests::harness::process::NodeProcess;
use chaos_tests::harness::readback::read_topic;

/// The deployment and its node processes (brokers started; mirrors created, not started).
pub struct Running {
    pub deployment: Deployment,
    pub nodes: BTreeMap<String, NodeProcess>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Writes the deployment and starts every broker.
    pub fn start(spec: DeploymentSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let deployment = Deployment::write(dir.path(), &spec).unwrap();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_meridian"));
        let mut nodes = BTreeMap::new();
        for b in &deployment.brokers {
            let node = format!("{}/{}", b.region, b.name);
            nodes.insert(
                node.clone(),
                NodeProcess::new(&binary, &deployment.topology, dir.path(), &node, "broker"),
            );
        }
        for m in &deployment.mirrors {
            let node = format!("{}/{}", m.region, m.name);
            nodes.insert(
                node.clone(),
                NodeProcess::new(&binary, &deployment.topology, dir.path(), &node, "mirror"),
            );
        }
        for node in nodes.values_mut().filter(|n| n.role == "broker") {
            node.start().unwrap();
        }
        Self {
            deployment,
            nodes,
            _dir: dir,
        }
    }

    /// The process of `REGION/NAME`.
    pub fn node(&mut self, name: &str) -> &mut NodeProcess {
        self.nodes.get_mut(name).unwrap()
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .values()
            .map(|n| format!("--- {} ---\n{}", n.node, n.log_tail(15)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client of `region`, once its brokers answer.
    pub async fn client(&self, region: &str) -> Client {
        let retry = RetryPolicy {
            attempts: 50,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Client::connect_with_retry(&self.deployment.bootstrap(region), retry.clone())
                .await
            {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => {
                    panic!("region {region} never came up: {e}\n{}", self.logs())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
}

/// Creates `topic`, retrying while the region's cluster forms.
pub async fn create(client: &Client, topic: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spec = TopicSpec {
            name: topic.into(),
            partitions,
            ..TopicSpec::default()
        };
        match client.create_topic(spec).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("create {topic}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Produces `n` keyed records with headers and distinct timestamps, acks=all.
pub async fn produce(client: &Client, topic: &str, prefix: &str, n: u64) {
    let config = ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config).unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let mut record = Record::new(
            Bytes::from(format!("{prefix}:{i}")),
            1_700_000_000_000 + i as i64,
        );
        record.key = Some(Bytes::from(format!("key-{}", i % 97)));
        record.headers = vec![
            ("origin".into(), Some(Bytes::from(prefix.to_string()))),
            ("n".into(), Some(Bytes::from(i.to_string()))),
            ("null".into(), None),
        ];
        pending.push(producer.send(topic, None, record).await.unwrap());
        if pending.len() >= 2_000 {
            for p in pending.drain(..) {
                p.await.expect("acks=all produce");
            }
        }
    }
    for p in pending {
        p.await.expect("acks=all produce");
    }
}

/// Waits until every partition of `remote` in the target has reached the source's end.
pub async fn wait_caught_up(
    source: &Client,
    topic: &str,
    target: &Client,
    remote: &str,
    running: &Running,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let src = source
            .list_offsets(topic, OffsetSpec::Latest)
            .await
            .unwrap();
        let dst = target
            .list_offsets(remote, OffsetSpec::Latest)
            .await
            .unwrap_or_default();
        if !src.is_empty() && src.iter().all(|(p, end)| dst.get(p) == Some(end)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{remote} never caught up: source {src:?}, remote {dst:?}\n{}",
            running.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts that `SRC_REGION.topic` in the target equals `topic` in the source, record
/// for record (the chaos checker's mirror-exactly-once invariant).
pub async fn assert_exact_copy(
    source: &Client,
    src_region: &str,
    target: &Client,
    dst_region: &str,
    topic: &str,
) {
    let remote = format!("{src_region}.{topic}");
    let source_logs = read_topic(source, src_region, topic, Duration::from_secs(60))
        .await
        .unwrap();
    let remote_logs = read_topic(target, dst_region, &remote, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        source_logs.len(),
        remote_logs.len(),
        "partition counts differ"
    );
    let pairs: Vec<_> = source_logs
        .iter()
        .zip(&remote_logs)
        .map(|(s, r)| mirror_exact::MirrorPair {
            source: s,
            remote: r,
        })
        .collect();
    let found = mirror_exact::check(&pairs, true);
    assert!(
        found.verdict.passed(),
        "{remote} is not an exact copy: {:#?}",
        found.verdict
    );
    let records: usize = remote_logs.iter().map(|l| l.records.len()).sum();
    assert!(records > 0, "nothing was compared");
}

/// `meridian mirror status --topology FILE --format json`, as an operator runs it.
pub fn mirror_status(topology: &std::path::Path) -> serde_json::Value {
    let out = super::meridian()
        .args(["mirror", "status", "--topology"])
        .arg(topology)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mirror status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
