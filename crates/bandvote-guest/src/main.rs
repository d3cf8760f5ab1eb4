//! The WebAssembly guest of bandvote's wasm ingest path: a `wasi:http` proxy component
//! (`wasm32-wasip2`) that validates each vote with the same domain code as the native gateways
//! (`bandvote-core`) and forwards it over HTTP to the HTTP producer, relaying its answer.
//!
//! The producer's base URL comes from the `BANDVOTE_UPSTREAM` environment variable (default
//! `http://127.0.0.1:8001`). Being a standard component, it runs under
//! `wasmtime serve -Scli -Shttp --env BANDVOTE_UPSTREAM=http://127.0.0.1:8001 bandvote-guest.wasm`.
//! Under bandvote's own host, which carries the votes of all its guests to the producer together,
//! the host sets `BANDVOTE_HAND_BACK=1` and the guest hands each vote it accepts back to the host in
//! its answer, marked with the `bandvote-hand-back` header, instead of sending it itself: the
//! headers it would send and the body it read the vote from, without the round trip through
//! `wasi:http`'s outgoing handler.
//!
//! Written on the plain `wasi:http` bindings with blocking stream calls: one request per instance
//! needs no async runtime, and each call below is one call into the host.

use bandvote_core::{
    MAX_BODY_BYTES, Vote, VoteId,
    http::{HAND_BACK_ENV, HAND_BACK_HEADER, error_body},
};
use wasip2::{
    http::{
        outgoing_handler,
        types::{
            Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
            ResponseOutparam, Scheme,
        },
    },
    io::streams::{InputStream, OutputStream, StreamError},
};

/// The route this component serves.
const ROUTE: &str = "/wasm/votes";
/// The round the host stamped on the vote, passed on to the producer.
const ROUND_HEADER: &str = "bandvote-round";

struct Guest;

wasip2::http::proxy::export!(Guest);

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        handle(&request).send(response_out);
    }
}

/// Header names and values.
type Headers = Vec<(String, Vec<u8>)>;

/// A response to send: status, headers and body.
struct Answer {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl Answer {
    /// A JSON answer.
    fn json(status: u16, body: Vec<u8>) -> Self {
        Self { status, headers: vec![("content-type".to_owned(), b"application/json".to_vec())], body }
    }

    fn error(status: u16, message: &str, field: Option<&str>) -> Self {
        Self::json(status, error_body(message, field).into_bytes())
    }

    fn unavailable() -> Self {
        let mut answer = Self::error(503, "the vote queue is unavailable, retry later", None);
        answer.headers.push(("retry-after".to_owned(), b"1".to_vec()));
        answer
    }

    fn send(self, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::from_list(&self.headers).unwrap_or_else(|_| Fields::new()));
        // Only out-of-range codes are refused; an answer relayed from the producer has a valid one.
        let _ = response.set_status_code(self.status);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = write_all(&stream, &self.body);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

fn handle(request: &IncomingRequest) -> Answer {
    #[cfg(feature = "misbehave")]
    if let Some(answer) = misbehave::route(request) {
        return answer;
    }
    let path = request.path_with_query().unwrap_or_default();
    if path.split('?').next() != Some(ROUTE) {
        return Answer::error(404, "no such route", None);
    }
    match accept(request) {
        Ok(accepted) if hands_back() => hand_back(accepted),
        Ok(accepted) => forward(&accepted),
        Err(answer) => answer,
    }
}

/// Whether the host carries the votes itself and wants each accepted one back.
fn hands_back() -> bool {
    std::env::var_os(HAND_BACK_ENV).is_some_and(|value| value == "1")
}

/// A vote that passed every check, with what goes with it to the producer, and the body it was
/// read from.
struct Accepted {
    vote: Vote,
    key: Option<VoteId>,
    round: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Checks the method, the content type, the idempotency key and the body, and parses the vote.
fn accept(request: &IncomingRequest) -> Result<Accepted, Answer> {
    if !matches!(request.method(), Method::Post) {
        return Err(Answer::error(405, "method not allowed on this route", None));
    }
    let headers = request.headers();
    let content_type = first(&headers, "content-type");
    if !content_type.as_deref().and_then(visible_ascii).is_some_and(bandvote_core::http::is_json_media_type) {
        return Err(Answer::error(415, "content-type must be application/json", None));
    }
    let key = match first(&headers, "idempotency-key") {
        None => None,
        Some(value) => match visible_ascii(&value).map(VoteId::from_client_key) {
            Some(Ok(id)) => Some(id),
            _ => return Err(Answer::error(400, &bandvote_core::IdError.to_string(), Some("Idempotency-Key"))),
        },
    };
    let round = first(&headers, ROUND_HEADER);
    drop(headers);
    let body = match read_body(request) {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(Answer::error(413, &format!("body must be at most {MAX_BODY_BYTES} bytes"), None));
        }
        Err(BodyError::Unreadable) => return Err(Answer::error(400, "could not read the request body", None)),
    };
    match Vote::parse_json(&body) {
        Ok(vote) => Ok(Accepted { vote, key, round, body }),
        Err(e) => Err(Answer::error(400, &e.message, e.field)),
    }
}

/// The first value of a header, if any.
fn first(headers: &Fields, name: &str) -> Option<Vec<u8>> {
    headers.get(name).into_iter().next()
}

/// A header value as text when it is visible ASCII, as `http::HeaderValue::to_str` requires.
fn visible_ascii(value: &[u8]) -> Option<&str> {
    value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)).then(|| std::str::from_utf8(value).ok()).flatten()
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// The request body, refused past [`MAX_BODY_BYTES`] without reading further.
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, BodyError> {
    let body = request.consume().map_err(|()| BodyError::Unreadable)?;
    let stream = body.stream().map_err(|()| BodyError::Unreadable)?;
    let bytes = read_all(&stream, MAX_BODY_BYTES);
    drop(stream);
    drop(IncomingBody::finish(body));
    bytes
}

/// Reads `stream` to its end; more than `limit` bytes is [`BodyError::TooLarge`].
fn read_all(stream: &InputStream, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read((limit + 1 - bytes.len()) as u64) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(_)) => return Err(BodyError::Unreadable),
        }
        if bytes.len() > limit {
            return Err(BodyError::TooLarge);
        }
    }
}

