//! Fair voting: the contest list, the voter policy (per minute, once) and the per-client rate
//! limit, through both paths; the policy holds across gateway replicas sharing Redis.

use std::path::{Path, PathBuf};

use crate::support::{PATIENCE, TestEnv, embedded_up, spawn_listening, wait_for};
use serde_json::{Value, json};

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
    let (up, base) = spawn_listening(embedded_up(0, &dir.join("data")).args(args)).await;
    crate::support::wait_ready(&base).await;
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

/// The rate limit is a token bucket per client address: full (N) at the start, N more each second.
/// Twenty votes at once with `--rate-limit 3` admit exactly the burst of 3, plus at most 3 per
/// second the burst took to be answered; every other one is a 429 with `Retry-After: 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_over_the_rate_limit_gets_429() {
    let dir = std::env::temp_dir().join(format!("bandvote-fair-rate-{}", uuid::Uuid::now_v7().simple()));
    let (_up, base) = start(&["--rate-limit", "3"], &dir).await;
    let started = std::time::Instant::now();
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move { vote(&base, "grpc", None, &format!("r{i}"), "Mis palabras").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in burst {
        statuses.push(attempt.await.expect("task"));
    }
    let refill = (started.elapsed().as_secs_f64() * 3.0).floor() as usize;
    let accepted = statuses.iter().filter(|s| s.0 == 202).count();
    let limited: Vec<_> = statuses.iter().filter(|s| s.0 == 429).collect();
    assert_eq!(accepted + limited.len(), 20, "every vote is admitted or limited: {statuses:?}");
    assert!((3..=3 + refill).contains(&accepted), "{accepted} of 20 admitted; 3 + {refill} allowed");
    assert!(limited.iter().all(|s| s.1 == Some(1)), "429 with Retry-After: 1: {limited:?}");
    // After Retry-After the client gets in again.
    wait_for("the bucket to refill", PATIENCE, || async {
        (vote(&base, "grpc", None, &uuid::Uuid::now_v7().to_string(), "Mis palabras").await.0 == 202).then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A retry under the same `Idempotency-Key` is the same vote: it is admitted even once the voter is
/// over the limit, by either gateway, with the policy in this process or in Redis, and it is
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_retry_is_never_refused_over_the_voters_limit() {
    let env = TestEnv::new().await;
    let redis = env.redis_url();
    let dir = std::env::temp_dir().join(format!("bandvote-fair-retry-{}", uuid::Uuid::now_v7().simple()));
    for (i, policy) in ["once", "per-minute:1"].into_iter().enumerate() {
        for shared in [false, true] {
            let mut args = vec!["--vote-policy", policy];
            if shared {
                args.extend(["--fairness-redis-url", redis.as_str()]);
            }
            let (_up, base) = start(&args, &dir.join(format!("{i}-{shared}"))).await;
            let voter = format!("voter-{i}-{shared}");
            let first = format!("first-{i}-{shared}");
            let case = format!("{policy}, shared {shared}");
            assert_eq!(vote(&base, "grpc", Some(&voter), &first, "Mis palabras").await.0, 202, "{case}");
            let (status, _, body) =
                vote(&base, "wasm", Some(&voter), &format!("second-{i}-{shared}"), "Mis palabras").await;
            assert_eq!(status, 429, "{case}: over the limit: {body}");
            for path in ["grpc", "wasm", "grpc"] {
                let (status, _, body) = vote(&base, path, Some(&voter), &first, "Mis palabras").await;
                assert_eq!(status, 202, "{case}: the retry through {path} is the same vote: {body}");
                assert_eq!(body["id"].as_str(), Some(first.as_str()), "{case}");
            }
            wait_for("the vote counted", PATIENCE, || async { (total(&base).await >= 1).then_some(()) }).await;
            let counted = wait_for("the vote logged", PATIENCE, || async {
                let r: Value = reqwest::get(format!("{base}/api/logs?limit=10")).await.ok()?.json().await.ok()?;
                let n = r.as_array()?.len();
                (n >= 1).then_some(n)
            })
            .await;
            assert_eq!((counted, total(&base).await), (1, 1), "{case}");
        }
    }
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
    // An expired token, signed with the same secret (as the API signs them), is refused as such.
    let expired =
        bandvote_core::voter_token::VoterTokens::new(b"contest-secret").issue("expired-voter", unix_now() - 60);
    for path in ["grpc", "wasm"] {
        let (status, _, body) = vote(&base, path, Some(&expired), &format!("t5-{path}"), "Mis palabras").await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("expired")), "{path}: {body}");
    }
    // The same voter with an unexpired token votes: only the expiry refused it.
    let fresh =
        bandvote_core::voter_token::VoterTokens::new(b"contest-secret").issue("expired-voter", unix_now() + 3600);
    assert_eq!(vote(&base, "wasm", Some(&fresh), "t6", "Mis palabras").await.0, 202);
    // A second token is another voter.
    let second: Value =
        client.post(format!("{base}/api/voter-token")).send().await.expect("token").json().await.expect("json");
    assert_eq!(vote(&base, "grpc", second["token"].as_str(), "t4", "Mis palabras").await.0, 202);
    let _ = std::fs::remove_dir_all(dir);
}

fn unix_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(now.as_secs()).expect("seconds fit")
}

