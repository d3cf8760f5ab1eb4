//! The one reader behind `GET /api/stream` and its fan-out. Every 250 ms (only while someone
//! listens) the reader reads the counters and the newest log entries once; each event is
//! serialised once, as a ready SSE frame (`id:`, `event:`, `data:`), and shared by every client:
//! - the latest results, published only when they changed, at most every 250 ms, when they are
//!   large no faster than [`RESULTS_BYTES_PER_SEC`], and with many clients no more often than
//!   [`RESULTS_DELIVERIES_PER_SEC`] allows (a new client starts from them);
//! - a bounded log of the newest `log`, `status` and `round` events (`round`: the rounds, whenever
//!   one opens, closes, is hidden, revealed or made final), replayed to a client that reconnects
//!   with `Last-Event-ID`;
//! - one bounded mailbox per client. A client that does not take its frames (its mailbox full, or
//!   no progress for [`SLOW_CLIENT_TIMEOUT`] while frames wait) is dropped: its mailbox is emptied,
//!   its slot freed, and its response ends with an error, which closes the connection. Superseded
//!   results are never queued: a client only ever waits for the newest.
//!
//! At most `max_clients` clients at once; [`Events::reserve`] refuses the next ones.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::body::Bytes;
use bandvote_runtime::per_client::{ClientSlot, PerClient};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::store::{RoundResults, Store, Unavailable};

/// How often the reader looks for changes (also the fastest `results` rate).
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Stream clients at once when none is configured (`--max-stream-clients`).
pub const DEFAULT_MAX_CLIENTS: usize = 1000;

/// Clients of the live stream one address (IPv6: one /64) may hold at once by default: a tenth of
/// the default cap, so that a few addresses cannot take every slot, yet a venue's Wi-Fi behind one
/// address can keep a hundred phones on it (raise it there, or name the proxy in
/// `--trusted-proxies`).
pub const DEFAULT_MAX_CLIENTS_PER_ADDRESS: usize = 100;

/// Average bytes per second of `results` frames: a larger results object is sent less often than
/// every [`INTERVAL`] (a 512 KiB one every 2 s), so each client costs a bounded bandwidth.
pub const RESULTS_BYTES_PER_SEC: usize = 256 << 10;

/// `results` frames handed to clients per second, all clients together: beyond 2,500 clients the
/// results go out less often than every [`INTERVAL`] (with 10,000 phones, once a second), so that
/// counts changing all the time cannot keep the server writing to every phone while a round's
/// change waits for a core. `round`, `log` and `status` events are not held back.
pub const RESULTS_DELIVERIES_PER_SEC: usize = 10_000;

/// Longest a client may leave frames waiting without taking any before it is dropped.
pub const SLOW_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most log entries read in one interval; beyond that, clients get the newest ones.
pub(crate) const MAX_LOGS_PER_TICK: i64 = 500;

/// `log` and `status` events kept for clients that reconnect with `Last-Event-ID` (fewer than a
/// mailbox holds, so that a replay does not drop its client).
const REPLAY: usize = 512;

/// Frames (besides the newest results) waiting for one client before it is dropped.
const MAILBOX: usize = 2 * MAX_LOGS_PER_TICK as usize;

/// A `ping` event is published to every client when nothing else was for this long, so that a page
/// can tell a quiet stream from a dead one (a browser shows a page no comment line); like every
/// event it has its id. A client that got nothing for as long (it joined meanwhile) gets a comment
/// line, which keeps proxies from closing its connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event, serialised once.
#[derive(Debug, Clone)]
struct Frame {
    id: u64,
    bytes: Bytes,
    /// A `log` event (a client may take only the newest of them).
    log: bool,
}

/// A ready SSE frame: `id: N`, `event: NAME`, `data: JSON` (compact JSON holds no newline).
fn frame(id: u64, event: &str, json: &[u8]) -> Frame {
    let mut bytes = Vec::with_capacity(json.len() + event.len() + 40);
    bytes.extend_from_slice(format!("id: {id}\nevent: {event}\ndata: ").as_bytes());
    bytes.extend_from_slice(json);
    bytes.extend_from_slice(b"\n\n");
    Frame { id, bytes: bytes.into(), log: event == "log" }
}