/// Writes all of `bytes` (a blocking write takes at most 4096 at a time).
fn write_all(stream: &OutputStream, bytes: &[u8]) -> Result<(), StreamError> {
    bytes.chunks(4096).try_for_each(|chunk| stream.blocking_write_and_flush(chunk))
}

/// Where `BANDVOTE_UPSTREAM` points: scheme, authority and base path.
struct Upstream {
    scheme: Scheme,
    authority: String,
    base: String,
}

impl Upstream {
    fn from_env() -> Option<Self> {
        let url = std::env::var("BANDVOTE_UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:8001".into());
        Self::parse(&url)
    }

    fn parse(url: &str) -> Option<Self> {
        let (scheme, rest) = match url.split_once("://")? {
            ("http", rest) => (Scheme::Http, rest),
            ("https", rest) => (Scheme::Https, rest),
            _ => return None,
        };
        let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
        let base = base.trim_end_matches('/');
        let base = if base.is_empty() { String::new() } else { format!("/{base}") };
        (!authority.is_empty()).then(|| Self { scheme, authority: authority.to_owned(), base })
    }

    /// A request to `path` below the base path, with `headers`.
    fn request(&self, method: &Method, path: &str, headers: &[(String, Vec<u8>)]) -> Option<OutgoingRequest> {
        let request = OutgoingRequest::new(Fields::from_list(headers).ok()?);
        request.set_method(method).ok()?;
        request.set_scheme(Some(&self.scheme)).ok()?;
        request.set_authority(Some(&self.authority)).ok()?;
        request.set_path_with_query(Some(&format!("{}{path}", self.base))).ok()?;
        Some(request)
    }
}

/// What goes to the HTTP producer for an accepted vote: its headers (with the round the host
/// stamped on it) and its body.
fn upstream_request(accepted: &Accepted) -> (Headers, String) {
    let vote = &accepted.vote;
    let payload = serde_json::json!({"name": vote.name, "album": vote.album, "year": vote.year, "rank": vote.rank});
    (upstream_headers(accepted), payload.to_string())
}

/// The headers of what goes to the HTTP producer for an accepted vote.
fn upstream_headers(accepted: &Accepted) -> Headers {
    let mut headers = vec![("content-type".to_owned(), b"application/json".to_vec())];
    headers.extend(accepted.key.as_ref().map(|key| ("idempotency-key".to_owned(), key.as_str().as_bytes().to_vec())));
    headers.extend(accepted.round.clone().map(|round| (ROUND_HEADER.to_owned(), round)));
    headers
}

