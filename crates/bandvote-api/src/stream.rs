//! The one reader behind `GET /api/stream`: every 250 ms (only while someone listens) it reads the
//! counters and the newest log entries once, and broadcasts what changed to every client.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{LogEntry, Results, Store};

/// How often the reader looks for changes (also the fastest `results` rate per client).
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Most log entries sent in one interval; beyond that, clients get the newest ones.
const MAX_LOGS_PER_TICK: i64 = 500;

/// One event of the stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// The counters changed: `event: results`.
    Results(Arc<Results>),
    /// A vote was logged: `event: log`.
    Log(Arc<LogEntry>),
    /// A dependency stopped answering (or answers again): `event: status`.
    Status(Arc<String>),
}

/// The fan-out of the shared reader.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Events {
    /// An empty fan-out.
    pub fn new() -> Self {
        Self { sender: broadcast::channel(4096).0 }
    }

    /// A new client's receiver.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Clients connected right now.
    pub fn listeners(&self) -> usize {
        self.sender.receiver_count()
    }

    fn send(&self, event: Event) {
        // No receivers is not an error: nobody is listening.
        let _ = self.sender.send(event);
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the reader until `shutdown`.
pub async fn run_reader(store: Arc<Store>, events: Events, shutdown: CancellationToken) {
    let mut last_results: Option<Results> = None;
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
        if events.listeners() == 0 {
            last_results = None;
            since = chrono::Utc::now().timestamp_millis();
            sent_at_since.clear();
            continue;
        }
        let (results, logs) = tokio::join!(store.results(), store.logs_since(since, MAX_LOGS_PER_TICK));
        match (&results, &logs) {
            (Ok(_), Ok(_)) if !healthy => {
                healthy = true;
                events.send(Event::Status(Arc::new("ok".into())));
            }
            (Err(error), _) | (_, Err(error)) if healthy => {
                healthy = false;
                tracing::warn!(%error, "stream: a store is not answering");
                events.send(Event::Status(Arc::new(error.to_string())));
            }
            _ => {}
        }
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
                events.send(Event::Log(Arc::new(entry)));
            }
        }
        if let Ok(results) = results
            && last_results.as_ref() != Some(&results)
        {
            events.send(Event::Results(Arc::new(results.clone())));
            last_results = Some(results);
        }
    }
}
