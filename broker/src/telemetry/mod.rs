//! Prometheus metrics: what an operator watches at 3 a.m.
//!
//! ```text
//!  events ── counters and histograms bumped where things happen (requests, bytes,
//!            ISR changes, elections, flushes): process-wide, cheap, lock-free
//!  snapshot ─ gauges rebuilt from the node's own state at every scrape (offsets, HW,
//!            under-replicated, lag, Raft, gossip): only what this process leads or
//!            owns, so cardinality stays bounded and no series outlives its partition
//!  endpoint ─ the axum shell: /metrics (text format), /healthz, /readyz
//! ```
//!
//! Every name carries the `meridian_` prefix and Prometheus conventions; the set is a
//! contract documented in docs/metrics.md.

mod endpoint;
mod events;
mod gossip_metrics;
mod snapshot;
mod tls_metrics;

pub use endpoint::{MetricsEndpoint, ReadyCheck, serve_metrics};
pub use events::{BrokerEvents, RequestMetrics, RequestMetricsLayer, events};
pub use gossip_metrics::GossipMetrics;
pub use snapshot::BrokerGauges;
pub use tls_metrics::TlsGauges;

/// Registers a collector, which can only fail on a programming error (a name used twice).
pub(crate) fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &prometheus::Registry,
    collector: &C,
) {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
}
