//! Phones: many live-stream clients (`GET /api/stream`), as the audience's pages hold them through a
//! show, and how long each takes to hear a round change.
//!
//! Each phone is one plain HTTP/1.1 connection from a loopback source address of its own group
//! (the server caps connections per client address, and a hall's phones come from many), reading
//! Server-Sent Events, asking for as many `log` events as the audience page does. It keeps only the frame it is reading; a `round` event is parsed and, for the
//! watched round, the instants it was first heard closed and revealed are noted. A phone whose
//! stream ends reconnects after a second with `Last-Event-ID`, as a browser's `EventSource` does.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// Phones opened per source address (below the server's 256 connections per client).
pub const PHONES_PER_ADDRESS: usize = 200;

/// `log` events a phone asks for per 250 ms (`?logs=`), as the audience page does (its ticker of
/// the latest votes: `LOGS_PER_TICK` in `web/src/composables/useLive.ts`).
const LOGS_PER_TICK: usize = 20;

/// Which change of the watched round a phone heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its state became `closed`.
    Closed,
    /// Its results became `revealed`.
    Revealed,
}

/// What every phone heard, shared with the phones' tasks.
pub struct Phones {
    epoch: Instant,
    round: Mutex<String>,
    /// Per phone: nanoseconds after `epoch` + 1 at which it heard the close (0: not yet).
    closed: Vec<AtomicU64>,
    /// The same for the reveal.
    revealed: Vec<AtomicU64>,
    /// Phones whose stream is open now.
    connected: AtomicUsize,
    /// Streams that ended or were refused (each followed by a reconnect).
    drops: AtomicUsize,
    /// Bytes read by every phone.
    bytes: AtomicU64,
}

impl Phones {
    /// `count` phones of the server at `server`, from the loopback addresses `127.0.0.2`… (one per
    /// [`PHONES_PER_ADDRESS`]), connecting at most `ramp` at a time; they run until `stop`.
    pub fn start(server: SocketAddr, count: usize, ramp: usize, stop: CancellationToken) -> Arc<Self> {
        let phones = Arc::new(Self {
            epoch: Instant::now(),
            round: Mutex::new(String::new()),
            closed: (0..count).map(|_| AtomicU64::new(0)).collect(),
            revealed: (0..count).map(|_| AtomicU64::new(0)).collect(),
            connected: AtomicUsize::new(0),
            drops: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        });
        let gate = Arc::new(tokio::sync::Semaphore::new(ramp.max(1)));
        for i in 0..count {
            let (phones, gate, stop) = (Arc::clone(&phones), Arc::clone(&gate), stop.clone());
            let source = source_address(i);
            tokio::spawn(async move { phones.run(i, source, server, gate, stop).await });
        }
        phones
    }

    /// Watch round `id` from now on.
    pub fn watch(&self, id: &str) {
        *self.round.lock().unwrap_or_else(|e| e.into_inner()) = id.to_owned();
    }

    /// Phones whose stream is open.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Streams that ended or were refused.
    pub fn drops(&self) -> usize {
        self.drops.load(Ordering::Relaxed)
    }

    /// Bytes the phones read in all.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// How long after `since` each phone heard `change`, sorted; phones that did not hear it are
    /// left out.
    pub fn delays(&self, change: Change, since: Instant) -> Vec<Duration> {
        let heard = match change {
            Change::Closed => &self.closed,
            Change::Revealed => &self.revealed,
        };
        let since = since.saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut delays: Vec<Duration> = heard
            .iter()
            .map(|at| at.load(Ordering::Relaxed))
            .filter(|&at| at != 0)
            .map(|at| Duration::from_nanos((at - 1).saturating_sub(since)))
            .collect();
        delays.sort();
        delays
    }

    /// How many phones heard `change`.
    pub fn heard(&self, change: Change) -> usize {
        let heard = match change {
            Change::Closed => &self.closed,
            Change::Revealed => &self.revealed,
        };
        heard.iter().filter(|at| at.load(Ordering::Relaxed) != 0).count()
    }