/// `frames`, of which `logs` are `log` events, in order without the oldest of those beyond
/// `max_logs`.
fn newest_logs<'a>(
    frames: impl Iterator<Item = &'a Frame>,
    logs: usize,
    max_logs: usize,
) -> impl Iterator<Item = Frame> {
    let mut skip = logs.saturating_sub(max_logs);
    frames
        .filter(move |f| {
            let keep = !f.log || skip == 0;
            if !keep {
                skip -= 1;
            }
            keep
        })
        .cloned()
}

/// A `status` frame (`{"status": "ok"}` or the error).
fn status_json(status: &str) -> Vec<u8> {
    serde_json::json!({ "status": status }).to_string().into_bytes()
}

/// What waits for one client.
#[derive(Default)]
struct Inbox {
    /// The newest results not yet taken (an older one is replaced, never queued).
    results: Option<Frame>,
    /// `log` and `status` frames, oldest first.
    events: VecDeque<Frame>,
    /// Since when frames have waited without the client taking any.
    waiting_since: Option<Instant>,
    dropped: bool,
}

impl Inbox {
    fn is_empty(&self) -> bool {
        self.results.is_none() && self.events.is_empty()
    }

    /// Whether the client is too slow: its mailbox overflows, or it made no progress for too long.
    fn is_stuck(&self, now: Instant) -> bool {
        self.events.len() > MAILBOX || self.waiting_since.is_some_and(|t| now.duration_since(t) > SLOW_CLIENT_TIMEOUT)
    }

    fn drop_client(&mut self) {
        self.dropped = true;
        self.results = None;
        self.events = VecDeque::new();
    }

    /// The next frame in id order.
    fn take(&mut self) -> Option<Bytes> {
        let results_first = match (&self.results, self.events.front()) {
            (Some(results), Some(event)) => results.id < event.id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let next = if results_first { self.results.take() } else { self.events.pop_front() };
        self.waiting_since = (!self.is_empty()).then(Instant::now);
        next.map(|f| f.bytes)
    }
}

struct Mailbox {
    inbox: Mutex<Inbox>,
    ready: Notify,
}

impl Mailbox {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Client {
    mailbox: Arc<Mailbox>,
    /// The most `log` events it takes of one publication (the newest).
    max_logs: usize,
    /// The client's slot (and its address's), freed when it leaves or is dropped.
    _slot: Slot,
}

/// What the fan-out publishes, under one lock so that a new client misses nothing and sees
/// nothing twice.
struct Hub {
    next_id: u64,
    results: Option<Frame>,
    /// The last `status` frame when it was not `ok` (new clients get it first).
    problem: Option<Frame>,
    /// The last `round` frame: a new client gets the rounds as they are, not only their next change.
    rounds: Option<Frame>,
    replay: VecDeque<Frame>,
    clients: HashMap<u64, Client>,
    next_client: u64,
    /// When a frame was last handed to the clients.
    last_delivery: Instant,
}

struct Shared {
    hub: Mutex<Hub>,
    slots: Arc<Semaphore>,
    max_clients: usize,
    per_address: PerClient,
    max_per_address: usize,
}

/// The fan-out of the shared reader.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

/// A client cap is reached.
#[derive(Debug, thiserror::Error)]
pub enum TooManyClients {
    /// Every slot is taken.
    #[error("the live stream has its {0} clients, retry later")]
    Full(usize),
    /// The client's address holds its share.
    #[error("this address has {0} live-stream clients already, retry later")]
    PerAddress(usize),
}

/// A reserved client slot, turned into a [`Subscription`] by [`Events::subscribe`]; the slot and
/// its address's share are freed when it is dropped.
pub struct Slot {
    _slot: OwnedSemaphorePermit,
    _address: Option<ClientSlot>,
}

/// One client's frames; leaving (dropping it) frees its slot.
pub struct Subscription {
    shared: Arc<Shared>,
    id: u64,
    mailbox: Arc<Mailbox>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.hub().clients.remove(&self.id);
    }
}

/// What a subscription yields next.
pub enum Next {
    /// A frame to send.
    Frame(Bytes),
    /// The client was too slow and is dropped.
    Dropped,
}

impl Subscription {
    /// The next frame, waiting for one; `None` on `shutdown`. A keep-alive comment when nothing else
    /// came for 15 s.
    pub async fn next(&self, shutdown: &CancellationToken) -> Option<Next> {
        loop {
            {
                let mut inbox = self.mailbox.inbox();
                if inbox.dropped {
                    return Some(Next::Dropped);
                }
                if let Some(bytes) = inbox.take() {
                    return Some(Next::Frame(bytes));
                }
            }
            // `notify_one` keeps a permit when nobody waits: a frame delivered between the check
            // above and this wait still wakes it.
            tokio::select! {
                () = self.mailbox.ready.notified() => {}
                () = tokio::time::sleep(KEEP_ALIVE) => return Some(Next::Frame(Bytes::from_static(b":\n\n"))),
                () = shutdown.cancelled() => return None,
            }
        }
    }
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Events {
    /// An empty fan-out for at most `max_clients` clients at once, `max_per_address` of them
    /// from one address (0: no such cap).
    pub fn new(max_clients: usize, max_per_address: usize) -> Self {
        let max_clients = max_clients.max(1);
        // Ids start at the clock, so that they keep increasing across restarts: a client that
        // reconnects with an id from before a restart is not mistaken for one from the future.
        let start = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0).saturating_mul(1000);
        Self {
            shared: Arc::new(Shared {
                hub: Mutex::new(Hub {
                    next_id: start + 1,
                    results: None,
                    problem: None,
                    rounds: None,
                    replay: VecDeque::new(),
                    clients: HashMap::new(),
                    next_client: 0,
                    last_delivery: Instant::now(),
                }),
                slots: Arc::new(Semaphore::new(max_clients)),
                max_clients,
                per_address: PerClient::new(max_per_address),
                max_per_address,
            }),
        }
    }

