//! A gateway's calls to its producer. At most a fixed number of calls are in flight; the votes
//! that arrive meanwhile wait and go together in the next call. At a low rate each vote goes at
//! once in a call of its own; at a high rate one call, one HTTP/2 stream and one wake-up of each
//! side serve many votes. The gRPC gateway calls `SubmitVotes` ([`Calls::grpc`]); the wasm
//! gateway's host posts the same messages to the http-producer's `POST /votes/batch` (a
//! [`Carrier`] of its own).
//!
//! A vote waits for a call at most [`MAX_WAIT`]; one that waited longer (the calls in flight are
//! stuck behind a slow queue) is answered `UNAVAILABLE` without being sent. So a vote is either
//! sent within `MAX_WAIT` of its arrival, and the producer answers it within its produce timeout,
//! before the handler's deadline (the produce timeout plus a margin above `MAX_WAIT`), or not sent
//! at all: a 503 never hides a vote that is queued later.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bandvote_proto::{
    FIELD_METADATA,
    v1::{
        SubmitVoteRequest, SubmitVotesRequest, Vote as ProtoVote, VoteOutcome, vote_service_client::VoteServiceClient,
    },
};
use bandvote_runtime::{http::ApiError, metrics as names};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::{Code, Status, metadata::MetadataValue, transport::Channel};

use bandvote_core::TraceContext;

use crate::{edge::AcceptedVote, grpc_producer::MAX_VOTES_PER_CALL};

/// Votes waiting for a call at most; a handler finding the queue full waits for room.
const QUEUE: usize = 16 * MAX_VOTES_PER_CALL;

/// The longest a vote waits for a call; keep the gateway's request timeout above the producer's
/// produce timeout plus this.
pub const MAX_WAIT: Duration = Duration::from_millis(500);

/// A vote waiting for its call, and where its outcome goes.
struct Pending {
    vote: SubmitVoteRequest,
    /// The last moment the vote may leave in a call: [`MAX_WAIT`] after its arrival, or the
    /// handler's deadline if that comes first.
    send_by: Instant,
    reply: oneshot::Sender<Result<String, Status>>,
}

impl Pending {
    /// Answers the vote without sending it.
    fn refuse(self) {
        let status = Status::unavailable("no call to the producer was free in time; the vote was not sent");
        fail(vec![self.reply], &status);
    }
}

/// Answers every vote of `replies` with `status`.
fn fail(replies: Vec<oneshot::Sender<Result<String, Status>>>, status: &Status) {
    for reply in replies {
        // The handler may have stopped waiting; nothing else is owed to it.
        drop(reply.send(Err(status.clone())));
    }
}

/// One call in flight: the outcomes of its votes in their order, or the status of the whole call
/// (every vote then gets it).
pub type Call = Pin<Box<dyn Future<Output = Result<Vec<VoteOutcome>, Status>> + Send>>;

/// Makes one call to the producer with several votes.
pub trait Carrier: Send + Sync + 'static {
    /// Sends `votes` in one call.
    fn carry(&self, votes: Vec<SubmitVoteRequest>) -> Call;
}

/// `SubmitVotes` calls over gRPC channels, round-robin, each with a timeout.
struct Grpc {
    channels: Arc<[Channel]>,
    next: AtomicUsize,
    timeout: Duration,
    secret: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Carrier for Grpc {
    fn carry(&self, votes: Vec<SubmitVoteRequest>) -> Call {
        metrics::counter!(names::GRPC_CALLS).increment(1);
        let channel = self.channels[self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len()].clone();
        let mut request = tonic::Request::new(SubmitVotesRequest { votes });
        request.set_timeout(self.timeout);
        if let Some(secret) = &self.secret {
            request.metadata_mut().insert(crate::ingest_secret::SECRET_HEADER, secret.clone());
        }
        Box::pin(async move { Ok(VoteServiceClient::new(channel).submit_votes(request).await?.into_inner().outcomes) })
    }
}

/// Hands votes to the calls; cloned into every handler. The task making the calls ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Calls {
    queue: mpsc::Sender<Pending>,
}

impl Calls {
    /// Starts the task that makes `SubmitVotes` calls over `channels` (round-robin), at most
    /// `in_flight` at once, each with `timeout` (and `secret`, which the producers may require).
    pub fn grpc(
        channels: Arc<[Channel]>,
        in_flight: usize,
        timeout: Duration,
        secret: Option<crate::ingest_secret::IngestSecret>,
    ) -> Self {
        let secret = secret.and_then(|s| MetadataValue::try_from(s.header().as_bytes()).ok()).map(|mut value| {
            value.set_sensitive(true);
            value
        });
        Self::start(Arc::new(Grpc { channels, next: AtomicUsize::new(0), timeout, secret }), in_flight)
    }

