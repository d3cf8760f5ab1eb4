//! `bandvote up`: every service in one process behind one listener, against the real servers.

use std::{process::Stdio, time::Duration};

use crate::support::{TestEnv, expected, mix, post_all, up};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_serves_both_paths_on_one_port_and_counts_exactly() {
    let env = TestEnv::new().await;
    let (mut process, base) = crate::support::spawn_listening(&mut up(&env, 0)).await;
    let port = crate::support::port_of(&base);
    let client = reqwest::Client::new();
    crate::support::wait_ready(&base).await;

    // A second `up` on the same port fails at once, saying why.
    let second = up(&env, port).stderr(Stdio::piped()).output().await.expect("second up runs");
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains(&format!("failed to listen on 127.0.0.1:{port}")), "{message}");

    let (grpc_votes, wasm_votes) = (mix(200), mix(120));
    post_all(&format!("{base}/grpc/votes"), &grpc_votes, 8).await;
    post_all(&format!("{base}/wasm/votes"), &wasm_votes, 8).await;
    let all: Vec<_> = grpc_votes.iter().chain(&wasm_votes).cloned().collect();
    assert_eq!(env.wait_for_total(320).await, expected(&all));
    assert_eq!(env.wait_for_logs(320).await.len(), 320);
    // The API is on the same port.
    let results: serde_json::Value =
        client.get(format!("{base}/api/results")).send().await.expect("results").json().await.expect("json");
    assert_eq!(results["total"], 320);
    let logs: serde_json::Value =
        client.get(format!("{base}/api/logs?limit=3")).send().await.expect("logs").json().await.expect("json");
    assert_eq!(logs.as_array().map(Vec::len), Some(3));

    // SIGTERM drains and exits cleanly.
    let pid = process.id().expect("pid");
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), process.wait()).await.expect("exits").expect("status");
    assert!(exit.success(), "exit status {exit}");
}
