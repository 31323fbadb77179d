//! The HTTP endpoints an orchestrator and Prometheus scrape: `/metrics`, `/healthz`
//! (the process is alive) and `/readyz` (the runtime can do its job right now; what that
//! means is the runtime's, behind [`Ready`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

/// What a runtime reports on `/readyz`.
pub trait Ready: Send + Sync + 'static {
    /// Why the runtime is not ready now; `None` when it is.
    fn not_ready(&self) -> Option<String>;
}

/// Readiness facts every runtime tracks: whether it is stopping, and whether its latest
/// receive from the purchase queue worked.
#[derive(Debug)]
pub struct Readiness {
    receiving: AtomicBool,
    stopping: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            // The queues answered at start-up, before the worker got this far.
            receiving: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
        }
    }
}

impl Readiness {
    /// Records whether the latest receive from the purchase queue succeeded.
    pub fn receive_succeeded(&self, ok: bool) {
        self.receiving.store(ok, Ordering::Relaxed);
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn is_receiving(&self) -> bool {
        self.receiving.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct HealthState {
    metrics: PrometheusHandle,
    ready: Arc<dyn Ready>,
}

/// Installs the metrics recorder and binds `addr` for [`serve`], so that a port already in
/// use stops the runtime at start-up.
///
/// # Errors
/// When the recorder cannot be installed or the address cannot be bound.
pub async fn listen(
    addr: SocketAddr,
) -> anyhow::Result<(tokio::net::TcpListener, PrometheusHandle)> {
    let metrics = super::metrics::install()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on METRICS_ADDR {addr}: {e}"))?;
    tracing::info!(
        message = "Serving /metrics, /healthz and /readyz.",
        addr = %listener.local_addr().unwrap_or(addr),
    );
    Ok((listener, metrics))
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    ready: Arc<dyn Ready>,
    stop: CancellationToken,
) {
    let upkeep = tokio::spawn(drain_histograms(metrics.clone(), stop.clone()));
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(HealthState { metrics, ready });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    upkeep.abort();
    if let Err(e) = result {
        tracing::error!(message = "The metrics and health server failed.", error = %e);
    }
}

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds. The recorder
/// keeps every sample until it is drained, and a scrape is what drains it otherwise: a
/// worker whose `/metrics` is scraped once a minute, or only probed on `/readyz`, would
/// hold three samples per decision until then, without bound.
async fn drain_histograms(metrics: PrometheusHandle, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(UPKEEP_EVERY) => metrics.run_upkeep(),
        }
    }
}

async fn render_metrics(State(state): State<HealthState>) -> String {
    state.metrics.render()
}

async fn readyz(State(state): State<HealthState>) -> (StatusCode, String) {
    match state.ready.not_ready() {
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
        None => (StatusCode::OK, "ready\n".to_owned()),
    }
}
