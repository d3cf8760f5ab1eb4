//! The HTTP edge of `/grpc/votes` on arbitrary requests (content type, Idempotency-Key,
//! Content-Length, body): it never panics, accepts only valid votes within the size limit, and
//! answers everything else with 400, 408, 413 or 415.
#![no_main]

use arbitrary::Arbitrary;
use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode},
};
use bandvote_core::{IngestPath, MAX_BODY_BYTES, Vote};
use bandvote_ingest::edge::read_vote;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Request {
    content_type: Option<Vec<u8>>,
    idempotency_key: Option<Vec<u8>>,
    content_length: Option<Vec<u8>>,
    body: Vec<u8>,
}

fuzz_target!(|request: Request| {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", &request.content_type),
        ("idempotency-key", &request.idempotency_key),
        ("content-length", &request.content_length),
    ] {
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let body = request.body.clone();
    let answer = runtime.block_on(read_vote(IngestPath::Grpc, &headers, Body::from(body)));
    match answer {
        Ok(accepted) => {
            assert!(request.body.len() <= MAX_BODY_BYTES);
            assert_eq!(Vote::parse_json(&request.body).as_ref(), Ok(&accepted.vote));
        }
        Err(error) => {
            let status = error.status();
            assert!(
                [
                    StatusCode::BAD_REQUEST,
                    StatusCode::REQUEST_TIMEOUT,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                ]
                .contains(&status),
                "unexpected {status}"
            );
        }
    }
});
