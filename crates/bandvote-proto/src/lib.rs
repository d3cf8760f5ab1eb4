//! The gRPC schema of bandvote (`proto/vote.proto`, package `bandvote.v1`) and the tonic client and
//! server generated from it. The gateway of the gRPC path is the client, the producer the server.

#![allow(missing_docs)]

/// The gRPC metadata key naming the request field at fault in an `INVALID_ARGUMENT` status (the
/// `field` of the HTTP error body).
pub const FIELD_METADATA: &str = "field";

/// Generated code of package `bandvote.v1`.
pub mod v1 {
    tonic::include_proto!("bandvote.v1");
}
