//! The metrics listener: `/metrics`, `/healthz` and `/readyz` on the node's metrics
//! address, a thin axum shell over a [`MetricsEndpoint`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};

use crate::BrokerError;

/// Says whether the node can serve: `Err` carries the reason shown by `/readyz`.
pub type ReadyCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;
type Refresh = Box<dyn Fn() + Send + Sync>;

/// One process's registry plus the snapshot refreshers that run before each scrape, so
/// gauges always describe the state at scrape time.
pub struct MetricsEndpoint {
    registry: Registry,
    refreshers: Vec<Refresh>,
    ready: ReadyCheck,
    /// Serialises scrapes: a refresher resets and refills its vectors.
    scraping: Mutex<()>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("refreshers", &self.refreshers.len())
            .finish_non_exhaustive()
    }
}

impl MetricsEndpoint {
    /// A registry with the process collector (CPU, memory, file descriptors) and
    /// `meridian_build_info{version,region,node,role}`, so dashboards can join on who a
    /// target is.
    pub fn new(region: &str, node: &str, role: &str, ready: ReadyCheck) -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        let info = IntGauge::with_opts(
            Opts::new(
                "meridian_build_info",
                "Always 1; labels say which version, region, node and role this process is.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("region", region)
            .const_label("node", node)
            .const_label("role", role),
        )
        .expect("valid build_info");
        info.set(1);
        super::register(&registry, &info);
        MetricsEndpoint {
            registry,
            refreshers: Vec::new(),
            ready,
            scraping: Mutex::new(()),
        }
    }

    /// Where collectors are registered.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `refresh` before every scrape (it rebuilds snapshot gauges).
    pub fn on_scrape(&mut self, refresh: impl Fn() + Send + Sync + 'static) {
        self.refreshers.push(Box::new(refresh));
    }

    /// The Prometheus text exposition of everything registered, refreshed now.
    pub fn render(&self) -> String {
        let _one_at_a_time = self.scraping.lock().expect("scrape lock poisoned");
        for refresh in &self.refreshers {
            refresh();
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Whether the node is ready to serve, with the reason when it is not.
    pub fn ready(&self) -> Result<(), String> {
        (self.ready)()
    }
}

/// Binds the metrics address, failing loudly (it is in the deployment file, so a clash is
/// a configuration error to fix), and returns the task that serves `endpoint` on it.
pub async fn serve_metrics(
    addr: SocketAddr,
    endpoint: Arc<MetricsEndpoint>,
) -> Result<tokio::task::JoinHandle<()>, BrokerError> {
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| BrokerError::Unreachable {
                addr: addr.to_string(),
                reason: format!("cannot listen for metrics: {e}"),
            })?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(endpoint);
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%addr, %err, "metrics listener failed");
        }
    }))
}

async fn metrics(State(endpoint): State<Arc<MetricsEndpoint>>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || endpoint.render())
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}

async fn readyz(State(endpoint): State<Arc<MetricsEndpoint>>) -> impl IntoResponse {
    match endpoint.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
