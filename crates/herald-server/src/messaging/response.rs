//! Response messages: the Bundle `$process-message` answers with, per FHIR version (R4 quotes
//! the request's `MessageHeader.id` in `response.identifier`, R5 its `Bundle.identifier`), and
//! how it is kept for answering resends.

use herald_fhir::FhirVersion;
use herald_fhir::outcome::Severity;
use serde_json::{Value, json};

/// `MessageHeader.response.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Processed.
    Ok,
    /// Not processed; a resend may succeed.
    TransientError,
    /// Not processed, and never will be as sent.
    FatalError,
}

impl Code {
    /// The code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::TransientError => "transient-error",
            Code::FatalError => "fatal-error",
        }
    }
}

/// What a request message said about itself, for the response.
#[derive(Debug, Clone)]
pub struct Request {
    /// The tenant's version.
    pub version: FhirVersion,
    /// The message id (`MessageHeader.id` in R4, the `Bundle.identifier` value in R5).
    pub id: String,
    /// `Bundle.identifier` as sent (R5 responses quote it).
    pub identifier: Option<Value>,
    /// The request's event (`eventCoding` or `eventUri`/`eventCanonical`), echoed.
    pub event: (String, Value),
    /// Where it came from (the response goes back there).
    pub source: String,
}

/// One issue of the response's OperationOutcome.
pub struct Issue {
    /// Severity.
    pub severity: Severity,
    /// Issue type code.
    pub code: &'static str,
    /// What happened.
    pub text: String,
}

/// Builds the response message: a MessageHeader answering `req` with `code`, and an
/// OperationOutcome (its `response.details`) listing what was done or what was wrong.
pub fn build(req: &Request, code: Code, own_endpoint: &str, issues: &[Issue]) -> Value {
    let header_url = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let outcome_url = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let response_identifier = match req.version {
        FhirVersion::R4 | FhirVersion::R4B => json!(req.id),
        _ => req
            .identifier
            .clone()
            .unwrap_or_else(|| json!({"value": req.id})),
    };
    let mut header = json!({
        "resourceType": "MessageHeader",
        "id": header_url.trim_start_matches("urn:uuid:"),
        "response": {
            "identifier": response_identifier,
            "code": code.as_str(),
            "details": {"reference": outcome_url},
        },
    });
    header[&req.event.0] = req.event.1.clone();
    let endpoint = match req.version {
        FhirVersion::R4 | FhirVersion::R4B => "endpoint",
        _ => "endpointUrl",
    };
    header["source"] = json!({endpoint: own_endpoint});
    // The answer goes back where the request came from, when it said.
    if !req.source.is_empty() {
        header["destination"] = json!([{endpoint: req.source}]);
    }
    let issues: Vec<Value> = if issues.is_empty() {
        vec![
            json!({"severity": "information", "code": "informational", "diagnostics": "message processed"}),
        ]
    } else {
        issues
            .iter()
            .map(|i| json!({"severity": i.severity.code(), "code": i.code, "diagnostics": i.text}))
            .collect()
    };
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid::Uuid::new_v4())},
        "type": "message",
        "timestamp": herald_store::now_instant(),
        "entry": [
            {"fullUrl": header_url, "resource": header},
            {"fullUrl": outcome_url, "resource": {"resourceType": "OperationOutcome", "issue": issues}},
        ],
    })
}

/// A response as kept for resends: the HTTP status and the body.
pub fn encode(status: u16, body: &Value) -> Vec<u8> {
    json!({"status": status, "body": body})
        .to_string()
        .into_bytes()
}

/// Reads a kept response back.
pub fn decode(bytes: &[u8]) -> Option<(u16, Value)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let status = u16::try_from(v.get("status")?.as_u64()?).ok()?;
    Some((status, v.get("body")?.clone()))
}
