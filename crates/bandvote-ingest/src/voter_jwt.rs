//! Voter JWTs (`--voter-jwt-key`): the show's login or identity provider signs a token per account;
//! the gateways verify it with the provider's public key and count the voter policy on its `sub`.
//! The algorithm follows from the key (Ed25519 → EdDSA, P-256 → ES256, RSA → RS256), never from the
//! token, so `alg: none` or an HMAC signed with the public key are refused. With an audience
//! configured a token must name it in `aud`; a token made to last longer than a maximum lifetime
//! (24 h by default) is refused.

use std::{path::Path, time::Duration};

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

/// Seconds of clock difference allowed between the identity provider and the gateways on `exp`
/// and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Longest lifetime of a voter token by default (`--voter-jwt-max-lifetime-hours`): a token the
/// provider made to last longer (a leaked one would vote for its whole life) is refused.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Longest `sub` accepted.
const MAX_SUBJECT_CHARS: usize = 256;

/// Why a voter JWT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT, or its claims are not what is required (`sub`, `exp`).
    #[error("the voter token is not a valid JWT with sub and exp")]
    Malformed,
    /// Signed with another algorithm than the key's (`none`, an HMAC).
    #[error("the voter token is signed with the wrong algorithm")]
    WrongAlgorithm,
    /// The signature does not match the key (forged or altered).
    #[error("the voter token's signature is not valid")]
    Forged,
    /// Past its `exp`.
    #[error("the voter token has expired")]
    Expired,
    /// Before its `nbf`, or for another audience (or none, when one is required).
    #[error("the voter token is not valid here or not yet")]
    NotForHere,
    /// Made to last longer than the maximum lifetime (`exp - iat`, or `exp - now` without `iat`).
    #[error("the voter token lasts longer than this show accepts")]
    TooLong,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    iat: Option<i64>,
}

/// Verifies voter JWTs with one public key.
pub struct VoterJwt {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: Duration,
}

impl std::fmt::Debug for VoterJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VoterJwt({:?})", self.validation.algorithms)
    }
}

impl VoterJwt {
    /// Reads a PEM public key (SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`); with
    /// `audience`, a token must carry an `aud` that names it. Tokens may last at most
    /// [`DEFAULT_MAX_LIFETIME`] ([`VoterJwt::with_max_lifetime`]).
    pub fn from_pem_file(path: &Path, audience: Option<&str>) -> anyhow::Result<Self> {
        let pem = std::fs::read(path).with_context(|| format!("cannot read the voter JWT key {}", path.display()))?;
        Self::from_pem(&pem, audience).with_context(|| format!("voter JWT key {}", path.display()))
    }

