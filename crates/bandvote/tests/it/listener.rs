//! The listener against clients that hold connections instead of using them, probed over raw
//! sockets against `bandvote up` (embedded storage, no server needed): silent and half-sent
//! connections, HTTP/2 connections that never or no longer ask anything, many connections from one
//! address, oversize request heads, `X-Forwarded-For` from trusted and untrusted peers, and the
//! live stream's own HTTP/1.1 writer beside hyper.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::support::{embedded_up, spawn_listening, wait_ready};

/// The header timeout the tests give the listener, and how much later than it a close may come.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
const SLACK: Duration = Duration::from_secs(5);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `bandvote up` on embedded storage with `env`, on a port the kernel picks.
async fn start(env: &[(&str, &str)]) -> (tokio::process::Child, u16, tempdir::Dir) {
    let dir = tempdir::Dir::new("listener");
    let mut command = embedded_up(0, &dir.0);
    command.envs(env.iter().copied());
    let (up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    let port = base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the base URL");
    // wait_ready's client may keep its connection open a moment: let it go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (up, port, dir)
}

mod tempdir {
    /// A data directory removed when dropped.
    pub(super) struct Dir(pub(super) std::path::PathBuf);

    impl Dir {
        pub(super) fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("bandvote-{name}-{}", uuid::Uuid::now_v7().simple()));
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A connection to the listener from the loopback address `from` (all of 127/8 is loopback on Linux).
async fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).expect("bind the client address");
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("connect")
}

