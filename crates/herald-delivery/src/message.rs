//! The message channel: notifications delivered as FHIR **message** Bundles to a counterpart's
//! `$process-message` (Subscription channel type `message`), through the same durable queue,
//! order and retries as every channel.
//!
//! An event notification becomes one message whose `MessageHeader.focus` names the events'
//! focus resources, carried whole (full-resource payload) with the notification's additional
//! context and its status resource. When every focus is a Task, the event is COW's
//! `order-update`: a counterpart applies the Task by its shared identifier, so two Heralds keep
//! their copies of a Coordination Task in step. Other foci travel as `event-notification`.
//! Handshakes and heartbeats are messages with those event codes that carry the notification
//! Bundle itself; a counterpart acknowledges them and applies nothing.
//!
//! Reliable messaging: the message id (`MessageHeader.id`, and `Bundle.identifier`) is derived
//! from the notification's signing id, which is the same for every retry of the same events and
//! differs between Subscriptions, even one re-created under the same id. A counterpart that
//! already processed it answers with its first response and applies nothing twice.
//!
//! The answer decides the outcome: a 2xx whose response message says `ok` is delivered;
//! `fatal-error` is a permanent failure (4xx semantics: never resent unchanged); a
//! `transient-error`, a 5xx or no answer is retried.

use sha2::{Digest, Sha256};
use std::time::Duration;

use herald_subscriptions::notification::{NotificationType, parse_notification};
use herald_subscriptions::{ChannelType, Subscription};
use serde_json::{Map, Value, json};

use crate::channel::{Channel, Key, Notification, SendFuture, Sent};
use crate::policy::Failure;
use crate::resthook::RestHook;

/// COW's code system for the message events (`new-order`, `order-update`).
pub const COW_EVENT_SYSTEM: &str = "http://hl7.org/fhir/uv/cow/CodeSystem/temp";
/// The notification types' code system (handshake, heartbeat, event-notification).
pub const NOTIFICATION_EVENT_SYSTEM: &str = "http://hl7.org/fhir/subscription-notification-type";

/// How much of a counterpart's response is read (a response message is small; the attempt log
/// keeps only its start).
const RESPONSE_BYTES: usize = 64 * 1024;

/// The message channel.
#[derive(Clone)]
pub struct MessageChannel {
    http: RestHook,
    log_bytes: usize,
}

impl MessageChannel {
    /// Sends through `http`'s egress rules (a client of its own, reading whole responses);
    /// `log_bytes` of each response go to the attempt log.
    pub fn new(guard: &crate::egress::Guard, log_bytes: usize) -> Result<Self, reqwest::Error> {
        Ok(MessageChannel {
            http: RestHook::new(guard, RESPONSE_BYTES)?,
            log_bytes,
        })
    }
}

impl Channel for MessageChannel {
    fn kind(&self) -> ChannelType {
        ChannelType::Message
    }

    fn verifies_endpoint(&self) -> bool {
        true
    }

    /// Signed like rest-hook; the signing id is also what makes the message id stable.
    fn signs(&self) -> bool {
        true
    }

    fn ready(&self, _key: &Key) -> bool {
        true
    }

    fn send(&self, sub: &Subscription, n: Notification) -> SendFuture {
        let channel = self.clone();
        let endpoint = sub.channel.endpoint.clone().unwrap_or_default();
        let headers = sub.channel.headers.clone();
        Box::pin(async move {
            let seed = n.signing.as_ref().map_or_else(
                || format!("{}/{}/{:?}", n.key.0, n.key.1, n.job),
                |s| s.id.clone(),
            );
            let message = match build_message(&n.bundle, &message_id(&seed), &endpoint) {
                Ok(m) => m,
                Err(e) => {
                    return Sent::failed(
                        Failure::Status(422),
                        format!("message: cannot wrap the notification: {e}"),
                    );
                }
            };
            let mut sent = channel
                .http
                .post(
                    &endpoint,
                    "application/fhir+json",
                    &headers,
                    n.timeout,
                    &message,
                    n.signing.as_ref(),
                )
                .await;
            judge(&mut sent);
            sent.body = sent
                .body
                .take()
                .map(|b| crate::resthook::truncate(b, channel.log_bytes));
            sent
        })
    }
}

/// A FHIR id (at most 64 of `[A-Za-z0-9-.]`) derived from `seed`.
pub fn message_id(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("herald-{hex}")
}

