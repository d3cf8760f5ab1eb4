//! `bandvote recount` rebuilds the Redis counters from the MongoDB log, consistently with the tally
//! pipeline's position.

use crate::support::{TestEnv, expected, mix, post_all};
use bandvote_store::recount::recount;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recount_rebuilds_lost_counters_from_the_log_and_counting_continues_exactly() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    env.start_consumer().await;
    let url = format!("{base}/grpc/votes");
    let first = mix(400);
    post_all(&url, &first, 8).await;
    env.wait_for_total(400).await;
    env.wait_for_logs(400).await;

    // Redis loses everything (no AOF, wrong FLUSHALL): the log is the durable record.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut env.redis().await).await.expect("flushdb");
    let report = recount(&env.recount_config(false)).await.expect("recount");
    assert_eq!(report.total, 400);
    assert_eq!(env.counts().await, expected(&first));

    let second = mix(150);
    post_all(&url, &second, 8).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(env.wait_for_total(550).await, expected(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recount_refuses_while_the_log_is_behind_the_topic() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    // No consumer: the log pipeline has logged nothing of what is in the topic.
    post_all(&format!("{base}/grpc/votes"), &mix(10), 4).await;
    let error = recount(&env.recount_config(false)).await.expect_err("refused");
    assert!(error.to_string().contains("behind"), "{error:#}");
    let counts = env.counts().await;
    assert_eq!(counts.total, 0, "nothing written");
}

/// The recount through the API: only with the administrator's bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_recount_needs_the_bearer_token() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    env.start_consumer().await;
    let votes = mix(120);
    post_all(&format!("{base}/grpc/votes"), &votes, 8).await;
    env.wait_for_total(120).await;
    env.wait_for_logs(120).await;
    let api = start_admin_api(&env, "s3cret-admin-token").await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut env.redis().await).await.expect("flushdb");
    let client = reqwest::Client::new();
    let url = format!("{api}/api/admin/recount");
    for authorization in [None, Some("Bearer wrong-token-of-same-len"), Some("Basic s3cret-admin-token")] {
        let mut request = client.post(&url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let answer = request.send().await.expect("answer");
        assert_eq!(answer.status(), 401, "{authorization:?}");
        assert_eq!(answer.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(env.counts().await.total, 0, "nothing rebuilt without the token");
    let answer = client.post(&url).bearer_auth("s3cret-admin-token").send().await.expect("answer");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["total"], 120);
    assert_eq!(env.counts().await, expected(&votes));
    // Without a token configured, the route does not exist.
    let plain = env.start_api().await;
    let answer =
        client.post(format!("{plain}/api/admin/recount")).bearer_auth("anything").send().await.expect("answer");
    assert_eq!(answer.status(), 404);
}

/// An API with the admin routes behind `token`, recounting `env`'s stores; its base URL.
async fn start_admin_api(env: &TestEnv, token: &str) -> String {
    let admin =
        bandvote_api::routes::admin::AdminConfig { token: token.into(), recount: Some(env.recount_config(false)) };
    env.start_api_with(bandvote_api::ApiConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        redis_url: env.redis_url().into(),
        mongo_db: env.mongo_db.clone(),
        admin: Some(admin),
        ..bandvote_api::ApiConfig::default()
    })
    .await
}

/// The recount through the API refuses with `409` while the log pipeline is behind the topic, and
/// writes nothing; once the log has caught up, the same request rebuilds the counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_recount_is_a_409_while_the_log_is_behind() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    // No consumer yet: the log pipeline has logged nothing of what is in the topic.
    let votes = mix(10);
    post_all(&format!("{base}/grpc/votes"), &votes, 4).await;
    let api = start_admin_api(&env, "admin-409-token-ab").await;
    let client = reqwest::Client::new();
    let url = format!("{api}/api/admin/recount");
    let answer = client.post(&url).bearer_auth("admin-409-token-ab").send().await.expect("answer");
    assert_eq!(answer.status(), 409);
    let body: serde_json::Value = answer.json().await.expect("a JSON error");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("behind")), "{body}");
    assert_eq!(env.counts().await.total, 0, "nothing written");
    assert!(env.offsets().await.is_empty(), "no offsets written");

    env.start_consumer().await;
    env.wait_for_total(10).await;
    env.wait_for_logs(10).await;
    let answer = client.post(&url).bearer_auth("admin-409-token-ab").send().await.expect("answer");
    assert_eq!(answer.status(), 200);
    assert_eq!(env.counts().await, expected(&votes));
}