    /// Clients connected right now.
    pub fn listeners(&self) -> usize {
        self.shared.max_clients - self.shared.slots.available_permits()
    }

    /// A slot for one more client, from `client` if it is known, or the cap it reached.
    pub fn reserve(&self, client: Option<IpAddr>) -> Result<Slot, TooManyClients> {
        let own = match client {
            Some(ip) => {
                Some(self.shared.per_address.enter(ip).ok_or(TooManyClients::PerAddress(self.shared.max_per_address))?)
            }
            None => None,
        };
        let permit = Arc::clone(&self.shared.slots)
            .try_acquire_owned()
            .map_err(|_| TooManyClients::Full(self.shared.max_clients))?;
        Ok(Slot { _slot: permit, _address: own })
    }

    /// Whether current results are published (the reader runs while anyone listens).
    pub fn has_results(&self) -> bool {
        self.shared.hub().results.is_some()
    }

    /// A new client: first the newest results and rounds (unless `last_event_id` shows it has
    /// them) and the current problem if a store is not answering, then, reconnecting with
    /// `last_event_id`, the buffered events after it, then everything published from now on.
    /// `first` (a one-off frame) comes before all of it. Of the `log` events of one publication
    /// (and of the replay) the client gets the newest `max_logs` (`usize::MAX`: all).
    pub fn subscribe(
        &self,
        slot: Slot,
        last_event_id: Option<u64>,
        first: Option<Bytes>,
        max_logs: usize,
    ) -> Subscription {
        let mut hub = self.shared.hub();
        // An id this process has not issued (from before a restart, or forged) replays nothing.
        let last = last_event_id.filter(|id| *id < hub.next_id);
        let mut inbox = Inbox::default();
        if let Some(last) = last {
            let after = || hub.replay.iter().filter(|f| f.id > last);
            inbox.events.extend(newest_logs(after(), after().filter(|f| f.log).count(), max_logs));
        }
        for current in [&hub.problem, &hub.rounds] {
            if let Some(frame) = current.clone().filter(|f| last.is_none_or(|l| f.id > l))
                && !inbox.events.iter().any(|f| f.id == frame.id)
            {
                inbox.events.push_back(frame);
            }
        }
        inbox.events.make_contiguous().sort_by_key(|f| f.id);
        inbox.results = hub.results.clone().filter(|f| last.is_none_or(|l| f.id > l));
        if let Some(first) = first {
            inbox.events.push_front(Frame { id: 0, bytes: first, log: false });
        }
        if !inbox.is_empty() {
            inbox.waiting_since = Some(Instant::now());
        }
        let mailbox = Arc::new(Mailbox { inbox: Mutex::new(inbox), ready: Notify::new() });
        mailbox.ready.notify_one();
        let id = hub.next_client;
        hub.next_client += 1;
        hub.clients.insert(id, Client { mailbox: Arc::clone(&mailbox), max_logs, _slot: slot });
        Subscription { shared: Arc::clone(&self.shared), id, mailbox }
    }

