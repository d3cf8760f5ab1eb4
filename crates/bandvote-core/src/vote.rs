//! The vote payload and its validation, exactly as the public contract states it.

use serde_json::{Map, Value};
use unicode_normalization::{UnicodeNormalization, is_nfc};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Largest accepted request body, in bytes (16 KiB); larger bodies are answered `413`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Longest accepted `name` or `album`, in characters (after trimming).
pub const MAX_TEXT_CHARS: usize = 200;

/// Longest accepted `rank` when sent as a string, in characters.
const MAX_RANK_CHARS: usize = 32;

/// A validated vote: every field trimmed and normalised to the string the client sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vote {
    /// The band voted for.
    pub name: String,
    /// The band's album.
    pub album: String,
    /// A four-digit year, 1000–9999; `None` when the client left it out (a round's ballot gives it,
    /// see [`crate::round::complete`]; anywhere else it is required).
    pub year: Option<String>,
    /// A finite rank ≥ 0, as the client wrote it; `None` when left out (it stays absent).
    pub rank: Option<String>,
}

/// Why a vote was rejected: a message for the client and, when one field is at fault, its name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VoteError {
    /// The field at fault, if exactly one is.
    pub field: Option<&'static str>,
    /// What is wrong, in lowercase prose.
    pub message: String,
}

impl VoteError {
    fn field(field: &'static str, message: impl Into<String>) -> Self {
        Self { field: Some(field), message: message.into() }
    }

    fn body(message: impl Into<String>) -> Self {
        Self { field: None, message: message.into() }
    }
}

impl Vote {
    /// Parses a request body (JSON) into a validated vote. Unknown fields are ignored.
    pub fn parse_json(body: &[u8]) -> Result<Self, VoteError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(VoteError::body(format!("body is larger than {MAX_BODY_BYTES} bytes")));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| VoteError::body(format!("body is not valid JSON: {e}")))?;
        match value {
            Value::Object(fields) => Self::from_fields(&fields),
            _ => Err(VoteError::body("body must be a JSON object")),
        }
    }

    /// Validates the fields of an already parsed JSON object.
    pub fn from_fields(fields: &Map<String, Value>) -> Result<Self, VoteError> {
        Ok(Self {
            name: text(fields, "name")?,
            album: text(fields, "album")?,
            year: optional(fields.get("year")).map(year).transpose()?,
            rank: optional(fields.get("rank")).map(rank).transpose()?,
        })
    }

    /// Validates fields that arrived as plain strings (the gRPC message, the queue message), where
    /// an empty `year` or `rank` is one left out.
    pub fn from_strings(name: &str, album: &str, year: &str, rank: &str) -> Result<Self, VoteError> {
        let mut fields = Map::new();
        fields.insert("name".into(), Value::from(name));
        fields.insert("album".into(), Value::from(album));
        if !year.is_empty() {
            fields.insert("year".into(), Value::from(year));
        }
        if !rank.is_empty() {
            fields.insert("rank".into(), Value::from(rank));
        }
        Self::from_fields(&fields)
    }

    /// The vote with its year, which a vote needs outside a round with a ballot: `400` naming
    /// `year` when it was left out.
    pub fn require_year(self) -> Result<Self, VoteError> {
        if self.year.is_none() {
            return Err(VoteError::field("year", "year is required"));
        }
        Ok(self)
    }

    /// The vote as its JSON body: `{"name", "album", "year", "rank"}`, a field left out as `null`.
    pub fn to_json(&self) -> Vec<u8> {
        let value = serde_json::json!({"name": self.name, "album": self.album, "year": self.year, "rank": self.rank});
        value.to_string().into_bytes()
    }

    /// The key of this vote's album in the `votes:album` counters: `<band> / <album>`.
    pub fn album_key(&self) -> String {
        album_key(&self.name, &self.album)
    }
}

/// What joins a band and its album in the album key; refused inside either name.
pub const ALBUM_KEY_SEPARATOR: &str = " / ";

/// The `votes:album` key of an album: band, space, slash, space, album.
pub fn album_key(band: &str, album: &str) -> String {
    format!("{band}{ALBUM_KEY_SEPARATOR}{album}")
}

