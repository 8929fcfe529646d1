//! The mirror worker's Prometheus metrics.
//!
//! Copy progress lives in each copier's [`Progress`]; the gauges and counters below are
//! rebuilt from it at every scrape, for the partitions this worker owns now (so series
//! of a partition handed to another worker disappear here and appear there). Latency is
//! the exception: each copied batch is observed as it lands, into a histogram per flow.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use broker::log::batch::BatchHeader;
use bytes::Bytes;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::copy::{CopyTask, Progress, now_ms};

/// Latency buckets from 5 ms to 5 minutes: loopback to a backlog after an outage.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The partitions this worker copies now, keyed by work key, with their progress.
pub type OwnedPartitions = Arc<Mutex<BTreeMap<String, (CopyTask, Arc<Mutex<Progress>>)>>>;

static REPLICATION_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "meridian_mirror_replication_latency_seconds",
            "Time from a batch's newest record timestamp in the source region to its append in the target region, by flow.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["flow"],
    )
    .expect("valid histogram")
});

/// When each flow's checkpointer last completed a round on this worker.
static CHECKPOINT_ROUNDS: LazyLock<Mutex<BTreeMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Observes the replication latency of every batch in `batches`, just appended for
/// `flow`, and returns their newest record timestamp.
pub fn observe_copied(flow: &str, batches: &Bytes) -> Option<i64> {
    let now = now_ms();
    let histogram = REPLICATION_LATENCY.with_label_values(&[flow]);
    let mut newest = None;
    let mut at = 0;
    while at + 61 <= batches.len() {
        let Ok(header) = BatchHeader::parse(&batches[at..]) else {
            break;
        };
        histogram.observe((now - header.max_timestamp).max(0) as f64 / 1000.0);
        newest = newest.max(Some(header.max_timestamp));
        at += header.total_len();
    }
    newest
}

/// Notes that `flow`'s checkpointer completed a round (positions are current).
pub fn checkpoint_round_done(flow: &str) {
    CHECKPOINT_ROUNDS
        .lock()
        .expect("checkpoint rounds lock poisoned")
        .insert(flow.to_owned(), Instant::now());
}

/// Drops `flow`'s checkpoint age: its checkpointer moved to another worker.
pub fn forget_checkpoints(flow: &str) {
    CHECKPOINT_ROUNDS
        .lock()
        .expect("checkpoint rounds lock poisoned")
        .remove(flow);
}

/// The worker's scrape-time metrics.
#[derive(Debug, Clone)]
pub struct MirrorGauges {
    copied_records: IntCounterVec,
    copied_bytes: IntCounterVec,
    lag_records: IntGaugeVec,
    lag_seconds: prometheus::GaugeVec,
    record_age: prometheus::GaugeVec,
    gaps: IntCounterVec,
    gap_records: IntCounterVec,
    owned: IntGaugeVec,
    checkpoint_age: prometheus::GaugeVec,
    heartbeat_latency: prometheus::GaugeVec,
    copiers_retrying: IntGauge,
}

