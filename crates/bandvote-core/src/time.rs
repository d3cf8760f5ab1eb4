//! The one timestamp format of bandvote: RFC 3339, UTC, millisecond precision, `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats a timestamp as `2026-11-26T16:04:05.123Z`.
pub fn format(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time in the contract's format.
pub fn now() -> String {
    format(Utc::now())
}

/// Parses any RFC 3339 timestamp into UTC.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_and_z() {
        let at = parse("2026-11-26T16:04:05.123456+00:00").expect("valid");
        assert_eq!(format(at), "2026-11-26T16:04:05.123Z");
        assert_eq!(now().len(), "2026-11-26T16:04:05.123Z".len());
    }
}