/// Wraps a notification Bundle (R4 backport `history` or R5 `subscription-notification`) as a
/// message Bundle for `destination`.
pub fn build_message(notification: &Value, id: &str, destination: &str) -> Result<Value, String> {
    let parsed = parse_notification(notification).map_err(|e| e.to_string())?;
    let r5 = parsed.bundle_type == "subscription-notification";
    let source = parsed
        .subscription_reference
        .as_deref()
        .and_then(|r| {
            r.rsplit_once("/Subscription/")
                .map(|(base, _)| base.to_owned())
        })
        .unwrap_or_default();
    let mut header = Map::new();
    header.insert("resourceType".into(), json!("MessageHeader"));
    header.insert("id".into(), json!(id));
    let (code, system, entries, focus) = match parsed.kind {
        NotificationType::EventNotification => {
            let entries = carried_entries(notification);
            let foci: Vec<String> = parsed
                .events
                .iter()
                .filter_map(|e| e.focus.clone())
                .collect();
            let missing: Vec<&String> = foci
                .iter()
                .filter(|f| !entries.iter().any(|e| full_url_matches(e, f)))
                .collect();
            if let Some(m) = missing.first() {
                return Err(format!(
                    "the focus {m} is not in the notification (the message channel needs full-resource content)"
                ));
            }
            let all_tasks = !foci.is_empty()
                && foci
                    .iter()
                    .all(|f| f.rsplit('/').nth(1) == Some("Task") || f.contains("/Task/"));
            let (code, system) = if all_tasks {
                ("order-update", COW_EVENT_SYSTEM)
            } else {
                ("event-notification", NOTIFICATION_EVENT_SYSTEM)
            };
            let focus: Vec<Value> = entries
                .iter()
                .filter_map(|e| e.get("fullUrl").and_then(Value::as_str))
                .filter(|u| foci.iter().any(|f| same_reference(u, f)))
                .map(|u| json!({"reference": u}))
                .collect();
            (code, system, entries, focus)
        }
        kind => {
            let nb_url = format!("urn:uuid:{}", uuid::Uuid::new_v4());
            let entries = vec![json!({"fullUrl": nb_url, "resource": notification})];
            (
                kind.code(),
                NOTIFICATION_EVENT_SYSTEM,
                entries,
                vec![json!({"reference": nb_url})],
            )
        }
    };
    header.insert(
        "eventCoding".into(),
        json!({"system": system, "code": code}),
    );
    if r5 {
        header.insert("destination".into(), json!([{"endpointUrl": destination}]));
        header.insert("source".into(), json!({"endpointUrl": source}));
    } else {
        header.insert("destination".into(), json!([{"endpoint": destination}]));
        header.insert("source".into(), json!({"endpoint": source}));
    }
    header.insert("focus".into(), Value::Array(focus));
    let mut all = vec![
        json!({"fullUrl": format!("urn:uuid:{}", uuid_from(id)), "resource": Value::Object(header)}),
    ];
    all.extend(entries);
    Ok(json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid_from(id))},
        "type": "message",
        "timestamp": herald_store::now_instant(),
        "entry": all,
    }))
}

/// A UUID derived from a message id (for `urn:uuid:` identifiers that stay the same on resend).
fn uuid_from(id: &str) -> uuid::Uuid {
    let digest = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// The entries a message carries for an event notification: every entry of the notification
/// with a resource and a `fullUrl` (status first, then foci and additional context).
fn carried_entries(notification: &Value) -> Vec<Value> {
    notification
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("resource").is_some())
        .map(|e| {
            let mut out = json!({"resource": e["resource"].clone()});
            let url = e.get("fullUrl").and_then(Value::as_str).map_or_else(
                || format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                str::to_owned,
            );
            out["fullUrl"] = json!(url);
            out
        })
        .collect()
}

fn full_url_matches(entry: &Value, reference: &str) -> bool {
    entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .is_some_and(|u| same_reference(u, reference))
}

/// Whether a `fullUrl` and a focus reference name the same resource (the reference may be
/// versioned: `…/Task/1/_history/3`).
fn same_reference(full_url: &str, reference: &str) -> bool {
    let unversioned = reference
        .split_once("/_history/")
        .map_or(reference, |(r, _)| r);
    full_url == unversioned || full_url.ends_with(&format!("/{unversioned}"))
}

/// Reads a counterpart's answer: a 2xx must carry a response message whose code is `ok`.
fn judge(sent: &mut Sent) {
    if sent.failure.is_some() {
        return;
    }
    let code = sent
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .as_ref()
        .and_then(response_code);
    match code.as_deref() {
        Some("ok") => {}
        Some("fatal-error") => {
            sent.failure = Some(Failure::Status(422));
            sent.error = Some("message: the counterpart answered fatal-error".into());
        }
        Some(other) => {
            sent.failure = Some(Failure::Status(503));
            sent.error = Some(format!("message: the counterpart answered {other}"));
            sent.retry_after = sent.retry_after.or(Some(Duration::from_secs(1)));
        }
        None => {
            sent.failure = Some(Failure::Transport);
            sent.error = Some(
                "message: the answer is not a response message (MessageHeader.response.code)"
                    .into(),
            );
        }
    }
}

