//! The integration tests of the `bandvote` binary and its services against real servers (Kafka,
//! Redis, a MongoDB-wire server, Chromium), in one test binary: each file under `tests/` would be
//! another binary linking wasmtime and rdkafka. `#[ignore]`d tests (the browser, the Kafka outage)
//! are run by `scripts/test` on their own: `cargo test --test it -- --ignored web::`.

mod support;

mod admin;
mod api;
mod ballot;
mod config_file;
mod consumer_faults;
mod cors;
mod disk_full;
mod embedded;
mod failover;
mod fairness;
mod grafana;
mod grpc_path;
mod hostile;
mod kafka_outage;
mod listener;
mod load;
mod partitions;
mod receipts;
mod recount;
mod rounds;
mod secrets;
mod side_door;
mod stream_limits;
mod tls;
mod tracing;
mod up;
mod wasm_path;
mod web;
