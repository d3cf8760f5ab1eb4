//! The ingest services of bandvote: where votes enter the system.
//! - [`edge`]: the HTTP edge every vote endpoint shares: media type, body size, JSON validation and
//!   `Idempotency-Key`, each refused with the contract's 4xx and a JSON `{error, field}`;
//! - [`grpc_gateway`]: `POST /grpc/votes`, forwarding each vote over one long-lived gRPC channel;
//! - [`calls`]: a gateway's calls to its producer, the votes that arrive together in one call;
//! - [`producer`]: the service that writes votes to the queue and answers once they are
//!   acknowledged, with two front doors: [`grpc_producer`] (gRPC) and [`http_producer`] (`POST
//!   /votes` over plain HTTP for the WebAssembly guest);
//! - [`trace`]: the `vote` span of each request and the trace context it passes on;
//! - [`fairness`] and [`voter_jwt`]: the checks a vote passes before it is forwarded.
//! - [`names`]: the cap on distinct bands and albums when there is no contest list.
//! - [`rounds`]: the round a vote counts in, or `409` while voting is closed.

pub mod calls;
pub mod edge;
pub mod fairness;
pub mod grpc_gateway;
pub mod grpc_producer;
pub mod http_producer;
pub mod ingest_secret;
pub mod names;
pub mod producer;
pub mod rounds;
pub mod trace;
pub mod voter_jwt;
