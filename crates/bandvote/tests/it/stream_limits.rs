//! The live stream and the names cap under a hostile audience, against `bandvote up` on its embedded
//! storage: a client that never reads is dropped and memory stays bounded, stream clients are
//! capped, every client gets the same shared results frames, and the number of distinct bands and
//! albums is capped on both vote paths, across a restart.
//!
//! The caps are set through the environment (`BANDVOTE_MAX_STREAM_CLIENTS`, `BANDVOTE_MAX_NAMES`),
//! so that `BANDVOTE_TEST_BINARY=/path/to/an/older/bandvote` runs these tests against another build
//! (an older one starts, ignores them, and fails the tests).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
};

use crate::support::{PATIENCE, spawn_listening, wait_for, wait_ready};

/// `bandvote up` on embedded storage in `dir` with `env` (a port the kernel picks); the process and
/// its base URL.
async fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let binary = std::env::var_os("BANDVOTE_TEST_BINARY")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bandvote")), PathBuf::from);
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    for name in ["BANDVOTE_KAFKA_BROKERS", "BANDVOTE_REDIS_URL", "BANDVOTE_MONGO_URL", "BANDVOTE_DATA_DIR"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let (up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    (up, base)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn vote(band: &str, album: &str) -> String {
    serde_json::json!({"name": band, "album": album, "year": "1997", "rank": "9.5"}).to_string()
}

/// Posts a vote to `base` + `path`; the status and the JSON answer.
async fn post(client: &reqwest::Client, base: &str, path: &str, body: String) -> (u16, Value) {
    let answer = client
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the vote is answered");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// A long band name, distinct for each `i`.
fn band(i: usize) -> String {
    format!("{i:05} {}", "b".repeat(190))
}

async fn total(client: &reqwest::Client, base: &str) -> u64 {
    let results: Value =
        client.get(format!("{base}/api/results")).send().await.expect("results").json().await.expect("json");
    results["total"].as_u64().expect("a total")
}

/// Opens `/api/stream`; the answer's status and headers, and the response to read on.
async fn open_stream(client: &reqwest::Client, base: &str) -> reqwest::Response {
    let open = client.get(format!("{base}/api/stream")).send();
    tokio::time::timeout(Duration::from_secs(10), open).await.expect("the stream answers in time").expect("answered")
}

/// Reads the stream until a `results` frame with a total of at least `min`; the whole frame.
async fn results_frame(stream: &mut reqwest::Response, min: u64) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if frame.contains("event: results") {
                let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
                let results: Value = serde_json::from_str(data).expect("results JSON");
                if results["total"].as_u64().is_some_and(|t| t >= min) {
                    return frame;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk()).await.expect("a results frame in time");
        let chunk = chunk.expect("the stream goes on").expect("the stream is still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_memory_stays_bounded() {
    let dir = tempfile_dir("never-reads");
    let (up, base) = start(&dir, &[("BANDVOTE_MAX_STREAM_CLIENTS", "1")]).await;
    let pid = up.id().expect("a running process");
    let client = reqwest::Client::new();
    // Long names make every results frame large (~200 KB): what a stuck client would pile up.
    for i in 0..900 {
        let (status, answer) = post(&client, &base, "/grpc/votes", vote(&band(i), "A")).await;
        assert_eq!(status, 202, "{answer}");
    }
    wait_for("the votes to be counted", PATIENCE, || async { (total(&client, &base).await >= 900).then_some(()) })
        .await;
    let baseline = rss_kib(pid);

    // A client with a tiny receive window that never reads what it is sent.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr = base.trim_start_matches("http://").parse().expect("an address");
    let mut never = socket.connect(addr).await.expect("connect");
    never.write_all(b"GET /api/stream HTTP/1.1\r\nhost: localhost\r\n\r\n").await.expect("request");
    // Its status line only, so that it is known to hold the slot before anyone else asks for one
    // (on a busy machine another request could otherwise be served first and take it).
    let mut status = [0u8; 12];
    tokio::time::timeout(PATIENCE, never.read_exact(&mut status)).await.expect("an answer").expect("a status line");
    assert_eq!(&status, b"HTTP/1.1 200", "the client that will never read is served");

    // It holds the only slot while it is served...
    let refused = wait_for("the stuck client to take the only slot", PATIENCE, || async {
        let answer = open_stream(&client, &base).await;
        (answer.status() == 503).then_some(answer)
    })
    .await;
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());

    // ...until, with the results changing all the time, it is found too slow and dropped.
    let voting = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let _ = post(&client, &base, "/wasm/votes", vote(&band(i % 900), "A")).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut peak = baseline;
    let started = Instant::now();
    let freed = loop {
        peak = peak.max(rss_kib(pid));
        let answer = open_stream(&client, &base).await;
        if answer.status() == 200 {
            break true;
        }
        drop(answer);
        if started.elapsed() > Duration::from_secs(90) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    voting.abort();
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    assert!(freed, "the client that never reads still holds its slot after 90 s (RSS grew by {grown_mib} MiB)");
    assert!(grown_mib < 150, "RSS grew by {grown_mib} MiB over {} MiB while a client did not read", baseline / 1024);

    // Reading at last, it gets what was already on its way, then the connection ends.
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match never.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the dropped client's connection is still open");
    drop(up);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_client_cap_refuses_the_next_client_with_503_and_a_leaving_client_frees_its_slot() {
    let dir = tempfile_dir("cap");
    let (up, base) = start(&dir, &[("BANDVOTE_MAX_STREAM_CLIENTS", "2")]).await;
    let client = reqwest::Client::new();
    let first = open_stream(&client, &base).await;
    let second = open_stream(&client, &base).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open_stream(&client, &base).await;
    assert_eq!(third.status().as_u16(), 503, "a third client over a cap of 2");
    let retry = third.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)), "Retry-After in seconds");
    let error: Value = third.json().await.expect("a JSON error");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("stream")), "{error}");
    drop(first);
    let again = wait_for("a slot to free after a client left", PATIENCE, || async {
        let answer = open_stream(&client, &base).await;
        (answer.status() == 200).then_some(answer)
    })
    .await;
    assert_eq!(open_stream(&client, &base).await.status().as_u16(), 503, "full again");
    drop((second, again, up));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn one_address_holds_its_share_of_the_stream_and_no_more() {
    let dir = tempfile_dir("per-address");
    let caps = [("BANDVOTE_MAX_STREAM_CLIENTS", "10"), ("BANDVOTE_MAX_STREAM_CLIENTS_PER_ADDRESS", "2")];
    let (up, base) = start(&dir, &caps).await;
    let from = |ip: [u8; 4]| {
        let local = std::net::IpAddr::from(ip);
        reqwest::Client::builder().local_address(local).build().expect("a client")
    };
    let (crowd, other) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let mut open = Vec::new();
    for _ in 0..2 {
        let answer = open_stream(&crowd, &base).await;
        assert_eq!(answer.status().as_u16(), 200);
        open.push(answer);
    }
    let refused = open_stream(&crowd, &base).await;
    assert_eq!(refused.status().as_u16(), 503, "a third client from one address over its share of 2");
    assert!(refused.headers().contains_key("retry-after"));
    let error: Value = refused.json().await.expect("a JSON error");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("address")), "{error}");
    assert_eq!(open_stream(&other, &base).await.status().as_u16(), 200, "another address still gets in");
    drop((open, up));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn several_clients_get_the_same_results_frames_and_a_reconnect_resumes_after_its_last_id() {
    let dir = tempfile_dir("same-frames");
    let (up, base) = start(&dir, &[]).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = open_stream(&client, &base).await;
        assert_eq!(stream.status().as_u16(), 200);
        streams.push(stream);
    }
    assert_eq!(post(&client, &base, "/grpc/votes", vote("Alux Nahual", "El Viaje")).await.0, 202);
    let mut frames = Vec::new();
    for stream in &mut streams {
        frames.push(results_frame(stream, 1).await);
    }
    let id = frames[0].lines().find_map(|l| l.strip_prefix("id: ")).map(str::to_owned);
    let id = id.unwrap_or_else(|| panic!("a results frame without an id: {:?}", frames[0]));
    for frame in &frames[1..] {
        assert_eq!(frame, &frames[0], "each client is sent the same frame, id included");
    }

    // A client reconnecting with the id it saw last gets the vote logged after it, once published.
    assert_eq!(post(&client, &base, "/wasm/votes", vote("Bohemia Suburbana", "Mis palabras")).await.0, 202);
    let published = read_until(&mut streams[0], "Bohemia Suburbana").await;
    assert!(published.contains("Bohemia Suburbana"), "the vote is not in the stream: {published}");
    let mut again = client.get(format!("{base}/api/stream")).header("last-event-id", &id).send().await.expect("stream");
    let replayed = read_until(&mut again, "Bohemia Suburbana").await;
    assert!(replayed.contains("event: log") && replayed.contains("Bohemia Suburbana"), "not replayed: {replayed}");
    drop((streams, again, up));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_names_cap_refuses_a_new_band_on_both_paths_and_holds_after_a_restart() {
    let dir = tempfile_dir("names");
    let caps = [("BANDVOTE_MAX_NAMES", "3")];
    let (up, base) = start(&dir, &caps).await;
    let client = reqwest::Client::new();
    for (i, path) in ["/grpc/votes", "/wasm/votes", "/grpc/votes"].into_iter().enumerate() {
        let (status, answer) = post(&client, &base, path, vote(&band(i), "A")).await;
        assert_eq!(status, 202, "band {i} of 3 on {path}: {answer}");
    }
    let refused_everywhere = |base: String, client: reqwest::Client| async move {
        for path in ["/grpc/votes", "/wasm/votes"] {
            let (status, answer) = post(&client, &base, path, vote(&band(3), "A")).await;
            assert_eq!(status, 400, "a fourth band on {path}: {answer}");
            assert_eq!(answer["field"], "name", "{answer}");
            assert!(answer["error"].as_str().is_some_and(|e| e.contains("3 distinct bands")), "{answer}");
            let (status, answer) = post(&client, &base, path, vote(&band(0), "B")).await;
            assert_eq!((status, &answer["field"]), (400, &Value::from("album")), "a fourth album on {path}: {answer}");
            let (status, answer) = post(&client, &base, path, vote(&band(1), "A")).await;
            assert_eq!(status, 202, "a known band on {path}: {answer}");
        }
    };
    refused_everywhere(base.clone(), client.clone()).await;
    wait_for("5 votes to be counted", PATIENCE, || async { (total(&client, &base).await >= 5).then_some(()) }).await;
    let mut up = up;
    up.kill().await.expect("up stops");

    let (up, base) = start(&dir, &caps).await;
    refused_everywhere(base.clone(), client.clone()).await;
    wait_for("7 votes to be counted", PATIENCE, || async { (total(&client, &base).await >= 7).then_some(()) }).await;
    let results: Value =
        client.get(format!("{base}/api/results")).send().await.expect("results").json().await.expect("json");
    assert_eq!(results["total"], 7, "nothing refused was counted: {results}");
    assert_eq!(results["bands"].as_object().map(|b| b.len()), Some(3), "{results}");
    drop(up);
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads `stream` until `needle` appears (or the stream ends, or [`PATIENCE`]); what was read.
async fn read_until(stream: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    let _ = tokio::time::timeout(PATIENCE, async {
        while !text.contains(needle) {
            match stream.chunk().await {
                Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return,
            }
        }
    })
    .await;
    text
}

/// A fresh directory for one test's embedded storage.
fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bandvote-stream-{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