    async fn run(
        &self,
        i: usize,
        source: Ipv4Addr,
        server: SocketAddr,
        gate: Arc<tokio::sync::Semaphore>,
        stop: CancellationToken,
    ) {
        let mut last_id: Option<u64> = None;
        loop {
            // However it ended (refused, cut, or closed by the server), the phone reconnects.
            tokio::select! {
                () = stop.cancelled() => return,
                _ = self.follow(i, source, server, &gate, &mut last_id) => {}
            };
            self.drops.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One stream, from its connection to its end.
    async fn follow(
        &self,
        i: usize,
        source: Ipv4Addr,
        server: SocketAddr,
        gate: &tokio::sync::Semaphore,
        last_id: &mut Option<u64>,
    ) -> std::io::Result<()> {
        let permit = gate.acquire().await.map_err(std::io::Error::other)?;
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let mut stream = socket.connect(server).await?;
        let resume = last_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let request = format!(
            "GET /api/stream?logs={LOGS_PER_TICK} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        // The response head.
        let head_end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                break end + 4;
            }
        };
        if !buffer.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other("the stream was refused"));
        }
        drop(permit);
        let chunked = find(&buffer[..head_end], b"chunked").is_some();
        buffer.drain(..head_end);
        self.connected.fetch_add(1, Ordering::Relaxed);
        let mut body = Dechunk::new(chunked);
        let mut frames = Vec::with_capacity(1024);
        let result = loop {
            body.feed(&buffer, &mut frames);
            buffer.clear();
            while let Some(end) = find(&frames, b"\n\n") {
                self.frame(i, &frames[..end], last_id);
                frames.drain(..end + 2);
            }
            match stream.read(&mut chunk).await {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    buffer.extend_from_slice(&chunk[..n]);
                }
                Err(error) => break Err(error),
            }
        };
        self.connected.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// One event: its id remembered; a `round` event of the watched round noted.
    fn frame(&self, i: usize, frame: &[u8], last_id: &mut Option<u64>) {
        let text = String::from_utf8_lossy(frame);
        let mut event = "";
        let mut data = String::new();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("id: ") {
                *last_id = id.trim().parse().ok().or(*last_id);
            } else if let Some(name) = line.strip_prefix("event: ") {
                event = name.trim();
            } else if let Some(line) = line.strip_prefix("data: ") {
                data.push_str(line);
            }
        }
        if event != "round" {
            return;
        }
        let watched = self.round.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Ok(rounds) = serde_json::from_str::<serde_json::Value>(&data) else { return };
        let Some(round) = rounds["rounds"].as_array().and_then(|r| r.iter().find(|r| r["id"] == watched.as_str()))
        else {
            return;
        };
        let now = Instant::now().saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
        if round["state"] == "closed" {
            let _ = self.closed[i].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        if round["results"] == "revealed" {
            let _ = self.revealed[i].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// The source address of phone `i`: `127.0.0.2` for the first [`PHONES_PER_ADDRESS`], and so on.
pub fn source_address(i: usize) -> Ipv4Addr {
    let group = (i / PHONES_PER_ADDRESS) as u32 + 2;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + group)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Undoes HTTP/1.1 chunked transfer coding, as bytes arrive.
struct Dechunk {
    chunked: bool,
    /// Bytes left in the current chunk.
    left: usize,
    /// A chunk-size line read so far.
    line: Vec<u8>,
    /// The CRLF after a chunk's data is still to skip.
    skip: usize,
}

impl Dechunk {
    fn new(chunked: bool) -> Self {
        Self { chunked, left: 0, line: Vec::new(), skip: 0 }
    }

    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if !self.chunked {
            out.extend_from_slice(input);
            return;
        }
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                self.skip -= n;
                input = &input[n..];
            } else if self.left > 0 {
                let n = self.left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.left -= n;
                input = &input[n..];
                if self.left == 0 {
                    self.skip = 2;
                }
            } else {
                match input.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        self.line.extend_from_slice(&input[..end]);
                        let text = String::from_utf8_lossy(&self.line);
                        let size = text.trim().split(';').next().unwrap_or("");
                        self.left = usize::from_str_radix(size, 16).unwrap_or(0);
                        self.line.clear();
                        input = &input[end + 1..];
                    }
                    None => {
                        self.line.extend_from_slice(input);
                        input = &[];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_undone_across_reads() {
        let mut body = Dechunk::new(true);
        let mut out = Vec::new();
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for piece in wire.chunks(3) {
            body.feed(piece, &mut out);
        }
        assert_eq!(out, b"hello, world");
    }

    #[test]
    fn phones_are_spread_over_loopback_addresses() {
        assert_eq!(source_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(PHONES_PER_ADDRESS - 1), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(PHONES_PER_ADDRESS), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(source_address(PHONES_PER_ADDRESS * 300), Ipv4Addr::new(127, 0, 1, 46));
    }

    #[tokio::test]
    async fn a_phone_notes_when_it_hears_the_watched_round_close_and_revealed() {
        let phones = Phones {
            epoch: Instant::now(),
            round: Mutex::new("final".into()),
            closed: vec![AtomicU64::new(0)],
            revealed: vec![AtomicU64::new(0)],
            connected: AtomicUsize::new(0),
            drops: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        };
        let mut last = None;
        let open = br#"id: 7
event: round
data: {"now":"x","rounds":[{"id":"final","state":"open","results":"hidden"}]}"#;
        phones.frame(0, open, &mut last);
        assert_eq!((last, phones.heard(Change::Closed)), (Some(7), 0));
        let closed = br#"id: 9
event: round
data: {"now":"x","rounds":[{"id":"other","state":"closed"},{"id":"final","state":"closed","results":"revealed"}]}"#;
        phones.frame(0, closed, &mut last);
        assert_eq!((last, phones.heard(Change::Closed), phones.heard(Change::Revealed)), (Some(9), 1, 1));
    }
}