    /// Starts the task that makes the calls with `carrier`, at most `in_flight` at once.
    pub fn start(carrier: Arc<dyn Carrier>, in_flight: usize) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(run(waiting, carrier, Arc::new(Semaphore::new(in_flight.max(1)))));
        Self { queue }
    }

    /// Sends `vote` in the next call and waits for its outcome: its id once queued, or the status
    /// `SubmitVote` would have answered. The caller stops waiting at `deadline` (and answers 503);
    /// a vote that has not left in a call by then, or within [`MAX_WAIT`], is not sent.
    pub async fn submit(&self, vote: SubmitVoteRequest, deadline: Instant) -> Result<String, Status> {
        let (reply, outcome) = oneshot::channel();
        let send_by = deadline.min(Instant::now() + MAX_WAIT);
        self.queue
            .send(Pending { vote, send_by, reply })
            .await
            .map_err(|_| Status::unavailable("the gateway is shutting down"))?;
        outcome.await.map_err(|_| Status::unavailable("the call carrying the vote ended without its outcome"))?
    }
}

/// Takes the waiting votes into a call whenever fewer than the bound are in flight.
async fn run(mut waiting: mpsc::Receiver<Pending>, carrier: Arc<dyn Carrier>, slots: Arc<Semaphore>) {
    while let Some(first) = waiting.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let now = Instant::now();
        let mut batch = Vec::with_capacity((waiting.len() + 1).min(MAX_VOTES_PER_CALL));
        let mut taken = Some(first);
        while let Some(pending) = taken.take() {
            if pending.send_by > now {
                batch.push(pending);
            } else {
                pending.refuse();
            }
            if batch.len() < MAX_VOTES_PER_CALL {
                taken = waiting.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        // The call runs in its own task: a client that hangs up does not cancel a vote already on
        // its way to the queue (its retry with the same key is then counted once).
        tokio::spawn(call(Arc::clone(&carrier), batch, slot));
    }
}

/// One call; every vote of `batch` gets its outcome.
async fn call(carrier: Arc<dyn Carrier>, batch: Vec<Pending>, _slot: OwnedSemaphorePermit) {
    let (votes, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|pending| (pending.vote, pending.reply)).unzip();
    match carrier.carry(votes).await {
        Ok(outcomes) => {
            if outcomes.len() != replies.len() {
                let status = Status::internal(format!(
                    "the producer answered {} outcomes for {} votes",
                    outcomes.len(),
                    replies.len()
                ));
                return fail(replies, &status);
            }
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // The handler may have stopped waiting (its deadline came during the call).
                drop(reply.send(result(outcome)));
            }
        }
        Err(status) => fail(replies, &status),
    }
}

/// A vote's outcome as `SubmitVote` would have answered it.
fn result(outcome: VoteOutcome) -> Result<String, Status> {
    if outcome.code == Code::Ok as i32 {
        return Ok(outcome.id);
    }
    let mut status = Status::new(Code::from_i32(outcome.code), outcome.message);
    if let Ok(field) = MetadataValue::try_from(outcome.field.as_str())
        && !outcome.field.is_empty()
    {
        status.metadata_mut().insert(FIELD_METADATA, field);
    }
    Err(status)
}

/// What a gateway sends the producer for `accepted`, received now, in `round` (empty: `default`),
/// traced by `trace`.
pub fn vote_request(accepted: AcceptedVote, round: String, trace: Option<&TraceContext>) -> SubmitVoteRequest {
    SubmitVoteRequest {
        vote: Some(ProtoVote {
            name: accepted.vote.name,
            album: accepted.vote.album,
            year: accepted.vote.year.unwrap_or_default(),
            rank: accepted.vote.rank.unwrap_or_default(),
        }),
        id: accepted.id.as_str().to_owned(),
        client_key: accepted.id.is_client_supplied(),
        received_at: bandvote_core::time::now(),
        round,
        traceparent: trace.map(|trace| trace.traceparent().as_str().to_owned()).unwrap_or_default(),
    }
}

/// `Retry-After` of a vote the producer did not queue.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The HTTP answer to a vote whose outcome is `status`, from `producer`.
pub fn status_to_error(status: &Status, producer: &str) -> ApiError {
    match status.code() {
        Code::InvalidArgument => ApiError::bad_request(status.message(), field_of(status)),
        // The producer's rounds say this round could not take the vote now.
        Code::FailedPrecondition => ApiError::client(axum::http::StatusCode::CONFLICT, "voting is closed", None),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted | Code::Aborted => {
            ApiError::unavailable(format!("{producer}: {}", status.message()), RETRY_AFTER)
        }
        _ => ApiError::internal(format!("{producer}: {status}")),
    }
}