    /// Publishes new results (already serialised); returns the frame's size.
    pub fn publish_results(&self, json: &[u8]) -> usize {
        let mut hub = self.shared.hub();
        let frame = frame(hub.next_id, "results", json);
        hub.next_id += 1;
        hub.results = Some(frame.clone());
        let size = frame.bytes.len();
        deliver(&mut hub, Some(frame), Vec::new());
        size
    }

    /// Publishes `log` entries (each already serialised) and, first, a `status` change.
    pub fn publish_events(&self, status: Option<&str>, logs: Vec<Vec<u8>>) {
        if status.is_none() && logs.is_empty() {
            return;
        }
        let mut hub = self.shared.hub();
        let mut frames = Vec::with_capacity(logs.len() + 1);
        if let Some(status) = status {
            let frame = frame(hub.next_id, "status", &status_json(status));
            hub.next_id += 1;
            hub.problem = (status != "ok").then(|| frame.clone());
            frames.push(frame);
        }
        for json in logs {
            frames.push(frame(hub.next_id, "log", &json));
            hub.next_id += 1;
        }
        for frame in &frames {
            remember(&mut hub, frame);
        }
        deliver(&mut hub, None, frames);
    }

    /// Publishes a `round` event: the rounds after a change of state, visibility or finality.
    pub fn publish_round(&self, json: &[u8]) {
        let mut hub = self.shared.hub();
        let frame = frame(hub.next_id, "round", json);
        hub.next_id += 1;
        hub.rounds = Some(frame.clone());
        remember(&mut hub, &frame);
        deliver(&mut hub, None, vec![frame]);
    }

    /// Publishes a `ping` event when no frame went out for 15 s (not kept for replay: it
    /// changes nothing).
    pub fn ping_if_quiet(&self) {
        let mut hub = self.shared.hub();
        if hub.last_delivery.elapsed() < KEEP_ALIVE {
            return;
        }
        let frame = frame(hub.next_id, "ping", b"{}");
        hub.next_id += 1;
        deliver(&mut hub, None, vec![frame]);
    }

    /// Forgets the published results and rounds (nobody listens, so they would go stale).
    pub fn forget(&self) {
        let mut hub = self.shared.hub();
        hub.results = None;
        hub.rounds = None;
    }

