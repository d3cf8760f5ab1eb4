//! The ingest services of bandvote: where votes enter the system.
//! - [`edge`]: the HTTP edge every vote endpoint shares: media type, body size, JSON validation and
//!   `Idempotency-Key`, each refused with the contract's 4xx and a JSON `{error, field}`;
//! - [`grpc_gateway`]: `POST /grpc/votes`, forwarding each vote over one long-lived gRPC channel;
//! - [`grpc_producer`]: the gRPC server that writes votes to the queue and answers once they are
//!   acknowledged;
//! - [`http_producer`]: `POST /votes` over plain HTTP for the WebAssembly guest, same guarantees.

pub mod edge;
pub mod fairness;
pub mod grpc_gateway;
pub mod grpc_producer;
pub mod http_producer;
mod producing;

pub use producing::queue_checks;
