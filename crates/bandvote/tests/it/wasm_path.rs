//! The WebAssembly path end to end against the real servers: `POST /wasm/votes` → wasm-gateway
//! (a fresh guest instance per request) → http-producer → Kafka → consumer → Redis + MongoDB.

use std::{collections::HashSet, path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use crate::support::{
    PATIENCE, TestEnv, assert_bad_input_is_refused_and_nothing_written, expected, free_port, mix, post_all, post_vote,
    repo_root,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_mix_through_the_wasm_path_is_counted_and_logged_exactly_once() {
    let env = TestEnv::new().await;
    let base = env.start_wasm_path().await;
    env.start_consumer().await;
    let votes = mix(300);
    assert_counted_and_logged_once(&env, &base, &votes).await;

    // Retries with one Idempotency-Key are counted once, as on the gRPC path.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let (status, body) =
            post_vote(&client, &format!("{base}/wasm/votes"), votes[0].body(), Some("wasm-key-1")).await;
        assert_eq!((status, body["id"].as_str()), (202, Some("wasm-key-1")));
    }
    assert_eq!(env.wait_for_total(301).await.total, 301);
}

/// Posts `votes` to the wasm gateway at `base` (a fresh test environment) and checks that each is
/// counted once and logged once, under its id, as a wasm vote.
async fn assert_counted_and_logged_once(env: &TestEnv, base: &str, votes: &[crate::support::TestVote]) {
    let ids = post_all(&format!("{base}/wasm/votes"), votes, 8).await;
    let n = votes.len() as u64;
    assert_eq!(env.wait_for_total(n).await, expected(votes));
    let docs = env.wait_for_logs(n).await;
    let logged: HashSet<&str> = docs.iter().map(|d| d.get_str("_id").expect("_id")).collect();
    assert_eq!(logged, ids.iter().map(String::as_str).collect::<HashSet<_>>());
    assert!(docs.iter().all(|d| d.get_str("path") == Ok("wasm")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guests_that_send_their_votes_themselves_are_counted_exactly_once_too() {
    let env = TestEnv::new().await;
    let producer = env.start_http_producer(env.http_producer_config()).await;
    // Each guest sends its vote as an outgoing wasi:http request and relays the answer, as under
    // `wasmtime serve`, instead of handing it back to the host.
    let mut gateway = TestEnv::wasm_gateway_config(&format!("http://{producer}"), None);
    gateway.guest_sends = true;
    let base = env.start_wasm_gateway_from(gateway).await;
    env.start_consumer().await;
    let votes = mix(200);
    assert_counted_and_logged_once(&env, &base, &votes).await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let (status, body) = post_vote(&client, &format!("{base}/wasm/votes"), votes[0].body(), Some("sent-1")).await;
        assert_eq!((status, body["id"].as_str()), (202, Some("sent-1")));
    }
    let (status, body) = post_vote(&client, &format!("{base}/wasm/votes"), "{\"name\":1}".into(), None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("name")), "{body}");
    assert_eq!(env.wait_for_total(201).await.total, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_through_both_paths_at_once_are_counted_exactly() {
    let env = TestEnv::new().await;
    let grpc = env.start_grpc_path().await;
    let wasm = env.start_wasm_path().await;
    env.start_consumer().await;
    let (grpc_votes, wasm_votes) = (mix(400), mix(250));
    let (grpc_url, wasm_url) = (format!("{grpc}/grpc/votes"), format!("{wasm}/wasm/votes"));
    let (grpc_ids, wasm_ids) = tokio::join!(post_all(&grpc_url, &grpc_votes, 8), post_all(&wasm_url, &wasm_votes, 8));
    let all: Vec<_> = grpc_votes.iter().chain(&wasm_votes).cloned().collect();
    assert_eq!(env.wait_for_total(650).await, expected(&all));
    let docs = env.wait_for_logs(650).await;
    let by_path = |path: &str| docs.iter().filter(|d| d.get_str("path") == Ok(path)).count();
    assert_eq!((by_path("grpc"), by_path("wasm")), (grpc_ids.len(), wasm_ids.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_on_the_wasm_path_gets_the_same_errors_and_writes_nothing() {
    let env = TestEnv::new().await;
    let base = env.start_wasm_path().await;
    env.start_consumer().await;
    assert_bad_input_is_refused_and_nothing_written(&env, &base, "wasm").await;
}

/// Posts one valid vote to the wasm gateway at `base`; the whole response, headers included.
async fn post_one_vote(client: &reqwest::Client, base: &str) -> reqwest::Response {
    client
        .post(format!("{base}/wasm/votes"))
        .header("content-type", "application/json")
        .body(mix(1)[0].body())
        .send()
        .await
        .expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_down_gives_503_with_retry_after_not_a_hang() {
    let env = TestEnv::new().await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let base = env.start_wasm_gateway_for(&nobody, None).await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let response = post_one_vote(&client, &base).await;
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(client.get(format!("{base}/readyz")).send().await.expect("readyz").status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_that_never_answers_gives_503_with_retry_after_not_500() {
    // A producer that takes the connection and the request and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let mut config = TestEnv::wasm_gateway_config(&format!("http://{silent}"), None);
    config.request_timeout = Duration::from_secs(1);
    let env = TestEnv::new().await;
    let base = env.start_wasm_gateway_from(config).await;
    let started = std::time::Instant::now();
    let response = post_one_vote(&reqwest::Client::new(), &base).await;
    // The guest ran out of its time waiting for the producer: the producer's delay, answered as
    // the gRPC path answers a producer too slow to answer, not as a broken guest.
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(started.elapsed() < PATIENCE, "answered within the guest's time, not hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_guests_than_the_hop_carries_wait_their_turn_instead_of_failing() {
    let env = TestEnv::new().await;
    // The producer takes 2 connections from one client: the gateway's two HTTP/2 connections,
    // which keep at most 2 calls in flight between them.
    let mut producer = env.http_producer_config();
    producer.limits.max_connections_per_client = 2;
    let producer = env.start_http_producer(producer).await;
    let mut gateway = TestEnv::wasm_gateway_config(&format!("http://{producer}"), None);
    gateway.upstream_connections = 2;
    gateway.upstream_calls = 2;
    let base = env.start_wasm_gateway_from(gateway).await;
    env.start_consumer().await;
    // 32 guests at once, sixteen times the calls in flight and the connections:
    // every vote is answered 202 (`post_all` panics on anything else) and counted once.
    let votes = mix(256);
    post_all(&format!("{base}/wasm/votes"), &votes, 32).await;
    assert_eq!(env.wait_for_total(256).await, expected(&votes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_producers_batch_route_refuses_what_is_not_a_batch_and_answers_each_vote_of_one() {
    use bandvote_ingest::http_producer::BATCH_CONTENT_TYPE;
    use bandvote_proto::v1::{SubmitVoteRequest, SubmitVotesRequest, SubmitVotesResponse, Vote};
    use prost::Message;

    let env = TestEnv::new().await;
    let producer = env.start_http_producer(env.http_producer_config()).await;
    env.start_consumer().await;
    let client = reqwest::Client::new();
    let post = |content_type: &str, body: Vec<u8>| {
        client.post(format!("http://{producer}/votes/batch")).header("content-type", content_type).body(body).send()
    };
    let refused = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.expect("a JSON error")["error"].to_string())
    };
    let (status, error) = refused(post("application/json", b"[]".to_vec()).await.expect("answered")).await;
    assert_eq!(status, 415, "{error}");
    let (status, error) = refused(post(BATCH_CONTENT_TYPE, vec![0xff, 0xff, 0xff]).await.expect("answered")).await;
    assert_eq!(status, 400, "{error}");
    let too_many = SubmitVotesRequest { votes: vec![SubmitVoteRequest::default(); 513] }.encode_to_vec();
    let (status, error) = refused(post(BATCH_CONTENT_TYPE, too_many).await.expect("answered")).await;
    assert_eq!(status, 400);
    assert!(error.contains("512"), "{error}");

    // A batch: each vote checked and queued on its own, its outcome in its place.
    let vote = |id: &str, year: &str, round: &str| SubmitVoteRequest {
        vote: Some(Vote { name: "Soda Stereo".into(), album: "Signos".into(), year: year.into(), rank: "1".into() }),
        id: id.into(),
        client_key: true,
        round: round.into(),
        ..SubmitVoteRequest::default()
    };
    let batch = [vote("batch-1", "1986", ""), vote("batch-2", "nineteen", ""), vote("batch-3", "1986", "not a round")];
    let response =
        post(BATCH_CONTENT_TYPE, SubmitVotesRequest { votes: batch.into() }.encode_to_vec()).await.expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    let outcomes =
        SubmitVotesResponse::decode(response.bytes().await.expect("body")).expect("a SubmitVotesResponse").outcomes;
    let outcomes: Vec<_> = outcomes.iter().map(|o| (o.id.as_str(), o.code, o.field.as_str())).collect();
    let invalid = tonic::Code::InvalidArgument as i32;
    assert_eq!(outcomes, [("batch-1", 0, ""), ("", invalid, "year"), ("", invalid, "round")]);
    assert_eq!(env.wait_for_total(1).await.total, 1);
    let logged = env.wait_for_logs(1).await;
    assert_eq!((logged[0].get_str("_id"), logged[0].get_str("path")), (Ok("batch-1"), Ok("wasm")));
}

/// The guest built with its `misbehave` routes (trap, endless loop, unbounded allocation).
fn misbehaving_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let target_dir = root.join("target/guest-misbehave");
            let output = Command::new(env!("CARGO"))
                .current_dir(&root)
                .args(["build", "--release", "-p", "bandvote-guest", "--features", "misbehave"])
                .args(["--target", "wasm32-wasip2", "--target-dir"])
                .arg(&target_dir)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
                .output()
                .expect("cargo runs");
            assert!(
                output.status.success(),
                "building the misbehaving guest failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            target_dir.join("wasm32-wasip2/release/bandvote-guest.wasm")
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guest_that_traps_or_exceeds_its_limits_fails_that_request_only() {
    let env = TestEnv::new().await;
    let component = tokio::task::spawn_blocking(misbehaving_guest).await.expect("built");
    let (base, _) = env.start_wasm_gateway(Some(component)).await;
    env.start_consumer().await;
    let client = reqwest::Client::new();
    for route in ["trap", "spin", "allocate"] {
        let started = std::time::Instant::now();
        let response = client.post(format!("{base}/wasm/misbehave/{route}")).send().await.expect("answered");
        assert_eq!(response.status().as_u16(), 500, "{route}");
        assert!(started.elapsed() < PATIENCE, "{route} answered, not hung");
        // The gateway keeps serving: a normal vote right after is accepted.
        let (status, body) = post_vote(&client, &format!("{base}/wasm/votes"), mix(1)[0].body(), None).await;
        assert_eq!(status, 202, "after {route}: {body}");
    }
    // The benchmarks' routes: one answers at once; one runs the vote route's checks and sends nothing.
    let (status, _) = post_vote(&client, &format!("{base}/wasm/misbehave/answer"), "{}".into(), None).await;
    assert_eq!(status, 202);
    let (status, body) = post_vote(&client, &format!("{base}/wasm/misbehave/validate"), mix(1)[0].body(), None).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) =
        post_vote(&client, &format!("{base}/wasm/misbehave/validate"), "{\"name\":1}".into(), None).await;
    assert_eq!(status, 400, "{body}");
    // A guest's hand-back is checked again by the host: one that hands back what it never checked
    // gets the producer's refusal, and only a valid vote is carried.
    let hand_back = format!("{base}/wasm/misbehave/hand-back");
    let (status, body) = post_vote(&client, &hand_back, "{\"name\":\"\",\"rank\":9}".into(), None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("name")), "{body}");
    let (status, body) = post_vote(&client, &hand_back, "not json".into(), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_vote(&client, &hand_back, mix(1)[0].body(), None).await;
    assert_eq!((status, &body["path"]), (202, &serde_json::json!("wasm")), "{body}");
    let total = env.wait_for_total(4).await.total;
    assert_eq!(total, 4, "the three votes to /wasm/votes and the one valid hand-back were counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_guest_can_reach_its_upstream_and_nothing_else() {
    let env = TestEnv::new().await;
    // A server the guest must not reach, counting every request it gets.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    let router = axum::Router::new().fallback(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "reached" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let forbidden = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });

    let component = tokio::task::spawn_blocking(misbehaving_guest).await.expect("built");
    let (base, producer) = env.start_wasm_gateway(Some(component)).await;
    let client = reqwest::Client::new();
    let escape = |target: String| client.get(format!("{base}/wasm/misbehave/escape?{target}")).send();
    let status = escape(format!("http://{forbidden}/")).await.expect("answered").status();
    assert_eq!(status.as_u16(), 403, "the host refused the request");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the other server");
    // The same request to the upstream goes through.
    let status = escape(format!("http://{producer}/healthz")).await.expect("answered").status();
    assert_eq!(status.as_u16(), 200);
}
