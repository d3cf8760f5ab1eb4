//! Fair voting: the contest list, the voter policy (per minute, once) and the per-client rate
//! limit, through both paths; the policy holds across gateway replicas sharing Redis.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{PATIENCE, TestEnv, embedded_up, free_port, wait_for};

fn contest_file(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("contest.json");
    let contest = json!([
        {"name": "Bohemia Suburbana", "album": "Mis palabras"},
        {"name": "Bohemia Suburbana", "album": "Imaginaria Sonora"},
        {"name": "Alux Nahual", "album": "El Viaje"},
    ]);
    std::fs::write(&path, contest.to_string()).expect("write");
    path
}

async fn start(args: &[&str], dir: &Path) -> (tokio::process::Child, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let up = embedded_up(port, &dir.join("data")).args(args).stderr(std::process::Stdio::null()).spawn().expect("up");
    support::wait_ready(&base).await;
    (up, base)
}

async fn vote(base: &str, path: &str, voter: Option<&str>, key: &str, album: &str) -> (u16, Option<u64>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/{path}/votes"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(json!({"name": "Bohemia Suburbana", "album": album, "year": "1997", "rank": "9.5"}).to_string());
    if let Some(voter) = voter {
        request = request.header("x-voter-id", voter);
    }
    let answer = request.send().await.expect("sent");
    let status = answer.status().as_u16();
    let retry = answer.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, answer.json().await.unwrap_or(Value::Null))
}

async fn total(base: &str) -> u64 {
    let r: Value = reqwest::get(format!("{base}/api/results")).await.expect("results").json().await.expect("json");
    r["total"].as_u64().expect("total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contest_list_and_per_minute_policy_on_both_paths() {
    let dir = std::env::temp_dir().join(format!("bandvote-fair-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let contest = contest_file(&dir);
    let contest = contest.to_str().expect("utf-8");
    let (_up, base) = start(&["--vote-policy", "per-minute:2", "--contest", contest], &dir).await;

    // Two votes a minute for "ana": a retry of the first is the same vote, the third is refused.
    assert_eq!(vote(&base, "grpc", Some("ana"), "k1", "Mis palabras").await.0, 202);
    assert_eq!(vote(&base, "grpc", Some("ana"), "k1", "Mis palabras").await.0, 202, "a retry");
    assert_eq!(vote(&base, "wasm", Some("ana"), "k2", "Imaginaria Sonora").await.0, 202);
    for path in ["grpc", "wasm"] {
        let (status, retry, body) = vote(&base, path, Some("ana"), &format!("k3-{path}"), "Mis palabras").await;
        assert_eq!(status, 429, "{path}: {body}");
        assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{path}: Retry-After {retry:?}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("per voter per minute")), "{body}");
    }
    // Another voter is not affected; no voter identity is a clear 400.
    assert_eq!(vote(&base, "wasm", Some("bea"), "k4", "Mis palabras").await.0, 202);
    let (status, _, body) = vote(&base, "grpc", None, "k5", "Mis palabras").await;
    assert_eq!((status, body["error"].as_str().is_some_and(|e| e.contains("voter identity"))), (400, true), "{body}");
    // Only the contest's bands and albums.
    for path in ["grpc", "wasm"] {
        let (status, _, body) = vote(&base, path, Some("cy"), &format!("k6-{path}"), "Rock chapin").await;
        assert_eq!((status, body["field"].as_str()), (400, Some("album")), "{path}: {body}");
    }
    // Exactly the admitted votes are counted.
    wait_for("3 votes counted", PATIENCE, || async { (total(&base).await >= 3).then_some(()) }).await;
    assert_eq!(total(&base).await, 3);
    let _ = std::fs::remove_dir_all(dir);
}

/// Two gateway processes sharing Redis for the policy "once": a voter racing both gets one vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_vote_per_voter_holds_across_replicas() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("bandvote-fair-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let redis = env.redis_url();
    let policy = ["--vote-policy", "once", "--fairness-redis-url", redis.as_str()];
    let (_a, first) = start(&policy, &dir.join("a")).await;
    let (_b, second) = start(&policy, &dir.join("b")).await;
    let mut attempts = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 { first.clone() } else { second.clone() };
        let path = if i % 4 < 2 { "grpc" } else { "wasm" };
        attempts.push(tokio::spawn(async move {
            vote(&base, path, Some("dana"), &format!("race-{i}"), "Mis palabras").await
        }));
    }
    let mut statuses = Vec::new();
    for attempt in attempts {
        let (status, retry, _) = attempt.await.expect("task");
        if status == 429 {
            assert!(retry.is_some(), "429 carries Retry-After");
        }
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 19, "{statuses:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_over_the_rate_limit_gets_429() {
    let dir = std::env::temp_dir().join(format!("bandvote-fair-rate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_up, base) = start(&["--rate-limit", "1"], &dir).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(vote(&base, "grpc", None, &format!("r{i}"), "Mis palabras").await);
    }
    let accepted = statuses.iter().filter(|s| s.0 == 202).count();
    let limited: Vec<_> = statuses.iter().filter(|s| s.0 == 429).collect();
    assert!((1..20).contains(&accepted), "a burst of 1, then 1 per second: {accepted} of 20 accepted");
    assert!(!limited.is_empty() && limited.iter().all(|s| s.1 == Some(1)), "429 with Retry-After: 1");
    let _ = std::fs::remove_dir_all(dir);
}

/// Signed voter tokens: the API issues them, the gateways accept only genuine, unexpired ones and
/// count the policy on the voter they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voter_tokens_from_the_api_are_checked_by_the_gateways() {
    let dir = std::env::temp_dir().join(format!("bandvote-fair-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_up, base) = start(&["--vote-policy", "once", "--voter-secret", "contest-secret"], &dir).await;
    let config: Value = reqwest::get(format!("{base}/api/config")).await.expect("config").json().await.expect("json");
    assert_eq!((config["voter_token"].as_bool(), config["voter_header"].as_str()), (Some(true), Some("x-voter-id")));
    let client = reqwest::Client::new();
    let issued: Value =
        client.post(format!("{base}/api/voter-token")).send().await.expect("token").json().await.expect("json");
    let token = issued["token"].as_str().expect("a token").to_owned();
    assert!(issued["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')));
    // One vote for this voter, through either path; the next is refused.
    assert_eq!(vote(&base, "wasm", Some(&token), "t1", "Mis palabras").await.0, 202);
    let (status, retry, body) = vote(&base, "grpc", Some(&token), "t2", "Mis palabras").await;
    assert_eq!((status, body["error"].as_str()), (429, Some("this voter has already voted")));
    assert!(retry.is_some());
    // A forged or altered token is refused as such, on both paths.
    let forged = token.replacen("v1.", "v1.0", 1);
    for path in ["grpc", "wasm"] {
        let (status, _, body) = vote(&base, path, Some(&forged), &format!("t3-{path}"), "Mis palabras").await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    // A second token is another voter.
    let second: Value =
        client.post(format!("{base}/api/voter-token")).send().await.expect("token").json().await.expect("json");
    assert_eq!(vote(&base, "grpc", second["token"].as_str(), "t4", "Mis palabras").await.0, 202);
    let _ = std::fs::remove_dir_all(dir);
}
