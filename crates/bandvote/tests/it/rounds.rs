//! Rounds (DESIGN.md, "Rounds"): the operator's API and CLI, `409 voting is closed` on both paths
//! between rounds, a close while keyed senders are mid-flight counted exactly (every `202` in its
//! round, nothing after the close), hidden results, certified results, exports and audits, on `bandvote
//! up`'s embedded storage and on the real servers (Kafka, Redis, MongoDB) with two consumers.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{MONGO, PATIENCE, TestEnv, embedded_up, mix, spawn_listening, up, wait_for, wait_ready};

const TOKEN: &str = "operator-token-4b1d";

/// An operator's and the public's view of one running system.
struct Show {
    base: String,
    client: reqwest::Client,
}

impl Show {
    fn new(base: String) -> Self {
        Self { base, client: reqwest::Client::new() }
    }

    async fn admin(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.post(format!("{}/api/admin/{path}", self.base)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("answer");
        (answer.status().as_u16(), answer.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, operator: bool) -> Value {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if operator {
            request = request.bearer_auth(TOKEN);
        }
        let answer = request.send().await.expect("answer");
        assert_eq!(answer.status(), 200, "{path}");
        answer.json().await.expect("json")
    }

    async fn vote(&self, path: &str, key: &str, vote: &crate::support::TestVote) -> (u16, Value) {
        let url = format!("{}/{path}/votes", self.base);
        crate::support::post_vote(&self.client, &url, vote.body(), Some(key)).await
    }

    /// An operator's CSV export of round `id` (`results` or `votes`).
    async fn csv(&self, id: &str, what: &str) -> String {
        let url = format!("{}/api/rounds/{id}/{what}.csv", self.base);
        let answer = self.client.get(url).bearer_auth(TOKEN).send().await.expect("answer");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "text/csv; charset=utf-8");
        answer.text().await.expect("text")
    }

    /// Waits until round `id`'s operator results count `total`.
    async fn wait_for_round_total(&self, id: &str, total: u64) -> Value {
        wait_for(&format!("{total} votes in round {id}"), PATIENCE, || async {
            let results = self.get(&format!("/api/results?round={id}"), true).await;
            (results["total"].as_u64() == Some(total)).then_some(results)
        })
        .await
    }
}

fn counts(votes: &[crate::support::TestVote]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let expected = crate::support::expected(votes);
    (expected.bands, expected.albums)
}

fn map(value: &Value) -> BTreeMap<String, u64> {
    value.as_object().expect("an object").iter().map(|(k, n)| (k.clone(), n.as_u64().expect("a count"))).collect()
}

/// The lifecycle through the API, a close under 16 keyed senders on both paths, a hidden round.
async fn a_show(show: &Show) {
    // Before any round: the default round, as always.
    let vote = &mix(1)[0];
    assert_eq!(show.vote("grpc", "before-any-round", vote).await.0, 202);
    let results = show.get("/api/results", false).await;
    assert_eq!(results["round"], "default", "{results}");
    assert_eq!(results["hidden"], false);

    // The operator's routes need the token.
    let anonymous = show.client.post(format!("{}/api/admin/rounds", show.base)).json(&json!({"id": "x", "title": "x"}));
    assert_eq!(anonymous.send().await.expect("answer").status(), 401);
    let (status, semi) = show.admin("rounds", Some(json!({"id": "semi", "title": "Semi-final"}))).await;
    assert_eq!(status, 201, "{semi}");
    assert_eq!(semi["state"], "scheduled");
    assert_eq!(semi["results"], "live");
    assert_eq!(show.admin("rounds", Some(json!({"id": "semi", "title": "again"}))).await.0, 409);
    let (status, bad) = show.admin("rounds", Some(json!({"id": "Semi Final", "title": "x"}))).await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("id")), "{bad}");
    assert_eq!(show.admin("rounds/nope/open", None).await.0, 404);

    // Rounds exist and none is open: within the gateways' refresh both paths refuse.
    for path in ["grpc", "wasm"] {
        let body = wait_for(&format!("{path} to refuse between rounds"), Duration::from_secs(10), || async {
            let (status, body) = show.vote(path, &format!("between-{path}"), vote).await;
            (status == 409).then_some(body)
        })
        .await;
        assert_eq!(body, json!({"error": "voting is closed"}), "{path}");
    }

    // A phone on the live stream hears every change of a round.
    let heard = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let listener = {
        let (heard, url) = (std::sync::Arc::clone(&heard), format!("{}/api/stream", show.base));
        tokio::spawn(async move {
            let mut stream = reqwest::get(url).await.expect("stream");
            while let Ok(Some(chunk)) = stream.chunk().await {
                heard.lock().expect("lock").push_str(&String::from_utf8_lossy(&chunk));
            }
        })
    };
    // The round opens as the phone connects, before the stream's reader has looked at the rounds.
    let (status, opened) = show.admin("rounds/semi/open", None).await;
    assert_eq!((status, opened["state"].as_str()), (200, Some("open")), "{opened}");
    let (status, _) = show.admin("rounds", Some(json!({"id": "final", "title": "Final", "results": "hidden"}))).await;
    assert_eq!(status, 201);
    assert_eq!(show.admin("rounds/final/open", None).await.0, 409, "at most one round is open");
    // The gateways see the open round within their refresh.
    wait_for("the gateways to see the open round", Duration::from_secs(10), || async {
        (show.vote("grpc", "semi-first", vote).await.0 == 202).then_some(())
    })
    .await;
    // The phone heard the round open all the same.
    wait_for("a round event for the open", Duration::from_secs(10), || async {
        let heard = heard.lock().expect("lock").clone();
        heard.split("\n\n").any(|e| e.contains("event: round") && e.contains(r#""state":"open""#)).then_some(())
    })
    .await;

    // 16 keyed senders on both paths; the round closes while they are sending.
    let answered = AtomicUsize::new(0);
    let answered = &answered;
    let senders = futures::stream::iter(0..16)
        .map(|sender| async move {
            let path = if sender % 2 == 0 { "grpc" } else { "wasm" };
            let (mut accepted, mut refused_after_close) = (Vec::new(), 0);
            let votes = mix(400);
            for (i, vote) in votes.iter().enumerate() {
                let (status, body) = show.vote(path, &format!("s{sender}-{i}"), vote).await;
                match status {
                    202 => {
                        assert_eq!(refused_after_close, 0, "sender {sender}: a 202 after a 409");
                        accepted.push(vote.clone());
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    409 => {
                        assert_eq!(body, json!({"error": "voting is closed"}));
                        refused_after_close += 1;
                        if refused_after_close >= 3 {
                            break;
                        }
                    }
                    other => panic!("sender {sender} got {other} {body}"),
                }
            }
            (accepted, refused_after_close)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let closer = async {
        wait_for("votes in flight before the close", PATIENCE, || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (answered.load(Ordering::SeqCst) >= 64).then_some(())
        })
        .await;
        let (status, round) = show.admin("rounds/semi/close", None).await;
        assert_eq!((status, round["state"].as_str()), (200, Some("closed")), "{round}");
    };
    let (outcomes, ()) = tokio::join!(senders, closer);
    let mut accepted = vec![vote.clone()];
    for (votes, refused) in outcomes {
        assert!(refused >= 3, "every sender ends refused by the close");
        accepted.extend(votes);
    }
    assert!(accepted.len() > 64, "votes were accepted before the close: {}", accepted.len());
    for path in ["grpc", "wasm"] {
        assert_eq!(show.vote(path, &format!("after-close-{path}"), vote).await.0, 409, "{path}");
    }

    // Exactly the 202s, in the round they were answered for.
    let results = show.wait_for_round_total("semi", accepted.len() as u64).await;
    let (bands, albums) = counts(&accepted);
    assert_eq!(map(&results["bands"]), bands);
    assert_eq!(map(&results["albums"]), albums);
    assert_eq!(results["round"], "semi");
    // Still exact a moment later: nothing after the close is counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(show.get("/api/results?round=semi", false).await["total"], accepted.len() as u64);
    let public = show.get("/api/results", false).await;
    assert_eq!(public["round"], "semi", "the latest closed round: {public}");

    // The close was heard on the stream, as a `round` event with an id.
    let event = wait_for("a round event for the close", Duration::from_secs(10), || async {
        let heard = heard.lock().expect("lock").clone();
        heard.split("\n\n").find(|e| e.contains("event: round") && e.contains(r#""state":"closed""#)).map(str::to_owned)
    })
    .await;
    assert!(event.starts_with("id: "), "{event}");
    listener.abort();

    // Not final yet: votes of the round may still be on their way for a moment.
    let early = show.client.get(format!("{}/api/rounds/semi/result", show.base)).send().await.expect("answer");
    assert_eq!(early.status(), 409);

    // The exports, while the show goes on (the operator's only).
    let csv = show.csv("semi", "results").await;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("band,album,votes"));
    let exported: BTreeMap<String, u64> = lines
        .map(|line| {
            // Text cells are quoted; the test's names hold no comma or quote.
            let (key, votes) = line.rsplit_once(',').expect("three fields");
            let (band, album) = key.split_once(',').expect("three fields");
            let (band, album) = (band.trim_matches('"'), album.trim_matches('"'));
            (format!("{band} / {album}"), votes.parse().expect("a count"))
        })
        .collect();
    assert_eq!(exported, albums);
    // One row per logged vote of the round (the log pipeline runs beside the counters).
    let csv = wait_for("every vote of the semi-final in the log", PATIENCE, || async {
        let csv = show.csv("semi", "votes").await;
        (csv.lines().count() == accepted.len() + 1).then_some(csv)
    })
    .await;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,received_at,path,band,album,year,rank"));
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter().any(|row| row.starts_with("\"s0-0\",")) && rows.iter().all(|row| !row.contains("before-any-round"))
    );
    let anonymous = show.client.get(format!("{}/api/rounds/semi/votes.csv", show.base)).send().await.expect("answer");
    assert_eq!(anonymous.status(), 401);

    // A hidden round: the public sees its total only, in the results and the log, until the reveal.
    assert_eq!(show.admin("rounds/final/open", None).await.0, 200);
    let finalists = mix(12);
    wait_for("the gateways to see the final", Duration::from_secs(10), || async {
        (show.vote("wasm", "final-0", &finalists[0]).await.0 == 202).then_some(())
    })
    .await;
    for (i, vote) in finalists.iter().enumerate().skip(1) {
        let path = if i % 2 == 0 { "grpc" } else { "wasm" };
        assert_eq!(show.vote(path, &format!("final-{i}"), vote).await.0, 202);
    }
    show.wait_for_round_total("final", 12).await;
    let public = show.get("/api/results", false).await;
    assert_eq!((public["round"].as_str(), public["hidden"].as_bool()), (Some("final"), Some(true)), "{public}");
    assert_eq!(public["total"], 12);
    assert!(map(&public["bands"]).is_empty() && map(&public["albums"]).is_empty(), "{public}");
    let operator = show.get("/api/results", true).await;
    assert_eq!(map(&operator["bands"]), counts(&finalists).0);
    // The log pipeline runs beside the counters: wait for it too.
    wait_for("the final's 12 votes in the log", PATIENCE, || async {
        let logs = show.get("/api/logs?limit=100", true).await;
        (logs.as_array().expect("array").iter().filter(|entry| entry["round"] == "final").count() == 12).then_some(())
    })
    .await;
    let logs = show.get("/api/logs?limit=100", false).await;
    assert!(logs.as_array().expect("array").iter().all(|entry| entry["round"] != "final"), "{logs}");
    let (status, revealed) = show.admin("rounds/final/reveal", None).await;
    assert_eq!((status, revealed["results"].as_str()), (200, Some("revealed")));
    let public = show.get("/api/results", false).await;
    assert_eq!(map(&public["bands"]), counts(&finalists).0, "{public}");

    let rounds = show.get("/api/rounds", false).await;
    assert!(bandvote_core::time::parse(rounds["now"].as_str().expect("now")).is_some());
    let listed: Vec<(&str, &str, u64)> = rounds["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .map(|r| (r["id"].as_str().expect("id"), r["state"].as_str().expect("state"), r["total"].as_u64().expect("n")))
        .collect();
    assert_eq!(listed, [("final", "open", 12), ("semi", "closed", accepted.len() as u64)]);

    // Final once every vote of it is counted and the counters agree with the log.
    let certified = wait_for("round semi to be final", PATIENCE, || async {
        let answer = show.client.get(format!("{}/api/rounds/semi/result", show.base)).send().await.ok()?;
        (answer.status() == 200).then_some(())?;
        answer.json::<bandvote_core::round::Certified>().await.ok()
    })
    .await;
    assert!(certified.verifies(), "{certified:?}");
    // Checked as anyone would, outside bandvote: keys sorted, no spaces, then sha256sum.
    let canonical = format!(
        r#"{{"albums":{},"bands":{},"closed_at":"{}","leaves":{},"merkle_root":"{}","round":"semi","total":{}}}"#,
        serde_json::to_string(&certified.albums).expect("json"),
        serde_json::to_string(&certified.bands).expect("json"),
        certified.closed_at,
        certified.leaves.expect("leaves"),
        certified.merkle_root.as_deref().expect("a root"),
        certified.total
    );
    let mut sha256sum = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    std::io::Write::write_all(&mut sha256sum.stdin.take().expect("stdin"), canonical.as_bytes()).expect("write");
    let digest = String::from_utf8(sha256sum.wait_with_output().expect("sha256sum").stdout).expect("text");
    assert_eq!(digest.split_whitespace().next(), Some(certified.sha256.as_str()), "{canonical}");
    assert_eq!(certified.total, accepted.len() as u64);
    assert_eq!((certified.bands.clone(), certified.albums.clone()), counts(&accepted));
    assert_eq!(show.get("/api/results?round=semi", false).await["final"], true);
    let rounds = show.get("/api/rounds", false).await;
    assert_eq!(rounds["rounds"][1]["final"], true);
    assert_eq!(rounds["rounds"][0]["final"], false);

    // The operator's audit, per round and all-time, and the pipeline's health.
    let audit = show.get("/api/admin/audit?round=semi", true).await;
    assert_eq!((audit["round"].as_str(), audit["agree"].as_bool()), (Some("semi"), Some(true)), "{audit}");
    assert_eq!(audit["counted"]["total"], accepted.len() as u64);
    assert_eq!(audit["logged"], audit["counted"]);
    // All-time: every round's votes and those of the default round (a vote or two may have come
    // in while the gateways had not yet seen the first round).
    let audit = show.get("/api/admin/audit", true).await;
    let everything = audit["counted"]["total"].as_u64().expect("total");
    assert!(everything > accepted.len() as u64 + 12, "{audit}");
    assert_eq!(audit["agree"], true, "{audit}");
    assert!(audit.get("round").is_none(), "{audit}");
    let unknown = show.client.get(format!("{}/api/admin/audit?round=nope", show.base)).bearer_auth(TOKEN);
    assert_eq!(unknown.send().await.expect("answer").status(), 404);
    let anonymous = show.client.get(format!("{}/api/admin/audit", show.base)).send().await.expect("answer");
    assert_eq!(anonymous.status(), 401);
    let pipeline = show.get("/api/admin/pipeline", true).await;
    assert_eq!((pipeline["counted"].as_u64(), pipeline["logged"].as_u64()), (Some(everything), Some(everything)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_show_on_embedded_storage_counts_each_round_exactly() {
    let dir = std::env::temp_dir().join(format!("bandvote-rounds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = embedded_up(0, &dir);
    command.args(["--admin-token", TOKEN]);
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    let show = Show::new(base.clone());
    a_show(&show).await;
    a_final_round_stays_sealed(&show, "semi", "s0-0", &[&base], async |votes| append_to_embedded_queue(&dir, votes))
        .await;

    // The CLI speaks to the same routes.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["round", "list", "--api", &base])
        .output()
        .await
        .expect("bandvote round list");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(listed["rounds"][0]["id"], "final");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["round", "close", "final", "--api", &base, "--admin-token", "wrong-token"])
        .output()
        .await
        .expect("bandvote round close");
    assert!(!output.status.success(), "a wrong token is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"), "{}", String::from_utf8_lossy(&output.stderr));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["round", "result", "semi", "--api", &base])
        .output()
        .await
        .expect("bandvote round result");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("verified"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(result["round"], "semi");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On the real servers, with two consumers sharing the partitions: `up`'s and a `bandvote consumer`
/// process in the same groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_show_on_the_real_servers_counts_each_round_in_redis_and_logs_it_in_mongodb() {
    let env = TestEnv::new().await;
    let mut command = up(&env, 0);
    command.args(["--admin-token", TOKEN]);
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    let (_consumer, consumer_port) = env.spawn_consumer_process().await;
    let consumer = format!("http://127.0.0.1:{consumer_port}");
    wait_ready(&consumer).await;
    // Both consumers hold partitions before the first vote: the votes are not all counted by the
    // first one while the second is still joining the group.
    let group = env.tally_group();
    wait_for("both consumers in the tally group", Duration::from_secs(30), || async {
        (crate::support::stable_group_members(&group).await == Some(2)).then_some(())
    })
    .await;
    let show = Show::new(base.clone());
    a_show(&show).await;
    for (who, url) in [("up's consumer", &base), ("the consumer process", &consumer)] {
        let counted = counted_by(&show.client, url).await;
        assert!(counted > 0, "{who} counted votes of its partitions ({counted})");
    }

    // The contract's per-round keys and log documents.
    let mut redis = env.redis().await;
    let total: u64 = redis::cmd("GET").arg("votes:round:final:total").query_async(&mut redis).await.expect("total");
    assert_eq!(total, 12);
    let client = mongodb::Client::with_uri_str(MONGO).await.expect("mongo");
    let logs = client.database(&env.mongo_db).collection::<mongodb::bson::Document>("logs");
    let logged = logs.count_documents(mongodb::bson::doc! {"round": "final"}).await.expect("count");
    assert_eq!(logged, 12);

    // Votes written into the topic for the final semi-final are set aside, by either consumer.
    let topic = env.topic.clone();
    a_final_round_stays_sealed(&show, "semi", "s0-0", &[&base, &consumer], async |votes| {
        crate::support::produce_raw(&topic, votes).await
    })
    .await;

    // Counters that lost a round's keys: the audit of that round says so, and fails.
    let semi_before: BTreeMap<String, u64> =
        redis::cmd("HGETALL").arg("votes:round:semi:band").query_async(&mut redis).await.expect("semi");
    let _: () = redis::cmd("DEL")
        .arg(&["votes:round:semi:band", "votes:round:semi:total", "votes:round:final:album"])
        .query_async(&mut redis)
        .await
        .expect("del");
    let (agree, said) = audit_round(&env, "semi").await;
    assert!(!agree, "the audit finds the lost counters: {said}");
    assert!(said.contains(r#""agree": false"#), "{said}");

    // The operator's recount rebuilds each round's counters from the log, beside the all-time ones.
    wait_for("the recount", PATIENCE, || async {
        let answer = show.client.post(format!("{base}/api/admin/recount")).bearer_auth(TOKEN).send().await.ok()?;
        (answer.status() == 200).then_some(())
    })
    .await;
    let semi_after: BTreeMap<String, u64> =
        redis::cmd("HGETALL").arg("votes:round:semi:band").query_async(&mut redis).await.expect("semi");
    assert_eq!(semi_after, semi_before);
    let semi_total: u64 = redis::cmd("GET").arg("votes:round:semi:total").query_async(&mut redis).await.expect("n");
    assert_eq!(semi_total, semi_before.values().sum::<u64>());
    let final_albums: BTreeMap<String, u64> =
        redis::cmd("HGETALL").arg("votes:round:final:album").query_async(&mut redis).await.expect("final");
    // The final's twelve, and the two votes that named the semi-final in a header while it was open.
    let finals: Vec<_> = mix(12).into_iter().chain([mix(1)[0].clone(), mix(1)[0].clone()]).collect();
    assert_eq!(final_albums, counts(&finals).1);
    let (agree, said) = audit_round(&env, "semi").await;
    assert!(agree, "{said}");
    assert!(said.contains(r#""round": "semi""#), "{said}");
}

/// `bandvote audit --round ID` on the test's stores: whether it passed, and what it printed.
async fn audit_round(env: &TestEnv, id: &str) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
        .args(["audit", "--round", id, "--redis-url", &env.redis_url(), "--mongo-url", MONGO])
        .args(["--mongo-db", &env.mongo_db])
        .output()
        .await
        .expect("bandvote audit");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// The votes the tally pipeline of the process at `base` counted, from its `/metrics`.
async fn counted_by(client: &reqwest::Client, base: &str) -> u64 {
    let metrics = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    metrics
        .lines()
        .filter(|line| line.starts_with("bandvote_consumer_votes_total") && line.contains(r#"pipeline="tally""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A closed round becomes final on every storage combination of `up` with its embedded queue: the
/// counters in Redis, the log in MongoDB, or both (all embedded, and Kafka with both servers, are
/// the shows above).
async fn a_round_becomes_final_on(servers: &[&str]) {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("bandvote-final-{}", env.id));
    let mut command = embedded_up(0, &dir);
    command.args(["--admin-token", TOKEN]);
    if servers.contains(&"redis") {
        command.args(["--redis-url", &env.redis_url()]);
    }
    if servers.contains(&"mongodb") {
        command.args(["--mongo-url", MONGO, "--mongo-db", &env.mongo_db]);
    }
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    let show = Show::new(base.clone());
    assert_eq!(show.admin("rounds", Some(json!({"id": "semi", "title": "Semi"}))).await.0, 201);
    // Until the gateways see the round, a vote would count in `default`: wait for their 409 (with a
    // vote no round takes: without the year a free-text vote needs).
    for path in ["grpc", "wasm"] {
        wait_for("the gateways to see the scheduled round", Duration::from_secs(10), || async {
            let url = format!("{base}/{path}/votes");
            let body = json!({"name": "Nadie", "album": "Nada"}).to_string();
            (crate::support::post_vote(&show.client, &url, body, None).await.0 == 409).then_some(())
        })
        .await;
    }
    assert_eq!(show.admin("rounds/semi/open", None).await.0, 200);
    let votes = mix(6);
    for (i, vote) in votes.iter().enumerate() {
        let path = if i % 2 == 0 { "grpc" } else { "wasm" };
        wait_for("the gateways to see the open round", Duration::from_secs(10), || async {
            (show.vote(path, &format!("final-{i}"), vote).await.0 == 202).then_some(())
        })
        .await;
    }
    show.wait_for_round_total("semi", 6).await;
    assert_eq!(show.admin("rounds/semi/close", None).await.0, 200);
    // Final once the settle bound (18.6 s) has passed and both pipelines agree.
    let result = wait_for(&format!("round semi final with {servers:?}"), Duration::from_secs(60), || async {
        let answer = show.client.get(format!("{base}/api/rounds/semi/result")).send().await.ok()?;
        (answer.status() == 200).then_some(())?;
        answer.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(result["total"], 6, "{result}");
    let (bands, albums) = counts(&votes);
    assert_eq!((map(&result["bands"]), map(&result["albums"])), (bands, albums), "{result}");
    let certified: bandvote_core::round::Certified = serde_json::from_value(result).expect("a certified result");
    assert!(certified.verifies());
    a_final_round_stays_sealed(&show, "semi", "final-0", &[&base], async |votes| append_to_embedded_queue(&dir, votes))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_becomes_final_under_up_with_redis_counters() {
    a_round_becomes_final_on(&["redis"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_becomes_final_under_up_with_a_mongodb_log() {
    a_round_becomes_final_on(&["mongodb"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_becomes_final_under_up_with_redis_and_mongodb_on_its_embedded_queue() {
    a_round_becomes_final_on(&["redis", "mongodb"]).await;
}

/// Votes for round `id`, already final, as a writer that skips every gateway would put them in the
/// queue, stamped a second before the close: a retry of the counted key `retry`, a new key, and a
/// vote without a key. Each with whether it carries a client's key.
fn late_votes(id: &str, retry: &str, closed_at: &str) -> Vec<(Vec<u8>, bool)> {
    use bandvote_core::{IngestPath, VoteId, VoteMessage};
    let closed = bandvote_core::time::parse(closed_at).expect("closed_at");
    let before = bandvote_core::time::format(closed - Duration::from_secs(1));
    [
        (VoteId::from_client_key(retry), true),
        (VoteId::from_client_key("late-new"), true),
        (Ok(VoteId::generate()), false),
    ]
    .into_iter()
    .map(|(vote_id, keyed)| {
        let vote = bandvote_core::Vote::from_strings("Tarde", "Demasiado", "1999", "8").expect("a vote");
        let message = VoteMessage::new(&vote_id.expect("a key"), vote, IngestPath::Grpc, before.clone(), id.to_owned());
        (message.to_json(), keyed)
    })
    .collect()
}

/// Writes `votes` at the end of the embedded queue in `dir`, behind `up`'s back.
fn append_to_embedded_queue(dir: &std::path::Path, votes: Vec<(Vec<u8>, bool)>) {
    let db = rusqlite::Connection::open(dir.join(bandvote_embedded::DATABASE_FILE)).expect("the database opens");
    db.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    for (message, keyed) in votes {
        db.execute(
            "INSERT INTO queue (seq, message, client_key) VALUES (\
             (SELECT max((SELECT coalesce(max(seq), 0) FROM queue), \
                         (SELECT coalesce(max(seq), 0) FROM positions)) + 1), ?1, ?2)",
            rusqlite::params![message, keyed],
        )
        .expect("a vote written into the queue");
    }
}

/// Round `id` of `show` is final: votes for it written afterwards (by `write`, into the queue, and
/// through `up`'s listener with the round in a header) change neither its
/// certificate nor its counters; two of the three are set aside as late (the third is a retry of a
/// counted key), shown by the audit, which agrees, and by the late-votes metric of the tally
/// processes at `tallies`.
async fn a_final_round_stays_sealed(
    show: &Show,
    id: &str,
    retry: &str,
    tallies: &[&str],
    write: impl AsyncFnOnce(Vec<(Vec<u8>, bool)>),
) {
    let certified = show.get(&format!("/api/rounds/{id}/result"), false).await;
    let counted = show.get(&format!("/api/results?round={id}"), true).await;
    assert_eq!(counted["total"], certified["total"], "{counted}");
    for path in ["grpc", "wasm"] {
        let vote = &mix(1)[0];
        let url = format!("{}/{path}/votes", show.base);
        let answer = show
            .client
            .post(&url)
            .header("bandvote-round", id)
            .header("idempotency-key", format!("side-{path}"))
            .header("content-type", "application/json")
            .body(vote.body())
            .send()
            .await
            .expect("answer");
        // Refused between rounds, or counted in the open round: never in the one named.
        assert!([202, 409].contains(&answer.status().as_u16()), "{path}: {}", answer.status());
    }
    write(late_votes(id, retry, certified["closed_at"].as_str().expect("closed_at"))).await;

    // Set aside by the tally, and logged by the log pipeline, which may come a moment later.
    let audit = wait_for("the late votes set aside and logged", PATIENCE, || async {
        let audit = show.get(&format!("/api/admin/audit?round={id}"), true).await;
        (audit["late"]["total"] == 2 && audit["agree"] == true).then_some(audit)
    })
    .await;
    assert_eq!(audit["counted"]["total"], certified["total"], "{audit}");
    assert_eq!(audit["certified"]["sha256"], certified["sha256"], "{audit}");
    assert_eq!(audit["late"]["bands"], json!({"Tarde": 2}), "{audit}");
    // The log keeps them; the comparison leaves them out.
    assert_eq!(audit["logged"]["total"], certified["total"].as_u64().expect("total") + 2, "{audit}");
    let everything = show.get("/api/admin/audit", true).await;
    assert_eq!(everything["agree"], true, "{everything}");
    assert_eq!(everything["late"]["total"], 2, "{everything}");
    assert_eq!(show.get(&format!("/api/rounds/{id}/result"), false).await, certified);
    assert_eq!(show.get(&format!("/api/results?round={id}"), true).await["bands"], counted["bands"]);
    let mut late = 0.0;
    for base in tallies {
        let metrics = show.client.get(format!("{base}/metrics")).send().await.expect("metrics");
        let metrics = metrics.text().await.expect("text");
        let line = metrics.lines().find(|l| l.starts_with("bandvote_consumer_late_votes_total")).unwrap_or_default();
        late += line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).unwrap_or_default();
    }
    assert_eq!(late, 2.0, "the late-votes metric of {tallies:?}");
}
