//! `bandvote up` on its embedded storage (no Kafka, Redis or MongoDB): both paths counted and logged
//! exactly, `kill -9` mid-stream then a restart on the same data directory loses and doubles
//! nothing, bad data directories fail clearly, and each piece can be switched to its real server.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::{
    MONGO, PATIENCE, TestEnv, embedded_up, expected, mix, port_of, post_all, post_vote, spawn_listening, wait_for,
    wait_ready,
};
use serde_json::Value;

async fn results(base: &str) -> Value {
    reqwest::get(format!("{base}/api/results")).await.expect("results").json().await.expect("json")
}

async fn wait_for_results_total(base: &str, total: u64) -> Value {
    wait_for(&format!("{total} votes in /api/results"), PATIENCE, || async {
        let r = results(base).await;
        (r["total"].as_u64() >= Some(total)).then_some(r)
    })
    .await
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bandvote-up-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn counts_of(results: &Value) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let map = |v: &Value| {
        v.as_object().expect("an object").iter().map(|(k, n)| (k.clone(), n.as_u64().expect("a count"))).collect()
    };
    (map(&results["bands"]), map(&results["albums"]))
}

async fn stop(process: &mut tokio::process::Child) {
    let pid = process.id().expect("pid").to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let exit = tokio::time::timeout(Duration::from_secs(30), process.wait()).await.expect("exits").expect("status");
    assert!(exit.success(), "clean exit: {exit}");
}

