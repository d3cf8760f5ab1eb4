//! `bandvote load`: an open-model load generator for the vote endpoints.
//!
//! Votes are sent on a fixed schedule (a constant or stepped arrival rate) whatever the server does,
//! and each vote's latency is measured from the moment the schedule said it should be sent, not from
//! when it actually went out: a server that stalls for a second shows a second of latency for every
//! vote due during the stall (no coordinated omission). Latencies go into HDR histograms.
//!
//! With `verify`, the run's accepted votes are compared with the counts the API reports. With
//! phones ([`phones`]), live-stream clients follow a round ([`show`]) through the run.

pub mod phones;
mod report;
mod run;
pub mod show;
mod source;
mod verify;

pub use report::{Breakdown, Latency, Report, Second, write_html};
pub use run::{LoadConfig, run};
pub use source::VoteSource;
pub use verify::{Counts, Difference, Verification, fetch_counts, verify};