/// Sends the accepted vote to the HTTP producer and relays its status and body.
fn forward(accepted: &Accepted) -> Answer {
    let (headers, body) = upstream_request(accepted);
    let Some(request) = Upstream::from_env().and_then(|up| up.request(&Method::Post, "/votes", &headers)) else {
        return Answer::error(500, "internal error", None);
    };
    match send(request, body.as_bytes()) {
        Some((status, retry_after, body)) => {
            let mut answer = Answer::json(status, body);
            answer.headers.extend(retry_after.map(|value| ("retry-after".to_owned(), value)));
            answer
        }
        None => Answer::unavailable(),
    }
}

/// Hands the accepted vote back to the host, which carries it to the producer and answers the
/// client: the headers [`forward`] would send and the body the vote was read from (the host reads
/// the same vote from it), as an answer marked with [`HAND_BACK_HEADER`].
fn hand_back(accepted: Accepted) -> Answer {
    let mut headers = upstream_headers(&accepted);
    headers.push((HAND_BACK_HEADER.to_owned(), b"vote".to_vec()));
    Answer { status: 200, headers, body: accepted.body }
}

/// Sends `request` with `body`; the answer's status, `Retry-After` and body, or `None` when there
/// is no complete answer.
fn send(request: OutgoingRequest, body: &[u8]) -> Option<(u16, Option<Vec<u8>>, Vec<u8>)> {
    let outgoing = request.body().ok()?;
    let future = outgoing_handler::handle(request, None).ok()?;
    let stream = outgoing.write().ok()?;
    write_all(&stream, body).ok()?;
    drop(stream);
    OutgoingBody::finish(outgoing, None).ok()?;
    future.subscribe().block();
    let response = future.get()?.ok()?.ok()?;
    let status = response.status();
    let retry_after = first(&response.headers(), "retry-after");
    let incoming = response.consume().ok()?;
    let stream = incoming.stream().ok()?;
    let answer = read_all(&stream, MAX_BODY_BYTES).ok()?;
    drop(stream);
    drop(IncomingBody::finish(incoming));
    Some((status, retry_after, answer))
}

/// Never called: a `wasi:http` proxy is entered through `handle`, but a binary needs a `main`.
fn main() {
    unreachable!("bandvote-guest is a wasi:http proxy component: it is entered through `handle`")
}

/// Routes that misbehave on purpose, so the host's limits and checks can be tested on a real
/// component, and two for the benchmarks: one that does no work at all (the floor), one that does
/// the vote's own work but sends nothing.
#[cfg(feature = "misbehave")]
mod misbehave {
    use bandvote_core::http::HAND_BACK_HEADER;
    use wasip2::http::types::{IncomingRequest, Method};

    use super::{Answer, Upstream, accept, read_body, send, upstream_request};

    pub fn route(request: &IncomingRequest) -> Option<Answer> {
        let path = request.path_with_query().unwrap_or_default();
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        match path {
            "/wasm/misbehave/trap" => panic!("trapping on purpose"),
            "/wasm/misbehave/spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/wasm/misbehave/allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            // Tries to reach the URL in the query, bypassing the upstream: 200 if it got an
            // answer, 403 if the host refused.
            "/wasm/misbehave/escape" => {
                let reached = Upstream::parse(query)
                    .and_then(|target| target.request(&Method::Get, "/", &[]))
                    .and_then(|request| send(request, b""))
                    .is_some();
                Some(Answer { status: if reached { 200 } else { 403 }, headers: Vec::new(), body: Vec::new() })
            }
            // Answers 202 at once, reading nothing and reaching nothing: what a request costs
            // through the host and a fresh instance before any work of the guest's.
            "/wasm/misbehave/answer" => Some(Answer::json(202, br#"{"id":"floor","path":"wasm"}"#.to_vec())),
            // Does all of the vote route's own work (the checks, the body, the parse, the headers
            // and body of the request it would send) and answers 202 without sending anything:
            // the guest's share of a vote.
            "/wasm/misbehave/validate" => Some(match accept(request) {
                Ok(accepted) => {
                    std::hint::black_box(upstream_request(&accepted));
                    Answer::json(202, br#"{"id":"validate","path":"wasm"}"#.to_vec())
                }
                Err(answer) => answer,
            }),
            // Hands the request's body back as a vote without checking anything: the host must
            // check what it carries itself.
            "/wasm/misbehave/hand-back" => {
                let mut answer = Answer::json(200, read_body(request).unwrap_or_default());
                answer.headers.push((HAND_BACK_HEADER.to_owned(), b"vote".to_vec()));
                Some(answer)
            }
            _ => None,
        }
    }
}
