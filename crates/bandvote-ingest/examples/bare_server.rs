//! The bare baseline of the ingest benchmarks: an axum server that reads the request body and
//! answers `202` without validating, queueing or anything else. Whatever a real path costs beyond
//! this is bandvote's own overhead.
//!
//! `cargo run --release -p bandvote-ingest --example bare_server -- 127.0.0.1:3900`

#![allow(missing_docs)]

use axum::{Router, body::Bytes, http::StatusCode, response::IntoResponse, routing::post};

async fn post_vote(body: Bytes) -> impl IntoResponse {
    let _ = body.len();
    (StatusCode::ACCEPTED, [("content-type", "application/json")], r#"{"id":"bare","path":"bare"}"#)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3900".into());
    let router = Router::new().route("/{*path}", post(post_vote));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare baseline listening on {addr}");
    axum::serve(listener, router).await?;
    Ok(())
}
