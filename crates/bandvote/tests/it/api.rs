//! The API against real Redis and MongoDB-wire servers, filled by a real run of the pipeline.

use std::{collections::BTreeMap, time::Duration};

use crate::support::{PATIENCE, TestEnv, expected, free_port, mix, post_all, post_vote};
use serde_json::Value;

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_and_logs_reflect_exactly_the_votes_sent() {
    let env = TestEnv::new().await;
    let votes_base = env.start_grpc_path().await;
    env.start_consumer().await;
    let api = env.start_api().await;
    let votes = mix(60);
    post_all(&format!("{votes_base}/grpc/votes"), &votes, 8).await;
    env.wait_for_total(60).await;
    env.wait_for_logs(60).await;

    let (status, results) = get_json(&format!("{api}/api/results")).await;
    assert_eq!(status, 200);
    let want = expected(&votes);
    assert_eq!(results["total"], 60);
    let bands: BTreeMap<String, u64> = serde_json::from_value(results["bands"].clone()).expect("bands");
    let albums: BTreeMap<String, u64> = serde_json::from_value(results["albums"].clone()).expect("albums");
    assert_eq!((bands, albums), (want.bands, want.albums));
    let updated_at = results["updated_at"].as_str().expect("updated_at");
    assert!(updated_at.ends_with('Z') && updated_at.len() == "2026-11-26T16:04:05.123Z".len(), "{updated_at}");
    assert!(results["freshness_ms"].as_i64().is_some_and(|ms| ms >= 0));

    let (status, logs) = get_json(&format!("{api}/api/logs")).await;
    assert_eq!(status, 200);
    let logs = logs.as_array().expect("array");
    assert_eq!(logs.len(), 20, "default limit");
    let times: Vec<&str> = logs.iter().map(|l| l["received_at"].as_str().expect("received_at")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    for entry in logs {
        assert!(entry["id"].is_string() && entry["path"] == "grpc");
        for field in ["name", "album", "year", "rank"] {
            assert!(entry["data"][field].is_string(), "{entry}");
        }
    }
    assert_eq!(get_json(&format!("{api}/api/logs?limit=5")).await.1.as_array().map(Vec::len), Some(5));
    assert_eq!(get_json(&format!("{api}/api/logs?limit=1000")).await.1.as_array().map(Vec::len), Some(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_limit_is_a_400_naming_the_field() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    for limit in ["0", "1001", "-3", "ten", "1.5", ""] {
        let (status, body) = get_json(&format!("{api}/api/logs?limit={limit}")).await;
        assert_eq!((status, body["field"].as_str()), (400, Some("limit")), "limit={limit}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_contest_shows_zero_and_no_fake_timestamps() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let (status, results) = get_json(&format!("{api}/api/results")).await;
    assert_eq!(status, 200);
    assert_eq!(results["total"], 0);
    assert_eq!(results["bands"], serde_json::json!({}));
    assert!(results["updated_at"].is_null() && results["freshness_ms"].is_null(), "{results}");
    assert_eq!(get_json(&format!("{api}/api/logs")).await, (200, serde_json::json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_down_give_a_clear_503_not_a_hang() {
    let env = TestEnv::new().await;
    let api = env
        .start_api_with(bandvote_api::ApiConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            redis_url: format!("redis://127.0.0.1:{}", free_port()).into(),
            mongo_url: format!("mongodb://127.0.0.1:{}", free_port()).into(),
            ..Default::default()
        })
        .await;
    for path in ["/api/results", "/api/logs", "/readyz"] {
        let started = std::time::Instant::now();
        let (status, body) = get_json(&format!("{api}{path}")).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(started.elapsed() < Duration::from_secs(10), "{path} answered within 10 s");
    }
    let (_, body) = get_json(&format!("{api}/api/results")).await;
    assert!(body["error"].as_str().is_some_and(|e| e.contains("redis")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stream_sends_results_first_then_each_new_vote_and_the_new_counts() {
    let env = TestEnv::new().await;
    let votes_base = env.start_grpc_path().await;
    env.start_consumer().await;
    let api = env.start_api().await;
    let response = reqwest::get(format!("{api}/api/stream")).await.expect("stream opens");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut response = response;
    let mut buffer = String::new();
    // One deadline for the whole stream: keep-alive pings do not extend it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut next_event = async || -> (String, Value) {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let name = block.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_owned);
                let data = block.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned);
                if let (Some(name), Some(data)) = (name, data)
                    && name != "ping"
                {
                    return (name, serde_json::from_str(&data).expect("event data is JSON"));
                }
                continue; // the keep-alive
            }
            let chunk = tokio::time::timeout_at(deadline, response.chunk())
                .await
                .unwrap_or_else(|_| panic!("the expected events within {PATIENCE:?}; have {buffer:?}"));
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("stream open")));
        }
    };
    let (name, first) = next_event().await;
    assert_eq!((name.as_str(), &first["total"]), ("results", &serde_json::json!(0)));

    // Three votes, then, once they are counted and the topic read to its end, a fourth: every event
    // up to the fourth's is checked, so an over-count of the first three (a log event twice, a
    // total above three) shows before the stream reaches the end condition.
    let client = reqwest::Client::new();
    let url = format!("{votes_base}/grpc/votes");
    for key in ["s-1", "s-2", "s-3"] {
        let (status, _) = post_vote(&client, &url, mix(1)[0].body(), Some(key)).await;
        assert_eq!(status, 202);
    }
    env.wait_for_total(3).await;
    env.wait_for_logs(3).await;
    let (status, _) = post_vote(&client, &url, mix(1)[0].body(), Some("s-4")).await;
    assert_eq!(status, 202);
    let mut events: Vec<(String, Value)> = Vec::new();
    while !(events.iter().any(|(n, d)| n == "log" && d["id"] == "s-4")
        && events.iter().any(|(n, d)| n == "results" && d["total"].as_u64() >= Some(4)))
    {
        let (name, data) = next_event().await;
        if name == "results" {
            assert!(data["total"].as_u64().is_some_and(|t| t <= 4), "over-counted: {data}");
        }
        events.push((name, data));
    }
    let mut logged: Vec<&str> =
        events.iter().filter(|(n, _)| n == "log").filter_map(|(_, d)| d["id"].as_str()).collect();
    logged.sort_unstable();
    assert_eq!(logged, ["s-1", "s-2", "s-3", "s-4"], "each vote once: {events:?}");
    let totals: Vec<u64> =
        events.iter().filter(|(n, _)| n == "results").filter_map(|(_, d)| d["total"].as_u64()).collect();
    assert!(totals.windows(2).all(|w| w[0] <= w[1]) && totals.last() == Some(&4), "totals {totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_describes_every_route() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let (status, document) = get_json(&format!("{api}/api/openapi.json")).await;
    assert_eq!(status, 200);
    for path in ["/api/results", "/api/logs", "/api/stream", "/api/openapi.json", "/api/config", "/"] {
        assert!(document["paths"][path]["get"].is_object(), "{path} is described");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_app_is_embedded_and_served_from_this_origin_only() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let page = reqwest::get(format!("{api}/")).await.expect("GET /");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    assert!(policy.starts_with("default-src 'self'; connect-src 'self';"), "{policy}");
    let html = page.text().await.expect("html");
    assert!(html.contains("<div id=\"app\">"), "{html}");
    // Every script and stylesheet the page names is embedded and served with its type, and none
    // of them is on another host.
    let assets: Vec<&str> = html.split('"').filter(|s| s.starts_with("/assets/")).collect();
    assert!(assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "no absolute URLs: {html}");
    for asset in assets {
        let answer = reqwest::get(format!("{api}{asset}")).await.expect("asset");
        assert_eq!(answer.status(), 200, "{asset}");
        assert!(answer.headers()["cache-control"].to_str().expect("ascii").contains("immutable"), "{asset}");
        let kind = answer.headers()["content-type"].to_str().expect("ascii").to_owned();
        assert!(kind.starts_with("text/javascript") || kind.starts_with("text/css"), "{asset}: {kind}");
    }
    // The API alone has no vote endpoints: its web app shows no vote form unless told where to vote.
    let (status, config) = get_json(&format!("{api}/api/config")).await;
    assert_eq!((status, &config["vote_url"], &config["voter_token"]), (200, &Value::Null, &Value::Bool(false)));
    let elsewhere = env
        .start_api_with(bandvote_api::ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: env.redis_url().into(),
            mongo_db: env.mongo_db.clone(),
            vote_url: Some("https://votes.example.org".into()),
            ..bandvote_api::ApiConfig::default()
        })
        .await;
    let (_, config) = get_json(&format!("{elsewhere}/api/config")).await;
    assert_eq!(config["vote_url"], "https://votes.example.org");
    let page = reqwest::get(format!("{elsewhere}/")).await.expect("GET /");
    let policy = page.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    assert!(policy.contains("connect-src 'self' https://votes.example.org;"), "{policy}");
    // Unknown paths are still JSON 404s.
    let (status, body) = get_json(&format!("{api}/nope")).await;
    assert_eq!((status, body["error"].is_string()), (404, true));
}

/// On Cloud Run the platform sets PORT: without --listen, `bandvote api` listens on 0.0.0.0:$PORT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_listens_on_port_from_the_environment_like_cloud_run() {
    let env = TestEnv::new().await;
    let port = free_port();
    let _api = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["api", "--redis-url", &env.redis_url(), "--mongo-db", &env.mongo_db])
        .env("PORT", port.to_string())
        .env_remove("BANDVOTE_LISTEN")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("bandvote api starts");
    let (status, body) = crate::support::wait_for("the api on $PORT", PATIENCE, || async {
        let answer = reqwest::get(format!("http://127.0.0.1:{port}/api/results")).await.ok()?;
        Some((answer.status().as_u16(), answer.json::<Value>().await.ok()?))
    })
    .await;
    assert_eq!((status, body["total"].as_u64()), (200, Some(0)));
}

/// Passwords and tokens given to a service never show in its logs, /metrics or answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_stay_out_of_logs_metrics_and_answers() {
    let port = free_port();
    let mut api = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["api", "--listen", &format!("127.0.0.1:{port}")])
        // Unreachable stores, so that their errors are logged and answered.
        .args([
            "--redis-url",
            "redis://:redis-pw-7f3a@127.0.0.1:1/",
            "--mongo-url",
            "mongodb://u:mongo-pw-9c1e@127.0.0.1:1/",
        ])
        .args(["--admin-token", "admin-token-5d2b", "--voter-secret", "voter-secret-8e4c"])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bandvote api starts");
    let base = format!("http://127.0.0.1:{port}");
    let mut seen = String::new();
    for path in ["/readyz", "/api/results", "/api/logs", "/metrics", "/api/config", "/api/openapi.json"] {
        let answer = crate::support::wait_for("the api to answer", PATIENCE, || async {
            reqwest::get(format!("{base}{path}")).await.ok()?.text().await.ok()
        })
        .await;
        seen.push_str(&answer);
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["api", "--help"])
        .env("BANDVOTE_ADMIN_TOKEN", "admin-token-5d2b")
        .output()
        .expect("help");
    seen.push_str(&String::from_utf8_lossy(&help.stdout));
    api.start_kill().expect("kill");
    let output = api.wait_with_output().await.expect("output");
    seen.push_str(&String::from_utf8_lossy(&output.stdout));
    seen.push_str(&String::from_utf8_lossy(&output.stderr));
    assert!(seen.contains("redis"), "the logs and answers were read");
    for secret in ["redis-pw-7f3a", "mongo-pw-9c1e", "admin-token-5d2b", "voter-secret-8e4c"] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
}