async fn vote_as(base: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Option<u64>, Value) {
    let mut request = reqwest::Client::new().post(format!("{base}/{path}/votes")).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value.as_bytes()).expect("value"));
    }
    let answer = request.send().await.expect("sent");
    let status = answer.status().as_u16();
    let retry = answer.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, answer.json().await.unwrap_or(Value::Null))
}

const BALLOT: &str = r#"{"name": "Bohemia Suburbana", "album": "Mis palabras", "year": "1997", "rank": "9.5"}"#;

/// Waits until `n` votes are counted and logged, then checks that no more are.
async fn assert_counted(base: &str, n: u64) {
    wait_for("the votes counted", PATIENCE, || async { (total(base).await >= n).then_some(()) }).await;
    let logged = wait_for("the votes logged", PATIENCE, || async {
        let r: Value = reqwest::get(format!("{base}/api/logs?limit=100")).await.ok()?.json().await.ok()?;
        let logged = r.as_array()?.len() as u64;
        (logged >= n).then_some(logged)
    })
    .await;
    assert_eq!((total(base).await, logged), (n, n), "counted and logged");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bandvote-fair-{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// A self-asserted voter id is one voter whatever its case or Unicode normal form.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_id_in_another_case_or_normal_form_is_the_same_voter() {
    let dir = temp_dir("case");
    let (_up, base) = start(&["--vote-policy", "once"], &dir).await;
    let ct = ("content-type", "application/json");
    assert_eq!(vote_as(&base, "grpc", &[ct, ("x-voter-id", "alice"), ("idempotency-key", "c1")], BALLOT).await.0, 202);
    for (i, (path, voter)) in [("grpc", "ALICE"), ("wasm", "Alice"), ("wasm", " aLiCe ")].into_iter().enumerate() {
        let key = format!("c2-{i}");
        let (status, _, body) =
            vote_as(&base, path, &[ct, ("x-voter-id", voter), ("idempotency-key", &key)], BALLOT).await;
        assert_eq!(status, 429, "{voter:?} through {path} is alice: {body}");
    }
    // "José" precomposed (U+00E9) and decomposed (E + U+0301), in UTF-8.
    let precomposed = ("x-voter-id", "Jos\u{e9}");
    assert_eq!(vote_as(&base, "wasm", &[ct, precomposed, ("idempotency-key", "c3")], BALLOT).await.0, 202);
    let (status, _, body) =
        vote_as(&base, "grpc", &[ct, ("x-voter-id", "JOSE\u{301}"), ("idempotency-key", "c4")], BALLOT).await;
    assert_eq!(status, 429, "the decomposed form is the same voter: {body}");
    assert_counted(&base, 2).await;
    let _ = std::fs::remove_dir_all(dir);
}

fn openssl(args: &[&str], dir: &Path) {
    let status = std::process::Command::new("openssl").args(args).current_dir(dir).status().expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

fn unix_now_plus(seconds: i64) -> i64 {
    unix_now() + seconds
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Voter JWTs from the show's identity provider: a genuine token votes once per account (`sub`),
/// on either path; a forged, altered, expired, unsigned or HMAC-signed token, or none, is a 401
/// with a JSON error on both paths, and nothing of it is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voter_jwts_vote_once_per_account_and_bad_ones_get_401_on_both_paths() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = temp_dir("jwt");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", "idp.pem"], &dir);
    openssl(&["pkey", "-in", "idp.pem", "-pubout", "-out", "idp.pub.pem"], &dir);
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", "other.pem"], &dir);
    let key_path = dir.join("idp.pub.pem");
    let args = ["--vote-policy", "once", "--voter-jwt-key", key_path.to_str().expect("utf-8")];
    let (_up, base) = start(&args, &dir).await;
    let idp = EncodingKey::from_ed_pem(&std::fs::read(dir.join("idp.pem")).expect("key")).expect("ed25519");
    let other = EncodingKey::from_ed_pem(&std::fs::read(dir.join("other.pem")).expect("key")).expect("ed25519");
    let sign = |key: &EncodingKey, claims: Value| encode(&Header::new(Algorithm::EdDSA), &claims, key).expect("signed");
    let token = sign(&idp, json!({"sub": "account-17", "exp": unix_now_plus(600)}));
    let ct = ("content-type", "application/json");

    // One vote per account: the same account with another token (another login) is refused.
    assert_eq!(vote_as(&base, "wasm", &[ct, ("x-voter-id", &token), ("idempotency-key", "j1")], BALLOT).await.0, 202);
    let relogin = sign(&idp, json!({"sub": "account-17", "exp": unix_now_plus(900), "iat": unix_now()}));
    for (path, token) in [("grpc", &token), ("grpc", &relogin), ("wasm", &relogin)] {
        let key = format!("j2-{path}-{}", token.len());
        let (status, _, body) =
            vote_as(&base, path, &[ct, ("x-voter-id", token), ("idempotency-key", &key)], BALLOT).await;
        assert_eq!((status, body["error"].as_str()), (429, Some("this voter has already voted")), "{path}");
    }

    let claims = json!({"sub": "account-18", "exp": unix_now_plus(600)});
    let mut altered: Vec<String> = sign(&idp, claims.clone()).split('.').map(str::to_owned).collect();
    altered[1] = b64url(json!({"sub": "account-19", "exp": unix_now_plus(600)}).to_string().as_bytes());
    let public_key = std::fs::read(&key_path).expect("public key");
    let bad = [
        ("forged", sign(&other, claims.clone())),
        ("altered", altered.join(".")),
        ("expired", sign(&idp, json!({"sub": "account-18", "exp": unix_now() - 3600}))),
        ("no exp", sign(&idp, json!({"sub": "account-18"}))),
        ("alg none", format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), altered[1])),
        (
            "HS256 with the public key",
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&public_key).expect("hmac"))
                .expect("signed"),
        ),
        ("self-asserted", "account-18".to_owned()),
    ];
    for (what, token) in &bad {
        for path in ["grpc", "wasm"] {
            let key = format!("bad-{path}-{}", what.replace(' ', "-"));
            let (status, _, body) =
                vote_as(&base, path, &[ct, ("x-voter-id", token), ("idempotency-key", &key)], BALLOT).await;
            assert_eq!(status, 401, "{what} through {path}: {body}");
            assert!(body["error"].as_str().is_some_and(|e| e.contains("voter token")), "{what}: {body}");
        }
    }
    let (status, _, body) = vote_as(&base, "grpc", &[ct, ("idempotency-key", "none")], BALLOT).await;
    assert_eq!(status, 401, "no token: {body}");
    let (_, _, body) =
        vote_as(&base, "wasm", &[ct, ("x-voter-id", &bad[2].1), ("idempotency-key", "exp")], BALLOT).await;
    assert!(body["error"].as_str().is_some_and(|e| e.contains("expired")), "{body}");
    // account-18 never voted: its first genuine vote counts.
    let genuine = sign(&idp, claims);
    assert_eq!(vote_as(&base, "grpc", &[ct, ("x-voter-id", &genuine), ("idempotency-key", "j3")], BALLOT).await.0, 202);
    assert_counted(&base, 2).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The self-issued voter token is convenience, not identity: one client address gets a few per
