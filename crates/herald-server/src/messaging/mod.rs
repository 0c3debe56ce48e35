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

pub mod response;

use std::collections::HashMap;
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
use crate::bundle::commit::{AtomicWrite, Committed, commit_atomic};
use crate::bundle::plan::{self, Action, Method, Planned, at, local_references, resolve};
use crate::bundle::{check_scope, write_plan};
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::http::{fhir_json, read_json_body};
use response::{Code, Issue};

/// The notification event system (handshake, heartbeat, …).
const NOTIFICATION_EVENTS: &str = herald_delivery::message::NOTIFICATION_EVENT_SYSTEM;
/// COW's event system (new-order, order-update).
const COW_EVENTS: &str = herald_delivery::message::COW_EVENT_SYSTEM;

/// Resource types that belong to the envelope, never applied.
const ENVELOPE: [&str; 5] = [
    "MessageHeader",
    "Bundle",
    "Parameters",
    "SubscriptionStatus",
    "OperationOutcome",
];

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
    if let Some(kept) = state.store.message_response(&ctx.tenant.name, &key)? {
        return replay(&kept);
    }
    let own = format!("{}/$process-message", ctx.base);
    let (code, issues, writes_planned) = match event {
        Event::Acknowledge => (Code::Ok, Vec::new(), Ok((Vec::new(), Vec::new()))),
        Event::Unknown(e) => (
            Code::FatalError,
            vec![Issue {
                severity: Severity::Error,
                code: "not-supported",
                text: format!(
                    "event '{e}' is not processed here (known: {COW_EVENTS}#new-order, #order-update; {NOTIFICATION_EVENTS}#event-notification, #handshake, #heartbeat, #query-status)"
                ),
            }],
            Ok((Vec::new(), Vec::new())),
        ),
        Event::Apply => match plan_message(&state, &ctx, &bundle) {
            Ok((writes, entries, issues)) => (Code::Ok, issues, Ok((writes, entries))),
            Err(e) => (Code::FatalError, Vec::new(), Err(e)),
        },
    };
    let (code, issues, writes, entry_of) = match writes_planned {
        Ok(w) => (code, issues, w.0, w.1),
        Err(e) => (
            Code::FatalError,
            vec![error_issue(&e)],
            Vec::new(),
            Vec::new(),
        ),
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

/// The writes a message asks for (and for each, the Bundle entry it came from): each carried
/// resource upserted by its identifier, with references between the message's entries made
/// local (and references to entries that are not applied made absolute, so they still point at
/// the sender's copy).
fn plan_message(
    state: &AppState,
    ctx: &Ctx,
    bundle: &Value,
) -> ApiResult<(Vec<AtomicWrite>, Vec<usize>, Vec<Issue>)> {
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut issues = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut stale_keys: Vec<(String, Option<String>)> = Vec::new();
    let mut held_refs: Vec<(String, String)> = Vec::new();
    for (i, e) in entries.iter().enumerate().skip(1) {
        let Some(resource) = e.get("resource") else {
            continue;
        };
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if ENVELOPE.contains(&rt.as_str()) {
            continue;
        }
        let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
        let Some(query) = identifier_query(resource) else {
            issues.push(Issue {
                severity: Severity::Warning,
                code: "business-rule",
                text: format!(
                    "Bundle.entry[{i}]: {rt} has no identifier with system and value; not applied (message content is applied by business identifier)"
                ),
            });
            if let Some(u) = full_url {
                skipped.push(u);
            }
            continue;
        };
        crate::context::check_type(&ctx.tenant, &rt).map_err(|e| at(i, e))?;
        check_scope(&ctx.caller, &rt, Method::Put).map_err(|e| at(i, e))?;
        let origin = Origin::of(resource, full_url.as_deref());
        let mut body = resource.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("id");
            // The sender's version bookkeeping is its own; where the content came from is
            // kept as `meta.source` (the sender's versioned URL), to tell late messages apart.
            if let Some(Value::Object(meta)) = o.get_mut("meta") {
                meta.remove("versionId");
                meta.remove("lastUpdated");
                if let Some(src) = &origin.sent {
                    meta.insert("source".into(), Value::String(src.clone()));
                }
                if meta.is_empty() {
                    o.remove("meta");
                }
            } else if let Some(src) = &origin.sent {
                o.insert("meta".into(), serde_json::json!({"source": src}));
            }
        }
        let request = plan::Request {
            index: i,
            method: Method::Put,
            resource_type: rt,
            id: None,
            query: Some(query),
            resource: Some(body),
            if_none_exist: None,
            if_match: None,
            full_url,
        };
        // A message may carry several versions of one resource (a backlog of its changes):
        // they are applied in order, to the resource the first one resolved to.
        if stale_keys
            .iter()
            .any(|(rt, q)| *rt == request.resource_type && *q == request.query)
        {
            // A later version of a resource whose first version here was stale: judge it alone.
            let held = resolve(state, &ctx.tenant, &ctx.caller, request.clone())
                .ok()
                .and_then(|p| {
                    state
                        .store
                        .current(&ctx.tenant.name, &p.request.resource_type, &p.id)
                        .ok()
                        .flatten()
                });
            if held
                .as_ref()
                .is_some_and(|h| origin.stale(&ctx.tenant.name, h).is_some())
            {
                continue;
            }
            stale_keys.retain(|(rt, q)| !(*rt == request.resource_type && *q == request.query));
        }
        let earlier = planned.iter().find(|p| {
            p.request.resource_type == request.resource_type && p.request.query == request.query
        });
        match earlier {
            Some(e) => {
                let id = e.id.clone();
                planned.push(Planned {
                    action: Action::Write {
                        kind: herald_store::WriteKind::Upsert,
                        body: request.resource.clone(),
                        if_match: None,
                    },
                    request,
                    id,
                });
            }
            None => {
                let p = resolve(state, &ctx.tenant, &ctx.caller, request).map_err(|e| at(i, e))?;
                let held = state
                    .store
                    .current(&ctx.tenant.name, &p.request.resource_type, &p.id)?
                    .filter(|v| !v.is_deleted());
                if let Some(held) = held
                    && let Some(why) = origin.stale(&ctx.tenant.name, &held)
                {
                    issues.push(Issue {
                        severity: Severity::Information,
                        code: "informational",
                        text: format!(
                            "Bundle.entry[{i}]: {}/{} not changed: {why}",
                            held.resource_type, held.id
                        ),
                    });
                    // Later versions of it in this message are judged the same way; references
                    // to it still name what we hold.
                    stale_keys.push((p.request.resource_type.clone(), p.request.query.clone()));
                    if let Some(u) = &p.request.full_url {
                        held_refs.push((u.clone(), format!("{}/{}", held.resource_type, held.id)));
                    }
                    continue;
                }
                planned.push(p);
            }
        }
    }
    let references = message_references(&planned, &held_refs, &skipped);
    for p in &planned {
        let found = matches!(&p.action, Action::Write { .. })
            && state
                .store
                .current(&ctx.tenant.name, &p.request.resource_type, &p.id)
                .ok()
                .flatten()
                .is_some_and(|v| !v.is_deleted());
        issues.push(Issue {
            severity: Severity::Information,
            code: "informational",
            text: format!(
                "Bundle.entry[{}]: {} {}/{} (matched by {})",
                p.request.index,
                if found { "updates" } else { "creates" },
                p.request.resource_type,
                p.id,
                form_urlencoded::parse(p.request.query.as_deref().unwrap_or("").as_bytes())
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let writes = write_plan(
        state,
        &ctx.tenant,
        &ctx.caller,
        &mut planned,
        Some(&references),
    )?;
    let entries = writes
        .entry_of
        .iter()
        .map(|&p| planned[p].request.index)
        .collect();
    Ok((writes.writes, entries, issues))
}

/// Where a carried resource's content comes from, to tell a late message from a new one:
/// `sent` is the sender's versioned URL of it (`fullUrl/_history/versionId`), `echo` the version
/// it copies when the sender got it from us (its `meta.source`).
struct Origin {
    sent: Option<String>,
    from: Option<(String, u64)>,
    echo: Option<(String, u64)>,
}

impl Origin {
    fn of(resource: &Value, full_url: Option<&str>) -> Origin {
        let version = resource
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok());
        let from = match (full_url, version) {
            (Some(u), Some(v)) if u.starts_with("http://") || u.starts_with("https://") => {
                Some((u.to_owned(), v))
            }
            _ => None,
        };
        Origin {
            sent: from.as_ref().map(|(u, v)| format!("{u}/_history/{v}")),
            from,
            echo: resource
                .pointer("/meta/source")
                .and_then(Value::as_str)
                .and_then(versioned),
        }
    }

    /// Why applying it over `held` would go back in time, if it would: it is an older (or the
    /// same) version from the same sender than the one held, or it is our own older version
    /// coming back (an echo that crossed a newer change of ours).
    fn stale(&self, tenant: &str, held: &herald_store::StoredVersion) -> Option<String> {
        if let Some((url, v)) = &self.echo
            && url.ends_with(&format!(
                "/fhir/{tenant}/{}/{}",
                held.resource_type, held.id
            ))
            && *v < held.version
        {
            return Some(format!(
                "it copies our version {v}, and version {} is newer",
                held.version
            ));
        }
        let held_from = held
            .resource
            .as_ref()
            .and_then(|r| r.pointer("/meta/source"))
            .and_then(Value::as_str)
            .and_then(versioned);
        match (&self.from, held_from) {
            (Some((url, v)), Some((held_url, w))) if *url == held_url && *v <= w => Some(format!(
                "version {v} from {url} is not newer than version {w} already applied"
            )),
            _ => None,
        }
    }
}

/// `…/Type/id/_history/n` → (`…/Type/id`, n).
fn versioned(url: &str) -> Option<(String, u64)> {
    let (base, v) = url.rsplit_once("/_history/")?;
    Some((base.to_owned(), v.parse().ok()?))
}

/// `identifier=system|value` for the first identifier with both, URL-encoded.
fn identifier_query(resource: &Value) -> Option<String> {
    let first = resource.get("identifier").and_then(|i| match i {
        Value::Array(a) => a.iter().find(|x| has_system_and_value(x)).cloned(),
        Value::Object(_) if has_system_and_value(i) => Some(i.clone()),
        _ => None,
    })?;
    let system = first.get("system")?.as_str()?;
    let value = first.get("value")?.as_str()?;
    Some(
        form_urlencoded::Serializer::new(String::new())
            .append_pair("identifier", &format!("{system}|{value}"))
            .finish(),
    )
}

fn has_system_and_value(i: &Value) -> bool {
    i.get("system").and_then(Value::as_str).is_some()
        && i.get("value").and_then(Value::as_str).is_some()
}

/// What references in a message become: each applied (or already held) entry's `fullUrl` (and, for an absolute
/// `fullUrl`, the relative `Type/id` the sender's resources use among themselves) → the local
/// `Type/id`; an entry not applied → its absolute `fullUrl`.
fn message_references(
    planned: &[Planned],
    held: &[(String, String)],
    skipped: &[String],
) -> HashMap<String, String> {
    let mut map = local_references(planned);
    for (url, local) in held {
        map.entry(url.clone()).or_insert_with(|| local.clone());
    }
    let relative = |url: &str| -> Option<String> {
        let mut parts = url.rsplit('/');
        let id = parts.next()?;
        let rt = parts.next()?;
        (url.starts_with("http://") || url.starts_with("https://")).then(|| format!("{rt}/{id}"))
    };
    let extra: Vec<(String, String)> = map
        .iter()
        .filter_map(|(url, local)| relative(url).map(|r| (r, local.clone())))
        .collect();
    map.extend(extra);
    for url in skipped {
        if let Some(r) = relative(url) {
            map.entry(r).or_insert_with(|| url.clone());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_identifier_becomes_an_encoded_conditional_query() {
        let q = identifier_query(&json!({"identifier": [
            {"value": "no-system"},
            {"system": "https://placer.example/ids", "value": "T 1|x"}
        ]}))
        .expect("query");
        let back: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            back,
            vec![(
                "identifier".to_owned(),
                "https://placer.example/ids|T 1|x".to_owned()
            )]
        );
        assert!(identifier_query(&json!({"identifier": [{"value": "x"}]})).is_none());
    }

    fn held(id: &str, version: u64, source: Option<&str>) -> herald_store::StoredVersion {
        let mut r = json!({"resourceType": "Task", "id": id});
        if let Some(s) = source {
            r["meta"] = json!({"source": s});
        }
        herald_store::StoredVersion {
            resource_type: "Task".into(),
            id: id.into(),
            version,
            last_updated: String::new(),
            interaction: herald_store::Interaction::Update,
            resource: Some(r),
        }
    }

    #[test]
    fn an_older_version_from_the_same_sender_is_stale_and_a_newer_one_is_not() {
        let from = |v: &str| {
            Origin::of(
                &json!({"resourceType": "Task", "meta": {"versionId": v}}),
                Some("http://f.example/fhir/r4/Task/t1"),
            )
        };
        let h = held(
            "local",
            5,
            Some("http://f.example/fhir/r4/Task/t1/_history/3"),
        );
        assert!(from("2").stale("r4", &h).is_some());
        assert!(from("3").stale("r4", &h).is_some());
        assert!(from("4").stale("r4", &h).is_none());
        // From another sender, or onto a resource that was never copied: not comparable.
        let other = Origin::of(
            &json!({"resourceType": "Task", "meta": {"versionId": "1"}}),
            Some("http://g.example/fhir/r4/Task/t1"),
        );
        assert!(other.stale("r4", &h).is_none());
        assert!(from("1").stale("r4", &held("local", 2, None)).is_none());
    }

    #[test]
    fn our_own_older_version_coming_back_is_stale() {
        let echo = |v: u64| {
            Origin::of(
                &json!({"resourceType": "Task", "meta": {"versionId": "7",
                    "source": format!("http://p.example/fhir/r4/Task/ct-1/_history/{v}")}}),
                Some("http://f.example/fhir/r4/Task/copy"),
            )
        };
        assert!(echo(1).stale("r4", &held("ct-1", 2, None)).is_some());
        assert!(echo(2).stale("r4", &held("ct-1", 2, None)).is_none());
        assert!(echo(1).stale("r5", &held("ct-1", 2, None)).is_none());
    }

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
