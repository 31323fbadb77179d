//! What a running process shows of itself: [`logging`] (text or JSON lines), [`metrics`]
//! (every metric, in one place), [`health`] (`/metrics`, `/healthz`, `/readyz`), and
//! [`counters`] (counts kept in memory where nothing scrapes them).

pub mod counters;
pub mod health;
pub mod logging;
pub mod metrics;
