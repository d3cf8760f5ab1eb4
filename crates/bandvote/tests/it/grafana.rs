//! The Grafana dashboards as code (deploy/grafana/dashboards) against a real run of the pipeline:
//! every Redis query in them, run on the Redis the consumer filled, gives the numbers of the votes
//! sent; every Prometheus metric they name is exported by our services.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{TestEnv, expected, mix, post_all, repo_root, start_up};
use redis::AsyncCommands;
use serde_json::Value;

/// Every query target of every panel of every dashboard, with its dashboard's file name.
fn targets() -> Vec<(String, Value)> {
    let dir = repo_root().join("deploy/grafana/dashboards");
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the dashboards directory") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a name").to_string_lossy().into_owned();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("valid JSON");
        assert!(dashboard["uid"].is_string() && dashboard["title"].is_string(), "{name}: uid and title");
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                all.push((format!("{name} / {}", panel["title"]), target.clone()));
            }
        }
    }
    assert!(all.len() >= 10, "both dashboards' targets are found ({})", all.len());
    all
}

fn datasource(target: &Value) -> &str {
    target["datasource"]["uid"].as_str().expect("every target names its datasource by uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_redis_query_of_the_dashboards_gives_the_counts_of_the_votes_sent() {
    let env = TestEnv::new().await;
    let grpc = env.start_grpc_path().await;
    env.start_consumer().await;
    let votes = mix(240);
    post_all(&format!("{grpc}/grpc/votes"), &votes, 8).await;
    let want = expected(&votes);
    env.wait_for_total(240).await;
    let mut redis = env.redis().await;

    let mut checked = BTreeSet::new();
    for (panel, target) in targets().into_iter().filter(|(_, t)| datasource(t) == "bandvote-redis") {
        let command = target["command"].as_str().expect("a command");
        let key = target["keyName"].as_str().expect("a key");
        assert_eq!(target["type"], "command", "{panel}");
        match (command, key) {
            ("get", "votes:total") => {
                let total: u64 = redis.get(key).await.expect("GET");
                assert_eq!(total, want.total, "{panel}");
            }
            ("hgetall", "votes:band") => {
                let bands: BTreeMap<String, u64> = redis.hgetall(key).await.expect("HGETALL");
                assert_eq!(bands, want.bands, "{panel}");
            }
            ("hgetall", "votes:album") => {
                let albums: BTreeMap<String, u64> = redis.hgetall(key).await.expect("HGETALL");
                assert_eq!(albums, want.albums, "{panel}");
            }
            ("hgetall", "votes:last") => {
                let last: BTreeMap<String, String> = redis.hgetall(key).await.expect("HGETALL");
                for field in ["received_at", "counted_at"] {
                    let at = last.get(field).unwrap_or_else(|| panic!("{panel}: {field}"));
                    assert!(at.ends_with('Z') && at.len() == 24, "{panel}: {field} = {at}");
                }
            }
            ("xrange", "votes:timeline") => {
                let (start, end) = (target["start"].as_str().unwrap_or("-"), target["end"].as_str().unwrap_or("+"));
                let entries: redis::streams::StreamRangeReply = redis.xrange(key, start, end).await.expect("XRANGE");
                let field = |entry: &redis::streams::StreamId, name: &str| -> u64 {
                    entry.get::<String>(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{panel}: {name}"))
                };
                let batches: u64 = entries.ids.iter().map(|e| field(e, "n")).sum();
                assert_eq!(batches, want.total, "{panel}: the batches' n add up to the votes");
                let last = entries.ids.last().expect("at least one entry");
                assert_eq!(field(last, "total"), want.total, "{panel}: the last total is votes:total");
                // `total` only grows along the stream: the panel plots a rising line.
                let totals: Vec<u64> = entries.ids.iter().map(|e| field(e, "total")).collect();
                assert!(totals.windows(2).all(|w| w[0] < w[1]), "{panel}: {totals:?}");
            }
            other => panic!("{panel}: no check for the Redis query {other:?}; add one to this test"),
        }
        checked.insert((command.to_owned(), key.to_owned()));
    }
    let keys: BTreeSet<&str> = checked.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["votes:album", "votes:band", "votes:last", "votes:timeline", "votes:total"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_the_dashboards_name_is_exported() {
    let env = TestEnv::new().await;
    let (_up, base) = start_up(&env).await;
    let votes = mix(40);
    post_all(&format!("{base}/grpc/votes"), &votes[..20], 4).await;
    post_all(&format!("{base}/wasm/votes"), &votes[20..], 4).await;
    env.wait_for_total(40).await;
    let prometheus: Vec<(String, String)> = targets()
        .into_iter()
        .filter(|(_, t)| datasource(t) == "bandvote-prometheus")
        .map(|(panel, t)| (panel, t["expr"].as_str().expect("an expr").to_owned()))
        .collect();
    let named: BTreeSet<String> = prometheus
        .iter()
        .flat_map(|(panel, expr)| {
            let metrics: Vec<String> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("bandvote_"))
                .map(str::to_owned)
                .collect();
            assert!(!metrics.is_empty(), "{panel}: {expr} names none of our metrics");
            metrics
        })
        .collect();
    // Some series are periodic (the consumer's lag every 2 s): scrape until all are there.
    let page = crate::support::wait_for("every dashboard metric on /metrics", crate::support::PATIENCE, || async {
        let page = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
        named
            .iter()
            .all(|m| page.lines().any(|l| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} "))))
            .then_some(page)
    })
    .await;
    let histograms: BTreeSet<&str> =
        page.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram")).collect();
    for metric in &named {
        if let Some(base) = metric.strip_suffix("_bucket") {
            assert!(histograms.contains(base), "{base} is a histogram");
        }
    }
    // The health dashboard covers ingest, latency, the consumer and the errors.
    for needed in [
        "bandvote_votes_accepted_total",
        "bandvote_vote_request_duration_seconds_bucket",
        "bandvote_consumer_lag_messages",
        "bandvote_votes_rejected_total",
        "bandvote_produce_errors_total",
    ] {
        assert!(named.contains(needed), "the dashboards use {needed}");
    }
}