/// minute, so twenty requests for fresh tokens no longer make twenty voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_asking_for_twenty_voter_tokens_hits_the_issuance_limit() {
    let dir = temp_dir("issue");
    let (_up, base) = start(&["--vote-policy", "once", "--voter-secret", "contest-secret"], &dir).await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let mut tokens = Vec::new();
    let mut limited = Vec::new();
    for _ in 0..20 {
        let answer = client.post(format!("{base}/api/voter-token")).send().await.expect("token");
        match answer.status().as_u16() {
            200 => {
                tokens.push(answer.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_owned())
            }
            429 => {
                let retry: Option<u64> =
                    answer.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                let body: Value = answer.json().await.expect("json error");
                limited.push((retry, body));
            }
            other => panic!("unexpected {other}"),
        }
    }
    // 10 at once, then 10 a minute.
    let refill = (started.elapsed().as_secs_f64() / 6.0).ceil() as usize;
    assert!((10..=10 + refill).contains(&tokens.len()), "{} tokens issued to one client", tokens.len());
    assert_eq!(tokens.len() + limited.len(), 20);
    for (retry, body) in &limited {
        assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "Retry-After {retry:?}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("voter tokens per minute")), "{body}");
    }
    // Each token is one vote: as many counted votes as tokens issued, not twenty.
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(
            vote(&base, if i % 2 == 0 { "grpc" } else { "wasm" }, Some(token), &format!("i{i}"), "Mis palabras")
                .await
                .0,
            202
        );
    }
    assert_counted(&base, tokens.len() as u64).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Behind a trusted proxy the rate limit counts the forwarded client, not the proxy: two clients
