//! Version-neutral building blocks for the suites that run one scenario on every FHIR version:
//! a Subscription body in the version's shape (R4 and R4B: backport `criteria` and extensions;
//! R5: `topic`, `filterBy`, `channelType`), its mutations (channel type, endpoint, MIME type,
//! heartbeat, identifier), `$status`/`$events` read back through Herald's own lenient parser, and
//! the notification Bundle shape each version requires.

use std::time::{Duration, Instant};

use herald_fhir::FhirVersion;
use herald_subscriptions::notification::{
    ParsedNotification, parse_notification, parse_status_bundle,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{get, topic};

/// Upper bound of every wait: generous, so that a loaded machine does not fail the tests.
pub const WAIT: Duration = Duration::from_secs(20);

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const R4_IDENTIFIER: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.identifier";

/// The default tenant serving `v` (`r4`, `r4b`, `r5`).
pub fn tenant(v: FhirVersion) -> &'static str {
    v.label()
}

/// Whether `v` carries Subscriptions in the backport's R4 shape.
pub fn backport(v: FhirVersion) -> bool {
    matches!(v, FhirVersion::R4 | FhirVersion::R4B)
}

/// The resource type topics are served as: `Basic` on R4, `SubscriptionTopic` elsewhere.
pub fn topic_type(v: FhirVersion) -> &'static str {
    match v {
        FhirVersion::R4 => "Basic",
        FhirVersion::R4B | FhirVersion::R5 => "SubscriptionTopic",
    }
}

/// A rest-hook Subscription of `v` on built-in topic `topic_id`, with `(resource type, parameter,
/// value)` filters and the payload `content` level.
pub fn subscription(
    v: FhirVersion,
    topic_id: &str,
    filters: &[(&str, &str, &str)],
    endpoint: &str,
    content: &str,
) -> Value {
    if backport(v) {
        let criteria: Vec<String> = filters
            .iter()
            .map(|(t, p, val)| format!("{t}?{p}={val}"))
            .collect();
        let criteria: Vec<&str> = criteria.iter().map(String::as_str).collect();
        crate::r4_subscription(topic_id, &criteria, endpoint, content)
    } else {
        let mut s = json!({
            "resourceType": "Subscription",
            "status": "requested",
            "topic": topic(topic_id),
            "channelType": {"system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook"},
            "endpoint": endpoint,
            "contentType": "application/fhir+json",
            "content": content
        });
        if !filters.is_empty() {
            s["filterBy"] = filters
                .iter()
                .map(|(t, p, val)| json!({"resourceType": t, "filterParameter": p, "value": val}))
                .collect();
        }
        s
    }
}

/// Sets the channel type code.
pub fn set_channel_type(v: FhirVersion, s: &mut Value, code: &str) {
    if backport(v) {
        s["channel"]["type"] = json!(code);
    } else {
        s["channelType"]["code"] = json!(code);
    }
}

/// Sets the endpoint.
pub fn set_endpoint(v: FhirVersion, s: &mut Value, endpoint: &str) {
    if backport(v) {
        s["channel"]["endpoint"] = json!(endpoint);
    } else {
        s["endpoint"] = json!(endpoint);
    }
}

/// Sets the MIME type of the notifications.
pub fn set_mime(v: FhirVersion, s: &mut Value, mime: &str) {
    if backport(v) {
        s["channel"]["payload"] = json!(mime);
    } else {
        s["contentType"] = json!(mime);
    }
}

fn channel_extension(s: &mut Value, url: &str, key: &str, value: Value) {
    let ext = s["channel"]
        .as_object_mut()
        .expect("channel")
        .entry("extension")
        .or_insert_with(|| json!([]));
    ext.as_array_mut()
        .expect("extension array")
        .push(json!({"url": url, key: value}));
}

/// Asks for a heartbeat every `secs` seconds.
pub fn set_heartbeat(v: FhirVersion, s: &mut Value, secs: u32) {
    if backport(v) {
        let url = format!("{BACKPORT}backport-heartbeat-period");
        channel_extension(s, &url, "valueUnsignedInt", json!(secs));
    } else {
        s["heartbeatPeriod"] = json!(secs);
    }
}

/// Caps the events per notification.
pub fn set_max_count(v: FhirVersion, s: &mut Value, max: u32) {
    if backport(v) {
        let url = format!("{BACKPORT}backport-max-count");
        channel_extension(s, &url, "valuePositiveInt", json!(max));
    } else {
        s["maxCount"] = json!(max);
    }
}

/// Gives the Subscription a business identifier.
pub fn set_identifier(v: FhirVersion, s: &mut Value, identifier: Value) {
    if backport(v) {
        s["extension"] = json!([{"url": R4_IDENTIFIER, "valueIdentifier": identifier}]);
    } else {
        s["identifier"] = json!([identifier]);
    }
}

