//! The ballot, hidden means hidden, one vote per voter per round (DESIGN.md, "The ballot, the
//! venue's screens, one vote per round"), on `bandvote up`'s embedded storage and on the real
//! servers: a round's ballot made, changed and frozen, a round that never opened deleted, off-ballot
//! votes refused `422` on both paths with nothing written, a vote without year or rank counted with
//! its entry's year and no rank, every public answer read while a hidden round takes votes, and
//! `--vote-policy once` admitting a voter again in the next round.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{MONGO, PATIENCE, TestEnv, embedded_up, spawn_listening, up, wait_for, wait_ready};

const TOKEN: &str = "ballot-operator-token-77";
const VOTER_HEADER: &str = "x-voter-id";
/// A band only the hidden round's ballot has: it must appear in no public answer until the reveal.
const SECRET_BAND: &str = "Sonido Secreto";

struct Show {
    base: String,
    client: reqwest::Client,
}

impl Show {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/api/admin/{path}", self.base);
        let mut request = self.client.request(method, url).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("answer");
        (answer.status().as_u16(), answer.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, body).await
    }

    /// A public (or, with the token, the operator's) GET: its status and body as text.
    async fn get(&self, path: &str, operator: bool) -> (u16, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if operator {
            request = request.bearer_auth(TOKEN);
        }
        let answer = request.send().await.expect("answer");
        (answer.status().as_u16(), answer.text().await.expect("text"))
    }

    async fn json(&self, path: &str, operator: bool) -> Value {
        let (status, text) = self.get(path, operator).await;
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).expect("json")
    }

    /// Posts `body` through `path` as `voter`, with the idempotency key `key`.
    async fn vote(&self, path: &str, key: &str, voter: &str, body: Value) -> (u16, Value) {
        let answer = self
            .client
            .post(format!("{}/{path}/votes", self.base))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header(VOTER_HEADER, voter)
            .body(body.to_string())
            .send()
            .await
            .expect("answer");
        (answer.status().as_u16(), answer.json().await.unwrap_or(Value::Null))
    }

    /// Votes until the gateways' refresh has seen round changes: the first answer other than `409`.
    async fn vote_once_open(&self, path: &str, key: &str, voter: &str, body: Value) -> (u16, Value) {
        wait_for(&format!("{path} to take votes"), Duration::from_secs(10), || async {
            let (status, answer) = self.vote(path, key, voter, body.clone()).await;
            (status != 409).then_some((status, answer))
        })
        .await
    }

    /// Waits until both paths answer `409` (the gateways have seen that no round is open), with a
    /// vote no gateway ever takes (on no ballot, without the year a free-text vote needs).
    async fn wait_until_closed(&self) {
        for path in ["grpc", "wasm"] {
            wait_for(&format!("{path} to refuse while no round is open"), Duration::from_secs(10), || async {
                let body = json!({"name": "Nadie", "album": "Nada"});
                (self.vote(path, &format!("closed-{path}"), "nobody", body).await.0 == 409).then_some(())
            })
            .await;
        }
    }

    /// The operator's total of round `id`, once it is `total`.
    async fn wait_for_total(&self, id: &str, total: u64) -> Value {
        wait_for(&format!("{total} votes in round {id}"), PATIENCE, || async {
            let results = self.json(&format!("/api/results?round={id}"), true).await;
            (results["total"].as_u64() == Some(total)).then_some(results)
        })
        .await
    }

    /// The first event of a new `/api/stream` client of the public.
    async fn first_stream_event(&self) -> String {
        let mut stream = self.client.get(format!("{}/api/stream", self.base)).send().await.expect("stream");
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !text.contains("\n\n") {
                let chunk = stream.chunk().await.expect("a chunk").expect("the stream goes on");
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("a first event within 10 s");
        text
    }
}

fn ballot() -> Value {
    json!([
        {"name": "Alux Nahual", "album": "El Viaje", "year": 2011},
        {"name": "Bohemia Suburbana", "album": "Mis palabras", "year": 1997},
    ])
}

