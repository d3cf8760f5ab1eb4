//! The operator's routes against a hostile client, on `bandvote up`'s embedded storage: a short
//! admin token is refused at start-up, the token can come from a file that `ps` does not show,
//! wrong tokens are counted, logged once a minute per address and answered `429` after ten, and the
//! token is checked before a body is read (which is small and must arrive in time).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{PATIENCE, embedded_up, metric, raw_status, wait_for, wait_ready};

const TOKEN: &str = "admin-test-token-9f2c";

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bandvote-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `bandvote up` with `args`, on a port the kernel picks: the process, its base URL and everything
/// it writes on stderr (kept as it comes).
async fn start(dir: &std::path::Path, args: &[&str]) -> (tokio::process::Child, String, Arc<Mutex<String>>) {
    let mut command = embedded_up(0, &dir.join("data"));
    command.args(args).env_remove("BANDVOTE_ADMIN_TOKEN").env_remove("BANDVOTE_ADMIN_TOKEN_FILE");
    let mut child = command.spawn().expect("bandvote starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let base = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            if let Some(addr) = line.trim().strip_prefix("web app: http://") {
                return format!("http://{}", addr.trim_end_matches('/'));
            }
        }
        panic!("bandvote exited before listening")
    })
    .await
    .expect("listening");
    let kept = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = kept.lock().expect("log");
            log.push_str(&line);
            log.push('\n');
        }
    });
    wait_ready(&base).await;
    (child, base, log)
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the base URL")
}

#[tokio::test]
async fn admin_tokens_shorter_than_sixteen_characters_are_refused_at_start_up() {
    let dir = scratch("short");
    let file = dir.join("token");
    std::fs::write(&file, "fifteen-chars-x\n").expect("written");
    let cases: [(&str, Vec<&str>); 3] = [
        ("up --admin-token a", vec!["--admin-token", "a"]),
        ("up with 15 characters", vec!["--admin-token", "fifteen-chars-x"]),
        ("up with 15 characters in a file", vec!["--admin-token-file", file.to_str().expect("utf-8")]),
    ];
    for (case, args) in cases {
        let mut command = embedded_up(0, &dir.join("data"));
        command.args(&args).env_remove("BANDVOTE_ADMIN_TOKEN").env_remove("BANDVOTE_ADMIN_TOKEN_FILE");
        let output = tokio::time::timeout(PATIENCE, command.output()).await.expect("exits").expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}: started anyway: {stderr}");
        assert!(stderr.contains("at least 16"), "{case}: {stderr}");
    }
    // The API on its own refuses it too, before it connects to anything.
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
            .args(["api", "--listen", "127.0.0.1:0", "--admin-token", "tok"])
            .env_remove("BANDVOTE_ADMIN_TOKEN")
            .env_remove("BANDVOTE_ADMIN_TOKEN_FILE")
            .output(),
    )
    .await
    .expect("exits")
    .expect("runs");
    assert!(!output.status.success(), "api started with a 3-character token");
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 16"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn wrong_admin_tokens_are_counted_logged_once_and_answered_429_after_ten() {
    let dir = scratch("guesses");
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("written");
    let (up, base, log) = start(&dir, &["--admin-token-file", file.to_str().expect("utf-8")]).await;
    let pid = up.id().expect("running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN), "the token shows in ps");

    let client = reqwest::Client::new();
    let url = format!("{base}/api/admin/pipeline");
    let status = |token: &'static str| {
        let request = client.get(&url).bearer_auth(token);
        async move { request.send().await.expect("answer") }
    };
    assert_eq!(status(TOKEN).await.status(), 200, "the token from the file (newline trimmed)");
    assert_eq!(client.get(&url).send().await.expect("answer").status(), 401, "no token");
    for guess in 0..10 {
        assert_eq!(status("admin-test-token-0000").await.status(), 401, "guess {guess}");
    }
    let refused = status("admin-test-token-0001").await;
    assert_eq!(refused.status(), 429, "the eleventh wrong token within a minute");
    let retry: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(status(TOKEN).await.status(), 429, "even the right token, while the address is limited");

    let metrics = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let name = "bandvote_admin_auth_failures_total";
    // Ten wrong tokens were looked at; the eleventh request and the right token were not.
    assert_eq!(metric(&metrics, name, r#"reason="wrong""#), 10.0, "{metrics}");
    assert_eq!(metric(&metrics, name, r#"reason="limited""#), 2.0);
    // Logged at WARN, once for the address in this minute, not once per guess.
    let warned = wait_for("the warning about wrong tokens", PATIENCE, || async {
        let log = log.lock().expect("log").clone();
        log.contains("wrong admin token").then_some(log)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = log.lock().expect("log").matches("wrong admin token").count();
    assert_eq!(logged, 1, "{warned}");
    assert!(!warned.contains(TOKEN), "the token was logged");
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request head announcing a 4 KiB body, and the first bytes of that body.
fn slow_head(method: &str, path: &str, authorization: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\
         {authorization}\r\n{{\"id\": \"sl"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_routes_check_the_token_before_the_body_and_bound_the_body() {
    let dir = scratch("body");
    let (up, base, _) = start(&dir, &["--admin-token", TOKEN]).await;
    let port = port_of(&base);

    // Without the token, a body that never finishes is not waited for.
    let bearer = format!("authorization: Bearer {TOKEN}\r\n");
    for (method, path) in
        [("POST", "/api/admin/rounds"), ("PUT", "/api/admin/rounds/slow"), ("POST", "/api/admin/recount")]
    {
        for authorization in ["", "authorization: Bearer not-the-admin-token\r\n"] {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            let started = Instant::now();
            let status = raw_status(&mut stream, &slow_head(method, path, authorization), Duration::from_secs(1)).await;
            assert_eq!(status, Some(401), "{method} {path} {authorization:?}");
            assert!(started.elapsed() < Duration::from_secs(1), "{method} {path}: {:?}", started.elapsed());
        }
    }

    // With the token: a body past 256 KiB is 413, a body that stops coming is 408 at the body
    // timeout, and a round still fits.
    let client = reqwest::Client::new();
    let huge = format!(r#"{{"id": "huge", "title": "{}"}}"#, "x".repeat(300 << 10));
    let answer = client
        .post(format!("{base}/api/admin/rounds"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await;
    match answer {
        Ok(answer) => assert_eq!(answer.status(), 413),
        // The server may answer and close before the client finished sending.
        Err(error) => {
            let status = crate::hostile::upload_with(port, "/api/admin/rounds", 100 << 10, &bearer).await;
            assert_eq!(status, Ok(413), "{error}");
        }
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let started = Instant::now();
    let status =
        raw_status(&mut stream, &slow_head("POST", "/api/admin/rounds", &bearer), Duration::from_secs(15)).await;
    assert_eq!(status, Some(408), "a slow body with the token");
    assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());
    stream.shutdown().await.ok();
    let created = client
        .post(format!("{base}/api/admin/rounds"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"id": "fits", "title": "A round"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(created.status(), 201);
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}
