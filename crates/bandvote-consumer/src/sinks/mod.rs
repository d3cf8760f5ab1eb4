//! Where the consumer writes: Redis (live counters) and MongoDB (one log document per vote).

pub mod mongodb;
pub mod redis;
