//! `bandvote recount` rebuilds the Redis counters from the MongoDB log, consistently with the tally
//! pipeline's position.

mod support;

use std::time::Duration;

use bandvote_consumer::recount::{RecountConfig, recount};
use support::{TestEnv, expected, mix, post_all};

fn recount_config(env: &TestEnv, force: bool) -> RecountConfig {
    let consumer = env.consumer_config();
    RecountConfig {
        kafka: consumer.kafka,
        redis_url: consumer.redis_url,
        mongo_url: consumer.mongo_url,
        mongo_db: consumer.mongo_db,
        log_group: consumer.log_group,
        idempotency_ttl: Duration::from_secs(3600),
        force,
    }
}

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
    let report = recount(&recount_config(&env, false)).await.expect("recount");
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
    let error = recount(&recount_config(&env, false)).await.expect_err("refused");
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
    let admin = bandvote_api::routes::admin::AdminConfig {
        token: "s3cret-admin-token".into(),
        recount: recount_config(&env, false),
    };
    let api = env
        .start_api_with(bandvote_api::ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: env.redis_url(),
            mongo_db: env.mongo_db.clone(),
            admin: Some(admin),
            ..bandvote_api::ApiConfig::default()
        })
        .await;
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
