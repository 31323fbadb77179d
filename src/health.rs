//! The HTTP endpoints an orchestrator and Prometheus scrape: `/metrics`, `/healthz`
//! (the process is alive) and `/readyz` (the worker can do its job right now).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::bootpay::BootpayClient;
use crate::intake::{Intake, IntakeState};

/// What readiness depends on besides Bootpay and the intake gate.
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
}

#[derive(Clone)]
struct HealthState {
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
    intake: Arc<Intake>,
    bootpay: Arc<BootpayClient>,
}

/// Binds `addr`, so a port already in use stops the worker at start-up.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
    intake: Arc<Intake>,
    bootpay: Arc<BootpayClient>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(HealthState {
            metrics,
            readiness,
            intake,
            bootpay,
        });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(message = "The metrics and health server failed.", error = %e);
    }
}

async fn render_metrics(State(state): State<HealthState>) -> String {
    state.metrics.render()
}

async fn ready(State(state): State<HealthState>) -> (StatusCode, String) {
    let not_ready = |why: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    };
    if state.readiness.stopping.load(Ordering::Relaxed) {
        return not_ready("shutting down");
    }
    if let IntakeState::Paused(reason) = state.intake.state() {
        return not_ready(&format!("intake paused ({})", reason.as_str()));
    }
    if !state.readiness.receiving.load(Ordering::Relaxed) {
        return not_ready("receiving from the purchase queue fails");
    }
    if !state.bootpay.has_token() {
        return not_ready("no valid Bootpay token");
    }
    (StatusCode::OK, "ready\n".to_owned())
}
