//! Pure HTTP rules shared by every vote endpoint, native or WebAssembly.

/// Set to `1` in a guest's environment by a host that carries the guest's votes itself: the guest
/// then hands each vote it accepts back to the host in its answer (see [`HAND_BACK_HEADER`])
/// instead of sending it to the http-producer as an outgoing request. Without it (as under
/// `wasmtime serve`) the guest sends the vote itself.
pub const HAND_BACK_ENV: &str = "BANDVOTE_HAND_BACK";

/// The header that marks a guest's answer as the vote it hands back to its host rather than an
/// answer for the client: the answer's other headers and its body are then a `POST /votes` for the
/// http-producer (the headers the guest would send, the body it read the vote from).
pub const HAND_BACK_HEADER: &str = "bandvote-hand-back";

/// Whether a `Content-Type` value is JSON: `application/json` (any parameters, any case) or any
/// `application/*+json`.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The JSON error body of the contract: `{"error": message, "field": field}` (`field` omitted when
/// no single field is at fault).
pub fn error_body(message: &str, field: Option<&str>) -> String {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), serde_json::Value::from(message));
    if let Some(field) = field {
        body.insert("field".into(), serde_json::Value::from(field));
    }
    serde_json::Value::Object(body).to_string()
}

/// Whether `given` is `expected`, told without leaking either's length or how much of a guess was
/// right: both are hashed (SHA-256) and the digests compared in constant time.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter().zip(b.iter()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for yes in
            ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json"]
        {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in ["", "text/plain", "application/x-www-form-urlencoded", "text/json", "application/jsonp"] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }

    #[test]
    fn error_bodies_omit_a_missing_field() {
        assert_eq!(error_body("bad", Some("year")), r#"{"error":"bad","field":"year"}"#);
        assert_eq!(error_body("bad", None), r#"{"error":"bad"}"#);
    }
}