/// Reads (and discards) until the server closes the connection; how long that took, or `None`
/// if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// Sends `request` from `from` and returns the status of the answer, or `None` if the connection
/// was closed without one.
async fn status_from(from: Ipv4Addr, port: u16, request: &[u8]) -> Option<u16> {
    let mut stream = connect_from(from, port).await;
    crate::support::raw_status(&mut stream, request, SLACK).await
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_within_the_header_timeout() {
    let (_up, port, _dir) = start(&[("BANDVOTE_HEADER_TIMEOUT_MS", "1000")]).await;
    let openings: [(&str, &[u8]); 6] = [
        ("silent", b""),
        ("half an HTTP/1 head", b"GET /healthz HTTP/1.1\r\nhost: x\r\n"),
        ("half a live stream's head", b"GET /api/stream HTTP/1.1\r\nhost: x\r\n"),
        ("half the HTTP/2 preface", &H2_PREFACE[..16]),
        ("the HTTP/2 preface only", H2_PREFACE),
        ("the HTTP/2 preface and settings, no request", &[H2_PREFACE, &h2::frame(h2::SETTINGS, 0, 0, &[])].concat()),
    ];
    let mut probes = Vec::new();
    for (what, opening) in openings {
        let mut stream = connect_from(LOCAL, port).await;
        stream.write_all(opening).await.expect("write");
        probes.push(tokio::spawn(async move { (what, closed_within(&mut stream, HEADER_TIMEOUT + SLACK).await) }));
    }
    for probe in probes {
        let (what, closed) = probe.await.expect("probe");
        let after = closed.unwrap_or_else(|| panic!("{what}: still open {:?} after the header timeout", SLACK));
        assert!(after >= HEADER_TIMEOUT / 2, "{what}: closed after {after:?}, before its header timeout");
    }
    // A prompt client is served as before.
    assert_eq!(
        status_from(LOCAL, port, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await,
        Some(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_even_if_it_answers_pings_but_an_open_stream_is_not() {
    let idle = Duration::from_secs(2);
    let (_up, port, _dir) =
        start(&[("BANDVOTE_HEADER_TIMEOUT_MS", "1000"), ("BANDVOTE_IDLE_TIMEOUT_MS", "2000")]).await;

    // A live stream on its own connection, opened first: it must outlive the idle one.
    let mut streaming = h2::Client::open(connect_from(LOCAL, port).await).await;
    streaming.get(1, "/api/stream", &[]).await;
    let (status, _) = streaming.answer(1).await;
    assert_eq!(status, h2::Status::Ok, "the live stream is served over HTTP/2");

    let mut idle_client = h2::Client::open(connect_from(LOCAL, port).await).await;
    idle_client.get(1, "/healthz", &[]).await;
    let (status, _) = idle_client.answer(1).await;
    assert_eq!(status, h2::Status::Ok);
    let answered = Instant::now();
    // Answers every ping and settings frame, asks nothing more.
    let (goaway, closed) = idle_client.until_closed(idle + HEADER_TIMEOUT + SLACK).await;
    let closed = closed.unwrap_or_else(|| panic!("an idle HTTP/2 connection still open {:?} later", idle + SLACK));
    assert!(goaway, "closed with a GOAWAY first");
    assert!(closed.duration_since(answered) >= idle / 2, "closed {:?} after its last answer", closed - answered);

    assert!(streaming.still_open(Duration::from_millis(500)).await, "the connection with an open stream was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_its_connections_does_not_lock_out_another() {
    let (_up, port, _dir) =
        start(&[("BANDVOTE_MAX_CONNECTIONS", "40"), ("BANDVOTE_MAX_CONNECTIONS_PER_CLIENT", "10")]).await;
    // 60 silent connections from one address: the kernel accepts them all, the listener keeps 10.
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(connect_from(LOCAL, port).await);
    }
    let checks: Vec<_> = held
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let closed = closed_within(&mut stream, Duration::from_secs(2)).await.is_some();
                (closed, stream)
            })
        })
        .collect();
    let mut open = Vec::new();
    for check in checks {
        let (closed, stream) = check.await.expect("check");
        if !closed {
            open.push(stream);
        }
    }
    assert!(open.len() <= 10, "{} connections from one address left open, over its cap of 10", open.len());
    assert!(open.len() >= 9, "only {} connections from one address were kept (cap 10)", open.len());

    // Another address is served while they are held; the first one gets no more.
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    assert_eq!(status_from(OTHER, port, healthz).await, Some(200), "another client while one holds its cap");
    if open.len() == 10 {
        assert_eq!(status_from(LOCAL, port, healthz).await, None, "one more from the address at its cap");
    }
    drop(open);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_from(LOCAL, port, healthz).await, Some(200), "once its connections closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_64_kib_is_refused() {
    let (_up, port, _dir) = start(&[]).await;
    let get = |header: usize| {
        format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(header))
            .into_bytes()
    };
    assert_eq!(status_from(LOCAL, port, &get(32 * 1024)).await, Some(200), "a 32 KiB header is served");
    let status = status_from(LOCAL, port, &get(100 * 1024)).await;
    assert!(matches!(status, Some(431) | None), "a 100 KiB header over HTTP/1: {status:?}");
    let status = status_from(LOCAL, port, &get(420 * 1024)).await;
    assert!(matches!(status, Some(431) | None), "a 420 KiB header over HTTP/1: {status:?}");

    let mut client = h2::Client::open(connect_from(LOCAL, port).await).await;
    client.get(1, "/healthz", &[("x-big", &"a".repeat(32 * 1024))]).await;
    assert_eq!(client.answer(1).await.0, h2::Status::Ok, "a 32 KiB header over HTTP/2 is served");
    client.get(3, "/healthz", &[("x-big", &"a".repeat(100 * 1024))]).await;
    let (status, _) = client.answer(3).await;
    assert_ne!(status, h2::Status::Ok, "a 100 KiB header over HTTP/2 is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_names_the_client_only_when_the_peer_is_a_trusted_proxy() {
    let (_up, port, _dir) = start(&[("BANDVOTE_RATE_LIMIT", "1"), ("BANDVOTE_TRUSTED_PROXIES", "127.0.0.2/32")]).await;
    let body = crate::support::mix(1)[0].body();
    let vote = |forwarded: &str| {
        format!(
            "POST /grpc/votes HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-forwarded-for: {forwarded}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    // Through the trusted proxy, each forwarded client has its own bucket of one vote a second.
    assert_eq!(status_from(OTHER, port, &vote("203.0.113.1")).await, Some(202));
    assert_eq!(status_from(OTHER, port, &vote("203.0.113.1")).await, Some(429), "the same client again");
    assert_eq!(status_from(OTHER, port, &vote("198.51.100.7, 203.0.113.2")).await, Some(202), "another client");
    // From an untrusted peer the header is the client's own claim: the peer is the client.
    assert_eq!(status_from(LOCAL, port, &vote("203.0.113.3")).await, Some(202));
    assert_eq!(status_from(LOCAL, port, &vote("203.0.113.4")).await, Some(429), "the same peer, another claim");
}

/// Just enough HTTP/2 to open a connection, ask for a path and follow the answer, written out
/// by hand so that the test controls every frame (a client library would answer for it).
mod h2 {
    use std::time::{Duration, Instant};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    pub(super) const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const CONTINUATION: u8 = 0x9;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;

    /// How a stream was answered.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Status {
        /// `:status 200` (HPACK's static entry 8).
        Ok,
        /// Headers with another status.
        Other,
        /// The stream was reset.
        Reset,
        /// The connection went away (GOAWAY or closed) before an answer.
        Gone,
    }

    pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).expect("frame length");
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// An HPACK integer with an `n`-bit prefix, the first byte's other bits set to `flags`.
    fn integer(out: &mut Vec<u8>, n: u32, flags: u8, value: usize) {
        let max = (1usize << n) - 1;
        if value < max {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    fn string(out: &mut Vec<u8>, text: &str) {
        integer(out, 7, 0, text.len());
        out.extend_from_slice(text.as_bytes());
    }

    /// The header block of `GET path` with `extra` headers, literal, never indexed or Huffman-coded.
    fn request_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        // :method GET, :scheme http (static entries 2 and 6).
        let mut block = vec![0x82, 0x86];
        integer(&mut block, 4, 0, 4); // :path, a literal value
        string(&mut block, path);
        integer(&mut block, 4, 0, 1); // :authority
        string(&mut block, "localhost");
        for (name, value) in extra {
            block.push(0);
            string(&mut block, name);
            string(&mut block, value);
        }
        block
    }

    pub(super) struct Client {
        stream: TcpStream,
        buffer: Vec<u8>,
    }

    impl Client {
        /// Sends the preface and empty settings.
        pub(super) async fn open(mut stream: TcpStream) -> Self {
            let mut opening = super::H2_PREFACE.to_vec();
            opening.extend(frame(SETTINGS, 0, 0, &[]));
            stream.write_all(&opening).await.expect("preface");
            Self { stream, buffer: Vec::new() }
        }

        /// Asks for `path` on stream `id` (odd, increasing), in 16 KiB frames.
        pub(super) async fn get(&mut self, id: u32, path: &str, extra: &[(&str, &str)]) {
            let block = request_block(path, extra);
            let mut chunks = block.chunks(16 * 1024).peekable();
            let mut first = true;
            let mut frames = Vec::new();
            while let Some(chunk) = chunks.next() {
                let last = if chunks.peek().is_none() { END_HEADERS } else { 0 };
                let (kind, flags) = if first { (HEADERS, END_STREAM | last) } else { (CONTINUATION, last) };
                frames.extend(frame(kind, flags, id, chunk));
                first = false;
            }
            // The server may refuse and close before reading it all.
            let _ = self.stream.write_all(&frames).await;
        }

        /// The next frame (type, flags, stream, payload), answering settings and pings on the
        /// way; `None` once the connection is closed.
        async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
            loop {
                if self.buffer.len() >= 9 {
                    let length = u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]]) as usize;
                    if self.buffer.len() >= 9 + length {
                        let (kind, flags) = (self.buffer[3], self.buffer[4]);
                        let stream = u32::from_be_bytes(self.buffer[5..9].try_into().expect("4 bytes")) & 0x7fff_ffff;
                        let payload = self.buffer[9..9 + length].to_vec();
                        self.buffer.drain(..9 + length);
                        match (kind, flags & ACK) {
                            (SETTINGS, 0) => {
                                let _ = self.stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                            }
                            (PING, 0) => {
                                let _ = self.stream.write_all(&frame(PING, ACK, 0, &payload)).await;
                            }
                            _ => {}
                        }
                        return Some((kind, flags, stream, payload));
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                }
            }
        }

        /// How stream `id` was answered, within a few seconds.
        pub(super) async fn answer(&mut self, id: u32) -> (Status, Vec<u8>) {
            let answer = tokio::time::timeout(super::SLACK, async {
                loop {
                    match self.next().await {
                        None => return (Status::Gone, Vec::new()),
                        Some((HEADERS, _, stream, block)) if stream == id => {
                            let status = if block.first() == Some(&0x88) { Status::Ok } else { Status::Other };
                            return (status, block);
                        }
                        Some((RST_STREAM, _, stream, _)) if stream == id => return (Status::Reset, Vec::new()),
                        Some((GOAWAY, ..)) => return (Status::Gone, Vec::new()),
                        Some(_) => {}
                    }
                }
            })
            .await;
            answer.unwrap_or_else(|_| panic!("no answer on stream {id} within {:?}", super::SLACK))
        }

        /// Follows the connection, answering pings, until the server closes it: whether a GOAWAY
        /// came first and when it closed (`None`: still open after `limit`).
        pub(super) async fn until_closed(&mut self, limit: Duration) -> (bool, Option<Instant>) {
            let mut goaway = false;
            let closed = tokio::time::timeout(limit, async {
                while let Some((kind, ..)) = self.next().await {
                    goaway |= kind == GOAWAY;
                }
            })
            .await;
            (goaway, closed.ok().map(|()| Instant::now()))
        }

        /// Whether the connection is still open (and was not told to go away) after `wait`,
        /// reading what arrives meanwhile.
        pub(super) async fn still_open(&mut self, wait: Duration) -> bool {
            let ended = tokio::time::timeout(wait, async {
                loop {
                    match self.next().await {
                        None | Some((GOAWAY, ..)) => return,
                        Some(_) => {}
                    }
                }
            })
            .await;
            ended.is_err()
        }
    }
}

