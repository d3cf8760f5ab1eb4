//! Properties of the vote parser over generated inputs: it never panics, accepts exactly the
//! contract's votes, normalises them stably, and names the field at fault.

use bandvote_core::{MAX_BODY_BYTES, MAX_TEXT_CHARS, Vote};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Text the contract accepts: 1–200 characters after trimming and NFC, no control or format
/// characters, not the album key's separator, and nothing that looks like another name (one script
/// of letters with digits, punctuation and emoji; single spaces; see `vote::look_alike`).
fn valid_text() -> impl Strategy<Value = String> {
    let words = |letters: &'static str| {
        let word = format!("[{letters}0-9!-.:-@&'()🎸—]{{1,20}}");
        proptest::string::string_regex(&format!("{word}( {word}){{0,8}}")).expect("a valid regex")
    };
    prop_oneof![
        words("A-Za-z\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{FF}"),
        words("\u{410}-\u{44F}"),
        words("\u{4E00}-\u{4FFF}")
    ]
    .prop_filter("not too long once normalised, no separator", |s| {
        let normalised = nfc(s.trim());
        !normalised.is_empty()
            && normalised.chars().count() <= MAX_TEXT_CHARS
            && !normalised.contains(" / ")
            && !normalised.ends_with(" /")
    })
}

fn nfc(text: &str) -> String {
    unicode_normalization::UnicodeNormalization::nfc(text).collect()
}

/// A year as the client may send it: a string or an integer.
fn valid_year() -> impl Strategy<Value = (Value, String)> {
    (1000u64..=9999, any::<bool>()).prop_map(|(y, as_string)| {
        let value = if as_string { json!(y.to_string()) } else { json!(y) };
        (value, y.to_string())
    })
}

/// A rank: a finite number ≥ 0, as a string or a number.
fn valid_rank() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u32..1000, 0u32..100).prop_map(|(a, b)| json!(format!("{a}.{b}"))),
        (0u32..100_000).prop_map(|n| json!(n)),
        (0.0f64..1e6).prop_map(|f| json!(f)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Vote::parse_json(&bytes);
    }

    #[test]
    fn arbitrary_json_values_never_panic(name in any::<Option<String>>(), year in any::<Option<i64>>(), rank in any::<Option<f64>>(), extra in any::<String>()) {
        let body = json!({"name": name, "album": "x", "year": year, "rank": rank, "extra": extra});
        let _ = Vote::parse_json(body.to_string().as_bytes());
    }

    #[test]
    fn every_valid_vote_is_accepted_and_normalised(
        name in valid_text(), album in valid_text(), (year, year_text) in valid_year(), rank in valid_rank(),
        padding in "[ \\t]{0,3}", unknown in any::<u32>(),
    ) {
        let body = json!({
            "name": format!("{padding}{name}{padding}"),
            "album": album,
            "year": year,
            "rank": rank.clone(),
            "unknown_field": unknown,
        });
        let vote = Vote::parse_json(body.to_string().as_bytes()).expect("a valid vote");
        prop_assert_eq!(&vote.name, &nfc(name.trim()));
        prop_assert_eq!(&vote.album, &nfc(album.trim()));
        prop_assert_eq!(vote.year.as_deref(), Some(year_text.as_str()));
        let rank_text = match &rank { Value::String(s) => s.clone(), other => other.to_string() };
        prop_assert_eq!(vote.rank.as_deref(), Some(rank_text.as_str()));
        // Normalised votes are fixed points: serialising and parsing again gives the same vote.
        let again = Vote::parse_json(&serde_json::to_vec(&vote).expect("serialise")).expect("still valid");
        prop_assert_eq!(again, vote);
    }

    #[test]
    fn years_outside_the_range_are_refused_on_the_year(year in prop_oneof![0u64..1000, 10_000u64..u64::MAX], as_string in any::<bool>()) {
        let value = if as_string { json!(year.to_string()) } else { json!(year) };
        let body = json!({"name": "a", "album": "b", "year": value, "rank": "1"});
        let error = Vote::parse_json(body.to_string().as_bytes()).expect_err("refused");
        prop_assert_eq!(error.field, Some("year"));
    }

    #[test]
    fn negative_or_non_numeric_ranks_are_refused_on_the_rank(
        rank in prop_oneof![
            (-1e9f64..-1e-9).prop_map(|f| json!(f)),
            "[a-zA-Z ]{1,10}".prop_map(|s| json!(s)),
            Just(json!("inf")), Just(json!("NaN")), Just(json!("+1")), Just(json!("")),
        ],
    ) {
        let body = json!({"name": "a", "album": "b", "year": "2000", "rank": rank});
        let error = Vote::parse_json(body.to_string().as_bytes()).expect_err("refused");
        prop_assert_eq!(error.field, Some("rank"));
    }

    #[test]
    fn texts_too_long_or_with_control_characters_are_refused(
        long in proptest::string::string_regex("[a-z]{201,400}").expect("regex"),
        control in proptest::char::range('\u{0}', '\u{1f}'),
    ) {
        for (name, field) in [(long.clone(), "name"), (format!("a{control}b"), "name")] {
            let body = json!({"name": name, "album": "b", "year": "2000", "rank": "1"});
            let error = Vote::parse_json(body.to_string().as_bytes()).expect_err("refused");
            prop_assert_eq!(error.field, Some(field));
        }
    }

    #[test]
    fn bodies_over_the_limit_are_refused_whatever_they_hold(extra in (MAX_BODY_BYTES + 1)..(MAX_BODY_BYTES + 4096)) {
        let body = format!("{{\"name\":\"a\",\"album\":\"b\",\"year\":\"2000\",\"rank\":\"1\",\"pad\":\"{}\"}}", "x".repeat(extra));
        let error = Vote::parse_json(body.as_bytes()).expect_err("refused");
        prop_assert_eq!(error.field, None);
        prop_assert!(error.message.contains("larger than"));
    }
}
