//! The WebAssembly guest of bandvote's wasm ingest path: a `wasi:http` proxy component
//! (`wasm32-wasip2`) that validates each vote with the same domain code as the native gateways
//! (`bandvote-core`) and forwards it over HTTP to the HTTP producer, relaying its answer.
//!
//! The producer's base URL comes from the `BANDVOTE_UPSTREAM` environment variable (the host sets
//! it; default `http://127.0.0.1:8001`). Being a standard component, it also runs under
//! `wasmtime serve -Scli -Shttp --env BANDVOTE_UPSTREAM=http://127.0.0.1:8001 bandvote-guest.wasm`.

use bandvote_core::{MAX_BODY_BYTES, Vote, VoteId, http::error_body};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use wstd::http::{Body, Client, Error, Method, Request, Response, StatusCode};

/// The route this component serves.
const ROUTE: &str = "/wasm/votes";
/// The round the host stamped on the vote, passed on to the producer.
const ROUND_HEADER: &str = "bandvote-round";

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    Ok(handle(request).await)
}

async fn handle(request: Request<Body>) -> Response<Body> {
    #[cfg(feature = "misbehave")]
    if let Some(response) = misbehave::route(&request).await {
        return response;
    }
    if request.uri().path() != ROUTE {
        return error(StatusCode::NOT_FOUND, "no such route", None);
    }
    if request.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route", None);
    }
    let headers = request.headers();
    let is_json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(bandvote_core::http::is_json_media_type);
    if !is_json {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type must be application/json", None);
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str().ok().map(VoteId::from_client_key) {
            Some(Ok(id)) => Some(id),
            _ => {
                let message = bandvote_core::IdError.to_string();
                return error(StatusCode::BAD_REQUEST, &message, Some("Idempotency-Key"));
            }
        },
    };
    let round = headers.get(ROUND_HEADER).cloned();
    let body = match Limited::new(request.into_body().into_boxed_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let message = format!("body must be at most {MAX_BODY_BYTES} bytes");
            return error(StatusCode::PAYLOAD_TOO_LARGE, &message, None);
        }
        Err(_) => {
            return error(StatusCode::BAD_REQUEST, "could not read the request body", None);
        }
    };
    let vote = match Vote::parse_json(&body) {
        Ok(vote) => vote,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.message, e.field),
    };
    forward(&vote, key.as_ref(), round.as_ref()).await
}

/// Sends the validated vote to the HTTP producer, with the round the host stamped on it, and
/// relays its status and body.
async fn forward(vote: &Vote, key: Option<&VoteId>, round: Option<&wstd::http::HeaderValue>) -> Response<Body> {
    let upstream = std::env::var("BANDVOTE_UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:8001".into());
    let payload = serde_json::json!({"name": vote.name, "album": vote.album, "year": vote.year, "rank": vote.rank});
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/votes", upstream.trim_end_matches('/')))
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key.as_str());
    }
    if let Some(round) = round {
        builder = builder.header(ROUND_HEADER, round);
    }
    let request = match builder.body(Body::from(payload.to_string())) {
        Ok(request) => request,
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", None),
    };
    let mut answer = match Client::new().send(request).await {
        Ok(answer) => answer,
        Err(_) => return unavailable(),
    };
    let status = answer.status();
    let retry_after = answer.headers().get("retry-after").cloned();
    let body = match answer.body_mut().contents().await {
        Ok(bytes) => bytes.to_vec(),
        Err(_) => return unavailable(),
    };
    let mut response = Response::builder().status(status).header("content-type", "application/json");
    if let Some(retry_after) = retry_after {
        response = response.header("retry-after", retry_after);
    }
    response.body(Body::from(body)).unwrap_or_else(|_| Response::new(Body::empty()))
}

fn unavailable() -> Response<Body> {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "the vote queue is unavailable, retry later", None);
    response.headers_mut().insert("retry-after", wstd::http::HeaderValue::from_static("1"));
    response
}

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response<Body> {
    let mut response = Response::new(Body::from(error_body(message, field)));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", wstd::http::HeaderValue::from_static("application/json"));
    response
}

/// Routes that misbehave on purpose, so the host's limits can be tested on a real component.
#[cfg(feature = "misbehave")]
mod misbehave {
    use wstd::http::{Body, Client, Request, Response, StatusCode};

    pub async fn route(request: &Request<Body>) -> Option<Response<Body>> {
        match request.uri().path() {
            "/wasm/misbehave/trap" => panic!("trapping on purpose"),
            "/wasm/misbehave/spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/wasm/misbehave/allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            // Tries to reach the URL in the query, bypassing the upstream: 200 if it got an
            // answer, 403 if the host refused.
            "/wasm/misbehave/escape" => {
                let target = request.uri().query().unwrap_or_default().to_owned();
                let outgoing = Request::get(target).body(Body::empty()).ok()?;
                let status = match Client::new().send(outgoing).await {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::FORBIDDEN,
                };
                let mut response = Response::new(Body::empty());
                *response.status_mut() = status;
                Some(response)
            }
            _ => None,
        }
    }
}