/// behind one ingress have a bucket each, and one IPv6 /64 is one client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_counts_each_forwarded_client_behind_a_trusted_proxy() {
    let dir = temp_dir("proxy");
    let (_up, base) = start(&["--rate-limit", "1", "--trusted-proxies", "127.0.0.1"], &dir).await;
    let ct = ("content-type", "application/json");
    // One vote a second per client: each client's second vote, sent right after its first, is
    // over the limit; another client behind the same proxy is not.
    let clients = [
        ("grpc", "198.51.100.7"),
        ("grpc", "198.51.100.7"),
        ("grpc", "198.51.100.8"),
        ("wasm", "2001:db8:7:7::1"),
        ("wasm", "2001:db8:7:7:ffff::2"),
        ("wasm", "2001:db8:7:8::1"),
    ];
    let mut statuses = Vec::new();
    for (i, (path, client)) in clients.into_iter().enumerate() {
        let key = format!("p{i}");
        let headers = [ct, ("x-forwarded-for", client), ("idempotency-key", &key)];
        statuses.push(vote_as(&base, path, &headers, BALLOT).await.0);
    }
    assert_eq!(statuses, [202, 429, 202, 202, 429, 202], "per forwarded client, one IPv6 /64 being one client");
    let _ = std::fs::remove_dir_all(dir);
}

/// Headers, body and the expected status.
type Request<'a> = (&'a [(&'a str, &'a str)], &'a str, u16);

