//! Kafka stopped and started again under the running services. This stops the shared broker, so
//! it is ignored in the parallel suite and run alone by `scripts/test` (`--ignored`).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{PATIENCE, TestEnv, expected, mix, post_all, post_vote, repo_root, wait_for};

fn services(action: &str) {
    let status = Command::new(repo_root().join("scripts/services"))
        .args([action, "kafka"])
        .status()
        .expect("scripts/services runs");
    assert!(status.success(), "scripts/services {action} kafka failed");
}

/// Starts Kafka again even if the test fails half-way.
struct RestartKafkaOnDrop;

impl Drop for RestartKafkaOnDrop {
    fn drop(&mut self) {
        services("start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "stops the shared Kafka broker; scripts/test runs it alone"]
async fn kafka_stopped_gives_503_within_the_produce_timeout_and_loses_no_accepted_vote() {
    let env = TestEnv::new().await;
    let produce_timeout = Duration::from_secs(3);
    let kafka = bandvote_queue::KafkaConfig { produce_timeout, ..env.kafka() };
    let base = env.start_grpc_path_with(kafka).await;
    env.start_consumer().await;
    let url = format!("{base}/grpc/votes");
    let before = mix(200);
    post_all(&url, &before, 8).await;

    let restart = RestartKafkaOnDrop;
    services("stop");
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let started = Instant::now();
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#)
            .send()
            .await
            .expect("answered");
        let elapsed = started.elapsed();
        assert_eq!(response.status().as_u16(), 503);
        assert!(response.headers().contains_key("retry-after"), "503 carries Retry-After");
        assert!(
            elapsed <= produce_timeout + Duration::from_secs(2),
            "answered within the produce timeout: {elapsed:?}"
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(body["error"].is_string());
    }
    drop(restart);

    // Once Kafka is back, new votes are accepted again (after the client reconnects).
    let after = mix(100);
    let probe = after[0].clone();
    wait_for("votes accepted again", PATIENCE, || async {
        let (status, _) = post_vote(&client, &url, probe.body(), Some("after-outage-probe")).await;
        (status == 202).then_some(())
    })
    .await;
    post_all(&url, &after[1..], 8).await;

    let all: Vec<_> = before.iter().chain(&after).cloned().collect();
    assert_eq!(env.wait_for_total(300).await, expected(&all), "every vote answered 202 counted once");
    assert_eq!(env.wait_for_logs(300).await.len(), 300);
}