    /// See [`VoterJwt::from_pem_file`].
    pub fn from_pem(pem: &[u8], audience: Option<&str>) -> anyhow::Result<Self> {
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // An uncompressed P-256 point is 65 bytes (P-384: 97).
            anyhow::ensure!(
                key.try_get_as_bytes().is_ok_and(|point| point.len() == 65),
                "an EC key must be on the P-256 curve (ES256)"
            );
            (key, Algorithm::ES256)
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else {
            anyhow::bail!("expected a PEM public key: Ed25519 (EdDSA), P-256 (ES256) or RSA (RS256)");
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                // Without this a token with no `aud` at all would pass the audience check.
                validation.set_required_spec_claims(&["exp", "sub", "aud"]);
            }
            None => {
                validation.set_required_spec_claims(&["exp", "sub"]);
                validation.validate_aud = false;
            }
        }
        Ok(Self { key, validation, max_lifetime: DEFAULT_MAX_LIFETIME })
    }

    /// Refuses tokens made to last longer than `max_lifetime`.
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The voter a token names (its `sub`), if the token is genuine and current.
    pub fn verify(&self, token: &str) -> Result<String, JwtError> {
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => JwtError::Forged,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => JwtError::WrongAlgorithm,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature | ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => {
                JwtError::NotForHere
            }
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => JwtError::NotForHere,
            _ => JwtError::Malformed,
        })?;
        let Claims { sub, exp, iat } = data.claims;
        let start = iat.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let lifetime = u64::try_from(exp.saturating_sub(start)).unwrap_or(0);
        if lifetime > self.max_lifetime.as_secs() + LEEWAY_SECONDS {
            return Err(JwtError::TooLong);
        }
        if sub.is_empty() || sub.chars().count() > MAX_SUBJECT_CHARS || sub.chars().any(char::is_control) {
            return Err(JwtError::Malformed);
        }
        Ok(sub)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        child.stdin.take().expect("stdin").write_all(input).expect("written");
        let output = child.wait_with_output().expect("openssl output");
        assert!(output.status.success(), "openssl {args:?}");
        output.stdout
    }

    /// A fresh Ed25519 key pair: (private PEM, public PEM).
    fn key_pair() -> (Vec<u8>, Vec<u8>) {
        let private = openssl(&["genpkey", "-algorithm", "ed25519"], b"");
        let public = openssl(&["pkey", "-pubout"], &private);
        (private, public)
    }

    fn sign(private: &[u8], claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_ed_pem(private).expect("ed25519 key");
        encode(&Header::new(Algorithm::EdDSA), claims, &key).expect("signed")
    }

    #[test]
    fn genuine_current_tokens_name_their_subject() {
        let (private, public) = key_pair();
        let jwt = VoterJwt::from_pem(&public, None).expect("key");
        let sign = |claims: serde_json::Value| sign(&private, &claims);
        assert_eq!(jwt.verify(&sign(json!({"sub": "acct-1", "exp": now() + 60}))), Ok("acct-1".into()));
        let expired = sign(json!({"sub": "acct-1", "exp": now() - 3600}));
        assert_eq!(jwt.verify(&expired), Err(JwtError::Expired));
        assert_eq!(jwt.verify(&sign(json!({"sub": "acct-1"}))), Err(JwtError::Malformed), "exp is required");
        assert_eq!(jwt.verify(&sign(json!({"exp": now() + 60}))), Err(JwtError::Malformed), "sub is required");
        let (other, _) = key_pair();
        let forged = super::tests::sign(&other, &json!({"sub": "acct-1", "exp": now() + 60}));
        assert_eq!(jwt.verify(&forged), Err(JwtError::Forged), "signed with another key");
        assert_eq!(jwt.verify("not a token"), Err(JwtError::Malformed));
    }

    #[test]
    fn forged_altered_and_other_algorithms_are_refused() {
        let (private, pem) = key_pair();
        let jwt = VoterJwt::from_pem(&pem, None).expect("key");
        let token = sign(&private, &json!({"sub": "acct-1", "exp": now() + 60}));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        use base64_url as b64;
        parts[1] = b64::encode(&json!({"sub": "acct-2", "exp": now() + 60}).to_string());
        assert_eq!(jwt.verify(&parts.join(".")), Err(JwtError::Forged), "altered claims");
        let none = format!("{}.{}.", b64::encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        // `none` is not even an algorithm the parser knows.
        assert!(matches!(jwt.verify(&none), Err(JwtError::Malformed | JwtError::WrongAlgorithm)), "alg none");
        let hmac = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "acct-2", "exp": now() + 60}),
            &EncodingKey::from_secret(&pem).expect("hmac key"),
        )
        .expect("signed");
        assert_eq!(jwt.verify(&hmac), Err(JwtError::WrongAlgorithm));
    }

    #[test]
    fn an_audience_when_configured_must_match() {
        let (private, public) = key_pair();
        let jwt = VoterJwt::from_pem(&public, Some("the-show")).expect("key");
        let ok = sign(&private, &json!({"sub": "a", "exp": now() + 60, "aud": "the-show"}));
        assert_eq!(jwt.verify(&ok), Ok("a".into()));
        let other = sign(&private, &json!({"sub": "a", "exp": now() + 60, "aud": "another-app"}));
        assert_eq!(jwt.verify(&other), Err(JwtError::NotForHere));
    }

    #[test]
    fn an_audience_when_configured_is_required() {
        let (private, public) = key_pair();
        let jwt = VoterJwt::from_pem(&public, Some("the-show")).expect("key");
        let without = sign(&private, &json!({"sub": "a", "exp": now() + 60}));
        assert_eq!(jwt.verify(&without), Err(JwtError::NotForHere), "a token without aud");
        let unchecked = VoterJwt::from_pem(&public, None).expect("key");
        assert_eq!(unchecked.verify(&without), Ok("a".into()), "no audience configured");
    }

    #[test]
    fn tokens_made_to_last_longer_than_the_maximum_are_refused() {
        let (private, public) = key_pair();
        let jwt = VoterJwt::from_pem(&public, None).expect("key");
        let sign = |claims: serde_json::Value| sign(&private, &claims);
        let day = 24 * 3600;
        let century = sign(json!({"sub": "a", "exp": now() + 100 * 365 * day}));
        assert_eq!(jwt.verify(&century), Err(JwtError::TooLong), "exp a century ahead, no iat");
        let long = sign(json!({"sub": "a", "iat": now() - 60, "exp": now() + day}));
        assert_eq!(jwt.verify(&long), Err(JwtError::TooLong), "exp - iat is a day and a minute");
        let day_long = sign(json!({"sub": "a", "iat": now(), "exp": now() + day}));
        assert_eq!(jwt.verify(&day_long), Ok("a".into()), "a day exactly");
        let hours = sign(json!({"sub": "a", "exp": now() + 23 * 3600}));
        assert_eq!(jwt.verify(&hours), Ok("a".into()), "no iat: exp - now");
        let short = VoterJwt::from_pem(&public, None).expect("key").with_max_lifetime(Duration::from_secs(3600));
        assert_eq!(short.verify(&hours), Err(JwtError::TooLong), "--voter-jwt-max-lifetime-hours 1");
        assert!(JwtError::TooLong.to_string().contains("voter token"));
    }

    #[test]
    fn keys_other_than_ed25519_p256_and_rsa_are_refused_at_start_up() {
        assert!(VoterJwt::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", None).is_err());
        assert!(VoterJwt::from_pem(&key_pair().0, None).is_err(), "a private key is not a public key");
        let p384 = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], b"");
        let error = VoterJwt::from_pem(&openssl(&["pkey", "-pubout"], &p384), None).expect_err("P-384 refused");
        assert!(error.to_string().contains("P-256"), "{error}");
    }

    #[test]
    fn p256_and_rsa_keys_verify_es256_and_rs256_tokens() {
        let cases =
            [("EC", "ec_paramgen_curve:P-256", Algorithm::ES256), ("RSA", "rsa_keygen_bits:2048", Algorithm::RS256)];
        for (kind, options, algorithm) in cases {
            let private = openssl(&["genpkey", "-algorithm", kind, "-pkeyopt", options], b"");
            let jwt = VoterJwt::from_pem(&openssl(&["pkey", "-pubout"], &private), None).expect(kind);
            let key = match algorithm {
                Algorithm::ES256 => EncodingKey::from_ec_pem(&private),
                _ => EncodingKey::from_rsa_pem(&private),
            }
            .expect("private key");
            let claims = json!({"sub": "acct-9", "exp": now() + 60});
            let token = encode(&Header::new(algorithm), &claims, &key).expect("signed");
            assert_eq!(jwt.verify(&token), Ok("acct-9".into()), "{kind}");
            let eddsa = sign(&key_pair().0, &claims);
            assert_eq!(jwt.verify(&eddsa), Err(JwtError::WrongAlgorithm), "{kind}: an EdDSA token");
        }
    }

    mod base64_url {
        pub(super) fn encode(text: &str) -> String {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = text.as_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
                for i in 0..=chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                }
            }
            out
        }
    }
}