/// Reads from `stream` until `until` is in what was read, or `limit` passes; what was read.
async fn read_until(stream: &mut TcpStream, until: &[u8], limit: Duration) -> Vec<u8> {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        while !answer.windows(until.len()).any(|w| w == until) {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_is_written_close_delimited_and_every_other_request_still_reaches_hyper() {
    let (_up, port, _dir) = start(&[("BANDVOTE_MAX_STREAM_CLIENTS_PER_ADDRESS", "2")]).await;
    let get = b"GET /api/stream HTTP/1.1\r\nhost: x\r\norigin: http://elsewhere.example\r\n\r\n";

    // The live stream: no chunked coding, the body ends with the connection, the router's headers
    // (CORS, the security headers) kept, and its first event at once.
    let mut first = connect_from(LOCAL, port).await;
    first.write_all(get).await.expect("write");
    let answer = read_until(&mut first, b"\n\n", SLACK).await;
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    for line in ["content-type: text/event-stream", "cache-control: no-cache", "connection: close", "date: "] {
        assert!(head.contains(line), "{line:?} missing from {head}");
    }
    assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{head}");
    assert!(body.starts_with("id: ") && body.contains("\ndata: {"), "an event, not a chunk size: {body:?}");

    // The address's share of the stream (2): the third is refused by the router, written whole.
    let mut second = connect_from(LOCAL, port).await;
    second.write_all(get).await.expect("write");
    assert!(read_until(&mut second, b"\n\n", SLACK).await.starts_with(b"HTTP/1.1 200"));
    let mut third = connect_from(LOCAL, port).await;
    third.write_all(get).await.expect("write");
    let refused = String::from_utf8_lossy(&read_until(&mut third, b"}", SLACK).await).to_lowercase();
    assert!(refused.starts_with("http/1.1 503 service unavailable\r\n"), "{refused}");
    assert!(refused.contains("retry-after: ") && refused.contains("content-length: "), "{refused}");
    assert!(closed_within(&mut third, SLACK).await.is_some(), "a refused stream's connection is closed");

    // A bad `logs` is the router's clear 400, written by the stream's writer too.
    let mut bad = connect_from(Ipv4Addr::new(127, 0, 0, 5), port).await;
    bad.write_all(b"GET /api/stream?logs=501 HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let answer = String::from_utf8_lossy(&read_until(&mut bad, b"}", SLACK).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.ends_with(r#"{"error":"logs must be an integer from 0 to 500","field":"logs"}"#), "{answer}");

    // A phone that leaves frees its slot: the server notices the closed socket by itself.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let status = status_from(LOCAL, port, get).await;
        if status == Some(200) {
            again = status;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(again, Some(200), "the slot of a phone that left is not freed");

    // What the stream's writer does not take goes to hyper as it came: HTTP/1.0, a head with a
    // request pipelined behind it, another method, an oversize head.
    let mut http10 = connect_from(OTHER, port).await;
    http10.write_all(b"GET /api/stream HTTP/1.0\r\nhost: x\r\n\r\n").await.expect("write");
    let answer = read_until(&mut http10, b"\r\n\r\n", SLACK).await;
    assert!(answer.starts_with(b"HTTP/1.0 200 OK\r\n"), "HTTP/1.0 is hyper's: {}", String::from_utf8_lossy(&answer));
    drop(http10);
    let mut pipelined = connect_from(OTHER, port).await;
    pipelined
        .write_all(b"GET /api/stream?x=1 HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let chunked = String::from_utf8_lossy(&read_until(&mut pipelined, b"\r\n\r\n", SLACK).await).to_lowercase();
    assert!(chunked.starts_with("http/1.1 200") && chunked.contains("transfer-encoding: chunked"), "{chunked}");
    drop(pipelined);
    let post = status_from(
        Ipv4Addr::new(127, 0, 0, 3),
        port,
        b"POST /api/stream HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(post.await, Some(405));
    let big = format!("GET /api/stream HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(100 * 1024));
    let status = status_from(Ipv4Addr::new(127, 0, 0, 4), port, big.as_bytes()).await;
    assert!(matches!(status, Some(431) | None), "a 100 KiB head on the stream's path: {status:?}");
    // A GET on this listener closes its connection after it, so that a browser opens its page's
    // stream on a new one; a vote keeps its connection.
    let mut get = connect_from(LOCAL, port).await;
    get.write_all(b"GET /api/results HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let head = String::from_utf8_lossy(&read_until(&mut get, b"\r\n\r\n", SLACK).await).to_lowercase();
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(closed_within(&mut get, SLACK).await.is_some(), "the GET's connection stays open");
    let mut vote = connect_from(LOCAL, port).await;
    let body = r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#;
    let post = format!(
        "POST /grpc/votes HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    vote.write_all(post.as_bytes()).await.expect("write");
    let head = String::from_utf8_lossy(&read_until(&mut vote, b"\r\n\r\n", SLACK).await).to_lowercase();
    assert!(head.starts_with("http/1.1 202") && !head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut vote, Duration::from_millis(500)).await.is_none(), "the vote's connection was closed");

    // And the other routes are as they were.
    assert_eq!(
        status_from(LOCAL, port, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await,
        Some(200)
    );
}
