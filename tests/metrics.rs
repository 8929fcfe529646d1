//! Prometheus metrics, scraped from real broker and mirror processes and read with a real
//! Prometheus text parser: counters and histograms follow the traffic driven through
//! them, mirror lag rises while the target region is stalled and returns to 0 once the
//! copy catches up, under-replicated partitions appear when a follower is killed and
//! clear when it returns; a broker leading 1,000 partitions scrapes under 1 MiB.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use broker::client::{Client, TopicSpec};
use chaos_tests::harness::deployment::{DeploymentSpec, LOOPBACK_PREFIX};
use prometheus_parse::{Scrape, Value};
use support::deployment::{Running, create, produce};

/// GET `path` from `addr`: the status code and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("metrics listener {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One parsed scrape.
struct Metrics(Scrape);

impl Metrics {
    fn scrape(addr: SocketAddr) -> Self {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "GET /metrics on {addr}: {body}");
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
        Metrics(scrape)
    }

    /// A scrape, or `None` while the process is not listening yet.
    fn try_scrape(addr: SocketAddr) -> Option<Self> {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        Some(Self::scrape(addr))
    }

    /// Sum of the counter or gauge `name` over series whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// Whether any series named `name` exists.
    fn has(&self, name: &str) -> bool {
        self.0.samples.iter().any(|s| s.metric == name)
    }

    /// The buckets of histogram `name` for the series with `labels` (cumulative counts).
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .find_map(|s| match &s.value {
                Value::Histogram(buckets) => {
                    Some(buckets.iter().map(|b| (b.less_than, b.count)).collect())
                }
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// Sum of `name` over several processes' scrapes.
fn sum_over(addrs: &[SocketAddr], name: &str, labels: &[(&str, &str)]) -> f64 {
    addrs
        .iter()
        .map(|a| Metrics::scrape(*a).sum(name, labels))
        .sum()
}

/// Like [`sum_over`], or `None` while any of the processes is not listening.
fn try_sum_over(addrs: &[SocketAddr], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = 0.0;
    for addr in addrs {
        total += Metrics::try_scrape(*addr)?.sum(name, labels);
    }
    Some(total)
}

/// Polls `probe` until it returns true, or fails with `what` and the logs.
async fn eventually(
    what: &str,
    timeout: Duration,
    running: &Running,
    mut probe: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\n{}",
            running.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn broker_metrics(running: &Running, region: &str) -> BTreeMap<String, SocketAddr> {
    running
        .deployment
        .brokers
        .iter()
        .filter(|b| b.region == region)
        .map(|b| (format!("{}/{}", b.region, b.name), b.metrics))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_traffic_mirror_lag_and_a_lost_replica() {
    let spec = DeploymentSpec {
        regions: 2,
        brokers: 3,
        prefix: LOOPBACK_PREFIX,
        octet: 171,
        mirrors: 1,
        flows: vec![(1, 2)],
    };
    let mut running = Running::start(spec);
    let r1 = running.client("r1").await;
    let r1_brokers = broker_metrics(&running, "r1");
    let r1_addrs: Vec<SocketAddr> = r1_brokers.values().copied().collect();
    let r2_addrs: Vec<SocketAddr> = broker_metrics(&running, "r2").values().copied().collect();

    // Health and readiness answer on every broker once it registered (a process just
    // started may not listen yet: wait for its listener first).
    for addr in r1_addrs.iter().chain(&r2_addrs) {
        let addr = *addr;
        eventually(
            &format!("the metrics listener on {addr}"),
            Duration::from_secs(60),
            &running,
            || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
        )
        .await;
        assert_eq!(http_get(addr, "/healthz").0, 200, "healthz on {addr}");
        eventually(
            &format!("readyz 200 on {addr}"),
            Duration::from_secs(60),
            &running,
            || http_get(addr, "/readyz").0 == 200,
        )
        .await;
    }
    let build = Metrics::scrape(r1_addrs[0]);
    assert_eq!(
        build.sum(
            "meridian_build_info",
            &[("role", "broker"), ("region", "r1")]
        ),
        1.0
    );
    assert!(
        build.has("process_resident_memory_bytes"),
        "process metrics are exported"
    );

    // Traffic: 3,000 records acks=all into 3 partitions, RF 3.
    create(&r1, "orders", 3).await;
    produce(&r1, "orders", "m", 3_000).await;
    eventually(
        "every led partition's HW reaches the log end",
        Duration::from_secs(30),
        &running,
        || {
            sum_over(
                &r1_addrs,
                "meridian_partition_high_watermark",
                &[("topic", "orders")],
            ) == 3_000.0
        },
    )
    .await;
    assert_eq!(
        sum_over(
            &r1_addrs,
            "meridian_partition_log_end_offset",
            &[("topic", "orders")]
        ),
        3_000.0,
        "each partition is exported once, by its leader"
    );
    assert_eq!(
        sum_over(&r1_addrs, "meridian_broker_leader_partitions", &[]) as i64,
        running_partitions(&r1).await,
        "leaders of the region together lead every partition exactly once"
    );
    let bytes_in = sum_over(
        &r1_addrs,
        "meridian_broker_bytes_in_total",
        &[("topic", "orders")],
    );
    assert!(
        bytes_in > 3_000.0 * 10.0,
        "bytes in counts the batches appended: {bytes_in}"
    );
    let produced = sum_over(
        &r1_addrs,
        "meridian_broker_requests_total",
        &[("api", "Produce"), ("status", "Ok")],
    );
    assert!(
        produced >= 1.0,
        "produce requests are counted by API and status"
    );
    // Followers replicate through Fetch: bytes out is at least twice what came in (RF 3).
    let bytes_out = sum_over(
        &r1_addrs,
        "meridian_broker_bytes_out_total",
        &[("topic", "orders")],
    );
    assert!(
        bytes_out >= 2.0 * bytes_in,
        "followers fetched the data: in {bytes_in}, out {bytes_out}"
    );
    let mut produce_observations = 0.0;
    for addr in &r1_addrs {
        let buckets = Metrics::scrape(*addr).histogram(
            "meridian_broker_request_duration_seconds",
            &[("api", "Produce")],
        );
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "histogram buckets are cumulative: {buckets:?}"
        );
        produce_observations += buckets.last().map_or(0.0, |b| b.1);
    }
    assert!(
        produce_observations >= produced,
        "+Inf bucket counts every Produce request"
    );
    assert_eq!(
        sum_over(&r1_addrs, "meridian_controller_active", &[]),
        1.0,
        "one active controller"
    );

    // Group lag: HW minus the committed offset, on the partition's leader.
    r1.commit_offsets("billing", &[("orders".into(), 0, 10)])
        .await
        .unwrap();
    let hw0 = sum_over(
        &r1_addrs,
        "meridian_partition_high_watermark",
        &[("topic", "orders"), ("partition", "0")],
    );
    eventually(
        "group lag is HW - committed",
        Duration::from_secs(10),
        &running,
        || {
            sum_over(
                &r1_addrs,
                "meridian_group_lag_records",
                &[("group", "billing"), ("partition", "0")],
            ) == hw0 - 10.0
        },
    )
    .await;

    // The mirror: started, it copies everything and its lag returns to 0.
    running.node("r2/m1").start().unwrap();
    let mirror = running
        .deployment
        .mirrors
        .iter()
        .find(|m| m.region == "r2")
        .expect("r2 has a mirror worker")
        .metrics;
    eventually(
        "the mirror copied all 3,000 records with lag 0",
        Duration::from_secs(90),
        &running,
        || {
            let Some(m) = Metrics::try_scrape(mirror) else {
                return false;
            };
            m.sum(
                "meridian_mirror_records_copied_total",
                &[("topic", "orders")],
            ) == 3_000.0
                && m.sum("meridian_mirror_lag_records", &[("topic", "orders")]) == 0.0
        },
    )
    .await;
    let m = Metrics::scrape(mirror);
    assert_eq!(
        m.sum("meridian_mirror_partitions_owned", &[("flow", "r1->r2")]),
        3.0,
        "the three orders partitions (r1 runs no heartbeat writer here)"
    );
    assert_eq!(
        m.sum("meridian_mirror_lag_seconds", &[("topic", "orders")]),
        0.0
    );
    // The mirror reached r1 over mutual TLS: r1's brokers counted its handshakes, and the
    // worker reports its certificate's remaining life.
    assert!(
        sum_over(
            &r1_addrs,
            "meridian_tls_handshakes_total",
            &[("side", "server")]
        ) >= 1.0
    );
    assert!(m.sum("meridian_tls_certificate_expiry_seconds", &[]) > 86_400.0);
    let latency = m.histogram(
        "meridian_mirror_replication_latency_seconds",
        &[("flow", "r1->r2")],
    );
    assert!(
        latency.last().is_some_and(|b| b.1 >= 1.0),
        "copied batches are timed: {latency:?}"
    );
    assert_eq!(
        m.sum(
            "meridian_gossip_members",
            &[
                ("member_region", "r2"),
                ("member_role", "mirror"),
                ("state", "alive")
            ]
        ),
        1.0,
        "the worker's gossip view counts itself, alive"
    );

    // Stall the target region: new source records cannot land, lag rises (records and
    // seconds); after the region resumes, the copy catches up and lag is 0 again.
    for b in ["r2/b1", "r2/b2", "r2/b3"] {
        running.node(b).stall();
    }
    produce(&r1, "orders", "late", 600).await;
    eventually(
        "lag rises while the target is stalled",
        Duration::from_secs(30),
        &running,
        || {
            let m = Metrics::scrape(mirror);
            m.sum("meridian_mirror_lag_records", &[("topic", "orders")]) > 0.0
                && m.sum("meridian_mirror_lag_seconds", &[("topic", "orders")]) > 0.0
        },
    )
    .await;
    for b in ["r2/b1", "r2/b2", "r2/b3"] {
        running.node(b).resume();
    }
    eventually(
        "lag returns to 0 after the target resumes",
        Duration::from_secs(120),
        &running,
        || {
            let m = Metrics::scrape(mirror);
            m.sum("meridian_mirror_lag_records", &[("topic", "orders")]) == 0.0
                && m.sum("meridian_mirror_lag_seconds", &[("topic", "orders")]) == 0.0
        },
    )
    .await;

    // Kill a follower: the leaders shrink their ISR (under-replicated rises, shrinks are
    // counted); when it returns and catches up, the ISR expands and the count falls to 0.
    let shrinks_before = sum_over(&r1_addrs, "meridian_broker_isr_shrinks_total", &[]);
    assert_eq!(
        sum_over(
            &r1_addrs,
            "meridian_broker_under_replicated_partitions",
            &[]
        ),
        0.0
    );
    let victim = "r1/b3";
    let survivors: Vec<SocketAddr> = r1_brokers
        .iter()
        .filter(|(name, _)| name.as_str() != victim)
        .map(|(_, a)| *a)
        .collect();
    running.node(victim).kill9();
    eventually(
        "under-replicated partitions appear",
        Duration::from_secs(60),
        &running,
        || {
            sum_over(
                &survivors,
                "meridian_broker_under_replicated_partitions",
                &[],
            ) > 0.0
        },
    )
    .await;
    eventually(
        "the leaders shrink their ISR (replica_lag_max)",
        Duration::from_secs(60),
        &running,
        || sum_over(&survivors, "meridian_broker_isr_shrinks_total", &[]) > shrinks_before,
    )
    .await;
    assert_eq!(
        survivors
            .iter()
            .map(|a| Metrics::scrape(*a).sum("meridian_cluster_offline_partitions", &[]))
            .fold(0.0, f64::max),
        0.0,
        "two of three replicas left: nothing is offline"
    );
    let expands_before = sum_over(&survivors, "meridian_broker_isr_expands_total", &[]);
    running.node(victim).start().unwrap();
    eventually(
        "under-replicated partitions clear",
        Duration::from_secs(90),
        &running,
        || {
            try_sum_over(
                &r1_addrs,
                "meridian_broker_under_replicated_partitions",
                &[],
            ) == Some(0.0)
        },
    )
    .await;
    assert!(
        sum_over(&r1_addrs, "meridian_broker_isr_expands_total", &[]) > expands_before,
        "the returning replica rejoined the ISR"
    );
    for node in running.nodes.values_mut() {
        node.stop();
    }
}

/// Partitions of the region's topics, from metadata.
async fn running_partitions(client: &Client) -> i64 {
    let meta = client.refresh_metadata().await.unwrap();
    meta.topics
        .values()
        .map(|t| t.partitions.len() as i64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_leading_1000_partitions_scrapes_under_one_mebibyte() {
    let spec = DeploymentSpec {
        regions: 1,
        brokers: 1,
        prefix: LOOPBACK_PREFIX,
        octet: 173,
        mirrors: 0,
        flows: Vec::new(),
    };
    let running = Running::start(spec);
    let client = running.client("r1").await;
    let spec = TopicSpec {
        name: "wide".into(),
        partitions: 1_000,
        replication_factor: 1,
        configs: [("min.insync.replicas".to_string(), "1".to_string())].into(),
    };
    client.create_topic(spec).await.unwrap();
    // One group committed on every partition: two more series per partition.
    let offsets: Vec<(String, i32, i64)> = (0..1_000).map(|p| ("wide".to_string(), p, 0)).collect();
    client
        .commit_offsets("wide-readers", &offsets)
        .await
        .unwrap();
    let addr = running.deployment.brokers[0].metrics;
    eventually(
        "the broker leads all 1,000 partitions",
        Duration::from_secs(120),
        &running,
        || Metrics::scrape(addr).sum("meridian_broker_leader_partitions", &[]) >= 1_000.0,
    )
    .await;
    let mut sizes = Vec::new();
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = http_get(addr, "/metrics");
        times.push(started.elapsed());
        assert_eq!(status, 200);
        sizes.push(body.len());
    }
    times.sort();
    let size = *sizes.iter().max().unwrap();
    let parsed = Metrics::scrape(addr);
    assert_eq!(
        parsed
            .0
            .samples
            .iter()
            .filter(|s| s.metric == "meridian_partition_high_watermark")
            .count(),
        1_000,
        "one high-watermark series per led partition"
    );
    assert_eq!(
        parsed.sum("meridian_group_lag_records", &[("group", "wide-readers")]),
        0.0
    );
    eprintln!(
        "scrape of a broker leading 1,000 partitions (one group on all): {size} bytes ({:.0} KiB), median scrape time {:?}",
        size as f64 / 1024.0,
        times[times.len() / 2]
    );
    assert!(size < 1 << 20, "scrape is {size} bytes; the bound is 1 MiB");
}
