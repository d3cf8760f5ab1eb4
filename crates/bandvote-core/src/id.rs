//! Vote ids: a client's `Idempotency-Key`, or a generated UUIDv7.

use std::fmt;

/// Longest accepted `Idempotency-Key`, in characters.
pub const MAX_KEY_CHARS: usize = 128;

/// The id of a vote: the Kafka key, the Mongo `_id` and the id answered to the client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VoteId {
    value: String,
    client_supplied: bool,
}

/// An `Idempotency-Key` that breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1-{MAX_KEY_CHARS} characters of A-Z a-z 0-9 . _ : -")]
pub struct IdError;

impl VoteId {
    /// Validates a client's `Idempotency-Key`; the vote is then deduplicated by this key.
    pub fn from_client_key(key: &str) -> Result<Self, IdError> {
        let valid = !key.is_empty()
            && key.len() <= MAX_KEY_CHARS
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid { Ok(Self { value: key.to_owned(), client_supplied: true }) } else { Err(IdError) }
    }

    /// A fresh, time-ordered id (UUIDv7) for a vote sent without a key.
    pub fn generate() -> Self {
        Self { value: uuid::Uuid::now_v7().to_string(), client_supplied: false }
    }

    /// Rebuilds an id carried by a message; `client_supplied` says whether it came from a key.
    pub fn from_parts(value: String, client_supplied: bool) -> Self {
        Self { value, client_supplied }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Whether the client chose this id (so that retries with the same key are counted once).
    pub fn is_client_supplied(&self) -> bool {
        self.client_supplied
    }
}

impl fmt::Display for VoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_keys_of_the_allowed_alphabet() {
        for key in ["a", "retry-1", "A.b_c:d-E9", &"k".repeat(MAX_KEY_CHARS)] {
            let id = VoteId::from_client_key(key).expect("valid key");
            assert_eq!(id.as_str(), key);
            assert!(id.is_client_supplied());
        }
    }

    #[test]
    fn rejects_other_keys() {
        for key in ["", "has space", "slash/", "ñ", "a\0b", &"k".repeat(MAX_KEY_CHARS + 1)] {
            assert_eq!(VoteId::from_client_key(key), Err(IdError), "{key:?}");
        }
    }

    #[test]
    fn generated_ids_are_uuid_v7_and_distinct() {
        let a = VoteId::generate();
        let b = VoteId::generate();
        assert_ne!(a, b);
        assert!(!a.is_client_supplied());
        let parsed = uuid::Uuid::parse_str(a.as_str()).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 7);
    }
}
