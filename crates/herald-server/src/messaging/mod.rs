//! FHIR messaging: `POST [base]/$process-message` (COW pattern 3, and the counterpart of the
//! message channel).
//!
//! A `message` Bundle (MessageHeader first) is checked as an envelope (400 with an
//! OperationOutcome when it is not one), then handled by its event:
//! - `new-order`, `order-update` (COW) and `event-notification`: every resource it carries,
//!   except the envelope's own (MessageHeader, status resources, nested Bundles), is applied by
//!   its **business identifier** (`Type?identifier=system|value`: updated when found, created
//!   when not), through the transaction path: all or nothing, in entry order, references between
//!   entries rewritten to the local ids. A resource without an identifier is not applied (the
//!   response says so): without one there is nothing to correlate it by.
//! - `handshake`, `heartbeat`, `query-status`: acknowledged; nothing is applied.
//!
//! Reliable messaging: the response is recorded under the message id (R4 `MessageHeader.id`,
//! R5 `Bundle.identifier`, with the source endpoint) in the same durable write as the changes,
//! and a resend is answered with it, changing nothing, also after a restart. `ok` and
//! `fatal-error` are final and recorded; `transient-error` (503) is not, so a resend is tried
//! again. Synchronous only: `async=true` and `response-url` are refused.

mod apply;
pub mod response;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use herald_fhir::FhirVersion;
use herald_fhir::outcome::Severity;
use herald_store::MessageRecord;
use serde_json::Value;

use crate::AppState;
use crate::bundle::commit::{Committed, commit_atomic};
use crate::bundle::plan::at;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::http::{fhir_json, read_json_body};
use response::{Code, Issue};

/// The notification event system (handshake, heartbeat, …).
const NOTIFICATION_EVENTS: &str = herald_delivery::message::NOTIFICATION_EVENT_SYSTEM;
/// COW's event system (new-order, order-update).
const COW_EVENTS: &str = herald_delivery::message::COW_EVENT_SYSTEM;

/// What a message asks for.
enum Event {
    /// Apply what it carries.
    Apply,
    /// Acknowledge only.
    Acknowledge,
    /// Not an event Herald handles.
    Unknown(String),
}

/// `POST [base]/$process-message`.
pub async fn process_message(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    check_parameters(query.as_deref())?;
    let bundle = read_json_body(&headers, body, state.config.max_body_bytes).await?;
    let (request, event) = envelope(ctx.tenant.version, &bundle)?;
    let key = format!("{} {}", request.source, request.id);
    if let Some(kept) = state
        .store
        .resources
        .message_response(&ctx.tenant.name, &key)?
    {
        return replay(&kept);
    }
    let own = format!("{}/$process-message", ctx.base);
    // What to apply, or why nothing will be (final: kept and answered with `fatal-error`).
    let planned = match event {
        Event::Acknowledge => Ok((Vec::new(), Vec::new(), Vec::new())),
        Event::Unknown(e) => Err(Issue {
            severity: Severity::Error,
            code: "not-supported",
            text: format!(
                "event '{e}' is not processed here (known: {COW_EVENTS}#new-order, #order-update; {NOTIFICATION_EVENTS}#event-notification, #handshake, #heartbeat, #query-status)"
            ),
        }),
        Event::Apply => match apply::plan_message(&state, &ctx, &bundle) {
            Ok(p) => Ok(p),
            // The store failed while reading: not the message's fault, so not kept.
            Err(e) if e.status.is_server_error() => {
                let answer =
                    response::build(&request, Code::TransientError, &own, &[error_issue(&e)]);
                return Ok(fhir_json(StatusCode::SERVICE_UNAVAILABLE, &answer));
            }
            Err(e) => Err(error_issue(&e)),
        },
    };
    let (code, writes, entry_of, issues) = match planned {
        Ok((writes, entry_of, issues)) => (Code::Ok, writes, entry_of, issues),
        Err(issue) => (Code::FatalError, Vec::new(), Vec::new(), vec![issue]),
    };
    let answer = response::build(&request, code, &own, &issues);
    let record = |body: &Value| MessageRecord {
        tenant: &ctx.tenant.name,
        id: &key,
        response: response::encode(200, body),
    };
    match commit_atomic(&state, &ctx.tenant, &writes, Some(record(&answer))).await {
        Ok(Committed::Applied(_)) => Ok(fhir_json(StatusCode::OK, &answer)),
        Ok(Committed::Duplicate(kept)) => replay(&kept),
        Err(refusal) => {
            let e = match refusal.index.and_then(|w| entry_of.get(w)) {
                Some(&i) => at(i, refusal.error),
                None => refusal.error,
            };
            if e.status.is_server_error() {
                let answer =
                    response::build(&request, Code::TransientError, &own, &[error_issue(&e)]);
                return Ok(fhir_json(StatusCode::SERVICE_UNAVAILABLE, &answer));
            }
            // The content is refused: final, and kept like any answer.
            let answer = response::build(&request, Code::FatalError, &own, &[error_issue(&e)]);
            match commit_atomic(&state, &ctx.tenant, &[], Some(record(&answer))).await {
                Ok(Committed::Duplicate(kept)) => replay(&kept),
                Ok(Committed::Applied(_)) => Ok(fhir_json(StatusCode::OK, &answer)),
                Err(r) => Err(r.error),
            }
        }
    }
}

