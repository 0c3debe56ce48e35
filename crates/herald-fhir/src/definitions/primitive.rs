//! Owns the JSON forms and lexical rules of the FHIR primitive types (the regexes of the
//! specification's primitive StructureDefinitions, written as plain byte checks so a write does
//! not run a regex engine per value).

use serde_json::Value;

use crate::date::parse_range;

/// A FHIR primitive type, as far as its JSON form and format go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prim {
    Boolean,
    Integer,
    PositiveInt,
    UnsignedInt,
    Decimal,
    /// R5: a JSON string holding a 64-bit integer.
    Integer64,
    /// string, markdown, xhtml: any non-blank text.
    String,
    Code,
    Id,
    /// uri, url, canonical: no whitespace.
    Uri,
    Oid,
    Uuid,
    Base64,
    Date,
    DateTime,
    Instant,
    Time,
}

const KNOWN: [(&str, Prim); 21] = [
    ("boolean", Prim::Boolean),
    ("integer", Prim::Integer),
    ("positiveInt", Prim::PositiveInt),
    ("unsignedInt", Prim::UnsignedInt),
    ("decimal", Prim::Decimal),
    ("integer64", Prim::Integer64),
    ("string", Prim::String),
    ("markdown", Prim::String),
    ("xhtml", Prim::String),
    ("code", Prim::Code),
    ("id", Prim::Id),
    ("uri", Prim::Uri),
    ("url", Prim::Uri),
    ("canonical", Prim::Uri),
    ("oid", Prim::Oid),
    ("uuid", Prim::Uuid),
    ("base64Binary", Prim::Base64),
    ("date", Prim::Date),
    ("dateTime", Prim::DateTime),
    ("instant", Prim::Instant),
    ("time", Prim::Time),
];

impl Prim {
    /// The check for the primitive type `name` (an unknown name is checked as a string).
    pub fn for_type(name: &str) -> Prim {
        KNOWN
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Prim::String, |(_, p)| *p)
    }

    /// Does Herald know the format of the primitive type `name`?
    #[cfg(test)]
    pub fn known(name: &str) -> bool {
        KNOWN.iter().any(|(n, _)| *n == name)
    }

    /// Checks a JSON value against this type; the error says what is wrong (without the path).
    pub fn check(self, value: &Value) -> Result<(), String> {
        match (self, value) {
            (Prim::Boolean, Value::Bool(_)) => Ok(()),
            (Prim::Boolean, _) => Err(format!("{} is not a JSON boolean", shown(value))),
            (Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt, Value::Number(n)) => {
                let Some(i) = n.as_i64() else {
                    return Err(format!("{n} is not an integer"));
                };
                let (lo, what) = match self {
                    Prim::PositiveInt => (1, "a positiveInt (1 or more)"),
                    Prim::UnsignedInt => (0, "an unsignedInt (0 or more)"),
                    _ => (i64::from(i32::MIN), "a 32-bit integer"),
                };
                if i < lo || i > i64::from(i32::MAX) || n.to_string().contains(['.', 'e', 'E']) {
                    Err(format!("{n} is not {what}"))
                } else {
                    Ok(())
                }
            }
            (Prim::Decimal, Value::Number(_)) => Ok(()),
            (Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt | Prim::Decimal, _) => {
                Err(format!("{} is not a JSON number", shown(value)))
            }
            (_, Value::String(s)) => self.check_text(s),
            (_, _) => Err(format!("{} is not a JSON string", shown(value))),
        }
    }

    fn check_text(self, s: &str) -> Result<(), String> {
        if s.is_empty() {
            return Err("empty string is not allowed".into());
        }
        let ok = match self {
            Prim::Integer64 => {
                let digits = s.strip_prefix('-').unwrap_or(s);
                !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && s.parse::<i64>().is_ok()
            }
            Prim::String => !s.trim().is_empty(),
            Prim::Code => {
                !s.starts_with(char::is_whitespace)
                    && !s.ends_with(char::is_whitespace)
                    && !s.contains("  ")
                    && !s.contains(['\t', '\r', '\n'])
            }
            Prim::Id => {
                s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
            Prim::Uri => !s.contains(char::is_whitespace),
            Prim::Oid => s.strip_prefix("urn:oid:").is_some_and(is_oid),
            Prim::Uuid => s.strip_prefix("urn:uuid:").is_some_and(is_uuid),
            Prim::Base64 => s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/= \t\r\n".contains(&b)),
            Prim::Date => !s.contains('T') && parse_range(s).is_some(),
            Prim::DateTime => match s.split_once('T') {
                None => parse_range(s).is_some(),
                Some((_, time)) => full_time_with_zone(time) && parse_range(s).is_some(),
            },
            Prim::Instant => {
                s.len() >= 20
                    && s.split_once('T')
                        .is_some_and(|(d, t)| d.len() == 10 && full_time_with_zone(t))
                    && parse_range(s).is_some()
            }
            Prim::Time => is_time(s),
            Prim::Boolean
            | Prim::Integer
            | Prim::PositiveInt
            | Prim::UnsignedInt
            | Prim::Decimal => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("'{}' is not a valid {}", clipped(s), self.name()))
        }
    }

    fn name(self) -> &'static str {
        KNOWN
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("value", |(n, _)| *n)
    }
}

