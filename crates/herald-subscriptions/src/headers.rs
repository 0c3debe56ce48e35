//! The rules for the HTTP headers a subscriber asks Herald to send with each notification
//! (R4 `channel.header`, R5 `parameter`). Herald writes them into requests to the subscriber's
//! server, so they are checked when the Subscription is accepted, not when a delivery fails:
//! a name must be an RFC 9110 token, a value visible ASCII with spaces and tabs, and headers that
//! frame the message or the connection (`Host`, `Content-Length`, `Transfer-Encoding`, …) are
//! Herald's to set, never the subscriber's.

use crate::SubscriptionError;

/// Headers per Subscription.
pub const MAX_HEADERS: usize = 32;
/// Longest header name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest header value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Names a subscriber may not set (compared case-insensitively): the message framing Herald
/// computes (`Content-Length`, `Transfer-Encoding`, `Content-Type`, `Content-Encoding`), the
/// target (`Host`), and the hop-by-hop headers of RFC 9110 §7.6.1 and their legacy forms, which
/// govern Herald's own connection.
pub const FORBIDDEN: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks the headers of a channel; `element` names where they came from in the request.
pub fn check_headers(headers: &[(String, String)], element: &str) -> Result<(), SubscriptionError> {
    if headers.len() > MAX_HEADERS {
        return Err(SubscriptionError::TooMany {
            element: element.to_owned(),
            count: headers.len(),
            limit: MAX_HEADERS,
        });
    }
    for (name, value) in headers {
        let refuse = |reason: String| SubscriptionError::InvalidHeader {
            element: element.to_owned(),
            header: printable(name),
            reason,
        };
        if name.is_empty() {
            return Err(refuse("the name is empty".to_owned()));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(refuse(format!(
                "the name is longer than {MAX_NAME_BYTES} bytes"
            )));
        }
        if let Some(c) = name.bytes().find(|b| !is_tchar(*b)) {
            return Err(refuse(format!(
                "the name contains {}, which an HTTP field name may not (RFC 9110 token)",
                describe(c)
            )));
        }
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN.contains(&lower.as_str()) {
            return Err(refuse(
                "Herald sets this header itself (message framing or connection control)".to_owned(),
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(refuse(format!(
                "the value is longer than {MAX_VALUE_BYTES} bytes"
            )));
        }
        if let Some(c) = value
            .bytes()
            .find(|b| !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t'))
        {
            return Err(refuse(format!(
                "the value contains {}; only visible ASCII, spaces and tabs are allowed",
                describe(c)
            )));
        }
    }
    Ok(())
}

/// A byte as a reader would name it.
fn describe(b: u8) -> String {
    match b {
        b'\r' => "a carriage return (CR)".to_owned(),
        b'\n' => "a line feed (LF)".to_owned(),
        0 => "a NUL byte".to_owned(),
        b' ' => "a space".to_owned(),
        b if b.is_ascii_control() => format!("the control character 0x{b:02x}"),
        b if b >= 0x80 => "a non-ASCII character".to_owned(),
        b => format!("'{}'", char::from(b)),
    }
}

/// The name as it can be shown in an OperationOutcome (control characters escaped, bounded).
fn printable(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Result<(), SubscriptionError> {
        check_headers(
            &[(name.to_owned(), value.to_owned())],
            "Subscription.channel.header",
        )
    }

    fn reason(r: Result<(), SubscriptionError>) -> String {
        match r {
            Err(SubscriptionError::InvalidHeader { reason, .. }) => reason,
            other => panic!("expected an invalid header, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_headers_are_accepted() {
        assert!(one("Authorization", "Bearer abc.def-ghi").is_ok());
        assert!(one("X-Correlation-Id", "a b\tc").is_ok());
        assert!(one("x_custom!", "").is_ok());
    }

    #[test]
    fn values_with_control_characters_are_refused_naming_them() {
        assert!(reason(one("X-A", "a\r\nX-Injected: 1")).contains("carriage return"));
        assert!(reason(one("X-A", "a\nb")).contains("line feed"));
        assert!(reason(one("X-A", "a\0b")).contains("NUL"));
        assert!(reason(one("X-A", "a\u{7f}")).contains("0x7f"));
        assert!(reason(one("X-A", "café")).contains("non-ASCII"));
    }

    #[test]
    fn names_that_are_not_tokens_are_refused() {
        assert!(reason(one("X A", "v")).contains("a space"));
        assert!(reason(one("X:A", "v")).contains("':'"));
        assert!(reason(one("X\r\nA", "v")).contains("carriage return"));
        assert!(reason(one("", "v")).contains("empty"));
        assert!(reason(one(&"x".repeat(300), "v")).contains("256"));
    }

    #[test]
    fn framing_and_hop_by_hop_headers_are_refused_in_any_case() {
        for name in FORBIDDEN {
            assert!(one(name, "1").is_err(), "{name}");
            assert!(one(&name.to_ascii_uppercase(), "1").is_err(), "{name}");
        }
        let e = one("Content-Length", "5").expect_err("refused");
        assert!(e.to_string().contains("Content-Length"), "{e}");
    }

    #[test]
    fn too_many_headers_are_refused() {
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-{i}"), "v".to_owned()))
            .collect();
        assert!(matches!(
            check_headers(&many, "Subscription.parameter"),
            Err(SubscriptionError::TooMany {
                limit: MAX_HEADERS,
                ..
            })
        ));
        assert!(check_headers(&many[..MAX_HEADERS], "Subscription.parameter").is_ok());
    }
}
