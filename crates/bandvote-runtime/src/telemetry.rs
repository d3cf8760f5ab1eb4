//! Logging set-up: `tracing` with an env filter (`RUST_LOG`, default `info`), human-readable by
//! default, JSON lines when `BANDVOTE_LOG_FORMAT=json`.
//!
//! A line logged within a request's `vote` span carries the span's fields (`path`, `vote_id`,
//! `trace_id`): as a `vote{…}:` prefix in text, as the `"span"` object in JSON (the innermost span
//! only: the request span is the only one on a vote's path, so the list of enclosing spans would
//! repeat it).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. Called once, from `main`.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,mongodb=warn,h2=warn,tower=warn,hyper=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second call (tests build several apps in one process) keeps the first subscriber.
    let _ = if json {
        let layer = fmt::layer().json().with_current_span(true).with_span_list(false);
        registry.with(layer.with_writer(std::io::stderr)).try_init()
    } else {
        registry.with(fmt::layer().with_target(true).with_writer(std::io::stderr)).try_init()
    };
}

/// Installs a subscriber whose output the test harness captures (shown only for failing tests).
pub fn init_for_tests() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    let _ = tracing_subscriber::registry().with(filter).with(fmt::layer().with_test_writer()).try_init();
}
