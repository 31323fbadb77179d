//! What a running process shows of itself: [`logging`] (text or JSON lines), [`metrics`]
//! (every metric, in one place), and [`health`] (`/metrics`, `/healthz`, `/readyz`).

pub mod health;
pub mod logging;
pub mod metrics;
