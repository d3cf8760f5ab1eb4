//! Signed voter tokens: the API issues one per browser (`POST /api/voter-token`), the gateways
//! check it before a voter policy counts a vote, with a secret they share. A token names a random
//! voter and an expiry, signed with HMAC-SHA256: `v1.<voter>.<expires unix s>.<signature hex>`.
//! A token makes a browser's voter sticky (the same voter for every vote it sends), not unique:
//! whoever asks again gets another voter, which is why the API limits how many it issues per client.
//! [`normalise_voter`] is how a self-asserted voter id is counted.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;

/// A self-asserted voter id as a voter policy counts it: trimmed, NFC-normalised and lowercased,
/// so that `Alice`, `ALICE` and `alice` (in any Unicode normal form) are one voter.
pub fn normalise_voter(voter: &str) -> String {
    voter.trim().nfc().collect::<String>().to_lowercase().nfc().collect()
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error("the voter token is malformed")]
    Malformed,
    /// The signature does not match (another secret, or altered).
    #[error("the voter token is not valid")]
    Forged,
    /// Past its expiry.
    #[error("the voter token has expired")]
    Expired,
}

/// Issues and checks voter tokens with one secret.
#[derive(Clone)]
pub struct VoterTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for VoterTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoterTokens(..)")
    }
}

impl VoterTokens {
    /// Tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self { key: secret.to_vec() }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `voter` (letters, digits, `-`), valid until `expires` (Unix seconds).
    pub fn issue(&self, voter: &str, expires: i64) -> String {
        let payload = format!("v1.{voter}.{expires}");
        let signature: String = self.mac(&payload).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("{payload}.{signature}")
    }

    /// The voter a token names, if it is genuine and not expired at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<String, TokenError> {
        let (payload, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = payload.split('.');
        let (Some("v1"), Some(voter), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed);
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&signature[2 * i..2 * i + 2], 16).map_err(|_| TokenError::Malformed))
            .collect::<Result<_, _>>()?;
        // Constant-time comparison.
        self.mac(payload).verify_slice(&bytes).map_err(|_| TokenError::Forged)?;
        if expires < now {
            return Err(TokenError::Expired);
        }
        Ok(voter.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voter_ids_are_one_voter_whatever_their_case_or_normal_form() {
        let voter = normalise_voter("  Alice ");
        assert_eq!(voter, "alice");
        assert_eq!(normalise_voter("ALICE"), voter);
        // "José" precomposed (U+00E9) and decomposed (e + U+0301), in either case.
        assert_eq!(normalise_voter("Jos\u{e9}"), normalise_voter("JOSE\u{301}"));
        assert_eq!(normalise_voter("Jos\u{e9}"), "jos\u{e9}");
        assert_eq!(normalise_voter("\u{130}stanbul"), normalise_voter("i\u{307}stanbul"), "dotted capital I");
    }

    #[test]
    fn tokens_verify_only_with_their_secret_and_before_expiry() {
        let tokens = VoterTokens::new(b"secret");
        let token = tokens.issue("voter-1", 1_000);
        assert_eq!(tokens.verify(&token, 999), Ok("voter-1".to_owned()));
        assert_eq!(tokens.verify(&token, 1_001), Err(TokenError::Expired));
        assert_eq!(VoterTokens::new(b"other").verify(&token, 999), Err(TokenError::Forged));
        let altered = token.replacen("voter-1", "voter-2", 1);
        assert_eq!(tokens.verify(&altered, 999), Err(TokenError::Forged));
        let later = token.replacen(".1000.", ".9999.", 1);
        assert_eq!(tokens.verify(&later, 999), Err(TokenError::Forged));
        for bad in ["", "v1.x", "v2.a.1.00", "v1.a.b.c.d", "v1.a.notanumber.00"] {
            assert_eq!(tokens.verify(bad, 0), Err(TokenError::Malformed), "{bad}");
        }
    }
}
