//! The vote domain of bandvote, shared by every service and by the WebAssembly guest.
//!
//! Pure code with no I/O, so that the native gateways and the `wasm32-wasip2` guest validate votes
//! with exactly the same rules:
//! - [`vote`]: the public payload `{name, album, year, rank}`, parsed and validated into a [`Vote`];
//! - [`counts`]: the `{total, bands, albums}` shape of every tally ([`Counts`]);
//! - [`id`]: vote ids, from a client's `Idempotency-Key` or generated (UUIDv7);
//! - [`message`]: the versioned queue message that carries an accepted vote to the consumers;
//! - [`round`]: the show's voting windows, their lifecycle and the store every replica reads;
//! - [`time`]: the one timestamp format used everywhere;
//! - [`trace`]: the W3C `traceparent` that lets one vote be followed from its request to its count;
//! - [`http`]: the media-type rule and the JSON error body of every vote endpoint.

pub mod counts;
pub mod http;
pub mod id;
pub mod merkle;
pub mod message;
pub mod round;
pub mod time;
pub mod trace;
pub mod vote;
pub mod voter_token;

pub use counts::Counts;
pub use id::{IdError, VoteId};
pub use message::{IngestPath, MessageError, VoteMessage};
pub use trace::TraceContext;
pub use vote::{MAX_BODY_BYTES, MAX_TEXT_CHARS, Vote, VoteError};
