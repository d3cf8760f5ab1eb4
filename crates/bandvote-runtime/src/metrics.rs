//! The Prometheus recorder and the name of every metric bandvote exports. Names follow
//! `bandvote_<name>_<unit>[_total]`; labels stay low-cardinality (`path`, `pipeline`, `reason`).

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Votes answered `202`, by `path` (`grpc`, `wasm`).
pub const VOTES_ACCEPTED: &str = "bandvote_votes_accepted_total";
/// Votes answered 4xx, by `path` and `reason` (`invalid`, `too_large`, `media_type`, `key`).
pub const VOTES_REJECTED: &str = "bandvote_votes_rejected_total";
/// Votes answered 5xx because the queue or the next hop was unavailable, by `path`.
pub const VOTES_UNAVAILABLE: &str = "bandvote_votes_unavailable_total";
/// Requests the WebAssembly guest failed (trap, memory or time limit): each answered 500.
pub const WASM_GUEST_FAILURES: &str = "bandvote_wasm_guest_failures_total";
/// Time to instantiate the WebAssembly guest for one request (pooling allocator, pre-instantiated).
pub const WASM_INSTANTIATE_DURATION: &str = "bandvote_wasm_instantiate_seconds";
/// Latency of vote requests at the gateway, from request to answer, by `path`.
pub const VOTE_REQUEST_DURATION: &str = "bandvote_vote_request_duration_seconds";
/// `SubmitVotes` calls the gRPC gateway made to its producer (votes per call: the gateway's
/// accepted votes over this).
pub const GRPC_CALLS: &str = "bandvote_grpc_calls_total";
/// Calls the wasm gateway's host made to the http-producer's `POST /votes/batch` (votes per call:
/// the gateway's accepted votes over this).
pub const WASM_PRODUCER_CALLS: &str = "bandvote_wasm_producer_calls_total";
/// Messages the producer handed to Kafka and saw acknowledged.
pub const MESSAGES_PRODUCED: &str = "bandvote_messages_produced_total";
/// Produce attempts that failed (timeout, broker down), by `reason`.
pub const PRODUCE_ERRORS: &str = "bandvote_produce_errors_total";
/// Calls to a producer refused because they lacked the gateways' ingest secret.
pub const PRODUCER_UNAUTHENTICATED: &str = "bandvote_producer_unauthenticated_total";
/// Votes a producer refused because the round a gateway stamped could not have been open.
pub const PRODUCER_ROUND_REFUSALS: &str = "bandvote_producer_round_refusals_total";
/// Time from handing a message to Kafka to its delivery report.
pub const PRODUCE_DURATION: &str = "bandvote_produce_duration_seconds";
/// Votes applied by a consumer pipeline, by `pipeline` (`tally`, `log`).
pub const CONSUMER_VOTES: &str = "bandvote_consumer_votes_total";
/// Batches written by a consumer pipeline, by `pipeline`.
pub const CONSUMER_BATCHES: &str = "bandvote_consumer_batches_total";
/// Time to write one batch to the sink, by `pipeline`.
pub const CONSUMER_BATCH_DURATION: &str = "bandvote_consumer_batch_duration_seconds";
/// Replayed votes skipped because they were already applied, by `pipeline` and `reason`
/// (`offset`, `idempotency_key`, `duplicate_id`).
pub const CONSUMER_DUPLICATES: &str = "bandvote_consumer_duplicates_total";
/// Votes for a final (sealed) round that reached the tally afterwards, set aside and never counted.
pub const CONSUMER_LATE: &str = "bandvote_consumer_late_votes_total";
/// Batches the tally script refused because they did not continue the stored offset.
pub const CONSUMER_REFUSALS: &str = "bandvote_consumer_refused_batches_total";
/// Sink write failures that were retried, by `pipeline`.
pub const CONSUMER_SINK_ERRORS: &str = "bandvote_consumer_sink_errors_total";
/// Messages that were not votes and went to the dead-letter topic.
pub const CONSUMER_DEAD_LETTERS: &str = "bandvote_consumer_dead_letters_total";
/// Partitions found reset under the tally's stored offset (a recreated topic, a lost log) and
/// counted again from their start, by `pipeline`.
pub const CONSUMER_QUEUE_RESETS: &str = "bandvote_consumer_queue_resets_total";
/// Messages behind the newest one, per pipeline, summed over assigned partitions.
pub const CONSUMER_LAG: &str = "bandvote_consumer_lag_messages";
/// Seconds from a vote's `received_at` to when it was counted, for the newest counted vote.
pub const CONSUMER_FRESHNESS: &str = "bandvote_consumer_freshness_seconds";