/// `hh:mm:ss[.fff]` followed by `Z` or `±hh:mm` (what dateTime and instant require with a time).
fn full_time_with_zone(t: &str) -> bool {
    let (clock, zone) = if let Some(c) = t.strip_suffix('Z') {
        (c, "Z")
    } else if t.len() > 6 && t.is_char_boundary(t.len() - 6) {
        t.split_at(t.len() - 6)
    } else {
        return false;
    };
    let zone_ok =
        zone == "Z" || (zone.starts_with(['+', '-']) && zone.as_bytes().get(3) == Some(&b':'));
    zone_ok && is_time(clock)
}

/// `hh:mm:ss[.f+]`.
fn is_time(s: &str) -> bool {
    let (hms, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    let b = hms.as_bytes();
    let two = |i: usize, max: u8| {
        b.get(i..i + 2).is_some_and(|d| {
            d.iter().all(u8::is_ascii_digit) && (d[0] - b'0') * 10 + (d[1] - b'0') <= max
        })
    };
    b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && two(0, 23)
        && two(3, 59)
        && two(6, 60)
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()))
}

fn is_oid(s: &str) -> bool {
    let mut arcs = s.split('.');
    matches!(arcs.next(), Some("0" | "1" | "2"))
        && s.contains('.')
        && arcs.all(|a| {
            !a.is_empty()
                && a.bytes().all(|b| b.is_ascii_digit())
                && (a == "0" || !a.starts_with('0'))
        })
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

fn shown(value: &Value) -> String {
    match value {
        Value::Object(_) => "an object".into(),
        Value::Array(_) => "an array".into(),
        other => clipped(&other.to_string()),
    }
}

fn clipped(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_owned()
    } else {
        s.chars().take(61).collect::<String>() + "..."
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(p: Prim, v: Value) -> bool {
        p.check(&v).is_ok()
    }

    #[test]
    fn json_kinds_follow_the_type() {
        assert!(ok(Prim::Boolean, json!(true)));
        assert!(!ok(Prim::Boolean, json!("true")));
        assert!(ok(Prim::Integer, json!(-5)));
        assert!(!ok(Prim::Integer, json!("5")));
        assert!(!ok(Prim::Integer, json!(1.5)));
        assert!(!ok(Prim::Integer, json!(3_000_000_000_i64)));
        assert!(!ok(Prim::PositiveInt, json!(0)));
        assert!(ok(Prim::UnsignedInt, json!(0)));
        assert!(!ok(Prim::UnsignedInt, json!(-1)));
        assert!(ok(Prim::Decimal, json!(1.50)));
        assert!(!ok(Prim::String, json!(5)));
        assert!(!ok(Prim::String, json!({"reference": "x"})));
        assert!(ok(Prim::Integer64, json!("-9000000000")));
        assert!(!ok(Prim::Integer64, json!(9)));
    }

    #[test]
    fn text_formats_are_checked() {
        assert!(ok(Prim::Code, json!("in-progress")));
        assert!(!ok(Prim::Code, json!(" draft")));
        assert!(!ok(Prim::String, json!("   ")));
        assert!(ok(Prim::Id, json!("a.b-1")));
        assert!(!ok(Prim::Id, json!("a_b")));
        assert!(!ok(Prim::Uri, json!("http://x y")));
        assert!(ok(Prim::Oid, json!("urn:oid:2.16.840.1")));
        assert!(!ok(Prim::Oid, json!("urn:oid:3.1")));
        assert!(ok(
            Prim::Uuid,
            json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")
        ));
        assert!(!ok(
            Prim::Uuid,
            json!("urn:uuid:C757873D-EC9A-4326-A141-556F43239520")
        ));
        assert!(ok(Prim::Base64, json!("aGVsbG8=")));
        assert!(!ok(Prim::Base64, json!("not base64!")));
    }

    #[test]
    fn dates_times_and_instants_follow_their_grammar() {
        for d in ["2026", "2026-02", "2026-02-28"] {
            assert!(ok(Prim::Date, json!(d)), "{d}");
            assert!(ok(Prim::DateTime, json!(d)), "{d}");
        }
        assert!(!ok(Prim::Date, json!("2026-02-30")));
        assert!(!ok(Prim::Date, json!("2026-02-28T10:00:00Z")));
        assert!(ok(Prim::DateTime, json!("2026-02-28T10:00:00Z")));
        assert!(ok(Prim::DateTime, json!("2026-02-28T10:00:00.123+01:00")));
        assert!(!ok(Prim::DateTime, json!("2026-02-28T10:00")));
        assert!(!ok(Prim::DateTime, json!("2026-02-28T10:00:00")));
        assert!(!ok(Prim::DateTime, json!("yesterday")));
        assert!(ok(Prim::Instant, json!("2026-02-28T10:00:00.5Z")));
        assert!(!ok(Prim::Instant, json!("2026-02-28")));
        assert!(ok(Prim::Time, json!("23:59:60")));
        assert!(!ok(Prim::Time, json!("24:00:00")));
        assert!(!ok(Prim::Time, json!("10:00")));
    }
}
