//! Event streams served without hyper's per-connection buffers.
//!
//! A live-stream client (a phone in the audience) holds its connection for the whole show and
//! receives a few hundred bytes now and then. Through hyper, each such connection keeps an 8 KiB
//! read buffer and an 8 KiB write buffer for its whole life: with 10,000 phones, 160 MiB for
//! buffers that are almost always empty. A listener given the paths of its event streams
//! ([`Limits::event_streams`](crate::http::Limits::event_streams)) reads the first request head of
//! each connection itself: when it is a plain HTTP/1.1 `GET` of one of those paths, with no body
//! and nothing after it, the request goes through the same router (its middleware, limits and
//! errors), and the answer is written straight to the socket, its body delimited by the
//! connection's close (`Connection: close`, as RFC 9112 §6.3 allows a response). Anything else
//! (another path or method, HTTP/2, a malformed or oversized head, a pipelined request) goes to
//! hyper with the bytes already read put back in front, so hyper answers it as it would have.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderName, HeaderValue, Method, Request, Version, header},
};
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tower::ServiceExt;

use crate::client::TrustedProxies;

/// Bytes asked of the socket at a time while a head is read: most heads fit in one read.
const READ_CHUNK: usize = 1024;

/// What a connection's first bytes turned out to be.
pub(crate) enum First {
    /// A `GET` of an event stream: its request, with no body.
    Stream(Box<Request<Body>>),
    /// Anything else: the bytes read so far, for hyper.
    Other(Bytes),
    /// The client closed or failed, or (`late`) did not send a head in time.
    Gone { late: bool },
}

/// Reads the start of a connection until it is clear whether it is an event stream's request,
/// by `deadline` at the latest.
pub(crate) async fn read_first<Io: AsyncRead + Unpin>(
    io: &mut Io,
    paths: &[&'static str],
    max_headers: usize,
    max_head_bytes: usize,
    deadline: tokio::time::Instant,
) -> First {
    let mut head = Vec::with_capacity(READ_CHUNK);
    loop {
        let start = head.len();
        head.resize(start + READ_CHUNK, 0);
        let read = tokio::time::timeout_at(deadline, io.read(&mut head[start..])).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return First::Gone { late: false },
            Err(_) => return First::Gone { late: true },
        };
        head.truncate(start + n);
        if !paths.iter().any(|path| may_request(&head, path)) {
            return First::Other(head.into());
        }
        if head.len() > max_head_bytes {
            return First::Other(head.into());
        }
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 != head.len() {
                return First::Other(head.into());
            }
            return match parse(&head, paths, max_headers) {
                Some(request) => First::Stream(Box::new(request)),
                None => First::Other(head.into()),
            };
        }
    }
}

/// Whether `bytes`, the start of a connection, may still be a `GET` of `path`.
fn may_request(bytes: &[u8], path: &str) -> bool {
    let line = [b"GET ".as_slice(), path.as_bytes()].concat();
    if bytes.len() <= line.len() {
        return line.starts_with(bytes);
    }
    bytes.starts_with(&line) && matches!(bytes[line.len()], b' ' | b'?')
}

/// The request in `head` when it is a complete HTTP/1.1 `GET` of one of `paths` with no body.
fn parse(head: &[u8], paths: &[&'static str], max_headers: usize) -> Option<Request<Body>> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let target = parsed.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if parsed.method != Some("GET") || parsed.version != Some(1) || !paths.contains(&path) {
        return None;
    }
    let mut request = Request::builder().method(Method::GET).uri(target).version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        // A body, or an ask to switch protocols, is hyper's to handle.
        if name == header::CONTENT_LENGTH && h.value != b"0"
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
        {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    request.body(Body::empty()).ok()
}

/// Answers an event stream's request through `router` and writes the answer to `io` until its body
/// ends, the client leaves, or a write waits longer than `write_timeout`; then closes.
pub(crate) async fn serve<Io: AsyncRead + AsyncWrite + Unpin>(
    mut io: Io,
    mut request: Request<Body>,
    router: Router,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    write_timeout: Duration,
) {
    crate::http::identify(&mut request, peer, trusted);
    let Ok(response) = router.oneshot(request).await;
    let (parts, mut body) = response.into_parts();
    let mut head = format!("HTTP/1.1 {} {}\r\n", parts.status.as_str(), parts.status.canonical_reason().unwrap_or(""))
        .into_bytes();
    for (name, value) in &parts.headers {
        if [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION].contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes());
    }
    if let Some(length) = hyper::body::Body::size_hint(&body).exact() {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    drop(parts);
    if !write(&mut io, &head, write_timeout).await {
        return;
    }
    drop(head);
    // The client sends nothing more; a read that ends says it left.
    let mut byte = [0u8; 1];
    loop {
        let data = tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                // An error ends the answer abruptly: the client must not take it as complete.
                Some(Err(_)) => return,
                None => break,
            },
            _ = io.read(&mut byte) => return,
        };
        if !write(&mut io, &data, write_timeout).await {
            return;
        }
    }
    let _ = tokio::time::timeout(write_timeout, io.shutdown()).await;
}

async fn write<Io: AsyncWrite + Unpin>(io: &mut Io, bytes: &[u8], timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, io.write_all(bytes)).await, Ok(Ok(())))
}

/// A connection whose first bytes were already read: they are read again first.
pub(crate) struct Replayed<Io> {
    first: Bytes,
    io: Io,
}

impl<Io> Replayed<Io> {
    pub(crate) fn new(first: Bytes, io: Io) -> Self {
        Self { first, io }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Replayed<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.first.has_remaining() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first[..n]);
            self.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Replayed<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{may_request, parse};

    const PATHS: &[&str] = &["/api/stream"];

    #[test]
    fn only_a_get_of_the_path_itself_may_be_a_stream() {
        for start in ["G", "GET /api/str", "GET /api/stream", "GET /api/stream?round=a", "GET /api/stream HTTP/1.1\r\n"]
        {
            assert!(may_request(start.as_bytes(), "/api/stream"), "{start:?}");
        }
        for start in ["P", "POST /api/stream", "GET /api/streams", "GET /api/results", "PRI * HTTP/2.0", "HEAD /api"] {
            assert!(!may_request(start.as_bytes(), "/api/stream"), "{start:?}");
        }
    }

    #[test]
    fn a_head_with_a_body_an_upgrade_or_another_version_is_left_to_hyper() {
        let ok = parse(b"GET /api/stream?round=final HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n", PATHS, 8)
            .expect("a plain GET");
        assert_eq!(ok.uri(), "/api/stream?round=final");
        assert_eq!(ok.headers()["last-event-id"], "7");
        for head in [
            "GET /api/stream HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            "GET /api/streamx HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(parse(head.as_bytes(), PATHS, 8).is_none(), "{head:?}");
        }
        let many = format!("GET /api/stream HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(9));
        assert!(parse(many.as_bytes(), PATHS, 8).is_none(), "more headers than allowed");
    }
}