    /// Drops the clients that stopped taking their frames.
    pub fn drop_slow_clients(&self) {
        deliver(&mut self.shared.hub(), None, Vec::new());
    }
}

/// Keeps `frame` for clients that reconnect with `Last-Event-ID` (the newest [`REPLAY`]).
fn remember(hub: &mut Hub, frame: &Frame) {
    if hub.replay.len() == REPLAY {
        hub.replay.pop_front();
    }
    hub.replay.push_back(frame.clone());
}

/// Hands `results` and `events` to every client, dropping those that are stuck.
fn deliver(hub: &mut Hub, results: Option<Frame>, events: Vec<Frame>) {
    let now = Instant::now();
    if results.is_some() || !events.is_empty() {
        hub.last_delivery = now;
    }
    let logs = events.iter().filter(|f| f.log).count();
    let mut stuck = Vec::new();
    for (id, client) in &hub.clients {
        let mut inbox = client.mailbox.inbox();
        let was_empty = inbox.is_empty();
        if let Some(results) = &results {
            inbox.results = Some(results.clone());
        }
        inbox.events.extend(newest_logs(events.iter(), logs, client.max_logs));
        if was_empty && !inbox.is_empty() {
            inbox.waiting_since = Some(now);
        }
        if inbox.is_stuck(now) {
            inbox.drop_client();
            stuck.push(*id);
        }
        drop(inbox);
        client.mailbox.ready.notify_one();
    }
    for id in &stuck {
        hub.clients.remove(id);
    }
    if !stuck.is_empty() {
        tracing::info!(dropped = stuck.len(), clients = hub.clients.len(), "stream: slow clients dropped");
    }
}

/// Runs the reader until `shutdown`.
pub async fn run_reader(store: Arc<Store>, events: Events, shutdown: CancellationToken) {
    let mut last_results: Option<RoundResults> = None;
    // Each round's (id, state, visibility, final) when last looked at: a change is a `round` event,
    // and so is the first look after nobody listened (a client that came meanwhile may have read
    // the rounds before a change the reader did not see).
    type RoundStates = Vec<(String, bandvote_core::round::State, bandvote_core::round::Visibility, bool)>;
    let mut last_rounds: Option<RoundStates> = None;
    let mut next_results_at = Instant::now();
    // Log entries are read from the newest seen `received_at` on (inclusive), skipping the ids
    // already sent at that exact millisecond.
    let mut since = chrono::Utc::now().timestamp_millis();
    let mut sent_at_since: HashSet<String> = HashSet::new();
    let mut healthy = true;
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        events.drop_slow_clients();
        if events.listeners() == 0 {
            last_results = None;
            last_rounds = None;
            events.forget();
            since = chrono::Utc::now().timestamp_millis();
            sent_at_since.clear();
            continue;
        }
        // The public's view: the current round, a hidden round's total only, its votes left out.
        let (results, logs, rounds) = tokio::join!(
            store.round_results(None, false),
            store.logs_since(since, MAX_LOGS_PER_TICK),
            store.load_rounds()
        );
        let hidden = rounds.map(|mut rounds| {
            bandvote_core::round::newest_first(&mut rounds);
            let now = chrono::Utc::now();
            let states: Vec<_> =
                rounds.iter().map(|r| (r.id.clone(), r.state(now), r.results, r.certified.is_some())).collect();
            if last_rounds.as_ref() != Some(&states) {
                let mut views: Vec<_> = rounds.iter().map(|r| r.view(now, 0)).collect();
                views.iter_mut().filter_map(serde_json::Value::as_object_mut).for_each(|view| {
                    view.remove("total");
                });
                let event = serde_json::json!({"now": bandvote_core::time::format(now), "rounds": views});
                events.publish_round(event.to_string().as_bytes());
            }
            last_rounds = Some(states);
            rounds.into_iter().filter(bandvote_core::round::Round::is_hidden).map(|r| r.id).collect::<HashSet<_>>()
        });
        let results = results.and_then(|r| r.ok_or_else(|| Unavailable("no current round".into())));
        // Without the hidden rounds no vote is sent: it may be one of theirs.
        let (logs, hidden) = match hidden {
            Ok(hidden) => (logs, hidden),
            Err(error) => (Err(error), HashSet::new()),
        };
        let status = match (&results, &logs) {
            (Ok(_), Ok(_)) if !healthy => {
                healthy = true;
                Some("ok".to_owned())
            }
            (Err(error), _) | (_, Err(error)) if healthy => {
                healthy = false;
                tracing::warn!(%error, "stream: a store is not answering");
                Some(error.to_string())
            }
            _ => None,
        };
        let mut entries = Vec::new();
        if let Ok(logs) = logs {
            for entry in logs {
                if sent_at_since.contains(&entry.id) {
                    continue;
                }
                if let Some(at) = bandvote_core::time::parse(&entry.received_at) {
                    let at = at.timestamp_millis();
                    if at > since {
                        since = at;
                        sent_at_since.clear();
                    }
                }
                sent_at_since.insert(entry.id.clone());
                if hidden.contains(&entry.round) {
                    continue;
                }
                match serde_json::to_vec(&entry) {
                    Ok(json) => entries.push(json),
                    Err(error) => tracing::warn!(%error, "stream: a log entry could not be serialised"),
                }
            }
        }
        events.publish_events(status.as_deref(), entries);
        events.ping_if_quiet();
        let now = Instant::now();
        if let Ok(results) = results
            && now >= next_results_at
            && last_results.as_ref() != Some(&results)
        {
            match serde_json::to_vec(&results) {
                Ok(json) => {
                    let size = events.publish_results(&json);
                    next_results_at = now + results_pause(size, events.listeners()) - INTERVAL / 2;
                    last_results = Some(results);
                }
                Err(error) => tracing::warn!(%error, "stream: results could not be serialised"),
            }
        }
    }
}

