//! The producers take votes from the gateways only: every gateway sends the secret shared with its
//! producers in [`SECRET_HEADER`] (gRPC metadata, or an HTTP header the wasm host adds to its
//! guests' requests, never seen by a guest), and a producer configured with it refuses any call
//! without it, before reading the body (`401`, or gRPC `UNAUTHENTICATED`). Beside the cluster's
//! NetworkPolicy, it keeps a pod that can reach a producer from writing votes that skipped the
//! gateways' round check, voter policy and limits.

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header::CONTENT_TYPE},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bandvote_runtime::{http::ApiError, metrics as names};
use secrecy::{ExposeSecret, SecretString};

/// The header (and gRPC metadata key) that carries the secret.
pub const SECRET_HEADER: &str = "bandvote-ingest-secret";

/// Fewest characters of a secret.
pub const MIN_CHARS: usize = 16;

/// The secret a gateway sends and a producer requires.
#[derive(Clone)]
pub struct IngestSecret {
    header: HeaderValue,
}

impl std::fmt::Debug for IngestSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngestSecret(..)")
    }
}

impl IngestSecret {
    /// The secret `value`: at least [`MIN_CHARS`] visible ASCII characters.
    pub fn new(value: &SecretString) -> anyhow::Result<Self> {
        let value = value.expose_secret().trim();
        anyhow::ensure!(
            value.chars().count() >= MIN_CHARS,
            "the ingest secret must have at least {MIN_CHARS} characters (for example `openssl rand -hex 24`)"
        );
        let mut header = HeaderValue::from_str(value)
            .map_err(|_| anyhow::anyhow!("the ingest secret must be visible ASCII characters"))?;
        header.set_sensitive(true);
        Ok(Self { header })
    }

    /// The header value to send.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether `given` is this secret.
    pub fn matches(&self, given: Option<&HeaderValue>) -> bool {
        given.is_some_and(|given| bandvote_core::http::same_secret(given.as_bytes(), self.header.as_bytes()))
    }

    /// `router`, whose every route refuses a call without this secret, before its body is read.
    pub fn require(&self, router: Router) -> Router {
        router.route_layer(axum::middleware::from_fn_with_state(self.clone(), check))
    }
}

/// The standard gRPC health service, which probes call without the secret.
const GRPC_HEALTH: &str = "/grpc.health.v1.Health/";

async fn check(State(secret): State<IngestSecret>, request: Request, next: Next) -> Response {
    if secret.matches(request.headers().get(SECRET_HEADER)) || request.uri().path().starts_with(GRPC_HEALTH) {
        return next.run(request).await;
    }
    metrics::counter!(names::PRODUCER_UNAUTHENTICATED).increment(1);
    let grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unauthenticated("the gateways' ingest secret is required").into_http();
    }
    ApiError::client(StatusCode::UNAUTHORIZED, "the gateways' ingest secret is required", None).into_response()
}
