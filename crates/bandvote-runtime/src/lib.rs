//! What every bandvote service shares at run time, whatever its role:
//! - [`client`]: who a client is for per-client limits (trusted proxies, IPv6 by /64);
//! - [`per_client`]: the client of a request and token buckets per client, bounded;
//! - [`telemetry`]: `tracing` set-up (human or JSON logs);
//! - [`metrics`]: the Prometheus recorder and the names of every metric bandvote exports;
//! - [`shutdown`]: one cancellation token fed by SIGTERM and SIGINT, and named tasks;
//! - [`health`]: `/healthz`, `/readyz` and `/metrics`, mounted on each service's own listener;
//! - [`http`]: binding, serving with graceful shutdown, and the one JSON error type of the HTTP API;
//!   the live stream's connections are served without hyper's per-connection buffers;
//! - [`service`]: a service's routes, checks and tasks, served alone or merged with others (`up`);
//! - [`redis_client`]: where Redis is (one URL, or the primary Sentinel names), followed through a
//!   failover; [`url`]: store URLs with their passwords hidden.

pub mod client;
mod event_stream;
pub mod health;
pub mod http;
pub mod inproc;
pub mod metrics;
pub mod per_client;
pub mod redis_client;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod url;