/// `$events` of a Subscription (with `query`, e.g. `eventsSinceNumber=2`): the Bundle, checked
/// against its version's shape, and its reading.
pub async fn events(
    c: &reqwest::Client,
    v: FhirVersion,
    base: &str,
    sub: &str,
    query: &str,
) -> (Value, ParsedNotification) {
    let (s, b) = get(c, &format!("{base}/Subscription/{sub}/$events?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_notification_shape(v, &b);
    let parsed = parse_notification(&b).unwrap_or_else(|e| panic!("{e}: {b}"));
    (b, parsed)
}

/// (event number, focus reference) of every event `$events` returns.
pub async fn event_list(
    c: &reqwest::Client,
    v: FhirVersion,
    base: &str,
    sub: &str,
    query: &str,
) -> Vec<(u64, String)> {
    events(c, v, base, sub, query)
        .await
        .1
        .events
        .into_iter()
        .map(|e| (e.number, e.focus.unwrap_or_default()))
        .collect()
}

/// `$status` of one Subscription, read back; the result is a `searchset` in every version.
pub async fn status(
    c: &reqwest::Client,
    v: FhirVersion,
    base: &str,
    sub: &str,
) -> ParsedNotification {
    let (s, b) = get(c, &format!("{base}/Subscription/{sub}/$status")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["type"], "searchset", "{b}");
    let rt = &b["entry"][0]["resource"]["resourceType"];
    match v {
        FhirVersion::R4 => assert_eq!(rt, "Parameters", "{b}"),
        FhirVersion::R4B | FhirVersion::R5 => assert_eq!(rt, "SubscriptionStatus", "{b}"),
    }
    let mut parsed = parse_status_bundle(&b).unwrap_or_else(|e| panic!("{e}: {b}"));
    assert_eq!(parsed.len(), 1, "{b}");
    parsed.remove(0)
}

/// Polls the stored Subscription until its status is `want`; returns the resource.
pub async fn wait_status(c: &reqwest::Client, base: &str, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, s) = get(c, &format!("{base}/Subscription/{id}")).await;
        if s["status"] == want {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "Subscription/{id} never became {want}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a notification Bundle (delivered, or `$events`) against the shape its version
/// requires: R4 a `history` Bundle around a backport `Parameters`; R4B a `history` Bundle with
/// the backport's R4B profile around a `SubscriptionStatus`; R5 a `subscription-notification`
/// Bundle around a `SubscriptionStatus`, entries without `response`. Counts are JSON strings.
pub fn assert_notification_shape(v: FhirVersion, b: &Value) {
    let entries = b["entry"].as_array().expect("entries");
    let first = &entries[0]["resource"];
    let history = |b: &Value| {
        assert_eq!(b["type"], "history", "{b}");
        for e in entries {
            assert!(e["request"]["method"].is_string(), "entry.request: {b}");
            assert!(e["request"]["url"].is_string(), "entry.request: {b}");
            assert!(e["response"]["status"].is_string(), "entry.response: {b}");
        }
    };
    let status_resource = |first: &Value| {
        assert_eq!(first["resourceType"], "SubscriptionStatus", "{b}");
        assert!(
            first["eventsSinceSubscriptionStart"].is_string(),
            "integer64 as a JSON string: {b}"
        );
        for e in first["notificationEvent"].as_array().into_iter().flatten() {
            assert!(e["eventNumber"].is_string(), "as a JSON string: {b}");
        }
        assert!(first["subscription"]["reference"].is_string(), "{b}");
    };
    match v {
        FhirVersion::R4 => {
            history(b);
            assert_eq!(first["resourceType"], "Parameters", "{b}");
            assert_eq!(
                first["meta"]["profile"][0],
                format!("{BACKPORT}backport-subscription-status-r4"),
                "{b}"
            );
        }
        FhirVersion::R4B => {
            history(b);
            assert_eq!(
                b["meta"]["profile"][0],
                format!("{BACKPORT}backport-subscription-notification"),
                "{b}"
            );
            status_resource(first);
            let request = entries[0]["request"]["url"].as_str().unwrap_or_default();
            assert!(
                request.ends_with("/$status") || request.ends_with("/$events"),
                "{b}"
            );
        }
        FhirVersion::R5 => {
            assert_eq!(b["type"], "subscription-notification", "{b}");
            status_resource(first);
            for e in entries {
                assert!(
                    e["fullUrl"].is_string(),
                    "every R5 entry has a fullUrl: {b}"
                );
                assert!(e.get("response").is_none(), "no entry.response in R5: {b}");
            }
        }
    }
}
