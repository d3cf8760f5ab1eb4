//! The HTTP edge of every vote endpoint: validation happens here, once, into domain types.

use axum::{
    body::Body,
    http::{HeaderMap, StatusCode, header},
};
use bandvote_core::{IngestPath, MAX_BODY_BYTES, Vote, VoteId};
use bandvote_runtime::{
    http::{self, ApiError, BodyError},
    metrics as names,
};

/// The header a client sets to make retries of one vote count once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Lets browsers on `origins` post votes to `router` (a gateway's routes): `POST` with
/// `Content-Type`, `Idempotency-Key` and the voter header, reading `Retry-After`. Closed when
/// `origins` is empty. Used when the web app is served from another origin than the vote paths.
pub fn with_vote_cors(router: axum::Router, origins: &[String], voter_header: &str) -> axum::Router {
    let mut headers = vec![header::CONTENT_TYPE, header::HeaderName::from_static(IDEMPOTENCY_KEY)];
    headers.extend(header::HeaderName::from_bytes(voter_header.to_ascii_lowercase().as_bytes()).ok());
    http::with_cors(router, origins, &[axum::http::Method::POST], &headers)
}

/// A vote that passed the edge: its id and its validated payload.
#[derive(Debug, Clone)]
pub struct AcceptedVote {
    /// The client's key, or a fresh UUIDv7.
    pub id: VoteId,
    /// The validated vote.
    pub vote: Vote,
}

/// Reads and validates a vote request: `415` unless the body is JSON, `413` over 16 KiB, `400` for
/// a malformed body, an invalid field or an invalid `Idempotency-Key`.
pub async fn read_vote(path: IngestPath, headers: &HeaderMap, body: Body) -> Result<AcceptedVote, ApiError> {
    read_vote_and_body(path, headers, body).await.map(|(vote, _)| vote)
}

/// [`read_vote`], also giving back the body it read (the wasm host hands it on to its guest).
pub async fn read_vote_and_body(
    path: IngestPath,
    headers: &HeaderMap,
    body: Body,
) -> Result<(AcceptedVote, bytes::Bytes), ApiError> {
    let result = read(headers, body).await;
    if let Err((reason, _)) = &result {
        metrics::counter!(names::VOTES_REJECTED, "path" => path.as_str(), "reason" => *reason).increment(1);
    }
    result.map_err(|(_, error)| error)
}

async fn read(headers: &HeaderMap, body: Body) -> Result<(AcceptedVote, bytes::Bytes), (&'static str, ApiError)> {
    if !is_json(headers) {
        let error = ApiError::client(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type must be application/json", None);
        return Err(("media_type", error));
    }
    let id = match headers.get(IDEMPOTENCY_KEY) {
        None => VoteId::generate(),
        Some(value) => value.to_str().ok().and_then(|key| VoteId::from_client_key(key).ok()).ok_or_else(|| {
            let message = bandvote_core::IdError.to_string();
            ("key", ApiError::bad_request(message, Some("Idempotency-Key")))
        })?,
    };
    if declared_length(headers).is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(("too_large", too_large()));
    }
    let bytes = match http::read_body(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let reason = match error {
                BodyError::TooLarge => "too_large",
                BodyError::TooSlow => "too_slow",
                BodyError::Broken => "invalid",
            };
            return Err((reason, error.into_api_error(MAX_BODY_BYTES)));
        }
    };
    let vote = Vote::parse_json(&bytes).map_err(|e| ("invalid", ApiError::bad_request(e.message, e.field)))?;
    Ok((AcceptedVote { id, vote }, bytes))
}

fn too_large() -> ApiError {
    BodyError::TooLarge.into_api_error(MAX_BODY_BYTES)
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(bandvote_core::http::is_json_media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    const VOTE: &str = r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#;

    async fn status_of(pairs: &[(&'static str, &str)], body: impl Into<Body>) -> Result<AcceptedVote, StatusCode> {
        read_vote(IngestPath::Grpc, &headers(pairs), body.into()).await.map_err(|e| e.status())
    }

    #[tokio::test]
    async fn accepts_json_with_or_without_charset() {
        for ct in ["application/json", "application/json; charset=utf-8", "Application/JSON"] {
            let vote = status_of(&[("content-type", ct)], VOTE).await.expect("accepted");
            assert!(!vote.id.is_client_supplied());
        }
    }

    #[tokio::test]
    async fn refuses_other_media_types() {
        assert_eq!(
            status_of(&[("content-type", "text/plain")], VOTE).await.err(),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(status_of(&[], VOTE).await.err(), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }

    #[tokio::test]
    async fn refuses_bodies_over_the_limit() {
        let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(
            status_of(&[("content-type", "application/json")], big).await.err(),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }

    #[tokio::test]
    async fn takes_the_idempotency_key_as_the_id() {
        let ok = status_of(&[("content-type", "application/json"), ("idempotency-key", "vote-42")], VOTE)
            .await
            .expect("accepted");
        assert_eq!(ok.id.as_str(), "vote-42");
        assert!(ok.id.is_client_supplied());
        let bad = status_of(&[("content-type", "application/json"), ("idempotency-key", "no spaces")], VOTE).await;
        assert_eq!(bad.err(), Some(StatusCode::BAD_REQUEST));
    }
}
