//! FHIR-over-HTTP plumbing shared by the handlers: reading a FHIR JSON body (media type 415,
//! size 413, deadline 408, syntax 400), the `Prefer` header, version-aware ETags, and building FHIR
//! responses with `Location`, `ETag` and `Last-Modified`.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_fhir::outcome::{Severity, operation_outcome};
use herald_store::StoredVersion;
use serde_json::Value;

use crate::FHIR_JSON;
use crate::error::{ApiError, ApiResult};
use crate::limits::{BodyTimeout, caused_by};

/// Media types accepted for FHIR JSON request bodies.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/fhir+json" | "application/json" | "application/json+fhir"
    )
}

/// Reads a request body as a FHIR JSON object, enforcing media type (before reading) and size.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> ApiResult<Value> {
    check_json_media_type(headers)?;
    let bytes = read_limited(body, limit).await?;
    parse_json(&bytes)
}

/// 415 unless the request's `Content-Type` is FHIR JSON (or plain JSON).
fn check_json_media_type(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if is_json_media_type(ct) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!(
                "Content-Type '{ct}' is not supported; send application/fhir+json (or application/json)"
            ),
        ))
    }
}

/// Reads a body up to `limit` bytes, answering 413 beyond it, and 408 when the body does not
/// arrive before its deadline (see [`crate::limits`]).
pub async fn read_limited(body: axum::body::Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if let Some(t) = caused_by::<BodyTimeout>(&e) {
            ApiError::for_status(StatusCode::REQUEST_TIMEOUT, t.to_string())
        } else if caused_by::<http_body_util::LengthLimitError>(&e).is_some() {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                format!("request body is larger than the configured limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

/// Parses an already-read body as FHIR JSON, checking its media type.
pub fn read_json_value(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<Value> {
    check_json_media_type(headers)?;
    parse_json(bytes)
}

/// Parses bytes as a JSON object.
pub fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "body must be a JSON object (a FHIR resource)",
        ));
    }
    Ok(v)
}

/// What the client asked for with `Prefer: return=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferReturn {
    /// No body.
    Minimal,
    /// The resource (default).
    Representation,
    /// An OperationOutcome about the interaction.
    OperationOutcome,
}

/// Reads `Prefer: return=...` (default: representation).
pub fn prefer_return(headers: &HeaderMap) -> PreferReturn {
    for v in headers.get_all("prefer") {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split([',', ';']) {
            match part.trim().to_ascii_lowercase().as_str() {
                "return=minimal" => return PreferReturn::Minimal,
                "return=operationoutcome" => return PreferReturn::OperationOutcome,
                "return=representation" => return PreferReturn::Representation,
                _ => {}
            }
        }
    }
    PreferReturn::Representation
}

/// Whether `Prefer: handling=strict` was sent (unknown search parameters become errors).
pub fn prefer_strict(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| {
        v.to_str()
            .map(|s| s.to_ascii_lowercase().contains("handling=strict"))
            .unwrap_or(false)
    })
}

/// Parses `If-Match: W/"3"` (or `"3"`, or `3`) into a version number.
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let inner = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    inner.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "If-Match '{s}' is not a version ETag such as W/\"3\""
        ))
    })
}

/// A JSON response with the FHIR media type.
pub fn fhir_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// Response for one stored version: ETag, Last-Modified, optional Location, and a body per
/// `Prefer`.
pub fn version_response(
    status: StatusCode,
    stored: &StoredVersion,
    location_base: Option<&str>,
    prefer: PreferReturn,
    message: &str,
) -> Response {
    let mut resp = match (prefer, &stored.resource) {
        (PreferReturn::Minimal, _) | (_, None) => status.into_response(),
        (PreferReturn::OperationOutcome, _) => fhir_json(
            status,
            &operation_outcome(Severity::Information, "informational", message),
        ),
        (PreferReturn::Representation, Some(body)) => fhir_json(status, body),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", stored.version)) {
        h.insert(header::ETAG, v);
    }
    if let Some(lm) = http_date(&stored.last_updated)
        && let Ok(v) = HeaderValue::from_str(&lm)
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(base) = location_base {
        let loc = format!(
            "{base}/{}/{}/_history/{}",
            stored.resource_type, stored.id, stored.version
        );
        if let Ok(v) = HeaderValue::from_str(&loc) {
            h.insert(header::LOCATION, v);
        }
    }
    resp
}

/// FHIR instant → IMF-fixdate for `Last-Modified`.
fn http_date(instant: &str) -> Option<String> {
    let t = humantime::parse_rfc3339(instant).ok()?;
    Some(httpdate(t))
}

fn httpdate(t: std::time::SystemTime) -> String {
    // humantime has no IMF-fixdate formatter; build it from the RFC 3339 parts.
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's civil calendar algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_modified_is_imf_fixdate() {
        assert_eq!(
            http_date("2026-11-29T02:15:40.123Z").as_deref(),
            Some("Sun, 29 Nov 2026 02:15:40 GMT")
        );
        assert_eq!(
            http_date("2024-02-29T23:59:59Z").as_deref(),
            Some("Thu, 29 Feb 2024 23:59:59 GMT")
        );
    }

    #[test]
    fn if_match_accepts_weak_and_strong_etags() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"3\""));
        assert_eq!(if_match(&h).ok().flatten(), Some(3));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"4\""));
        assert_eq!(if_match(&h).ok().flatten(), Some(4));
        h.insert(header::IF_MATCH, HeaderValue::from_static("nonsense"));
        assert!(if_match(&h).is_err());
    }

    #[test]
    fn prefer_return_reads_each_form() {
        let mut h = HeaderMap::new();
        assert_eq!(prefer_return(&h), PreferReturn::Representation);
        h.insert("prefer", HeaderValue::from_static("return=minimal"));
        assert_eq!(prefer_return(&h), PreferReturn::Minimal);
        h.insert(
            "prefer",
            HeaderValue::from_static("handling=strict, return=OperationOutcome"),
        );
        assert_eq!(prefer_return(&h), PreferReturn::OperationOutcome);
        assert!(prefer_strict(&h));
    }
}
