//! Where the consumer reads: Kafka.

pub mod kafka;