/// The producer names the field at fault in the `field` metadata entry.
fn field_of(status: &Status) -> Option<&'static str> {
    match status.metadata().get(FIELD_METADATA)?.to_str().ok()? {
        "name" => Some("name"),
        "album" => Some("album"),
        "year" => Some("year"),
        "rank" => Some("rank"),
        "id" => Some("Idempotency-Key"),
        "round" => Some("round"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bandvote_proto::v1::{
        SubmitVoteResponse, SubmitVotesResponse,
        vote_service_server::{VoteService, VoteServiceServer},
    };
    use tonic::{Request, Response};

    use super::*;

    /// A producer that records the ids of every call's votes, tells when a call arrived, and
    /// answers each call after the next of `delays` (at once when none is left).
    struct Recorder {
        calls: Arc<Mutex<Vec<Vec<String>>>>,
        arrived: mpsc::UnboundedSender<()>,
        delays: Mutex<std::collections::VecDeque<Duration>>,
    }

    #[tonic::async_trait]
    impl VoteService for Recorder {
        async fn submit_vote(&self, _: Request<SubmitVoteRequest>) -> Result<Response<SubmitVoteResponse>, Status> {
            Err(Status::unimplemented("the gateway sends SubmitVotes"))
        }

        async fn submit_votes(
            &self,
            request: Request<SubmitVotesRequest>,
        ) -> Result<Response<SubmitVotesResponse>, Status> {
            let ids: Vec<String> = request.into_inner().votes.into_iter().map(|vote| vote.id).collect();
            self.calls.lock().expect("calls").push(ids.clone());
            self.arrived.send(()).expect("the test listens");
            let delay = self.delays.lock().expect("delays").pop_front().unwrap_or_default();
            tokio::time::sleep(delay).await;
            let outcomes = ids.into_iter().map(|id| VoteOutcome { id, ..VoteOutcome::default() }).collect();
            Ok(Response::new(SubmitVotesResponse { outcomes }))
        }
    }

    fn vote(id: &str) -> SubmitVoteRequest {
        SubmitVoteRequest { id: id.into(), ..SubmitVoteRequest::default() }
    }

    /// Submits `id` in a task of its own, with a handler deadline 5 s away.
    fn submit(gateway: &Calls, id: &'static str) -> tokio::task::JoinHandle<Result<String, Status>> {
        let gateway = gateway.clone();
        tokio::spawn(async move { gateway.submit(vote(id), Instant::now() + Duration::from_secs(5)).await })
    }

    #[tokio::test]
    async fn votes_wait_for_a_free_call_and_go_together_unless_their_handler_gave_up_or_they_waited_too_long() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (arrived, mut arrivals) = mpsc::unbounded_channel();
        // The first call takes 300 ms (below MAX_WAIT), the second none, the third twice MAX_WAIT.
        let delays = [Duration::from_millis(300), Duration::ZERO, 2 * MAX_WAIT];
        let recorder = Recorder { calls: Arc::clone(&calls), arrived, delays: Mutex::new(delays.into()) };
        let router = tonic::service::Routes::new(VoteServiceServer::new(recorder)).into_axum_router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let channel = tonic::transport::Endpoint::from_shared(endpoint).expect("endpoint").connect_lazy();
        let gateway = Calls::grpc(Arc::new([channel]), 1, Duration::from_secs(5), None);

        let a = submit(&gateway, "a");
        arrivals.recv().await.expect("the first call arrived");
        // The one call is in flight: these wait. The handler of `b` gives up before it ends.
        let deadline = Instant::now() + Duration::from_millis(100);
        let gave_up = tokio::time::timeout_at(deadline.into(), gateway.submit(vote("b"), deadline)).await;
        assert!(gave_up.is_err(), "b had no free call within its deadline");
        let rest = ["c", "d", "e"].map(|id| submit(&gateway, id));
        assert_eq!(a.await.expect("joined").expect("queued"), "a");
        for (task, id) in rest.into_iter().zip(["c", "d", "e"]) {
            assert_eq!(task.await.expect("joined").expect("queued"), id);
        }

        // A vote that waits longer than MAX_WAIT for a call is answered UNAVAILABLE, not sent,
        // however long its handler would wait.
        let g = submit(&gateway, "g");
        arrivals.recv().await.expect("the second call arrived");
        arrivals.recv().await.expect("the third call arrived");
        let refused = gateway.submit(vote("f"), Instant::now() + Duration::from_secs(5)).await.expect_err("not sent");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert_eq!(g.await.expect("joined").expect("queued"), "g");

        let mut made = calls.lock().expect("calls").clone();
        made.iter_mut().for_each(|call| call.sort());
        assert_eq!(made, [vec!["a"], vec!["c", "d", "e"], vec!["g"]], "b and f were never sent");
    }

    #[test]
    fn an_outcome_becomes_the_answer_submit_vote_would_give() {
        let queued = VoteOutcome { id: "v-1".into(), ..VoteOutcome::default() };
        assert_eq!(result(queued).ok().as_deref(), Some("v-1"));
        let invalid = VoteOutcome {
            code: Code::InvalidArgument as i32,
            message: "year must be a number".into(),
            field: "year".into(),
            ..VoteOutcome::default()
        };
        let status = result(invalid).expect_err("refused");
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "year must be a number"));
        assert_eq!(status.metadata().get("field").and_then(|f| f.to_str().ok()), Some("year"));
        let unavailable =
            VoteOutcome { code: Code::Unavailable as i32, message: "queue down".into(), ..VoteOutcome::default() };
        let status = result(unavailable).expect_err("not queued");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.metadata().get("field").is_none());
    }
}