/// How long after publishing a results frame of `size` bytes to `listeners` clients the next may
/// follow.
fn results_pause(size: usize, listeners: usize) -> Duration {
    let for_bytes = Duration::from_secs_f64(size as f64 / RESULTS_BYTES_PER_SEC as f64);
    let for_clients = Duration::from_secs_f64(listeners as f64 / RESULTS_DELIVERIES_PER_SEC as f64);
    INTERVAL.max(for_bytes).max(for_clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(next: Option<Next>) -> String {
        match next {
            Some(Next::Frame(bytes)) => String::from_utf8(bytes.to_vec()).expect("utf-8"),
            Some(Next::Dropped) => "dropped".into(),
            None => "end".into(),
        }
    }

    async fn next(subscription: &Subscription) -> String {
        let shutdown = CancellationToken::new();
        text(tokio::time::timeout(Duration::from_secs(5), subscription.next(&shutdown)).await.expect("a frame"))
    }

    #[test]
    fn results_slow_down_for_large_frames_and_for_crowds_only() {
        assert_eq!(results_pause(300, 1), INTERVAL);
        assert_eq!(results_pause(300, 2_500), INTERVAL);
        assert_eq!(results_pause(300, 10_000), Duration::from_secs(1));
        assert_eq!(results_pause(512 << 10, 10), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn clients_share_one_results_frame_and_get_only_the_newest() {
        let events = Events::new(10, 0);
        let a = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        events.publish_results(br#"{"total":1}"#);
        events.publish_results(br#"{"total":2}"#);
        let b = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        let (first_a, first_b) = (next(&a).await, next(&b).await);
        assert!(first_a.ends_with("event: results\ndata: {\"total\":2}\n\n"), "{first_a}");
        assert_eq!(first_a, first_b, "the same frame, id included");
    }

    #[tokio::test]
    async fn a_quiet_stream_gets_a_ping_with_its_id_and_a_busy_one_none() {
        let events = Events::new(10, 0);
        let client = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        events.publish_results(br#"{"total":1}"#);
        let results = next(&client).await;
        events.ping_if_quiet();
        events.shared.hub().last_delivery -= KEEP_ALIVE;
        events.ping_if_quiet();
        events.ping_if_quiet();
        let ping = next(&client).await;
        assert!(ping.ends_with("event: ping\ndata: {}\n\n"), "{ping}");
        let id = |frame: &str| frame.lines().find_map(|l| l.strip_prefix("id: ")?.parse::<u64>().ok()).expect("an id");
        assert_eq!(id(&ping), id(&results) + 1, "one ping, numbered like every event");
        assert!(client.mailbox.inbox().is_empty(), "a ping only once the stream was quiet, and once");
    }

    #[tokio::test]
    async fn an_address_holds_its_share_of_the_slots_and_no_more() {
        let events = Events::new(10, 2);
        let (one, other) = ("192.0.2.1".parse().expect("ip"), "192.0.2.2".parse().expect("ip"));
        let first = events.subscribe(events.reserve(Some(one)).expect("a slot"), None, None, usize::MAX);
        let _second = events.subscribe(events.reserve(Some(one)).expect("a slot"), None, None, usize::MAX);
        assert!(matches!(events.reserve(Some(one)), Err(TooManyClients::PerAddress(2))));
        assert!(events.reserve(Some(other)).is_ok(), "another address still gets in");
        drop(first);
        assert!(events.reserve(Some(one)).is_ok(), "a leaving client frees its address's share");
    }

    #[tokio::test]
    async fn the_cap_refuses_the_next_client_and_a_leaving_client_frees_its_slot() {
        let events = Events::new(1, 0);
        let a = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        assert!(events.reserve(None).is_err());
        drop(a);
        assert!(events.reserve(None).is_ok());
    }

    #[tokio::test]
    async fn a_client_that_does_not_take_its_frames_is_dropped_and_frees_its_slot() {
        let events = Events::new(1, 0);
        let slow = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        for _ in 0..3 {
            events
                .publish_events(None, (0..MAX_LOGS_PER_TICK).map(|i| format!("{{\"n\":{i}}}").into_bytes()).collect());
        }
        assert_eq!(next(&slow).await, "dropped");
        assert_eq!(events.listeners(), 0);
        assert!(events.reserve(None).is_ok(), "its slot is free");
    }

    #[tokio::test]
    async fn a_reconnecting_client_gets_the_buffered_events_after_its_last_id_in_order() {
        let events = Events::new(10, 0);
        events.publish_events(None, vec![b"{\"n\":1}".to_vec()]);
        events.publish_results(b"{\"total\":1}");
        events.publish_events(None, vec![b"{\"n\":2}".to_vec(), b"{\"n\":3}".to_vec()]);
        let first_id = events.shared.hub().replay[0].id;
        let again = events.subscribe(events.reserve(None).expect("a slot"), Some(first_id), None, usize::MAX);
        let frames = [next(&again).await, next(&again).await, next(&again).await];
        assert!(frames[0].contains("results"), "{frames:?}");
        assert!(frames[1].contains("{\"n\":2}") && frames[2].contains("{\"n\":3}"), "{frames:?}");
        let forged = events.subscribe(events.reserve(None).expect("a slot"), Some(u64::MAX), None, usize::MAX);
        assert!(next(&forged).await.contains("results"), "an unknown id is a new client");
    }

    #[tokio::test]
    async fn a_client_asking_for_few_logs_gets_the_newest_of_each_publication_and_every_other_event() {
        let events = Events::new(10, 0);
        let some = events.subscribe(events.reserve(None).expect("a slot"), None, None, 2);
        let none = events.subscribe(events.reserve(None).expect("a slot"), None, None, 0);
        let all = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        let logs = |range: std::ops::Range<u8>| range.map(|n| format!("{{\"n\":{n}}}").into_bytes()).collect();
        events.publish_events(Some("kafka down"), logs(1..5));
        events.publish_round(br#"{"rounds":[]}"#);
        events.publish_events(None, logs(5..6));
        let take = |subscription: Subscription, count: usize| async move {
            let mut frames = Vec::new();
            for _ in 0..count {
                frames.push(next(&subscription).await);
            }
            let quiet = tokio::time::timeout(Duration::from_millis(50), next(&subscription)).await;
            assert!(quiet.is_err(), "more than {count} frames: {frames:?} and {quiet:?}");
            frames
                .iter()
                .map(|f| f.lines().find(|l| l.starts_with("data:")).unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        let data = |texts: &[&str]| texts.iter().map(|t| format!("data: {t}")).collect::<Vec<_>>();
        assert_eq!(
            take(some, 5).await,
            data(&[r#"{"status":"kafka down"}"#, r#"{"n":3}"#, r#"{"n":4}"#, r#"{"rounds":[]}"#, r#"{"n":5}"#])
        );
        assert_eq!(take(none, 2).await, data(&[r#"{"status":"kafka down"}"#, r#"{"rounds":[]}"#]));
        assert_eq!(take(all, 7).await.len(), 7);
        let replayed = events.subscribe(events.reserve(None).expect("a slot"), Some(1), None, 1);
        let replay: Vec<_> = [next(&replayed).await, next(&replayed).await, next(&replayed).await].into();
        assert!(replay[0].contains("kafka down") && replay[1].contains("rounds") && replay[2].contains(r#"{"n":5}"#));
    }

    #[tokio::test]
    async fn a_new_client_gets_the_current_rounds_and_a_reconnecting_one_not_twice() {
        let events = Events::new(10, 0);
        events.publish_round(br#"{"rounds":[1]}"#);
        events.publish_round(br#"{"rounds":[2]}"#);
        events.publish_results(b"{\"total\":1}");
        let late = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        let frames = [next(&late).await, next(&late).await];
        assert!(frames[0].ends_with("event: round\ndata: {\"rounds\":[2]}\n\n"), "the newest rounds: {frames:?}");
        assert!(frames[1].contains("results"), "{frames:?}");
        let rounds_id = events.shared.hub().rounds.as_ref().expect("rounds").id;
        let again = events.subscribe(events.reserve(None).expect("a slot"), Some(rounds_id - 1), None, usize::MAX);
        let frames = [next(&again).await, next(&again).await];
        assert!(frames[0].contains("[2]") && frames[1].contains("results"), "the replayed rounds once: {frames:?}");
        events.forget();
        let after = events.subscribe(events.reserve(None).expect("a slot"), None, None, usize::MAX);
        let shutdown = CancellationToken::new();
        let nothing = tokio::time::timeout(Duration::from_millis(100), after.next(&shutdown)).await;
        assert!(nothing.is_err(), "forgotten rounds are not sent: {:?}", nothing.map(text));
    }
}