fn text(fields: &Map<String, Value>, field: &'static str) -> Result<String, VoteError> {
    let value = match fields.get(field) {
        None | Some(Value::Null) => {
            return Err(VoteError::field(field, format!("{field} is required")));
        }
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err(VoteError::field(field, format!("{field} must be a string"))),
    };
    if value.is_empty() {
        return Err(VoteError::field(field, format!("{field} must not be empty")));
    }
    // Checked before normalising, so that a huge input costs nothing more than counting it.
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(VoteError::field(field, format!("{field} must be at most {MAX_TEXT_CHARS} characters")));
    }
    // Control and format characters (zero-width spaces, bidi overrides) make look-alike names that
    // split one band's votes.
    if value.chars().any(is_control_or_format) {
        return Err(VoteError::field(field, format!("{field} must not contain control or format characters")));
    }
    // One spelling per name: composed and decomposed accents count together.
    let value: String = if is_nfc(value) { value.to_owned() } else { value.nfc().collect() };
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(VoteError::field(field, format!("{field} must be at most {MAX_TEXT_CHARS} characters")));
    }
    // The album key is `<band> / <album>`: a name holding the separator would make two votes share
    // a counter.
    if value.contains(ALBUM_KEY_SEPARATOR) {
        return Err(VoteError::field(field, format!("{field} must not contain \"{ALBUM_KEY_SEPARATOR}\"")));
    }
    // One spelling per name: a run of spaces is one space.
    let value = if value.contains("  ") { collapse_spaces(&value) } else { value };
    if let Some(problem) = look_alike(&value) {
        return Err(VoteError::field(field, format!("{field} {problem}")));
    }
    // Nor may a band end with " /": `A /` + `B` and `A` + `/ B` would both be `A / / B`. With it
    // refused, a key's first " / " is always the separator.
    if field == "name" && value.ends_with(ALBUM_KEY_SEPARATOR.trim_end()) {
        return Err(VoteError::field(
            field,
            format!("{field} must not end with \"{}\"", ALBUM_KEY_SEPARATOR.trim_end()),
        ));
    }
    Ok(value)
}

/// What makes `text` (already NFC, without control or format characters) look like another name
/// it is not, if anything: a blank other than the space (NBSP, the braille blank, ideographic
/// space...), two spaces in a row, an invisible character (Unicode's default-ignorable code points,
/// such as U+034F or the Hangul filler U+3164; a variation selector only right after an emoji), or
/// letters of scripts mixed so that they look alike (a Latin name with a Cyrillic "о" or a Greek
/// "Ο": UTS #39's mixed-script detection and its confusables; Latin with Han, Japanese or Korean is
/// allowed, as its "highly restrictive" level does, and so is a letter that reads as no Latin one,
/// such as "Δ"). Each would split one band's votes between names that read the same. Runs of
/// spaces are not refused: the field check makes them one space, as it composes accents.
pub fn look_alike(text: &str) -> Option<&'static str> {
    if text.contains("  ") {
        return Some("must not contain two spaces in a row");
    }
    if text.is_ascii() {
        return None;
    }
    let mut previous = ' ';
    for c in text.chars() {
        if c != ' ' && (c.is_whitespace() || c == '\u{2800}') {
            return Some("must not contain blank characters other than the space");
        }
        let selector = matches!(c, '\u{FE0E}' | '\u{FE0F}');
        if is_invisible(c) && !(selector && unicode_properties::UnicodeEmoji::is_emoji_char(previous)) {
            return Some("must not contain invisible characters");
        }
        previous = c;
    }
    mixes_scripts(text).then_some("must not mix scripts that look alike (such as Latin and Cyrillic letters)")
}

/// `text` with every run of spaces made one space.
fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out
}

/// Default-ignorable code points (Unicode's DerivedCoreProperties) that are not format characters,
/// which [`is_control_or_format`] refuses already.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{034F}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether the letters of `text` belong to no one script (Common and Inherited characters, such as
/// digits, punctuation and emoji, go with any), unless the other script is Han, Japanese or Korean
/// beside Latin.
fn mixes_scripts(text: &str) -> bool {
    use unicode_security::mixed_script::AugmentedScriptSet;
    let mut all = AugmentedScriptSet::default();
    let mut without_latin = AugmentedScriptSet::default();
    for c in text.chars() {
        let set = AugmentedScriptSet::for_char(c);
        all.intersect_with(set);
        if !set.base.contains_script(unicode_script::Script::Latin) {
            without_latin.intersect_with(set);
        }
    }
    // Mixed, and one of the other script's letters looks like a letter of another script (UTS #39's
    // mixed-script confusables: a Cyrillic "о", a Greek "Ο"); a Greek "Δ" in a Latin name reads as
    // no Latin letter.
    all.is_empty()
        && !(without_latin.hanb || without_latin.jpan || without_latin.kore)
        && text.chars().any(|c| {
            !c.is_ascii()
                && !AugmentedScriptSet::for_char(c).base.contains_script(unicode_script::Script::Latin)
                && unicode_security::is_potential_mixed_script_confusable_char(c)
        })
}

/// Whether `c` is a control (Cc) or format (Cf) character. ASCII has no format characters and its
/// control characters are exactly `is_ascii_control`: most names are ASCII, and the general
/// category's table lookup was the largest single cost of parsing a vote.
pub(crate) fn is_control_or_format(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(c.general_category(), GeneralCategory::Control | GeneralCategory::Format)
}