/// Requests to the operator's routes refused for their bearer token, by `reason`: `wrong` (a
/// token was given and is not the admin token) or `limited` (`429`: the client's address gave too
/// many wrong ones lately).
pub const ADMIN_AUTH_FAILURES: &str = "bandvote_admin_auth_failures_total";

/// Connections closed at once, by `reason`: `max_connections` (the listener had
/// `BANDVOTE_MAX_CONNECTIONS` open) or `per_client` (the client's address had
/// `BANDVOTE_MAX_CONNECTIONS_PER_CLIENT` open).
pub const CONNECTIONS_REFUSED: &str = "bandvote_connections_refused_total";
/// Connections the listener closed, by `reason`: `header_timeout` (no complete request head in
/// time) or `idle` (no request in flight for the idle timeout, and the client did not leave after
/// the goodbye).
pub const CONNECTIONS_CLOSED: &str = "bandvote_connections_closed_total";
/// Connections whose first request was a live stream's, answered by the stream's own writer
/// without hyper's buffers (a stream asked for on a connection that served another request first
/// goes through hyper and is not counted).
pub const EVENT_STREAM_CONNECTIONS: &str = "bandvote_event_stream_connections_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("histogram buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding test harness): then our
            // handle renders an empty page rather than failing start-up.
            if metrics::set_global_recorder(recorder).is_ok() {
                spawn_upkeep(handle.clone());
            }
            handle
        })
        .clone()
}

/// How often the histograms' samples are folded into their buckets. The recorder keeps every
/// sample (24 bytes) until then; without this, a service nobody scrapes grows by 24 bytes per
/// recorded vote for as long as it runs.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Folds the recorded histogram samples into their buckets every [`UPKEEP_INTERVAL`], on a thread
/// of its own (the recorder may be installed before or outside any async runtime).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the metrics upkeep thread: histograms are folded only when scraped");
    }
}

/// Creates, at zero, the series a vote gateway exports, so that dashboards and `rate()` see zeros
/// from the start rather than "no data" until the first error.
pub fn announce_gateway(path: &'static str) {
    install();
    metrics::counter!(VOTES_ACCEPTED, "path" => path).increment(0);
    metrics::counter!(VOTES_UNAVAILABLE, "path" => path).increment(0);
    metrics::counter!(VOTES_REJECTED, "path" => path, "reason" => "invalid").increment(0);
    match path {
        "wasm" => {
            metrics::counter!(WASM_GUEST_FAILURES).increment(0);
            metrics::counter!(WASM_PRODUCER_CALLS).increment(0);
        }
        _ => metrics::counter!(GRPC_CALLS).increment(0),
    }
}

/// Creates, at zero, the series a producer exports.
pub fn announce_producer() {
    install();
    metrics::counter!(MESSAGES_PRODUCED).increment(0);
    for reason in ["unavailable", "refused"] {
        metrics::counter!(PRODUCE_ERRORS, "reason" => reason).increment(0);
    }
    metrics::counter!(PRODUCER_UNAUTHENTICATED).increment(0);
    metrics::counter!(PRODUCER_ROUND_REFUSALS).increment(0);
}

/// Creates, at zero, the series the consumer exports.
pub fn announce_consumer() {
    install();
    for pipeline in ["tally", "log"] {
        metrics::counter!(CONSUMER_VOTES, "pipeline" => pipeline).increment(0);
        metrics::counter!(CONSUMER_SINK_ERRORS, "pipeline" => pipeline).increment(0);
    }
    metrics::counter!(CONSUMER_DEAD_LETTERS).increment(0);
    metrics::counter!(CONSUMER_REFUSALS).increment(0);
    metrics::counter!(CONSUMER_LATE).increment(0);
    metrics::counter!(CONSUMER_QUEUE_RESETS, "pipeline" => "tally").increment(0);
}
