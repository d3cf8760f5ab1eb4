//! `bandvote load --verify` against `bandvote up` on the real servers: what the generator reports
//! as accepted is exactly what the system counts. (The original's Locust scenario is checked the
//! same way by scripts/locust-check.)

use crate::support::{TestEnv, start_up};

async fn results(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/api/results")).await.expect("results").json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_verify_confirms_every_accepted_vote_through_both_paths() {
    let env = TestEnv::new().await;
    let (_up, base) = start_up(&env).await;
    let report = std::env::temp_dir().join(format!("bandvote-load-{}.html", env.topic));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["load", "--url", &base, "--path", "both", "--rate", "150", "--duration", "2s"])
        .args(["--retries", "3", "--verify", "--verify-timeout", "60s", "--json", "--report"])
        .arg(&report)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("bandvote load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let document: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    let run = &document["report"];
    assert_eq!(run["all"]["sent"], 300);
    assert_eq!(run["all"]["accepted"], 300, "{run}");
    let targets: Vec<_> = run["targets"].as_array().expect("targets").iter().map(|t| t["accepted"].clone()).collect();
    assert_eq!(targets, [150, 150]);
    assert_eq!(document["verify"]["ok"], true);
    assert!(document["verify"]["converged_ms"].is_u64());
    // The API agrees with the generator's own tally, band by band.
    let counted = results(&base).await;
    assert_eq!(counted["total"], 300);
    assert_eq!(counted["bands"], run["accepted"]["bands"]);
    assert_eq!(counted["albums"], run["accepted"]["albums"]);
    let html = std::fs::read_to_string(&report).expect("the HTML report is written");
    assert!(html.contains("<svg") && html.contains("Latency by intended send second"));
    let _ = std::fs::remove_file(report);
}