fn error_issue(e: &ApiError) -> Issue {
    Issue {
        severity: Severity::Error,
        code: e.code,
        text: e.diagnostics.clone(),
    }
}

/// A kept response, sent again.
fn replay(kept: &[u8]) -> ApiResult<Response> {
    let (status, body) = response::decode(kept).ok_or_else(|| {
        ApiError::internal("reading a kept message response", "undecodable record")
    })?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(fhir_json(status, &body))
}

/// Only synchronous processing is offered.
fn check_parameters(query: Option<&str>) -> ApiResult<()> {
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "async" if v == "false" => {}
            "async" | "response-url" => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    format!(
                        "{k} is not supported: messages are processed synchronously and answered in the response"
                    ),
                ));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}' for $process-message (known: async=false)"
                )));
            }
        }
    }
    Ok(())
}

/// Checks the envelope and reads what the response needs.
fn envelope(version: FhirVersion, bundle: &Value) -> ApiResult<(response::Request, Event)> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || bundle.get("type").and_then(Value::as_str) != Some("message")
    {
        return Err(ApiError::bad_request(
            "$process-message takes a Bundle of type 'message'",
        ));
    }
    herald_fhir::validate::check_resource(version, bundle)?;
    let header = bundle
        .pointer("/entry/0/resource")
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("MessageHeader"))
        .ok_or_else(|| {
            ApiError::bad_request(
                "a message's first entry must be its MessageHeader (Bundle.entry[0].resource)",
            )
        })?;
    let identifier = bundle.get("identifier").cloned();
    let identifier_value = identifier
        .as_ref()
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let header_id = header.get("id").and_then(Value::as_str).map(str::to_owned);
    let id = match version {
        FhirVersion::R4 | FhirVersion::R4B => header_id.or(identifier_value),
        _ => identifier_value.or(header_id),
    }
    .ok_or_else(|| {
        ApiError::bad_request(match version {
            FhirVersion::R4 | FhirVersion::R4B => {
                "a message needs an id to be processed once: MessageHeader.id (or Bundle.identifier)"
            }
            _ => "a message needs an id to be processed once: Bundle.identifier (or MessageHeader.id)",
        })
    })?;
    let source = header
        .pointer("/source/endpoint")
        .or_else(|| header.pointer("/source/endpointUrl"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let event = ["eventCoding", "eventUri", "eventCanonical"]
        .iter()
        .find_map(|k| header.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .ok_or_else(|| {
            ApiError::bad_request("MessageHeader.event[x] is required (eventCoding or eventUri)")
        })?;
    let what = match &event.1 {
        Value::Object(c) => {
            let system = c.get("system").and_then(Value::as_str).unwrap_or("");
            let code = c.get("code").and_then(Value::as_str).unwrap_or("");
            match (system, code) {
                (COW_EVENTS, "new-order" | "order-update")
                | (NOTIFICATION_EVENTS, "event-notification") => Event::Apply,
                (NOTIFICATION_EVENTS, "handshake" | "heartbeat" | "query-status") => {
                    Event::Acknowledge
                }
                _ => Event::Unknown(format!("{system}#{code}")),
            }
        }
        Value::String(uri) => Event::Unknown(uri.clone()),
        _ => Event::Unknown(String::new()),
    };
    Ok((
        response::Request {
            version,
            id,
            identifier,
            event,
            source,
        },
        what,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_message_without_a_message_header_first_is_not_a_message() {
        let b = json!({"resourceType": "Bundle", "type": "message", "entry": [
            {"resource": {"resourceType": "Task", "status": "requested", "intent": "order"}}
        ]});
        let e = envelope(FhirVersion::R4, &b).err().expect("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.diagnostics.contains("MessageHeader"), "{}", e.diagnostics);
    }

    #[test]
    fn an_r4_message_is_known_by_its_header_id_and_an_r5_one_by_its_identifier() {
        let b = json!({"resourceType": "Bundle", "type": "message",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:8c5f0a52-5c1e-4d3f-9a7e-0b2f6d1e4c3a"},
            "entry": [{"resource": {"resourceType": "MessageHeader", "id": "mh-1",
                "eventCoding": {"system": COW_EVENTS, "code": "new-order"},
                "source": {"endpoint": "http://placer.example/fhir"}}}]});
        let (r4, e4) = envelope(FhirVersion::R4, &b).expect("r4");
        assert_eq!(r4.id, "mh-1");
        assert!(matches!(e4, Event::Apply));
        let mut b = b;
        b["entry"][0]["resource"]["source"] = json!({"endpointUrl": "http://placer.example/fhir"});
        let (r5, _) = envelope(FhirVersion::R5, &b).expect("r5");
        assert_eq!(r5.id, "urn:uuid:8c5f0a52-5c1e-4d3f-9a7e-0b2f6d1e4c3a");
    }
}
