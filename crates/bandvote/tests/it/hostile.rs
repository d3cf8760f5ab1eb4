//! Hostile requests against `bandvote up` (on its embedded storage, so that no server is needed):
//! each gets the right 4xx quickly, the server's memory stays bounded, nothing is counted, and
//! a normal vote still goes through afterwards.

use std::time::{Duration, Instant};

use crate::support::{PATIENCE, embedded_up, spawn_listening, wait_for};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const PATHS: [&str; 2] = ["/grpc/votes", "/wasm/votes"];

/// Sends raw bytes and returns the status code of the answer (None if the server closed the
/// connection without one), within `limit`.
async fn raw(port: u16, request: &[u8], limit: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    crate::support::raw_status(&mut stream, request, limit).await
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

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`: now; `VmHWM`: the peak).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// `bandvote up` on embedded storage in `dir`, on a port the kernel picks; the process and its port.
async fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (tokio::process::Child, u16) {
    let mut command = embedded_up(0, dir);
    command.envs(env.iter().copied());
    let (up, base) = spawn_listening(&mut command).await;
    crate::support::wait_ready(&base).await;
    let port = base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the base URL");
    (up, port)
}

/// Uploads a body of `size` bytes (announced with Content-Length, or chunked) while reading the
/// answer, as a client that keeps sending until it is answered; the answer's status, or what went
/// wrong (a connection closed without an answer is an error, not a `413`).
async fn upload(port: u16, path: &str, size: usize, chunked: bool) -> Result<u16, String> {
    upload_framed(port, path, size, chunked, "").await
}

/// [`upload`] with a Content-Length and `extra_headers` (each ending in CRLF).
pub(crate) async fn upload_with(port: u16, path: &str, size: usize, extra_headers: &str) -> Result<u16, String> {
    upload_framed(port, path, size, false, extra_headers).await
}

async fn upload_framed(port: u16, path: &str, size: usize, chunked: bool, extra: &str) -> Result<u16, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let framing = if chunked { "transfer-encoding: chunked".to_owned() } else { format!("content-length: {size}") };
    let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}{framing}\r\n\r\n");
    let send = async move {
        writer.write_all(head.as_bytes()).await?;
        let piece = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let n = piece.len().min(size - sent);
            if chunked {
                writer.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                writer.write_all(&piece[..n]).await?;
                writer.write_all(b"\r\n").await?;
            } else {
                writer.write_all(&piece[..n]).await?;
            }
            sent += n;
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        // Keep the write half open until the answer is read.
        std::future::pending::<std::io::Result<()>>().await
    };
    let answer = async move {
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) => break,
                Err(e) if answer.is_empty() => return Err(format!("read: {e}")),
                Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3)?.parse().ok())
            .ok_or_else(|| format!("closed without an answer: {text:?}"))
    };
    tokio::pin!(answer);
    let outcome = tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            status = &mut answer => status,
            // The server stopped reading and closed: its answer, if any, is in the read half.
            _ = send => answer.await,
        }
    })
    .await;
    outcome.unwrap_or_else(|_| Err(format!("no answer within {PATIENCE:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_quick_4xx_and_memory_stays_bounded() {
    let dir = std::env::temp_dir().join(format!("bandvote-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (up, port) = start(&dir, &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let pid = up.id().expect("pid");
    let quick = Duration::from_secs(5);

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

    // 200 concurrent 10 MB uploads: memory stays bounded (each is cut at 16 KiB). The peak is the
    // kernel's high-water mark, reset first (clear_refs 5), so that it covers exactly the uploads;
    // if the reset is not allowed the mark covers the whole life of the process, which only makes
    // the bound stricter.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let rss_before = status_kib(pid, "VmRSS");
    let uploads: Vec<_> =
        (0..200).map(|i| tokio::spawn(upload(port, PATHS[i % 2], 10 * 1024 * 1024, i % 4 >= 2))).collect();
    let mut answers = Vec::new();
    for upload in uploads {
        answers.push(upload.await.expect("upload task"));
    }
    let peak = status_kib(pid, "VmHWM");
    let wrong: Vec<_> = answers.iter().filter(|a| **a != Ok(413)).collect();
    assert!(wrong.is_empty(), "{} of 200 uploads not answered 413: {wrong:?}", wrong.len());
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 256, "memory grew by {growth_mib} MiB at its peak under 200 × 10 MB uploads");

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
    let (status, _) =
        crate::support::post_vote(&client, &format!("{base}/grpc/votes"), crate::support::mix(1)[0].body(), None).await;
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
    let (_up, port) = start(&dir, &[("BANDVOTE_MAX_CONNECTIONS", "4")]).await;
    // wait_ready's client may keep its connection alive for a moment: let it go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    // Held by live streams (a GET of anything else is answered `Connection: close`).
    for _ in 0..4 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(b"GET /api/stream?logs=0 HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
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

/// The header count's limit at its edge, on every kind of route of the listener: a request with
/// exactly 64 headers is served, one with 65 is `431`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_headers_are_served_and_sixty_five_are_431() {
    let dir = std::env::temp_dir().join(format!("bandvote-headers-{}", uuid::Uuid::now_v7().simple()));
    let (_up, port) = start(&dir, &[]).await;
    let quick = Duration::from_secs(5);
    // Each request below carries 4 headers of its own (host, content-type, content-length,
    // connection) before the padding.
    let padding = |n: usize| -> String { (0..n).map(|i| format!("x-pad-{i}: v\r\n")).collect() };
    for path in PATHS {
        // An empty object: a 400 naming a field once the headers are accepted, never counted.
        assert_eq!(raw(port, &post(path, b"{}", &padding(60)), quick).await, Some(400), "{path}: 64 headers");
        assert_eq!(raw(port, &post(path, b"{}", &padding(61)), quick).await, Some(431), "{path}: 65 headers");
    }
    let get = |n: usize| {
        format!("GET /api/results HTTP/1.1\r\nhost: x\r\n{}content-length: 0\r\nconnection: close\r\n\r\n", padding(n))
            .into_bytes()
    };
    assert_eq!(raw(port, &get(61), quick).await, Some(200), "GET with 64 headers");
    assert_eq!(raw(port, &get(62), quick).await, Some(431), "GET with 65 headers");
    let _ = std::fs::remove_dir_all(dir);
}
