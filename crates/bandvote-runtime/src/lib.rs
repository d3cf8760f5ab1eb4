//! What every bandvote service shares at run time, whatever its role:
//! - [`telemetry`]: `tracing` set-up (human or JSON logs);
//! - [`metrics`]: the Prometheus recorder and the names of every metric bandvote exports;
//! - [`shutdown`]: one cancellation token fed by SIGTERM and SIGINT, and named tasks;
//! - [`health`]: `/healthz`, `/readyz` and `/metrics`, mounted on each service's own listener;
//! - [`http`]: binding, serving with graceful shutdown, and the one JSON error type of the HTTP API.

pub mod health;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
