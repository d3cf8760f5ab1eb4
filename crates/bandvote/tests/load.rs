//! `bandvote load --verify` and the original's Locust scenario against `bandvote up` on the real
//! servers: what the load tools report as accepted is exactly what the system counts.

mod support;

use std::{path::PathBuf, time::Duration};

use support::{TestEnv, repo_root, start_up};

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

/// The `locust` command that scripts/test installs (BANDVOTE_LOCUST), or one on PATH.
fn locust() -> PathBuf {
    std::env::var_os("BANDVOTE_LOCUST").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("locust"))
}

/// Runs `load/locustfile.py` headless through `path` and returns Locust's (requests, failures), from
/// the JSON statistics it saves once the run is over.
async fn run_locust(base: &str, path: &str, stats: &std::path::Path) -> (u64, u64) {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(locust())
            .args(["-f", "load/locustfile.py", "--headless", "-u", "4", "-r", "4", "--host", base])
            .args(["--vote-path", path, "--only-summary", "--json-file"])
            .arg(stats)
            .current_dir(repo_root())
            .output(),
    )
    .await
    .expect("Locust finishes")
    .expect("Locust runs (pip install locust, or set BANDVOTE_LOCUST)");
    let file = stats.with_extension("json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!("Locust wrote no {} ({e}): {}", file.display(), String::from_utf8_lossy(&output.stderr))
    });
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).expect("Locust's JSON statistics");
    let sum = |field: &str| entries.iter().map(|e| e[field].as_u64().expect("a count")).sum::<u64>();
    (sum("num_requests"), sum("num_failures"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Locust; scripts/test installs it and runs this test"]
async fn locust_scenario_counts_exactly_what_locust_reports_as_successful() {
    let env = TestEnv::new().await;
    let (_up, base) = start_up(&env).await;
    let dir = std::env::temp_dir().join(format!("bandvote-locust-{}", env.topic));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let mut successes = 0;
    for path in ["grpc", "wasm"] {
        let (requests, failures) = run_locust(&base, path, &dir.join(path)).await;
        assert_eq!(requests, 1010, "every record of traffic.json is sent once through {path}");
        successes += requests - failures;
        // Counting is asynchronous: wait until the API has caught up, then compare exactly.
        let counted = support::wait_for("the counts to reach Locust's successes", support::PATIENCE, || async {
            let r = results(&base).await;
            (r["total"].as_u64() >= Some(successes)).then_some(r)
        })
        .await;
        assert_eq!(counted["total"].as_u64(), Some(successes));
    }
    assert_eq!(successes, 2020, "no request failed");
    let counted = results(&base).await;
    // traffic.json: Bohemia Suburbana 280 + 320, Alux Nahual 160 + 250 per run.
    assert_eq!(counted["bands"]["Bohemia Suburbana"], 1200);
    assert_eq!(counted["bands"]["Alux Nahual"], 820);
    assert_eq!(counted["albums"]["Bohemia Suburbana / Imaginaria Sonora"], 640);
    let _ = std::fs::remove_dir_all(dir);
}