/// On the wasm path a request the edge refuses (bad key, wrong media type, bad body) does not use
/// the voter's one vote and nothing of it is counted, as on the gRPC path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_does_not_use_the_voters_one_vote_on_either_path() {
    let dir = temp_dir("refused");
    let (_up, base) = start(&["--vote-policy", "once"], &dir).await;
    let voter = ("x-voter-id", "eve");
    let json_ct = ("content-type", "application/json");
    for path in ["wasm", "grpc"] {
        let refused: [Request<'_>; 4] = [
            (&[json_ct, voter, ("idempotency-key", "not a key!")], BALLOT, 400),
            (&[("content-type", "text/plain"), voter, ("idempotency-key", "r2")], BALLOT, 415),
            (&[json_ct, voter, ("idempotency-key", "r3")], "{not json", 400),
            (
                &[json_ct, voter, ("idempotency-key", "r4")],
                r#"{"name": "", "album": "x", "year": "1", "rank": "1"}"#,
                400,
            ),
        ];
        for (headers, body, expected) in refused {
            let (status, _, answer) = vote_as(&base, path, headers, body).await;
            assert_eq!(status, expected, "{path}: {headers:?}: {answer}");
            assert!(answer["error"].is_string(), "{path}: a JSON error: {answer}");
        }
    }
    // Eve's one vote is still hers.
    assert_eq!(vote_as(&base, "wasm", &[json_ct, voter, ("idempotency-key", "eve-1")], BALLOT).await.0, 202);
    assert_eq!(vote_as(&base, "grpc", &[json_ct, voter, ("idempotency-key", "eve-2")], BALLOT).await.0, 429);
    assert_counted(&base, 1).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The names cap counts only votes the voter policy admitted: a voter's refused votes (`429`) for
/// new bands take no place, so a new voter's new band still fits; and a vote the cap refuses does
/// not use its voter's one vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_the_voter_policy_refuses_do_not_fill_the_names_cap() {
    let dir = temp_dir("names");
    let (_up, base) = start(&["--vote-policy", "once", "--max-names", "2"], &dir).await;
    let ct = ("content-type", "application/json");
    let ballot = |band: &str| json!({"name": band, "album": "Disco", "year": "1997", "rank": "9"}).to_string();
    let vote = |voter: &'static str, key: &'static str, band: &'static str| {
        let base = base.clone();
        let body = ballot(band);
        async move { vote_as(&base, "grpc", &[ct, ("x-voter-id", voter), ("idempotency-key", key)], &body).await }
    };
    assert_eq!(vote("ana", "a1", "Alux Nahual").await.0, 202);
    for (key, band) in [("a2", "Spam Uno"), ("a3", "Spam Dos"), ("a4", "Spam Tres")] {
        let (status, _, body) = vote("ana", key, band).await;
        assert_eq!(status, 429, "ana already voted: {band}: {body}");
    }
    let (status, _, body) = vote("bob", "b1", "Bohemia Suburbana").await;
    assert_eq!(status, 202, "the second band fits: refused votes took no place: {body}");
    // The cap is now full: a new band is refused, and the voter keeps their one vote.
    let (status, _, body) = vote("cy", "c1", "Tercera Banda").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("name")), "{body}");
    assert_eq!(vote("cy", "c2", "Alux Nahual").await.0, 202, "cy's one vote is still theirs");
    assert_counted(&base, 3).await;
    let _ = std::fs::remove_dir_all(dir);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).expect("value").parse().expect("kB")
}