/// `MessageHeader.response.code` of a response message.
pub fn response_code(message: &Value) -> Option<String> {
    message
        .pointer("/entry/0/resource/response/code")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r4_event(focus: &str) -> Value {
        json!({
            "resourceType": "Bundle", "type": "history",
            "entry": [
                {"fullUrl": "urn:uuid:0b8f4c0e-4a0e-4e8a-9a1d-3c0f2d1b5a10", "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "subscription", "valueReference": {"reference": "http://f.example/fhir/r4/Subscription/s1"}},
                        {"name": "topic", "valueCanonical": "http://t"},
                        {"name": "status", "valueCode": "active"},
                        {"name": "type", "valueCode": "event-notification"},
                        {"name": "events-since-subscription-start", "valueString": "1"},
                        {"name": "notification-event", "part": [
                            {"name": "event-number", "valueString": "1"},
                            {"name": "focus", "valueReference": {"reference": format!("http://f.example/fhir/r4/{focus}/_history/2")}}
                        ]}
                    ]}},
                {"fullUrl": format!("http://f.example/fhir/r4/{focus}"), "resource": {"resourceType": focus.split('/').next().unwrap_or(""), "id": focus.split('/').nth(1).unwrap_or("")},
                 "request": {"method": "PUT", "url": focus}, "response": {"status": "200"}},
                {"fullUrl": "http://f.example/fhir/r4/ServiceRequest/sr1", "resource": {"resourceType": "ServiceRequest", "id": "sr1"}}
            ]
        })
    }

    #[test]
    fn a_task_event_is_an_order_update_with_the_task_as_focus() {
        let m = build_message(
            &r4_event("Task/t1"),
            "herald-1",
            "http://p.example/fhir/r4/$process-message",
        )
        .expect("message");
        let h = &m["entry"][0]["resource"];
        assert_eq!(m["type"], "message");
        assert_eq!(h["resourceType"], "MessageHeader");
        assert_eq!(h["id"], "herald-1");
        assert_eq!(h["eventCoding"]["code"], "order-update");
        assert_eq!(h["eventCoding"]["system"], COW_EVENT_SYSTEM);
        assert_eq!(
            h["focus"][0]["reference"],
            "http://f.example/fhir/r4/Task/t1"
        );
        assert_eq!(h["source"]["endpoint"], "http://f.example/fhir/r4");
        let types: Vec<&str> = m["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["resource"]["resourceType"].as_str())
            .collect();
        assert_eq!(
            types,
            ["MessageHeader", "Parameters", "Task", "ServiceRequest"]
        );
    }

    #[test]
    fn a_non_task_event_is_an_event_notification() {
        let m =
            build_message(&r4_event("ServiceRequest/x"), "herald-2", "http://p").expect("message");
        assert_eq!(
            m["entry"][0]["resource"]["eventCoding"]["code"],
            "event-notification"
        );
    }

    #[test]
    fn a_notification_without_its_focus_resource_is_refused() {
        let mut n = r4_event("Task/t1");
        if let Some(a) = n["entry"].as_array_mut() {
            a.remove(1);
        }
        let e = build_message(&n, "herald-3", "http://p").expect_err("no focus");
        assert!(e.contains("full-resource"), "{e}");
    }

    #[test]
    fn message_ids_are_stable_valid_fhir_ids() {
        let a = message_id("msg_abc");
        assert_eq!(a, message_id("msg_abc"));
        assert_ne!(a, message_id("msg_abd"));
        assert!(herald_fhir::is_valid_id(&a), "{a}");
    }

    #[test]
    fn only_an_ok_response_message_is_a_delivery() {
        let sent = |body: &str| {
            let mut s = Sent {
                status: Some(200),
                body: Some(body.to_owned()),
                ..Sent::failed(Failure::Transport, String::new())
            };
            s.failure = None;
            s.error = None;
            judge(&mut s);
            s.failure
        };
        let resp = |code: &str| {
            json!({"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"MessageHeader","response":{"code":code}}}]}).to_string()
        };
        assert_eq!(sent(&resp("ok")), None);
        assert_eq!(sent(&resp("fatal-error")), Some(Failure::Status(422)));
        assert_eq!(sent(&resp("transient-error")), Some(Failure::Status(503)));
        assert_eq!(sent("{}"), Some(Failure::Transport));
    }
}
