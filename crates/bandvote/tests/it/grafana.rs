//! The Grafana dashboards as code (deploy/grafana/dashboards) against a real run of the pipeline:
//! every Redis query in them, run on the Redis the consumer filled, gives the numbers of the votes
//! sent (the round's panels, the round's votes); every Prometheus metric they name is exported by our
//! services.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{
    MONGO, PATIENCE, TestEnv, embedded_up, expected, mix, post_all, post_vote, repo_root, spawn_listening, start_up,
    up, wait_for, wait_ready,
};
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
            if panel["type"] == "row" {
                continue;
            }
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

/// Whether a query reads the round picked in the dashboard's `round` variable.
fn per_round(target: &Value) -> bool {
    target["keyName"].as_str().is_some_and(|key| key.contains("$round"))
}

/// The contest dashboard's `round` variable, as the plugin runs it and Grafana orders it: the
/// options its query gives (the plugin splits the query into a command, a key and arguments), sorted
/// as the variable's `sort` says.
async fn round_options(redis: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/dashboards/contest-live.json")).expect("readable"),
    )
    .expect("JSON");
    let variable = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "round")
        .expect("a round variable")
        .clone();
    assert_eq!(variable["datasource"]["uid"], "bandvote-redis");
    let words: Vec<&str> = variable["query"].as_str().expect("a query").split_whitespace().collect();
    let mut query = redis::cmd(words[0]);
    for word in &words[1..] {
        query.arg(*word);
    }
    let mut options: Vec<String> = query.query_async(redis).await.expect("the variable's query");
    // Grafana's variable sort: 0 keeps the query's order, 1 and 2 are alphabetical.
    match variable["sort"].as_u64().unwrap_or(0) {
        0 => {}
        1 => options.sort(),
        2 => options.sort_by(|a, b| b.cmp(a)),
        other => panic!("no model of the variable sort {other}; add one to this test"),
    }
    options
}

/// Under a show with rounds, the contest dashboard opens on the open round (the first option of its
/// `round` variable, what Grafana picks), ahead of a scheduled round whose id sorts first and a
/// closed one; every query of the round's panels, with the round picked, gives that round's counts,
/// not the all-time ones. On every `bandvote up` layout that has Redis: where the counters are, the
/// rounds are, so the panels are never empty.
async fn the_round_panels_follow_the_open_round(layout: &[&str]) {
    const TOKEN: &str = "grafana-test-token";
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("bandvote-grafana-{}", env.id));
    let mut command = if layout.contains(&"kafka") {
        up(&env, 0)
    } else {
        let mut command = embedded_up(0, &dir);
        command.args(["--redis-url", &env.redis_url()]);
        if layout.contains(&"mongodb") {
            command.args(["--mongo-url", MONGO, "--mongo-db", &env.mongo_db]);
        }
        command
    };
    command.args(["--admin-token", TOKEN]);
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    let url = format!("{base}/grpc/votes");
    let before = mix(30);
    post_all(&url, &before, 4).await;
    env.wait_for_total(30).await;

    let client = reqwest::Client::new();
    let admin = |path: &str, body: Option<Value>| {
        let mut request = client.post(format!("{base}/api/admin/{path}")).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    let heat = serde_json::json!({"id": "heat", "title": "Heat"});
    assert_eq!(admin("rounds", Some(heat)).await, 201);
    assert_eq!(admin("rounds/heat/open", None).await, 200);
    assert_eq!(admin("rounds/heat/close", None).await, 200);
    // The semi-final closes within the hour; the encore opens after it, by itself.
    let at = |hours| {
        (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let semi = serde_json::json!({"id": "semi", "title": "Semi-final", "results": "hidden", "closes_at": at(1)});
    assert_eq!(admin("rounds", Some(semi)).await, 201);
    let encore = serde_json::json!({"id": "a-encore", "title": "Encore", "opens_at": at(2)});
    assert_eq!(admin("rounds", Some(encore)).await, 201);
    let round = mix(47);
    let first = round[0].clone();
    // The gateway sees the round (votes are refused until it opens), then sees it open: the first
    // vote is retried with its key until it counts in the round.
    wait_for("the round at the gateway", PATIENCE, || async {
        let (status, _) = post_vote(&client, &url, first.body(), Some("between")).await;
        (status == 409).then_some(())
    })
    .await;
    assert_eq!(admin("rounds/semi/open", None).await, 200);
    wait_for("the round open at the gateway", PATIENCE, || async {
        let (status, _) = post_vote(&client, &url, first.body(), Some("round-first")).await;
        (status == 202).then_some(())
    })
    .await;
    post_all(&url, &round[1..], 4).await;
    let mut redis = env.redis().await;
    wait_for("the round's votes counted", PATIENCE, || {
        let mut redis = redis.clone();
        async move {
            let total: Option<u64> = redis.get("votes:round:semi:total").await.ok()?;
            (total == Some(47)).then_some(())
        }
    })
    .await;
    let options = wait_for("the dashboard's round picker", PATIENCE, || {
        let mut redis = redis.clone();
        async move {
            let options = round_options(&mut redis).await;
            (options.first().map(String::as_str) == Some("semi")).then_some(options)
        }
    })
    .await;
    assert_eq!(options, ["semi", "a-encore", "heat"], "open, then scheduled, then closed");

    let want = expected(&round);
    let mut checked = BTreeSet::new();
    for (panel, target) in targets().into_iter().filter(|(_, t)| per_round(t)) {
        let key = target["keyName"].as_str().expect("a key").replace("$round", &options[0]);
        match (target["command"].as_str().expect("a command"), key.as_str()) {
            ("get", "votes:round:semi:total") => {
                let total: u64 = redis.get(&key).await.expect("GET");
                assert_eq!(total, want.total, "{panel}");
            }
            ("hgetall", "votes:round:semi:band") => {
                let bands: BTreeMap<String, u64> = redis.hgetall(&key).await.expect("HGETALL");
                assert_eq!(bands, want.bands, "{panel}");
            }
            ("hgetall", "votes:round:semi:album") => {
                let albums: BTreeMap<String, u64> = redis.hgetall(&key).await.expect("HGETALL");
                assert_eq!(albums, want.albums, "{panel}");
            }
            other => panic!("{panel}: no check for the Redis query {other:?}; add one to this test"),
        }
        checked.insert(key);
    }
    assert_eq!(checked.len(), 3, "the round's total, bands and albums: {checked:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_round_panels_follow_the_open_round_on_every_server() {
    the_round_panels_follow_the_open_round(&["kafka", "redis", "mongodb"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_round_panels_follow_the_open_round_with_redis_only() {
    the_round_panels_follow_the_open_round(&["redis"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_round_panels_follow_the_open_round_with_redis_and_mongodb() {
    the_round_panels_follow_the_open_round(&["redis", "mongodb"]).await;
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
    for (panel, target) in targets().into_iter().filter(|(_, t)| datasource(t) == "bandvote-redis" && !per_round(t)) {
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
                // Without a start and an end the plugin reads the dashboard's time range
                // (`<from ms>-0` to `<to ms>-0`); the dashboards' range is the last 15 minutes.
                let now = chrono::Utc::now().timestamp_millis();
                let (from, to) = (format!("{}-0", now - 15 * 60 * 1000), format!("{now}-0"));
                let start = target["start"].as_str().unwrap_or(&from);
                let end = target["end"].as_str().unwrap_or(&to);
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