/// The whole sequence; `logged_rank` reads how the log stored a vote's rank (`None`: `null`).
async fn a_show_with_ballots(show: &Show) {
    // A ballot is checked when the round is made.
    let twice = json!([{"name": "A", "album": "x", "year": 2000}, {"name": "A", "album": "x", "year": 2001}]);
    let (status, bad) = show.post("rounds", Some(json!({"id": "final", "title": "Final", "ballot": twice}))).await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("ballot")), "{bad}");
    let (status, bad) =
        show.post("rounds", Some(json!({"id": "final", "title": "F", "ballot": [{"name": "A"}]}))).await;
    assert_eq!(status, 400, "{bad}");

    // Made, changed while scheduled, shown to everyone.
    let (status, made) =
        show.post("rounds", Some(json!({"id": "final", "title": "Final", "ballot": [ballot()[0].clone()]}))).await;
    assert_eq!(status, 201, "{made}");
    let (status, changed) = show
        .admin(
            reqwest::Method::PUT,
            "rounds/final",
            Some(json!({"id": "final", "title": "La final", "ballot": ballot()})),
        )
        .await;
    assert_eq!((status, changed["title"].as_str()), (200, Some("La final")), "{changed}");
    let rounds = show.json("/api/rounds", false).await;
    assert_eq!(rounds["rounds"][0]["ballot"], ballot(), "{rounds}");
    let renamed = json!({"id": "other", "title": "x"});
    assert_eq!(show.admin(reqwest::Method::PUT, "rounds/final", Some(renamed)).await.0, 400);
    assert_eq!(show.admin(reqwest::Method::PUT, "rounds/nope", Some(json!({"id": "nope", "title": "x"}))).await.0, 404);

    // A round that never opened is deleted; nothing is left of it.
    assert_eq!(show.post("rounds", Some(json!({"id": "spare", "title": "Spare"}))).await.0, 201);
    assert_eq!(show.admin(reqwest::Method::DELETE, "rounds/spare", None).await.0, 204);
    assert_eq!(show.admin(reqwest::Method::DELETE, "rounds/spare", None).await.0, 404);
    let rounds = show.json("/api/rounds", false).await;
    assert!(rounds["rounds"].as_array().expect("rounds").iter().all(|r| r["id"] != "spare"), "{rounds}");

    // The gateways see the rounds within their refresh: voting is closed until the final opens.
    show.wait_until_closed().await;

    // Once open, its ballot is frozen and it cannot be deleted.
    assert_eq!(show.post("rounds/final/open", None).await.0, 200);
    let (status, frozen) =
        show.admin(reqwest::Method::PUT, "rounds/final", Some(json!({"id": "final", "title": "x"}))).await;
    assert_eq!(status, 409, "{frozen}");
    assert_eq!(show.admin(reqwest::Method::DELETE, "rounds/final", None).await.0, 409);

    // Off the ballot on both paths: 422 naming the field, nothing counted.
    let off = [
        (json!({"name": "FREE TICKETS AT scam.example", "album": "El Viaje"}), "name"),
        (json!({"name": "Alux Nahual", "album": "Mis palabras"}), "album"),
        (json!({"name": "Alux Nahual", "album": "El Viaje", "year": "1999"}), "year"),
    ];
    for path in ["grpc", "wasm"] {
        for (i, (body, field)) in off.iter().enumerate() {
            let (status, answer) = show.vote_once_open(path, &format!("off-{path}-{i}"), "nobody", body.clone()).await;
            assert_eq!(status, 422, "{path} {body}: {answer}");
            assert_eq!(answer, json!({"error": "not on the ballot", "field": field}), "{path}");
        }
    }

    // One tap: name and album, no year, no rank; the entry's year is counted, the rank stays absent.
    let mut ids = Vec::new();
    for (path, voter) in [("grpc", "ana"), ("wasm", "beto")] {
        let body = json!({"name": "Alux Nahual", "album": "El Viaje"});
        let (status, answer) = show.vote(path, &format!("tap-{path}"), voter, body).await;
        assert_eq!(status, 202, "{path}: {answer}");
        ids.push(answer["id"].as_str().expect("id").to_owned());
    }
    // The same voter again in the same round: one vote per round.
    let body = json!({"name": "Bohemia Suburbana", "album": "Mis palabras", "year": 1997, "rank": "9"});
    for path in ["grpc", "wasm"] {
        let (status, answer) = show.vote(path, &format!("again-{path}"), "ana", body.clone()).await;
        assert_eq!(status, 429, "{path}: {answer}");
    }
    // A retry of the first vote under its key is the same vote, not a second one.
    let body = json!({"name": "Alux Nahual", "album": "El Viaje"});
    assert_eq!(show.vote("grpc", "tap-grpc", "ana", body).await.0, 202);
    let (status, answer) = show
        .vote("wasm", "ranked", "carla", json!({"name": "Bohemia Suburbana", "album": "Mis palabras", "rank": 9.5}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let results = show.wait_for_total("final", 3).await;
    // The console's figures: the round's refusals by reason, written within a gateway's refresh.
    assert_eq!(show.get("/api/admin/rounds/final/stats", false).await.0, 401, "the figures are the operator's");
    let stats = wait_for("the refusals written", Duration::from_secs(10), || async {
        let stats = show.json("/api/admin/rounds/final/stats", true).await;
        (stats["refused"]["ballot"] == 6 && stats["refused"]["fairness"] == 2).then_some(stats)
    })
    .await;
    assert_eq!((stats["total"].as_u64(), stats["refused"]["closed"].as_u64()), (Some(3), Some(0)), "{stats}");
    assert_eq!(results["bands"], json!({"Alux Nahual": 2, "Bohemia Suburbana": 1}), "{results}");
    let logs = wait_for("the votes in the log", PATIENCE, || async {
        let logs = show.json("/api/logs?limit=10", false).await;
        (logs.as_array().map(Vec::len) == Some(3)).then_some(logs)
    })
    .await;
    for entry in logs.as_array().expect("logs") {
        let expected = if entry["id"] == "ranked" {
            json!({"name": "Bohemia Suburbana", "album": "Mis palabras", "year": "1997", "rank": "9.5"})
        } else {
            json!({"name": "Alux Nahual", "album": "El Viaje", "year": "2011", "rank": null})
        };
        assert_eq!(entry["data"], expected, "{entry}");
    }
    let (_, csv) = show.get("/api/rounds/final/votes.csv", true).await;
    let row = csv.lines().find(|line| line.starts_with("\"tap-wasm\",")).expect("the wasm vote's row");
    assert!(row.ends_with(r#","Alux Nahual","El Viaje","2011","""#), "{row}");

    // The hidden round, with a band of its own.
    assert_eq!(show.post("rounds/final/close", None).await.0, 200);
    show.wait_until_closed().await;
    let prize_ballot = json!([{"name": SECRET_BAND, "album": "Nadie lo sabe", "year": 2026}]);
    let hidden = json!({"id": "prize", "title": "Premio del público", "results": "hidden", "ballot": prize_ballot});
    assert_eq!(show.post("rounds", Some(hidden)).await.0, 201);
    assert_eq!(show.post("rounds/prize/open", None).await.0, 200);
    // A new round: the voter of the final votes again (the voter policy is per round).
    let secret = json!({"name": SECRET_BAND, "album": "Nadie lo sabe"});
    let (status, answer) = show.vote_once_open("grpc", "prize-grpc", "ana", secret.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(show.vote("wasm", "prize-wasm", "beto", secret).await.0, 202);
    show.wait_for_total("prize", 2).await;
    wait_for("the hidden votes in the log", PATIENCE, || async {
        let logs = show.json("/api/logs?limit=10", true).await;
        (logs.as_array().map(Vec::len) == Some(5)).then_some(())
    })
    .await;

    // Every public answer, while the hidden round takes votes: its band is in none of them.
    let public = [
        "/api/results",
        "/api/results?round=default",
        "/api/results?round=prize",
        "/api/logs?limit=100",
        "/api/rounds",
        "/api/rounds/prize/result",
        "/api/rounds/prize/votes.csv",
        "/api/rounds/prize/results.csv",
    ];
    for path in public {
        let (status, text) = show.get(path, false).await;
        assert!(
            !text.contains(SECRET_BAND) || path == "/api/rounds",
            "{path} ({status}) shows the hidden band: {text}"
        );
    }
    // The ballot is public (the phones show it), the counts are not.
    let all_time = show.json("/api/results?round=default", false).await;
    assert_eq!(all_time["bands"], json!({"Alux Nahual": 2, "Bohemia Suburbana": 1}), "{all_time}");
    assert_eq!(all_time["total"], 3, "the all-time view leaves the hidden round out: {all_time}");
    let prize = show.json("/api/results?round=prize", false).await;
    assert_eq!((prize["total"].as_u64(), prize["bands"].clone()), (Some(2), json!({})), "{prize}");
    let first = show.first_stream_event().await;
    assert!(first.contains("event: results") && !first.contains(SECRET_BAND), "{first}");
    // The operator sees everything.
    let operator = show.json("/api/results?round=default", true).await;
    assert_eq!(operator["bands"][SECRET_BAND], 2, "{operator}");

    // The reveal shows it to everyone.
    assert_eq!(show.post("rounds/prize/reveal", None).await.0, 200);
    let revealed = show.json("/api/results?round=default", false).await;
    assert_eq!(revealed["bands"][SECRET_BAND], 2, "{revealed}");

    // Refusals carry their reason on both paths: a vote after the close is `closed`.
    assert_eq!(show.post("rounds/prize/close", None).await.0, 200);
    for path in ["grpc", "wasm"] {
        wait_for(&format!("{path} to refuse after the close"), Duration::from_secs(10), || async {
            let body = json!({"name": SECRET_BAND, "album": "Nadie lo sabe"});
            (show.vote(path, &format!("late-{path}"), "late", body).await.0 == 409).then_some(())
        })
        .await;
    }
    // Votes refused after the close are the closed round's late votes, on the console.
    let prize = wait_for("the late votes written", Duration::from_secs(10), || async {
        let prize = show.json("/api/admin/rounds/prize/stats", true).await;
        (prize["refused"]["closed"].as_u64() >= Some(2)).then_some(prize)
    })
    .await;
    assert!(prize["viewers"].is_u64(), "{prize}");
    assert_eq!(show.get("/api/admin/rounds/nope/stats", true).await.0, 404);
    let (_, metrics) = show.get("/metrics", false).await;
    for path in ["grpc", "wasm"] {
        for reason in ["closed", "ballot", "fairness"] {
            let labels = format!(r#"path="{path}",reason="{reason}""#);
            let labels_other = format!(r#"reason="{reason}",path="{path}""#);
            let n = crate::support::metric(&metrics, "bandvote_votes_rejected_total", &labels)
                + crate::support::metric(&metrics, "bandvote_votes_rejected_total", &labels_other);
            assert!(n >= 1.0, "{path} {reason}: {n}");
        }
    }
}

fn once_per_round(command: &mut tokio::process::Command) {
    command.args(["--admin-token", TOKEN, "--vote-policy", "once", "--voter-header", VOTER_HEADER]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ballot_round_on_embedded_storage_takes_one_tap_and_hides_what_is_hidden() {
    let dir = std::env::temp_dir().join(format!("bandvote-ballot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = embedded_up(0, &dir);
    once_per_round(&mut command);
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    a_show_with_ballots(&Show { base, client: reqwest::Client::new() }).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ballot_round_on_the_real_servers_takes_one_tap_and_hides_what_is_hidden() {
    let env = TestEnv::new().await;
    let mut command = up(&env, 0);
    once_per_round(&mut command);
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    a_show_with_ballots(&Show { base, client: reqwest::Client::new() }).await;
    // The log document of a vote without a rank: `rank: null`, the entry's year.
    let client = mongodb::Client::with_uri_str(MONGO).await.expect("mongo");
    let logs = client.database(&env.mongo_db).collection::<mongodb::bson::Document>("logs");
    let tap = logs.find_one(mongodb::bson::doc! {"_id": "tap-grpc"}).await.expect("find").expect("logged");
    let data = tap.get_document("data").expect("data");
    assert_eq!(data.get_str("year"), Ok("2011"), "{tap}");
    assert_eq!(data.get("rank"), Some(&mongodb::bson::Bson::Null), "{tap}");
    // A client's key is remembered by the tally, then forgotten: under once as long as the voter
    // policy remembers the voter (72 h, more than the keys' 24 h), so a retry it admits counts once.
    let mut redis = env.redis().await;
    let ttl: i64 = redis::cmd("PTTL").arg("votes:seen:tap-grpc").query_async(&mut redis).await.expect("pttl");
    let memory = 72 * 3600 * 1000;
    assert!((memory - 300_000..=memory).contains(&ttl), "votes:seen:tap-grpc expires in {ttl} ms");
}
