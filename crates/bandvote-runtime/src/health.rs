//! `/healthz` (the process is alive), `/readyz` (every dependency answers) and `/metrics`
//! (Prometheus text), mounted by every service on its own listener.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a dependency is not ready: any error, shown in `/readyz` by its message.
pub type CheckError = Box<dyn std::error::Error + Send + Sync>;

/// A readiness check: `Ok` when the dependency answers, else what is wrong.
pub type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), CheckError>> + Send>> + Send + Sync>;

/// Wraps an async closure into a [`Check`].
pub fn check<F, Fut>(f: F) -> Check
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CheckError>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

#[derive(Clone)]
struct Health {
    checks: Arc<Vec<(&'static str, Check)>>,
    metrics: PrometheusHandle,
}

/// The health and metrics routes, with the named readiness checks of this service.
pub fn router(checks: Vec<(&'static str, Check)>) -> Router {
    let state = Health { checks: Arc::new(checks), metrics: crate::metrics::install() };
    Router::new()
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .route("/metrics", get(get_metrics))
        .with_state(state)
}

async fn get_healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn get_readyz(State(health): State<Health>) -> impl IntoResponse {
    let results = futures::future::join_all(health.checks.iter().map(|(name, check)| async move {
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs()).into()),
        };
        (*name, result)
    }))
    .await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let mut details = Map::new();
    for (name, result) in results {
        let value = match result {
            Ok(()) => Value::from("ok"),
            Err(error) => Value::from(chain(&*error)),
        };
        details.insert(name.to_owned(), value);
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if ready { "ready" } else { "not ready" }, "checks": details});
    (status, Json(body))
}

/// An error and its sources, `outer: inner: ...`, for `/readyz` and logs.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

async fn get_metrics(State(health): State<Health>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], health.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("redis did not answer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_failed_check_shows_its_cause_chain() {
        let error = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
        assert_eq!(chain(&error), "redis did not answer: connection refused");
        assert_eq!(chain(&*super::CheckError::from("topic votes is missing")), "topic votes is missing");
    }
}
