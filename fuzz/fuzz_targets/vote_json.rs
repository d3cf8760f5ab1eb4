//! The vote parser on arbitrary bytes: it never panics, and every vote it accepts is a fixed point
//! (serialised and parsed again, it is the same vote).
#![no_main]

use bandvote_core::{MAX_BODY_BYTES, Vote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(vote) = Vote::parse_json(data) {
        assert!(data.len() <= MAX_BODY_BYTES);
        let again = Vote::parse_json(&serde_json::to_vec(&vote).expect("a vote serialises")).expect("still valid");
        assert_eq!(again, vote);
    }
});
