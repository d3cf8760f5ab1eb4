//! The queue message: one accepted vote on its way to the consumers.

use serde::{Deserialize, Serialize};

use crate::{Vote, VoteId};

/// The schema version written into every message.
pub const SCHEMA_VERSION: u32 = 1;

/// Which ingest path accepted a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestPath {
    /// `POST /grpc/votes`: HTTP gateway, then gRPC to the producer.
    Grpc,
    /// `POST /wasm/votes`: the WebAssembly guest, then HTTP to the producer.
    Wasm,
}

impl IngestPath {
    /// The path's name as it appears in answers, messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Wasm => "wasm",
        }
    }

    /// Parses `grpc` or `wasm`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "grpc" => Some(Self::Grpc),
            "wasm" => Some(Self::Wasm),
            _ => None,
        }
    }
}

/// The JSON value of a message on the `votes` topic: `{"v": 1, id, name, album, year, rank, path,
/// received_at, round}` (`round` absent in messages written before rounds: `default`). Whether the id is a client's idempotency key travels beside it (a Kafka header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteMessage {
    /// Schema version, always [`SCHEMA_VERSION`].
    pub v: u32,
    /// The vote id (also the message key).
    pub id: String,
    /// Band.
    pub name: String,
    /// Album.
    pub album: String,
    /// Year, as a string.
    pub year: String,
    /// Rank, as a string; `null` when the voter gave none.
    #[serde(default)]
    pub rank: Option<String>,
    /// The ingest path.
    pub path: IngestPath,
    /// When the gateway received the vote (RFC 3339, ms, `Z`).
    pub received_at: String,
    /// The round that was open when the vote was received.
    #[serde(default = "default_round")]
    pub round: String,
}

fn default_round() -> String {
    crate::round::DEFAULT_ROUND.to_owned()
}

/// A message that is not a vote of a known schema.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON of the message's shape.
    #[error("message is not a vote message: {0}")]
    Shape(#[from] serde_json::Error),
    /// A schema version this build does not know.
    #[error("unknown message schema version {0}")]
    Version(u32),
    /// The vote inside fails validation.
    #[error("message carries an invalid vote: {0}")]
    Vote(#[from] crate::VoteError),
    /// The id is empty or the timestamp unreadable.
    #[error("message has an invalid {0}")]
    Field(&'static str),
}

impl VoteMessage {
    /// Builds the message for an accepted vote, which has its year (a vote without one is refused at
    /// the edge, or given its ballot entry's).
    pub fn new(id: &VoteId, vote: Vote, path: IngestPath, received_at: String, round: String) -> Self {
        Self {
            v: SCHEMA_VERSION,
            id: id.as_str().to_owned(),
            name: vote.name,
            album: vote.album,
            year: vote.year.unwrap_or_default(),
            rank: vote.rank,
            path,
            received_at,
            round,
        }
    }

    /// Serialises the message value.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and re-validates a message value; anything else is an error (the message goes to the
    /// dead-letter topic).
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let message: Self = serde_json::from_slice(bytes)?;
        if message.v != SCHEMA_VERSION {
            return Err(MessageError::Version(message.v));
        }
        if message.id.is_empty() {
            return Err(MessageError::Field("id"));
        }
        if crate::time::parse(&message.received_at).is_none() {
            return Err(MessageError::Field("received_at"));
        }
        if !crate::round::is_valid_id(&message.round) {
            return Err(MessageError::Field("round"));
        }
        Vote::from_strings(&message.name, &message.album, &message.year, message.rank.as_deref().unwrap_or(""))?
            .require_year()?;
        Ok(message)
    }

    /// The vote this message carries.
    pub fn vote(&self) -> Vote {
        Vote {
            name: self.name.clone(),
            album: self.album.clone(),
            year: Some(self.year.clone()),
            rank: self.rank.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_with_version_one() {
        let vote = Vote::from_strings("Bohemia Suburbana", "Mis palabras", "1997", "9.5").expect("valid");
        let id = VoteId::from_client_key("k-1").expect("valid");
        let message = VoteMessage::new(&id, vote, IngestPath::Grpc, "2026-11-26T16:04:05.123Z".into(), "final".into());
        let json: serde_json::Value = serde_json::from_slice(&message.to_json()).expect("json");
        assert_eq!(json["v"], 1);
        assert_eq!(json["path"], "grpc");
        assert_eq!(json["round"], "final");
        assert_eq!(VoteMessage::decode(&message.to_json()).expect("decodes"), message);
    }

    #[test]
    fn rejects_what_is_not_a_vote() {
        assert!(VoteMessage::decode(b"not json").is_err());
        assert!(VoteMessage::decode(br#"{"hello":"world"}"#).is_err());
        let v2 = br#"{"v":2,"id":"a","name":"n","album":"a","year":"1997","rank":"1","path":"grpc","received_at":"2026-11-26T16:04:05.123Z"}"#;
        assert!(matches!(VoteMessage::decode(v2), Err(MessageError::Version(2))));
        let bad_year = br#"{"v":1,"id":"a","name":"n","album":"a","year":"97","rank":"1","path":"grpc","received_at":"2026-11-26T16:04:05.123Z"}"#;
        assert!(matches!(VoteMessage::decode(bad_year), Err(MessageError::Vote(_))));
        let before_rounds = br#"{"v":1,"id":"a","name":"n","album":"a","year":"1997","rank":"1","path":"grpc","received_at":"2026-11-26T16:04:05.123Z"}"#;
        assert_eq!(VoteMessage::decode(before_rounds).expect("decodes").round, "default");
        let bad_round = br#"{"v":1,"id":"a","name":"n","album":"a","year":"1997","rank":"1","path":"grpc","received_at":"2026-11-26T16:04:05.123Z","round":"No Such"}"#;
        assert!(matches!(VoteMessage::decode(bad_round), Err(MessageError::Field("round"))));
        let no_year = br#"{"v":1,"id":"a","name":"n","album":"a","year":"","rank":null,"path":"grpc","received_at":"2026-11-26T16:04:05.123Z"}"#;
        assert!(matches!(VoteMessage::decode(no_year), Err(MessageError::Vote(_))));
    }

    #[test]
    fn a_vote_without_a_rank_has_a_null_rank() {
        let vote = Vote::from_strings("n", "a", "1997", "").expect("valid");
        let message = VoteMessage::new(
            &VoteId::generate(),
            vote,
            IngestPath::Wasm,
            "2026-11-26T16:04:05.123Z".into(),
            "default".into(),
        );
        let json: serde_json::Value = serde_json::from_slice(&message.to_json()).expect("json");
        assert_eq!(json["rank"], serde_json::Value::Null);
        assert_eq!(VoteMessage::decode(&message.to_json()).expect("decodes").rank, None);
    }
}