impl MirrorGauges {
    /// Creates the metrics and registers them (the latency histogram included).
    pub fn register(registry: &Registry) -> Self {
        let part = &["flow", "topic", "partition"];
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), part).expect("valid counter")
        };
        let int_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), part).expect("valid gauge")
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
        };
        let metrics = MirrorGauges {
            copied_records: counter(
                "meridian_mirror_records_copied_total",
                "Records this worker appended to the remote partition, per owned source partition.",
            ),
            copied_bytes: counter(
                "meridian_mirror_bytes_copied_total",
                "Record batch bytes this worker appended to the remote partition, per owned source partition.",
            ),
            lag_records: int_gauge(
                "meridian_mirror_lag_records",
                "Source high watermark minus the mirror's position: committed records not yet mirrored.",
            ),
            lag_seconds: gauge(
                "meridian_mirror_lag_seconds",
                "Seconds since this partition's copy was last caught up with the source high watermark (0 while caught up).",
                part,
            ),
            record_age: gauge(
                "meridian_mirror_record_age_seconds",
                "Age of the newest record mirrored (now minus its timestamp); grows on idle sources too.",
                part,
            ),
            gaps: counter(
                "meridian_mirror_retention_gaps_total",
                "Retention gaps found: the source deleted records before they were mirrored (the series appears with the first gap).",
            ),
            gap_records: counter(
                "meridian_mirror_retention_gap_records_total",
                "Offsets lost to retention gaps (never mirrored).",
            ),
            owned: IntGaugeVec::new(
                Opts::new(
                    "meridian_mirror_partitions_owned",
                    "Source partitions this worker copies, by flow.",
                ),
                &["flow"],
            )
            .expect("valid gauge"),
            checkpoint_age: gauge(
                "meridian_mirror_checkpoint_age_seconds",
                "Seconds since the flow's checkpointer (on this worker) last completed a round.",
                &["flow"],
            ),
            heartbeat_latency: gauge(
                "meridian_mirror_heartbeat_latency_seconds",
                "End-to-end latency of the latest mirrored heartbeat, by flow.",
                &["flow"],
            ),
            copiers_retrying: IntGauge::with_opts(Opts::new(
                "meridian_mirror_partitions_retrying",
                "Owned partitions whose last fetch or append failed and is being retried.",
            ))
            .expect("valid gauge"),
        };
        crate::metrics::register(registry, &*REPLICATION_LATENCY);
        crate::metrics::register(registry, &metrics.copied_records);
        crate::metrics::register(registry, &metrics.copied_bytes);
        crate::metrics::register(registry, &metrics.lag_records);
        crate::metrics::register(registry, &metrics.lag_seconds);
        crate::metrics::register(registry, &metrics.record_age);
        crate::metrics::register(registry, &metrics.gaps);
        crate::metrics::register(registry, &metrics.gap_records);
        crate::metrics::register(registry, &metrics.owned);
        crate::metrics::register(registry, &metrics.checkpoint_age);
        crate::metrics::register(registry, &metrics.heartbeat_latency);
        crate::metrics::register(registry, &metrics.copiers_retrying);
        metrics
    }

    /// Rebuilds every series from the partitions owned now.
    pub fn refresh(&self, owned: &OwnedPartitions) {
        self.copied_records.reset();
        self.copied_bytes.reset();
        self.lag_records.reset();
        self.lag_seconds.reset();
        self.record_age.reset();
        self.gaps.reset();
        self.gap_records.reset();
        self.owned.reset();
        self.checkpoint_age.reset();
        self.heartbeat_latency.reset();
        let now = Instant::now();
        let now_ms = now_ms();
        let mut retrying = 0;
        let owned = owned
            .lock()
            .expect("owned partitions lock poisoned")
            .clone();
        for (task, progress) in owned.values() {
            let progress = progress.lock().expect("progress").clone();
            let partition = task.partition.to_string();
            let labels = [task.flow.as_str(), task.source_topic.as_str(), &partition];
            self.owned.with_label_values(&[&task.flow]).inc();
            self.copied_records
                .with_label_values(&labels)
                .inc_by(progress.copied_records);
            self.copied_bytes
                .with_label_values(&labels)
                .inc_by(progress.copied_bytes);
            self.lag_records
                .with_label_values(&labels)
                .set(progress.lag());
            self.lag_seconds
                .with_label_values(&labels)
                .set(progress.lag_duration(now).as_secs_f64());
            if let Some(ts) = progress.newest_copied_timestamp_ms {
                self.record_age
                    .with_label_values(&labels)
                    .set((now_ms - ts).max(0) as f64 / 1000.0);
            }
            // Gap series appear with the first gap: five series per partition keep a
            // worker owning 1,000 partitions well under a 1 MiB scrape.
            if !progress.gaps.is_empty() {
                self.gaps
                    .with_label_values(&labels)
                    .inc_by(progress.gaps.len() as u64);
                self.gap_records.with_label_values(&labels).inc_by(
                    progress
                        .gaps
                        .iter()
                        .map(|g| (g.to - g.from).max(0) as u64)
                        .sum(),
                );
            }
            if let Some(ms) = progress.heartbeat_latency_ms {
                self.heartbeat_latency
                    .with_label_values(&[&task.flow])
                    .set(ms.max(0) as f64 / 1000.0);
            }
            if matches!(progress.state, crate::copy::CopyState::Retrying { .. }) {
                retrying += 1;
            }
        }
        self.copiers_retrying.set(retrying);
        for (flow, at) in CHECKPOINT_ROUNDS
            .lock()
            .expect("checkpoint rounds lock poisoned")
            .iter()
        {
            self.checkpoint_age
                .with_label_values(&[flow])
                .set(now.saturating_duration_since(*at).as_secs_f64());
        }
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: &C) {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
}