/// 300 KB Idempotency-Keys under `once` were remembered per voter before the guest refused them
/// (~120 MiB per 300 requests). Now each is a 400 before anything is remembered, and the process
/// does not grow by more than a generous bound over 300 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_idempotency_keys_are_refused_and_do_not_grow_the_process() {
    let dir = temp_dir("bigkey");
    let (up, base) = start(&["--vote-policy", "once"], &dir).await;
    let pid = up.id().expect("pid");
    let key = "k".repeat(300 * 1024);
    let send = |i: usize| {
        let (base, key) = (base.clone(), key.clone());
        async move {
            let voter = format!("voter-{i}");
            vote_as(
                &base,
                "wasm",
                &[("content-type", "application/json"), ("x-voter-id", &voter), ("idempotency-key", &key)],
                BALLOT,
            )
            .await
        }
    };
    // Warm up the allocator and the connection pool with the same requests.
    for i in 0..30 {
        let (status, _, body) = send(i).await;
        assert!(status == 400 || status == 431, "a 300 KB key is refused: {status} {body}");
    }
    let before = rss_kib(pid);
    for i in 30..330 {
        let (status, _, _) = send(i).await;
        assert!(status == 400 || status == 431, "{status}");
    }
    let after = rss_kib(pid);
    eprintln!("VmRSS of bandvote up: {before} KiB before, {after} KiB after 300 requests with 300 KB keys");
    assert!(after < before + 40 * 1024, "grew from {before} KiB to {after} KiB");
    // None of them used a vote: voter-100 votes now.
    let (status, _, body) = send(100).await;
    assert!(status == 400 || status == 431, "{body}");
    let ok = [("content-type", "application/json"), ("x-voter-id", "voter-100"), ("idempotency-key", "small")];
    assert_eq!(vote_as(&base, "wasm", &ok, BALLOT).await.0, 202);
    assert_counted(&base, 1).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// With Redis the voter hashes expire: under once after --voter-memory-hours, per minute after
/// the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_voter_hashes_expire() {
    let env = TestEnv::new().await;
    let redis = env.redis_url();
    let dir = temp_dir("ttl");
    let once = ["--vote-policy", "once", "--fairness-redis-url", redis.as_str(), "--voter-memory-hours", "5"];
    let (up, base) = start(&once, &dir.join("once")).await;
    assert_eq!(vote(&base, "grpc", Some("Tess"), "t1", "Mis palabras").await.0, 202);
    let mut connection = env.redis().await;
    // Under once a voter is remembered per round, and never for less than the idempotency keys'
    // 24 h: 5 h asked, 24 h kept, so that a retried key is never a second vote.
    let ttl: i64 = redis::cmd("PTTL").arg("voters:default:tess").query_async(&mut connection).await.expect("pttl");
    let day = 24 * 3600 * 1000;
    assert!((day - 60_000..=day).contains(&ttl), "voters:default:tess expires in {ttl} ms");
    drop(up);
    // Asked for longer than the keys: the tally remembers the keys as long as the policy does (a
    // retry the policy admits is one the tally still knows).
    let once = ["--vote-policy", "once", "--fairness-redis-url", redis.as_str(), "--voter-memory-hours", "30"];
    let mut command = crate::support::up(&env, 0);
    command.args(once);
    let (up, base) = crate::support::spawn_listening(&mut command).await;
    crate::support::wait_ready(&base).await;
    assert_eq!(vote(&base, "grpc", Some("Val"), "t30", "Mis palabras").await.0, 202);
    let seen = wait_for("the keyed vote counted", PATIENCE, || async {
        let ttl: i64 = redis::cmd("PTTL").arg("votes:seen:t30").query_async(&mut env.redis().await).await.ok()?;
        (ttl > 0).then_some(ttl)
    })
    .await;
    let voter: i64 = redis::cmd("PTTL").arg("voters:default:val").query_async(&mut connection).await.expect("pttl");
    let hours30 = 30 * 3600 * 1000;
    for (what, ttl) in [("votes:seen:t30", seen), ("voters:default:val", voter)] {
        assert!((hours30 - 120_000..=hours30).contains(&ttl), "{what} expires in {ttl} ms");
    }
    drop(up);
    let minute = ["--vote-policy", "per-minute:3", "--fairness-redis-url", redis.as_str()];
    let (_up, base) = start(&minute, &dir.join("minute")).await;
    assert_eq!(vote(&base, "wasm", Some("uma"), "t2", "Mis palabras").await.0, 202);
    let ttl: i64 = redis::cmd("PTTL").arg("voters:uma").query_async(&mut connection).await.expect("pttl");
    assert!((1..=60_000).contains(&ttl), "voters:uma expires in {ttl} ms");
    let _ = std::fs::remove_dir_all(dir);
}
