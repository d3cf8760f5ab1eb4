//! The gRPC front door of the producer ([`crate::producer`], `bandvote grpc-producer`): the
//! `bandvote.v1.VoteService` server that writes each vote to the queue and answers only after the
//! queue acknowledged it. The standard gRPC health service and `/healthz`, `/readyz`, `/metrics`
//! share its port.

use std::sync::Arc;

use axum::Router;
use bandvote_core::{IngestPath, TraceContext, Vote, VoteId, VoteMessage, trace::TRACEPARENT};
use bandvote_proto::{
    FIELD_METADATA,
    v1::{
        SubmitVoteRequest, SubmitVoteResponse, SubmitVotesRequest, SubmitVotesResponse, VoteOutcome,
        vote_service_server::{VoteService, VoteServiceServer},
    },
};
use bandvote_queue::{QueueError, VoteQueue};
use tonic::{Request, Response, Status, metadata::MetadataValue};
use tracing::Instrument;

use crate::rounds::RoundGate;

/// The `VoteService` implementation over any [`VoteQueue`]; the http-producer's `POST
/// /votes/batch` takes the same messages.
pub struct VoteServer {
    queue: Arc<dyn VoteQueue>,
    path: IngestPath,
    rounds: Option<Arc<RoundGate>>,
}

/// Votes one `SubmitVotes` call may carry.
pub const MAX_VOTES_PER_CALL: usize = 512;

impl VoteServer {
    /// A server writing to `queue` the votes of `path`; with `rounds`, only for a round that could
    /// take them now ([`RoundGate::hands_over`]).
    pub fn new(queue: Arc<dyn VoteQueue>, path: IngestPath, rounds: Option<Arc<RoundGate>>) -> Self {
        Self { queue, path, rounds }
    }

    /// Queues every vote of `votes` at once, as if each came in its own call; their outcomes in
    /// their order. Refused whole past [`MAX_VOTES_PER_CALL`].
    pub async fn submit_all(&self, votes: Vec<SubmitVoteRequest>) -> Result<Vec<VoteOutcome>, Status> {
        if votes.len() > MAX_VOTES_PER_CALL {
            return Err(Status::invalid_argument(format!("at most {MAX_VOTES_PER_CALL} votes per call")));
        }
        Ok(futures::future::join_all(votes.into_iter().map(|mut vote| {
            let traceparent = std::mem::take(&mut vote.traceparent);
            async move {
                let trace = TraceContext::continue_from(Some(traceparent.as_bytes()).filter(|t| !t.is_empty()));
                outcome(self.submit(vote, trace).await)
            }
        }))
        .await)
    }

    /// Validates one vote and queues it; its id once the queue acknowledged it.
    async fn submit(&self, request: SubmitVoteRequest, trace: TraceContext) -> Result<String, Status> {
        let proto = request.vote.ok_or_else(|| Status::invalid_argument("vote is required"))?;
        // The gateway validated already; the producer does not trust its callers.
        // An empty year or rank is one left out; the gateway gave a ballot vote its entry's year.
        let vote = Vote::from_strings(&proto.name, &proto.album, &proto.year, &proto.rank)
            .and_then(Vote::require_year)
            .map_err(|e| invalid(e.message, e.field.unwrap_or("vote")))?;
        let id = if request.client_key {
            VoteId::from_client_key(&request.id).map_err(|e| invalid(e.to_string(), "id"))?
        } else if request.id.is_empty() {
            VoteId::generate()
        } else {
            VoteId::from_parts(request.id, false)
        };
        let received_at = match bandvote_core::time::parse(&request.received_at) {
            Some(at) => bandvote_core::time::format(at),
            None => bandvote_core::time::now(),
        };
        let round = crate::rounds::stamped(&request.round).ok_or_else(|| invalid("invalid round id", "round"))?;
        if let Some(rounds) = &self.rounds {
            rounds.hands_over(&round)?;
        }
        let message = VoteMessage::new(&id, vote, self.path, received_at, round);
        let span = crate::trace::vote_span(self.path, Some(&message.id), &trace);
        let queued = self.queue.enqueue_traced(&message, id.is_client_supplied(), trace).instrument(span.clone()).await;
        span.in_scope(|| match queued {
            Ok(()) => {
                tracing::debug!("vote queued");
                Ok(message.id)
            }
            Err(error) => {
                tracing::debug!(%error, "vote not queued");
                Err(match error {
                    QueueError::Unavailable(cause) => Status::unavailable(cause),
                    QueueError::Refused(cause) => Status::internal(cause),
                })
            }
        })
    }
}

/// A vote's outcome in a `SubmitVotes` answer.
fn outcome(result: Result<String, Status>) -> VoteOutcome {
    match result {
        Ok(id) => VoteOutcome { id, ..VoteOutcome::default() },
        Err(status) => VoteOutcome {
            id: String::new(),
            code: status.code() as i32,
            message: status.message().to_owned(),
            field: status.metadata().get(FIELD_METADATA).and_then(|f| f.to_str().ok()).unwrap_or_default().to_owned(),
        },
    }
}

fn invalid(message: impl Into<String>, field: &'static str) -> Status {
    let mut status = Status::invalid_argument(message);
    status.metadata_mut().insert(FIELD_METADATA, MetadataValue::from_static(field));
    status
}

#[tonic::async_trait]
impl VoteService for VoteServer {
    async fn submit_vote(&self, request: Request<SubmitVoteRequest>) -> Result<Response<SubmitVoteResponse>, Status> {
        let trace = TraceContext::continue_from(request.metadata().get(TRACEPARENT).map(|value| value.as_bytes()));
        let id = self.submit(request.into_inner(), trace).await?;
        Ok(Response::new(SubmitVoteResponse { id }))
    }

    async fn submit_votes(
        &self,
        request: Request<SubmitVotesRequest>,
    ) -> Result<Response<SubmitVotesResponse>, Status> {
        let outcomes = self.submit_all(request.into_inner().votes).await?;
        Ok(Response::new(SubmitVotesResponse { outcomes }))
    }
}

/// The gRPC front door over `queue` (for the rounds `rounds` can take): `bandvote.v1.VoteService`
/// and the standard gRPC health service.
pub async fn routes(queue: Arc<dyn VoteQueue>, rounds: Option<Arc<RoundGate>>) -> Router {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<VoteServiceServer<VoteServer>>().await;
    tonic::service::Routes::new(VoteServiceServer::new(VoteServer::new(queue, IngestPath::Grpc, rounds)))
        .add_service(health_service)
        .into_axum_router()
}
