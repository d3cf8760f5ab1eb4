//! Hostile requests against `bandvote up` (on its embedded storage, so that no server is needed):
//! each gets the right 4xx quickly, the server's memory stays bounded, nothing is counted, and
//! a normal vote still goes through afterwards.

mod support;

use std::time::{Duration, Instant};

use support::{PATIENCE, embedded_up, free_port, wait_for};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const PATHS: [&str; 2] = ["/grpc/votes", "/wasm/votes"];

/// Sends raw bytes and returns the status code of the answer (None if the server closed the
/// connection without one), within `limit`.
async fn raw(port: u16, request: &[u8], limit: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer within {limit:?} to {:?}",
        String::from_utf8_lossy(&request[..request.len().min(80)])
    );
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok())
}

fn post(path: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_quick_4xx_and_memory_stays_bounded() {
    let dir = std::env::temp_dir().join(format!("bandvote-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let up = embedded_up(port, &dir).stderr(std::process::Stdio::null()).spawn().expect("up starts");
    let pid = up.id().expect("pid");
    support::wait_ready(&base).await;
    let quick = Duration::from_secs(5);
    let rss_before = rss_kib(pid);

    for path in PATHS {
        // Deeply nested JSON (within the size limit): a parse error, not a stack overflow.
        let nested = format!("{}{}", "[".repeat(8000), "]".repeat(8000));
        assert_eq!(raw(port, &post(path, nested.as_bytes(), ""), quick).await, Some(400), "{path} nested");
        let deep_object = format!("{{\"name\":{}1{}}}", "{\"a\":".repeat(2000), "}".repeat(2000));
        assert_eq!(raw(port, &post(path, deep_object.as_bytes(), ""), quick).await, Some(400), "{path} deep object");
        // Invalid UTF-8 and raw NUL bytes.
        assert_eq!(raw(port, &post(path, b"{\"name\":\"\xff\xfe\",\"album\":\"x\"}", ""), quick).await, Some(400));
        assert_eq!(raw(port, &post(path, b"{\"name\":\"a\0b\",\"album\":\"x\"}", ""), quick).await, Some(400));
        assert_eq!(raw(port, &post(path, b"\0\0\0\0", ""), quick).await, Some(400));
        // A 10 MB body announced by Content-Length: refused without reading it all.
        let started = Instant::now();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 10485760\r\n\r\n"
        );
        let mut request = head.into_bytes();
        request.extend(std::iter::repeat_n(b' ', 64 * 1024));
        assert_eq!(raw(port, &request, quick).await, Some(413), "{path} 10 MB");
        assert!(started.elapsed() < quick);
        // 10 MB chunked (no length announced): cut at the limit.
        let mut chunked = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..40 {
            chunked.extend_from_slice(b"1000\r\n");
            chunked.extend(std::iter::repeat_n(b'x', 0x1000));
            chunked.extend_from_slice(b"\r\n");
        }
        assert_eq!(raw(port, &chunked, quick).await, Some(413), "{path} chunked");
        // Thousands of headers.
        let headers: String = (0..3000).map(|i| format!("x-h{i}: v\r\n")).collect();
        assert_eq!(raw(port, &post(path, b"{}", &headers), quick).await, Some(431), "{path} headers");
        // An unknown method on a vote path, and unknown paths.
        assert_eq!(
            raw(port, format!("BREW {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(), quick).await,
            Some(405)
        );
    }
    assert_eq!(
        raw(port, b"GET /nope/../../etc/passwd HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", quick).await,
        Some(404)
    );
    assert_eq!(
        raw(port, b"DELETE /api/results HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", quick).await,
        Some(405)
    );

    // 200 concurrent 10 MB uploads: memory stays bounded (each is cut at 16 KiB).
    let uploads: Vec<_> = (0..200)
        .map(|i| {
            let path = PATHS[i % 2];
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let body = vec![b' '; 10 * 1024 * 1024];
                let answer = client
                    .post(format!("http://127.0.0.1:{port}{path}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                answer.map(|a| a.status().as_u16()).unwrap_or(413)
            })
        })
        .collect();
    for upload in uploads {
        assert_eq!(upload.await.expect("upload task"), 413);
    }
    let growth_mib = rss_kib(pid).saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 256, "memory grew by {growth_mib} MiB under 200 × 10 MB uploads");

    // Slow clients: headers that never end are cut off, and a body that drips is answered 408.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stalled.write_all(b"POST /grpc/votes HTTP/1.1\r\nhost: x\r\n").await.expect("write");
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), stalled.read(&mut buffer)).await;
    assert!(closed.is_ok(), "a client stalled in its headers is disconnected");
    assert!(started.elapsed() >= Duration::from_secs(5), "after the header timeout, not at once");
    for path in PATHS {
        let mut drip = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        drip.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            let mut answer = Vec::new();
            loop {
                let _ = drip.write_all(b" ").await;
                tokio::select! {
                    read = drip.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => break answer,
                        Ok(n) => { answer.extend_from_slice(&buffer[..n]); if answer.windows(4).any(|w| w == b"\r\n\r\n") { break answer } }
                    },
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
        .await
        .expect("a dripping body is answered");
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
            "{path}: {}",
            String::from_utf8_lossy(&answer)
        );
    }

    // Nothing was counted; a normal vote still goes through.
    let client = reqwest::Client::new();
    let (status, _) = support::post_vote(&client, &format!("{base}/grpc/votes"), support::mix(1)[0].body(), None).await;
    assert_eq!(status, 202);
    let results: serde_json::Value = wait_for("the vote counted", PATIENCE, || async {
        let r: serde_json::Value = reqwest::get(format!("{base}/api/results")).await.ok()?.json().await.ok()?;
        (r["total"].as_u64()? >= 1).then_some(r)
    })
    .await;
    assert_eq!(results["total"], 1);
    drop(up);
    let _ = std::fs::remove_dir_all(dir);
}

/// Past `BANDVOTE_MAX_CONNECTIONS` open connections, the next one is closed at once; once one
/// closes, a new client gets in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let dir = std::env::temp_dir().join(format!("bandvote-connlimit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let _up = embedded_up(port, &dir)
        .env("BANDVOTE_MAX_CONNECTIONS", "4")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("up starts");
    support::wait_ready(&format!("http://127.0.0.1:{port}")).await;
    // wait_ready's client may keep its connection alive for a moment: let it go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut buffer = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("answer")
            .expect("read");
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.expect("the kernel accepts the connection");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buffer = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buffer)).await.expect("closed quickly");
    assert!(matches!(read, Ok(0) | Err(_)), "the fifth connection is closed without an answer");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        raw(port, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", Duration::from_secs(5)).await,
        Some(200)
    );
    let _ = std::fs::remove_dir_all(dir);
}