/// Votes in the embedded log, read from the database once `up` has stopped.
async fn logged(dir: &Path) -> u64 {
    let storage = bandvote_embedded::Storage::open(dir, Duration::from_secs(3600)).expect("the data directory opens");
    storage.logged().await.expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_on_embedded_storage_counts_and_logs_both_paths_exactly() {
    let dir = data_dir("exact");
    let (mut up, base) = spawn_listening(&mut embedded_up(0, &dir)).await;
    let port = port_of(&base);
    wait_ready(&base).await;
    let ready: Value = reqwest::get(format!("{base}/readyz")).await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["checks"]["storage"], "ok", "{ready}");

    let (grpc, wasm) = (mix(150), mix(90));
    post_all(&format!("{base}/grpc/votes"), &grpc, 8).await;
    post_all(&format!("{base}/wasm/votes"), &wasm, 8).await;
    // A client retry under the same key is answered with the same id and counted once.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let (status, body) =
            crate::support::post_vote(&client, &format!("{base}/wasm/votes"), grpc[0].body(), Some("retry-1")).await;
        assert_eq!((status, body["id"].as_str()), (202, Some("retry-1")));
    }
    let mut all: Vec<_> = grpc.iter().chain(&wasm).cloned().collect();
    all.push(grpc[0].clone());
    let want = expected(&all);
    let counted = wait_for_results_total(&base, want.total).await;
    assert_eq!(counted["total"].as_u64(), Some(want.total));
    assert_eq!(counts_of(&counted), (want.bands.clone(), want.albums.clone()));
    let logs: Value =
        reqwest::get(format!("{base}/api/logs?limit=1000")).await.expect("logs").json().await.expect("json");
    let logs = logs.as_array().expect("an array");
    assert_eq!(logs.len() as u64, want.total);
    assert_eq!(logs.iter().filter(|l| l["path"] == "wasm").count(), 91);
    // The web app is served too.
    let page = reqwest::get(format!("{base}/")).await.expect("/");
    assert_eq!(page.status(), 200);
    stop(&mut up).await;
    // Everything is still there after a restart.
    let mut up = embedded_up(port, &dir).spawn().expect("up restarts");
    wait_ready(&base).await;
    assert_eq!(results(&base).await["total"].as_u64(), Some(want.total));
    stop(&mut up).await;
    assert_eq!(logged(&dir).await, want.total);
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// Whether the vote `id` is in the database as another process sees it (committed): in the queue,
/// or in the log once the queue was pruned.
fn committed(db: &rusqlite::Connection, id: &str) -> bool {
    let in_message = format!("\"id\":\"{id}\"");
    db.query_row(
        "SELECT EXISTS (SELECT 1 FROM queue WHERE instr(CAST(message AS TEXT), ?1)) \
             OR EXISTS (SELECT 1 FROM logs WHERE id = ?2)",
        rusqlite::params![in_message, id],
        |r| r.get(0),
    )
    .expect("the database reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_202_on_embedded_storage_is_for_a_vote_already_in_the_database() {
    let dir = data_dir("committed");
    let (mut up, base) = spawn_listening(&mut embedded_up(0, &dir)).await;
    wait_ready(&base).await;
    let db = rusqlite::Connection::open(dir.join(bandvote_embedded::DATABASE_FILE)).expect("the database opens");
    let client = reqwest::Client::new();
    for (i, vote) in mix(60).iter().enumerate() {
        let path = if i % 2 == 0 { "grpc" } else { "wasm" };
        let (status, body) = post_vote(&client, &format!("{base}/{path}/votes"), vote.body(), None).await;
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_str().expect("id");
        assert!(committed(&db, id), "vote {id} on the {path} path was answered 202 before it was committed");
    }
    assert!(!committed(&db, "no-such-vote"), "the lookup can say no");
    stop(&mut up).await;
    drop(db);
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// Sends `votes` with keys `k-<i>`, `workers` at a time, recording which were answered 202; stops
/// quietly on connection errors (the server may be killed meanwhile).
async fn send_keyed(
    base: String,
    votes: Arc<Vec<crate::support::TestVote>>,
    accepted: Arc<Mutex<Vec<bool>>>,
    workers: usize,
) {
    let next = Arc::new(Mutex::new(0usize));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (base, votes, accepted, next, client) =
                (base.clone(), Arc::clone(&votes), Arc::clone(&accepted), Arc::clone(&next), client.clone());
            tokio::spawn(async move {
                loop {
                    let i = {
                        let mut next = next.lock().expect("lock");
                        let i = *next;
                        *next += 1;
                        i
                    };
                    if i >= votes.len() {
                        return;
                    }
                    let path = if (i + w) % 2 == 0 { "grpc" } else { "wasm" };
                    let answer = client
                        .post(format!("{base}/{path}/votes"))
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("k-{i}"))
                        .body(votes[i].body())
                        .send()
                        .await;
                    if let Ok(answer) = answer
                        && answer.status() == 202
                    {
                        accepted.lock().expect("lock")[i] = true;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_then_restart_counts_every_accepted_vote_exactly_once() {
    let dir = data_dir("kill");
    let (mut up, base) = spawn_listening(&mut embedded_up(0, &dir)).await;
    let port = port_of(&base);
    wait_ready(&base).await;

    let votes = Arc::new(mix(3000));
    let accepted = Arc::new(Mutex::new(vec![false; votes.len()]));
    let sender = tokio::spawn(send_keyed(base.clone(), Arc::clone(&votes), Arc::clone(&accepted), 16));
    // Kill -9 once a good part of the stream is in.
    wait_for("a third of the votes accepted", PATIENCE, || async {
        (accepted.lock().expect("lock").iter().filter(|a| **a).count() >= 1000).then_some(())
    })
    .await;
    up.start_kill().expect("kill -9");
    up.wait().await.expect("killed");
    sender.await.expect("the sender ends");
    let before_restart = accepted.lock().expect("lock").iter().filter(|a| **a).count();
    assert!(before_restart < votes.len(), "the kill landed mid-stream ({before_restart} accepted)");

    // Restart on the same data directory; the client retries what got no 202 (same keys), and
    // a few that did, as a client that lost the answers would.
    let mut up = embedded_up(port, &dir).spawn().expect("up restarts");
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let retry: Vec<usize> = {
        let accepted = accepted.lock().expect("lock");
        (0..votes.len()).filter(|&i| !accepted[i] || i % 50 == 0).collect()
    };
    for i in retry {
        let (status, body) =
            crate::support::post_vote(&client, &format!("{base}/grpc/votes"), votes[i].body(), Some(&format!("k-{i}")))
                .await;
        assert_eq!((status, body["id"].as_str()), (202, Some(format!("k-{i}").as_str())), "retry of k-{i}");
    }
    let want = expected(&votes);
    let counted = wait_for_results_total(&base, want.total).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counted_later = results(&base).await;
    assert_eq!(counted_later["total"], counted["total"], "nothing counted twice after convergence");
    assert_eq!(counted["total"].as_u64(), Some(want.total));
    assert_eq!(counts_of(&counted), (want.bands, want.albums));
    stop(&mut up).await;
    assert_eq!(logged(&dir).await, want.total, "every vote logged exactly once");
    std::fs::remove_dir_all(dir).expect("clean up");
}

async fn fails_with(port: u16, dir: &Path, expected: &str) {
    let output = tokio::time::timeout(Duration::from_secs(30), embedded_up(port, dir).output())
        .await
        .expect("up gives up quickly")
        .expect("up runs");
    assert!(!output.status.success(), "up must fail for {}", dir.display());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(expected), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_data_directories_fail_with_a_clear_message() {
    // A file where the directory should be.
    let file = data_dir("file");
    std::fs::write(&file, b"not a directory").expect("write");
    fails_with(0, &file, "cannot create it").await;
    std::fs::remove_file(&file).expect("clean up");
    // A database that is not one.
    let corrupt = data_dir("corrupt");
    std::fs::create_dir_all(&corrupt).expect("mkdir");
    std::fs::write(corrupt.join("bandvote.db"), vec![0x42; 8192]).expect("write");
    fails_with(0, &corrupt, "damaged or not a bandvote database").await;
    std::fs::remove_dir_all(&corrupt).expect("clean up");
    // A directory another `up` is using.
    let busy = data_dir("busy");
    let (mut first, base) = spawn_listening(&mut embedded_up(0, &busy)).await;
    wait_ready(&base).await;
    fails_with(0, &busy, "another bandvote process is using it").await;
    stop(&mut first).await;
    std::fs::remove_dir_all(&busy).expect("clean up");
    // Kafka alone cannot run: its consumer writes to Redis and MongoDB.
    let output = embedded_up(0, &data_dir("kafka"))
        .args(["--kafka-brokers", crate::support::KAFKA])
        .output()
        .await
        .expect("up runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs --redis-url and --mongo-url"));
}

/// The embedded queue with the real Redis counters and MongoDB log: the contract's keys and
/// documents, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_piece_can_be_switched_to_its_real_server() {
    let env = TestEnv::new().await;
    let dir = data_dir("mixed");
    let mut command = embedded_up(0, &dir);
    command.args(["--redis-url", &env.redis_url(), "--mongo-url", MONGO, "--mongo-db", &env.mongo_db]);
    let (mut up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    let votes = mix(120);
    post_all(&format!("{base}/grpc/votes"), &votes[..60], 8).await;
    post_all(&format!("{base}/wasm/votes"), &votes[60..], 8).await;
    let want = expected(&votes);
    assert_eq!(env.wait_for_total(120).await, want);
    assert_eq!(env.wait_for_logs(120).await.len(), 120);
    let ready: Value = reqwest::get(format!("{base}/readyz")).await.expect("readyz").json().await.expect("json");
    assert_eq!((ready["checks"]["redis"].as_str(), ready["checks"]["mongodb"].as_str()), (Some("ok"), Some("ok")));
    assert_eq!(results(&base).await["total"], 120);
    stop(&mut up).await;
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// `bandvote up` with a vote in flight: the headers of a POST sent, its body not yet, so that the
/// drain after a signal has a request to wait for.
async fn up_with_a_request_in_flight(
    name: &str,
    extra: &[&str],
) -> (tokio::process::Child, tokio::net::TcpStream, std::sync::Arc<std::sync::Mutex<String>>) {
    use tokio::io::AsyncWriteExt;

    let mut command = embedded_up(0, &data_dir(name));
    command.args(extra);
    let (child, base, stderr) = crate::support::spawn_listening_with_stderr(&mut command).await;
    let port = port_of(&base);
    wait_ready(&base).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
    stream
        .write_all(
            b"POST /grpc/votes HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n{",
        )
        .await
        .expect("headers sent");
    let client_port = stream.local_addr().expect("local address").port();
    read_by_the_server(port, client_port).await;
    (child, stream, stderr)
}

/// Waits until the server has accepted the connection from `client_port` and read what was sent
/// on it: the kernel's receive queue of the server's end, in `/proc/net/tcp{,6}`, is then empty.
/// Before that, a signal could stop the listener with the request never seen.
async fn read_by_the_server(server_port: u16, client_port: u16) {
    let wanted = (format!("{server_port:04X}"), format!("{client_port:04X}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let table = ["/proc/net/tcp", "/proc/net/tcp6"]
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .join("\n");
        let read = table.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |address: &str| address.rsplit(':').next().unwrap_or_default().to_owned();
            let queues = fields.get(4).copied().unwrap_or_default();
            fields.len() > 4
                && port(fields[1]) == wanted.0
                && port(fields[2]) == wanted.1
                && queues.rsplit(':').next() == Some("00000000")
        });
        if read {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the server never read the request's head");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args([&format!("-{name}"), &pid]).status().expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test]
async fn a_second_signal_ends_a_draining_process_at_once() {
    let (mut child, _stream, _) = up_with_a_request_in_flight("second-signal", &[]).await;
    signal(&child, "INT");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().expect("status").is_none(), "the first signal drains: the request in flight holds it");
    signal(&child, "INT");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the second signal ends the process within seconds")
        .expect("exit status");
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[tokio::test]
async fn a_drain_longer_than_the_grace_period_is_cut_short_with_an_error() {
    let (mut child, _stream, kept) = up_with_a_request_in_flight("grace", &["--shutdown-grace-secs", "1"]).await;
    signal(&child, "TERM");
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .expect("the drain is bounded by the grace period")
        .expect("exit status");
    // The drain task reads to the end of the pipe, which the exit closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stderr = kept.lock().expect("stderr").clone();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("grace period"), "{stderr}");
    assert!(started.elapsed() >= Duration::from_millis(900), "the drain had its second");
}