/// A field's value, `None` when it is absent or `null`.
fn optional(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

fn year(value: &Value) -> Result<String, VoteError> {
    const MESSAGE: &str = "year must be a four-digit year between 1000 and 9999";
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => match n.as_u64() {
            Some(n) => n.to_string(),
            None => return Err(VoteError::field("year", MESSAGE)),
        },
        _ => {
            return Err(VoteError::field("year", "year must be a string or an integer"));
        }
    };
    let is_year = text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    if is_year { Ok(text) } else { Err(VoteError::field("year", MESSAGE)) }
}

fn rank(value: &Value) -> Result<String, VoteError> {
    const MESSAGE: &str = "rank must be a finite number greater than or equal to 0";
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(VoteError::field("rank", "rank must be a string or a number"));
        }
    };
    // `f64::from_str` also takes "inf", "NaN" and a leading '+': keep to plain decimal notation.
    let plain = !text.is_empty()
        && text.len() <= MAX_RANK_CHARS
        && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+'))
        && text.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'-');
    match text.parse::<f64>() {
        Ok(rank) if plain && rank.is_finite() && rank >= 0.0 => Ok(text),
        _ => Err(VoteError::field("rank", MESSAGE)),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn look_alike_blank_and_invisible_names_are_refused_and_real_ones_taken() {
        let name = |text: &str| Vote::from_strings(text, "x", "1999", "").map(|v| v.name).map_err(|e| e.message);
        // The probe's characters, each in an otherwise ordinary name.
        for text in ["Bo\u{034F}hemia", "Bohemia\u{FE0F}", "\u{3164}", "Bo\u{2800}hemia", "Bohemia\u{00A0}Suburbana"] {
            assert!(name(text).is_err(), "{text:?}");
        }
        assert!(name("\u{2800}").is_err(), "a braille blank alone");
        // Two spaces make the same name as one.
        assert_eq!(name("Bohemia  Suburbana").as_deref(), Ok("Bohemia Suburbana"));
        // A Cyrillic "о" in a Latin name, and a Greek "Ο".
        assert!(name("B\u{043E}hemia Suburbana").unwrap_err().contains("mix scripts"));
        assert!(name("B\u{039F}HEMIA").unwrap_err().contains("mix scripts"));
        for text in [
            "Bohemia Suburbana",
            "Ranferí Aguilar — ñ",
            "Viernes Verde 🎸",
            "\u{2764}\u{FE0F} de Guatemala",
            "Мумий Тролль",
            "東京事変",
            "X JAPAN ロック",
            "AC/DC 2",
            "alt-J (Δ)",
            "CHVRCHΞS",
        ] {
            assert_eq!(name(text).as_deref(), Ok(text), "{text:?}");
        }
    }
    use super::*;

    fn parse(body: &str) -> Result<Vote, VoteError> {
        Vote::parse_json(body.as_bytes())
    }

    fn field_of(body: &str) -> Option<&'static str> {
        parse(body).expect_err("vote should be rejected").field
    }

    #[test]
    fn the_ascii_shortcut_agrees_with_the_general_category() {
        for c in (0u8..=127).map(char::from) {
            let by_category = matches!(c.general_category(), GeneralCategory::Control | GeneralCategory::Format);
            assert_eq!(is_control_or_format(c), by_category, "{:?}", c);
        }
        // Beyond ASCII the category decides: C1 controls, a zero-width space and a bidi override.
        for c in ['\u{85}', '\u{200b}', '\u{202e}'] {
            assert!(is_control_or_format(c), "{c:?}");
        }
        assert!(!is_control_or_format('é'));
    }

    #[test]
    fn accepts_the_original_payload_unchanged() {
        let vote = parse(r#"{"name":"Bohemia Suburbana","album":"Mis palabras","year":"1997","rank":"9.5"}"#)
            .expect("valid vote");
        assert_eq!(vote.name, "Bohemia Suburbana");
        assert_eq!(vote.album, "Mis palabras");
        assert_eq!(vote.year.as_deref(), Some("1997"));
        assert_eq!(vote.rank.as_deref(), Some("9.5"));
        assert_eq!(vote.album_key(), "Bohemia Suburbana / Mis palabras");
    }

    #[test]
    fn composed_and_decomposed_accents_are_one_name() {
        let composed = parse(r#"{"name":"Caf\u00e9 Tacvba","album":"Re","year":"1994","rank":"9"}"#).expect("valid");
        let decomposed = parse(r#"{"name":"Cafe\u0301 Tacvba","album":"Re","year":"1994","rank":"9"}"#).expect("valid");
        assert_eq!(composed.name, decomposed.name);
        assert_eq!(decomposed.name, "Caf\u{e9} Tacvba");
    }

    #[test]
    fn format_characters_and_the_album_separator_are_refused_with_their_field() {
        for name in [r"Bohemia\u200bSuburbana", r"Bohemia \u202eanabrubuS", r"\u2066Bohemia\u2069", "A / B"] {
            let body = format!(r#"{{"name":"{name}","album":"x","year":"1997","rank":"1"}}"#);
            assert_eq!(field_of(&body), Some("name"), "{name}");
            let body = format!(r#"{{"name":"x","album":"{name}","year":"1997","rank":"1"}}"#);
            assert_eq!(field_of(&body), Some("album"), "{name}");
        }
        // A slash without the spaces around it is an ordinary character.
        assert!(parse(r#"{"name":"AC/DC","album":"High Voltage","year":"1976","rank":"9"}"#).is_ok());
        // `A /` + `B` would share `A` + `/ B`'s album key, `A / / B`.
        assert_eq!(field_of(r#"{"name":"A /","album":"B","year":"1976"}"#), Some("name"));
        let vote = parse(r#"{"name":"A","album":"/ B","year":"1976"}"#).expect("valid");
        assert_eq!(vote.album_key(), "A / / B");
    }

    #[test]
    fn trims_text_and_normalises_numbers_to_strings() {
        let vote = parse(r#"{"name":"  Alux Nahual ","album":"\tEl Viaje ","year":2011,"rank":8.6,"extra":[1]}"#)
            .expect("valid vote");
        assert_eq!(vote.name, "Alux Nahual");
        assert_eq!(vote.album, "El Viaje");
        assert_eq!(vote.year.as_deref(), Some("2011"));
        assert_eq!(vote.rank.as_deref(), Some("8.6"));
    }

    #[test]
    fn keeps_non_ascii_names() {
        let vote = parse(r#"{"name":"Los Álamos — ñandú 🎸","album":"Canción","year":"2001","rank":"0"}"#)
            .expect("valid vote");
        assert_eq!(vote.name, "Los Álamos — ñandú 🎸");
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        let ok = r#""album":"a","year":"1997","rank":"1""#;
        assert_eq!(field_of(&format!(r#"{{"name":"   ",{ok}}}"#)), Some("name"));
        assert_eq!(field_of(&format!(r#"{{"name":5,{ok}}}"#)), Some("name"));
        assert_eq!(field_of(&format!(r#"{{{ok}}}"#)), Some("name"));
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(field_of(&format!(r#"{{"name":"{long}",{ok}}}"#)), Some("name"));
        let at_limit = "é".repeat(MAX_TEXT_CHARS);
        assert!(parse(&format!(r#"{{"name":"{at_limit}",{ok}}}"#)).is_ok());
        for year in [r#""999""#, r#""10000""#, r#""19a7""#, "1997.5", "-1997", r#""0997""#, "true"] {
            let body = format!(r#"{{"name":"n","album":"a","year":{year},"rank":"1"}}"#);
            assert_eq!(field_of(&body), Some("year"), "year {year}");
        }
        for rank in [r#""-1""#, r#""NaN""#, r#""inf""#, r#""""#, r#""abc""#, "-0.5", "[]", r#""+1""#] {
            let body = format!(r#"{{"name":"n","album":"a","year":"1997","rank":{rank}}}"#);
            assert_eq!(field_of(&body), Some("rank"), "rank {rank}");
        }
    }

    #[test]
    fn rejects_bodies_that_are_not_one_json_object() {
        for body in ["", "nope", "[1,2]", "\"x\"", r#"{"name":"n""#] {
            let error = parse(body).expect_err("rejected");
            assert_eq!(error.field, None, "{body}");
        }
        let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(parse(&huge).expect_err("too big").field, None);
    }

    #[test]
    fn year_and_rank_may_be_left_out_and_stay_absent() {
        for body in [r#"{"name":"n","album":"a"}"#, r#"{"name":"n","album":"a","year":null,"rank":null}"#] {
            let vote = parse(body).expect("valid");
            assert_eq!((vote.year.as_deref(), vote.rank.as_deref()), (None, None));
            assert_eq!(vote.clone().require_year().expect_err("no year").field, Some("year"));
            let json: Value = serde_json::from_slice(&vote.to_json()).expect("json");
            assert_eq!(json, serde_json::json!({"name": "n", "album": "a", "year": null, "rank": null}));
        }
        let vote = Vote::from_strings("n", "a", "", "").expect("valid");
        assert_eq!((vote.year, vote.rank), (None, None));
    }

    #[test]
    fn from_strings_applies_the_same_rules() {
        assert!(Vote::from_strings("a", "b", "1997", "9.5").is_ok());
        assert_eq!(Vote::from_strings("a", "b", "97", "9.5").expect_err("bad").field, Some("year"));
    }
}
