//! The generator itself, against small in-process servers: it keeps its schedule, measures latency
//! from each vote's intended send time, retries with the same key, and `verify` catches a missing
//! or doubled vote.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::HeaderMap, http::StatusCode, routing::get, routing::post};
use bandvote_load::{Counts, LoadConfig, VoteSource, fetch_counts, run, verify};

/// A vote server: answers every vote with `answer(n, key)` (n = how many requests so far, counting
/// from 1), keeps the counts it "counted" and serves them as /api/results.
#[derive(Clone, Default)]
struct Fake {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    requests: u64,
    keys: HashMap<String, u64>,
    counts: Counts,
    /// Requests arriving while this is set wait until it is cleared.
    stall: Option<Arc<tokio::sync::Notify>>,
    /// 1-based request numbers that are answered 202 but not counted.
    drop: Vec<u64>,
    /// 1-based request numbers counted twice.
    double: Vec<u64>,
    /// Answer the first attempt of every key with 503.
    fail_first_attempt: bool,
}

async fn vote(State(fake): State<Fake>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let stall = fake.inner.lock().unwrap().stall.clone();
    if let Some(stall) = stall {
        stall.notified().await;
    }
    let vote = bandvote_core::Vote::parse_json(&body).expect("the generator sends valid votes");
    let key = headers.get("idempotency-key").map(|v| v.to_str().unwrap().to_owned());
    let mut state = fake.inner.lock().unwrap();
    state.requests += 1;
    let n = state.requests;
    if let Some(key) = key {
        let fail_first_attempt = state.fail_first_attempt;
        let attempts = state.keys.entry(key).or_default();
        *attempts += 1;
        if fail_first_attempt && *attempts == 1 {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let times = if state.drop.contains(&n) {
        0
    } else if state.double.contains(&n) {
        2
    } else {
        1
    };
    for _ in 0..times {
        state.counts.total += 1;
        *state.counts.bands.entry(vote.name.clone()).or_default() += 1;
        *state.counts.albums.entry(vote.album_key()).or_default() += 1;
    }
    StatusCode::ACCEPTED
}

async fn results(State(fake): State<Fake>) -> Json<Counts> {
    Json(fake.inner.lock().unwrap().counts.clone())
}

impl Fake {
    async fn start(self) -> String {
        let app = Router::new().route("/votes", post(vote)).route("/api/results", get(results)).with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }
}

fn config(base: &str, rates: &[f64], step: Duration) -> LoadConfig {
    LoadConfig {
        targets: vec![format!("{base}/votes")],
        rates: rates.to_vec(),
        step,
        count: None,
        source: VoteSource::original_mix(3),
        max_in_flight: 256,
        timeout: Duration::from_secs(10),
        retries: 0,
        keys: false,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_is_kept_step_by_step() {
    let fake = Fake::default();
    let base = fake.clone().start().await;
    let report = run(config(&base, &[100.0, 300.0], Duration::from_secs(1))).await.unwrap();
    assert_eq!(report.planned, 400);
    assert_eq!(report.all.sent, 400);
    assert_eq!(report.all.accepted, 400);
    // Votes are placed in the second their schedule says, whatever the answers.
    let per_second: Vec<_> = report.seconds.iter().map(|s| s.sent).collect();
    assert_eq!(per_second, [100, 300]);
    // The offered rate is 400 votes over the ~2 s of sending: it follows the request, not the
    // answers. A generous band: this only catches a generator that drifts from its schedule.
    assert!((150.0..=260.0).contains(&report.achieved_rate), "achieved {}", report.achieved_rate);
    assert_eq!(fake.inner.lock().unwrap().requests, 400);
}

/// A server that stalls for a second: every vote due during the stall waits for it, and that wait
/// is in the latency, even though only 4 requests may be in flight (a closed-loop tool would have
/// sent just those 4 during the stall and reported a clean p99).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_latency_of_every_vote_due_during_it() {
    let fake = Fake::default();
    let base = fake.clone().start().await;
    let mut config = config(&base, &[200.0], Duration::from_secs(3));
    config.max_in_flight = 4;
    let stall = Arc::new(tokio::sync::Notify::new());
    let controller = {
        let (fake, stall) = (fake.clone(), stall.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            fake.inner.lock().unwrap().stall = Some(stall.clone());
            tokio::time::sleep(Duration::from_millis(1000)).await;
            fake.inner.lock().unwrap().stall = None;
            stall.notify_waiters();
        })
    };
    let report = run(config).await.unwrap();
    controller.await.unwrap();
    assert_eq!(report.all.accepted, 600);
    // A third of the votes were due during the stall: p99 and max are close to the full second.
    assert!(report.all.latency.p99_ms >= 800.0, "p99 {} ms", report.all.latency.p99_ms);
    assert!(report.all.latency.max_ms >= 900.0, "max {} ms", report.all.latency.max_ms);
    // The second before the stall is fast, the stalled second is not.
    assert!(report.seconds[0].p99_ms < 500.0, "{:?}", report.seconds[0]);
    assert!(report.seconds[1].p50_ms >= 300.0, "{:?}", report.seconds[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_the_same_key() {
    let fake = Fake::default();
    fake.inner.lock().unwrap().fail_first_attempt = true;
    let base = fake.clone().start().await;
    let mut config = config(&base, &[100.0], Duration::from_secs(1));
    config.retries = 2;
    let report = run(config).await.unwrap();
    assert_eq!(report.all.accepted, 100);
    assert_eq!(report.retries, 100);
    let state = fake.inner.lock().unwrap();
    assert_eq!(state.keys.len(), 100, "one key per vote");
    assert!(state.keys.values().all(|&attempts| attempts == 2), "each key sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_failure_is_reported_as_an_error_of_unknown_fate() {
    let fake = Fake::default();
    fake.inner.lock().unwrap().fail_first_attempt = true;
    let base = fake.clone().start().await;
    let mut config = config(&base, &[50.0], Duration::from_secs(1));
    config.keys = true;
    let report = run(config).await.unwrap();
    assert_eq!((report.all.accepted, report.all.errors), (0, 50));
    assert_eq!(report.statuses.get("503"), Some(&50));
    assert_eq!(report.unknown.total, 50);
}

async fn verify_run(drop: Vec<u64>, double: Vec<u64>) -> bandvote_load::Verification {
    let fake = Fake::default();
    {
        let mut state = fake.inner.lock().unwrap();
        state.drop = drop;
        state.double = double;
    }
    let base = fake.clone().start().await;
    let client = reqwest::Client::new();
    let before = fetch_counts(&client, &base).await.unwrap();
    let report = run(config(&base, &[100.0], Duration::from_secs(1))).await.unwrap();
    assert_eq!(report.all.accepted, 100);
    verify(&client, &base, &before, &report.accepted, &report.unknown, Duration::from_secs(1)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_when_every_accepted_vote_is_counted_once() {
    let verification = verify_run(vec![], vec![]).await;
    assert!(verification.ok, "{verification}");
    assert!(verification.converged_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_a_missing_vote() {
    let verification = verify_run(vec![7], vec![]).await;
    assert!(!verification.ok);
    let text = verification.to_string();
    assert!(text.contains("total: accepted 100, counted 99 (missing)"), "{text}");
    assert!(verification.differences.iter().any(|d| d.what.starts_with("band ")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_a_vote_counted_twice() {
    let verification = verify_run(vec![], vec![42]).await;
    assert!(!verification.ok);
    assert!(verification.to_string().contains("total: accepted 100, counted 101 (counted twice)"), "{verification}");
}
