//! Counters and histograms bumped where things happen. They are process-wide (one
//! broker per process), so the code that sees an event needs no handle to a registry.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// Latency buckets from 0.5 ms to 10 s: loopback requests and cross-region long polls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The broker's event metrics.
#[derive(Debug, Clone)]
pub struct BrokerEvents {
    /// gRPC requests answered, by API (method name) and gRPC status.
    pub requests: IntCounterVec,
    /// gRPC request handling time, by API.
    pub request_seconds: HistogramVec,
    /// Partition-level errors inside otherwise answered requests, by error code.
    pub partition_errors: IntCounterVec,
    /// Record batch bytes appended by producers and mirrors, by topic.
    pub bytes_in: IntCounterVec,
    /// Record batch bytes served to consumers, mirrors and followers, by topic.
    pub bytes_out: IntCounterVec,
    /// ISR shrinks this broker (as leader) had committed.
    pub isr_shrinks: IntCounter,
    /// ISR expands this broker (as leader) had committed.
    pub isr_expands: IntCounter,
    /// Leaderships this broker took at a new leader epoch (one per partition election).
    pub leader_elections: IntCounter,
    /// Time to make appended data durable (fdatasync).
    pub flush_seconds: Histogram,
}

static EVENTS: LazyLock<BrokerEvents> = LazyLock::new(BrokerEvents::new);

/// This process's event metrics.
pub fn events() -> &'static BrokerEvents {
    &EVENTS
}

impl BrokerEvents {
    fn new() -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid counter")
        };
        BrokerEvents {
            requests: counter_vec(
                "meridian_broker_requests_total",
                "gRPC requests answered, by API and gRPC status.",
                &["api", "status"],
            ),
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "meridian_broker_request_duration_seconds",
                    "Time from a gRPC request's arrival to its response, by API (long polls included).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["api"],
            )
            .expect("valid histogram"),
            partition_errors: counter_vec(
                "meridian_broker_partition_errors_total",
                "Partition-level errors returned inside answered requests, by error code.",
                &["error"],
            ),
            bytes_in: counter_vec(
                "meridian_broker_bytes_in_total",
                "Record batch bytes appended by producers and mirror workers, by topic.",
                &["topic"],
            ),
            bytes_out: counter_vec(
                "meridian_broker_bytes_out_total",
                "Record batch bytes served by Fetch to consumers, mirrors and followers, by topic.",
                &["topic"],
            ),
            isr_shrinks: counter(
                "meridian_broker_isr_shrinks_total",
                "ISR shrinks committed for partitions this broker leads.",
            ),
            isr_expands: counter(
                "meridian_broker_isr_expands_total",
                "ISR expands committed for partitions this broker leads.",
            ),
            leader_elections: counter(
                "meridian_broker_leader_elections_total",
                "Partition leaderships this broker took at a new leader epoch.",
            ),
            flush_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "meridian_log_flush_duration_seconds",
                    "Time to make appended log data durable (fdatasync of segment and directory).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid histogram"),
        }
    }

    /// Adds every event metric to `registry`.
    pub fn register(&self, registry: &Registry) {
        super::register(registry, &self.requests);
        super::register(registry, &self.request_seconds);
        super::register(registry, &self.partition_errors);
        super::register(registry, &self.bytes_in);
        super::register(registry, &self.bytes_out);
        super::register(registry, &self.isr_shrinks);
        super::register(registry, &self.isr_expands);
        super::register(registry, &self.leader_elections);
        super::register(registry, &self.flush_seconds);
    }
}

/// The API label of a gRPC path (`/meridian.broker.v1.Broker/Produce` → `Produce`).
fn api_of(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
}

/// A tower layer for the broker's gRPC server that counts every request by API and
/// status and times it, without touching the handlers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMetricsLayer;

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics { inner }
    }
}

/// The service [`RequestMetricsLayer`] wraps around the gRPC router.
#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RequestMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let api = api_of(request.uri().path()).to_owned();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            // A handler's error travels as a trailers-only response (grpc-status in the
            // headers); a success carries grpc-status 0 in the trailers.
            let status = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(|code| format!("{:?}", tonic::Code::from_i32(code)))
                    .unwrap_or_else(|| "Ok".to_owned()),
                Err(_) => "TransportError".to_owned(),
            };
            let metrics = events();
            metrics.requests.with_label_values(&[&api, &status]).inc();
            metrics
                .request_seconds
                .with_label_values(&[&api])
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_label_is_the_method_name() {
        assert_eq!(api_of("/meridian.broker.v1.Broker/Produce"), "Produce");
        assert_eq!(
            api_of("/meridian.controller.v1.Raft/AppendEntries"),
            "AppendEntries"
        );
        assert_eq!(api_of("/"), "unknown");
    }
}
