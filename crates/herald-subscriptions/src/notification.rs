//! Notification bundles: building the Bundles Herald sends (handshake, heartbeat,
//! event-notification, query-event) and the `$status` result, for the R4 and R4B Subscriptions
//! Backport and for R5, at each payload content level; and a lenient parser for notification Bundles of
//! R4 (backport `Parameters` status), R4B and R5 (`SubscriptionStatus`).
//!
//! This module owns its own input types so that it does not depend on the Subscription model;
//! callers translate their stored Subscription into a [`SubscriptionRef`].
//!
//! # Decisions
//!
//! - **Focus references are versioned and absolute**: `{base}/{Type}/{id}/_history/{version}` with
//!   `Reference.type` set, so a receiver can tell which version triggered the event even at
//!   `id-only`. An empty [`ResourceAtVersion::version`] gives the unversioned `{base}/{Type}/{id}`.
//!   The same rule applies to additional-context references. Payload `fullUrl`s are never
//!   versioned (`bdl-8`); [`parse_notification`] matches focus to entries by type and id (and by
//!   `meta.versionId` when several versions are present), never by exact string (fixture quirk Q3).
//! - **Entry requests** follow the interaction that triggered the event: create is
//!   `POST {Type}` (as in the backport full-resource example), update is `PUT {Type}/{id}`, delete
//!   is `DELETE {Type}/{id}`; additional-context entries are `GET {Type}/{id}`. In R4 and R4B the
//!   matching `response.status` is `"201"`, `"200"`, `"204"` and `"200"`. R5 entries carry the
//!   `request` but **never** a `response` (the R5 `subscription-notification-bundle` profile sets it to 0..0).
//! - **Deleted resources** (interaction delete) never carry a `resource`, even at full-resource.
//! - **Status entry**: `fullUrl` `urn:uuid:{u}` where `{u}` is a UUID derived deterministically
//!   from the Bundle id (so it is fresh whenever the Bundle id is). In R4 and R4B its request is
//!   `GET Subscription/{id}/$status` (`$events` for query-event) with response `"200"`.
//! - **R4B** is R4's envelope (a `history` Bundle with the backport's R4B notification profile)
//!   around R5's status: a native `SubscriptionStatus` (R4B's has the same elements, counts as
//!   strings).
//! - **`$status`** returns a `searchset` Bundle in every version, as the OperationDefinitions
//!   say (R4B's core example wraps it in a `history` Bundle; parsed, not imitated); each entry
//!   is a status of type `query-status` with `search.mode = match`. The R5 example that wraps it
//!   in a `subscription-notification` Bundle is parsed, not imitated.
//! - **Payload entries are de-duplicated**: the same resource at the same version appears once;
//!   in R5 at id-only (no `meta.versionId` to tell entries apart, `bdl-7`) the same resource appears
//!   once whatever its version.
//! - Handshake, heartbeat and query-status carry no `notificationEvent`, whatever events are given.
//!   Events are emitted in the order given; the caller numbers them.

use std::collections::HashSet;

use herald_fhir::FhirVersion;
use serde_json::{Map, Value, json};

/// Profile of the R4 backport status `Parameters` resource (entry 0 of an R4 notification).
pub const BACKPORT_STATUS_PROFILE_R4: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";

/// Profile of the R4 backport notification `Bundle`.
pub const BACKPORT_NOTIFICATION_PROFILE_R4: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4";

/// Profile of the backport notification `Bundle` on R4B (entry 0 is a `SubscriptionStatus`).
pub const BACKPORT_NOTIFICATION_PROFILE_R4B: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification";

/// Kind of notification (`http://hl7.org/fhir/subscription-notification-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationType {
    /// Channel set-up or verification.
    Handshake,
    /// Keep-alive.
    Heartbeat,
    /// One or more events.
    EventNotification,
    /// Answer to `$status`.
    QueryStatus,
    /// Answer to `$events`.
    QueryEvent,
}

impl NotificationType {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Heartbeat => "heartbeat",
            Self::EventNotification => "event-notification",
            Self::QueryStatus => "query-status",
            Self::QueryEvent => "query-event",
        }
    }

    /// Parses a FHIR code.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "handshake" => Self::Handshake,
            "heartbeat" => Self::Heartbeat,
            "event-notification" => Self::EventNotification,
            "query-status" => Self::QueryStatus,
            "query-event" => Self::QueryEvent,
            _ => return None,
        })
    }

    /// Whether notifications of this kind carry `notificationEvent`s.
    pub fn carries_events(self) -> bool {
        matches!(self, Self::EventNotification | Self::QueryEvent)
    }
}

// The payload level and the triggering interaction are the model's own types: one definition
// for the Subscription, the matcher and the notification.
pub use crate::model::{Interaction, PayloadContent};

/// What a notification needs to know about its Subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRef {
    /// Logical id of the Subscription.
    pub id: String,
    /// Base URL of the FHIR endpoint that holds it, e.g. `http://127.0.0.1:8080/fhir/r4`.
    pub base_url: String,
    /// `Subscription.identifier` as stored; the first one is echoed in notifications.
    pub identifier: Vec<Value>,
    /// Canonical URL of the SubscriptionTopic.
    pub topic: String,
    /// Current status code: requested, active, error or off.
    pub status: String,
}

impl SubscriptionRef {
    /// Absolute reference `{base}/Subscription/{id}`.
    pub fn reference(&self) -> String {
        format!("{}/Subscription/{}", trim_base(&self.base_url), self.id)
    }
}

/// A resource at the version an event saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceAtVersion {
    /// Resource type, e.g. `Task`.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Version id; empty when unknown (the reference is then unversioned).
    pub version: String,
    /// The resource at that version; `None` when deleted or not loaded.
    pub resource: Option<Value>,
}

/// One numbered event of a Subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Per-subscription event number.
    pub number: u64,
    /// When the event happened (FHIR instant).
    pub timestamp: String,
    /// The resource that triggered the event.
    pub focus: ResourceAtVersion,
    /// Resources included for context.
    pub additional_context: Vec<ResourceAtVersion>,
    /// How the focus version came about; decides the payload entry's `request.method`.
    pub interaction: Interaction,
}

/// Everything [`build_notification`] needs.
#[derive(Debug, Clone)]
pub struct NotificationInput<'a> {
    /// FHIR version of the Subscription's endpoint.
    pub version: FhirVersion,
    /// Kind of notification.
    pub kind: NotificationType,
    /// The Subscription notified.
    pub subscription: &'a SubscriptionRef,
    /// Current value of the Subscription's event counter.
    pub events_since_start: u64,
    /// Events to include, in the order to emit them (ignored unless the kind carries events).
    pub events: &'a [EventRecord],
    /// Payload content level.
    pub content: PayloadContent,
    /// Errors to report (CodeableConcepts).
    pub errors: Vec<Value>,
    /// Fresh id of the Bundle.
    pub bundle_id: String,
    /// Bundle timestamp (FHIR instant).
    pub timestamp: String,
}

/// One event read back from a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    /// Event number (integer64 given as number or string).
    pub number: u64,
    /// Event timestamp, if any.
    pub timestamp: Option<String>,
    /// `focus.reference`, if any.
    pub focus: Option<String>,
    /// `additionalContext[].reference`.
    pub additional_context: Vec<String>,
    /// The focus resource found among the Bundle entries, if any.
    pub focus_resource: Option<Value>,
}

/// A notification read back leniently; fields the sender left out are `None` or empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedNotification {
    /// `Bundle.type` of the notification (the inner Bundle for message wrappers).
    pub bundle_type: String,
    /// Notification type.
    pub kind: NotificationType,
    /// `subscription.reference`.
    pub subscription_reference: Option<String>,
    /// `subscription.identifier` (a logical reference, as COW requires).
    pub subscription_identifier: Option<Value>,
    /// Topic canonical.
    pub topic: Option<String>,
    /// Subscription status code.
    pub status: Option<String>,
    /// Events since subscription start.
    pub events_since_start: Option<u64>,
    /// Events in the order they appear.
    pub events: Vec<ParsedEvent>,
    /// Reported errors (CodeableConcepts).
    pub errors: Vec<Value>,
}

/// Why a Bundle could not be read as a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// The body is not a FHIR Bundle.
    #[error("not a Bundle")]
    NotABundle,
    /// The Bundle has no first entry with a resource.
    #[error("Bundle has no status entry")]
    MissingStatus,
    /// Entry 0 is neither a `Parameters` nor a `SubscriptionStatus`.
    #[error("first entry is a {0}, not a subscription status")]
    NotAStatus(String),
    /// A required element is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A notification type code is unknown.
    #[error("unknown notification type {0:?}")]
    UnknownType(String),
    /// A count or event number is not a non-negative integer.
    #[error("{field} is not a non-negative integer: {value}")]
    BadNumber {
        /// Element name.
        field: &'static str,
        /// The offending JSON.
        value: String,
    },
    /// A `message` Bundle holds no notification Bundle.
    #[error("message Bundle holds no notification Bundle")]
    NoInnerBundle,
}

/// Builds a notification Bundle: R4 backport `history` Bundle or R5 `subscription-notification`
/// Bundle, with the status first and payload entries at the requested content level.
///
/// The caller keeps the counting invariants (handshake of a new subscription says 0; the highest
/// event number of an event-notification equals `events_since_start`; event-notification and
/// query-event carry at least one event).
pub fn build_notification(input: &NotificationInput) -> Value {
    let sub = input.subscription;
    let base = trim_base(&sub.base_url);
    let events: &[EventRecord] = if input.kind.carries_events() {
        input.events
    } else {
        &[]
    };
    let status_id = derived_uuid(&input.bundle_id, "status");
    let status = StatusData {
        kind: input.kind,
        sub,
        events_since_start: input.events_since_start,
        events,
        content: input.content,
        errors: &input.errors,
    };
    let payload = match input.content {
        PayloadContent::Empty => Vec::new(),
        _ => payload_entries(input.version, input.content, base, events),
    };
    let mut entries = Vec::with_capacity(1 + payload.len());
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(input.bundle_id));
    match input.version {
        FhirVersion::R4 | FhirVersion::R4B => {
            let op = if input.kind == NotificationType::QueryEvent {
                "$events"
            } else {
                "$status"
            };
            entries.push(obj([
                ("fullUrl", Value::String(format!("urn:uuid:{status_id}"))),
                (
                    "resource",
                    match input.version {
                        FhirVersion::R4B => r5_status(&status, &status_id),
                        _ => r4_status(&status, &status_id),
                    },
                ),
                (
                    "request",
                    json!({ "method": "GET", "url": format!("Subscription/{}/{op}", sub.id) }),
                ),
                ("response", json!({ "status": "200" })),
            ]));
            let profile = match input.version {
                FhirVersion::R4B => BACKPORT_NOTIFICATION_PROFILE_R4B,
                _ => BACKPORT_NOTIFICATION_PROFILE_R4,
            };
            bundle.insert("meta".into(), json!({ "profile": [profile] }));
            bundle.insert("type".into(), json!("history"));
        }
        FhirVersion::R5 => {
            entries.push(obj([
                ("fullUrl", Value::String(format!("urn:uuid:{status_id}"))),
                ("resource", r5_status(&status, &status_id)),
            ]));
            bundle.insert("type".into(), json!("subscription-notification"));
        }
    }
    entries.extend(payload);
    insert_str(&mut bundle, "timestamp", &input.timestamp);
    bundle.insert("entry".into(), Value::Array(entries));
    Value::Object(bundle)
}

/// Builds the `$status` result: a `searchset` Bundle with one status of type `query-status` per
/// Subscription (R4: backport `Parameters`; R4B and R5: `SubscriptionStatus`), each with `topic`,
/// `events-since-subscription-start` and any errors, and `search.mode = match`.
pub fn build_status_bundle(
    version: FhirVersion,
    statuses: &[(SubscriptionRef, u64, Vec<Value>)],
    bundle_id: &str,
    timestamp: &str,
) -> Value {
    let entries: Vec<Value> = statuses
        .iter()
        .enumerate()
        .map(|(i, (sub, count, errors))| {
            let status_id = derived_uuid(bundle_id, &format!("status-{i}"));
            let data = StatusData {
                kind: NotificationType::QueryStatus,
                sub,
                events_since_start: *count,
                events: &[],
                content: PayloadContent::IdOnly,
                errors,
            };
            let resource = match version {
                FhirVersion::R4 => r4_status(&data, &status_id),
                FhirVersion::R4B | FhirVersion::R5 => r5_status(&data, &status_id),
            };
            obj([
                ("fullUrl", Value::String(format!("urn:uuid:{status_id}"))),
                ("resource", resource),
                ("search", json!({ "mode": "match" })),
            ])
        })
        .collect();
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(bundle_id));
    bundle.insert("type".into(), json!("searchset"));
    insert_str(&mut bundle, "timestamp", timestamp);
    bundle.insert("total".into(), json!(entries.len()));
    bundle.insert("entry".into(), Value::Array(entries));
    Value::Object(bundle)
}

/// Parses a notification Bundle of any version leniently: R4 backport `Parameters` or
/// R4B/R5 `SubscriptionStatus` as entry 0; counts as JSON numbers or strings; R4 parameter values
/// under any `value[x]` (`valueString`, `valueUnsignedInt`, `valueInteger`, ...); the subscription
/// as a Reference (reference and/or identifier) or a plain string. A `message` Bundle is unwrapped
/// to the notification Bundle its MessageHeader focuses. Focus resources are found among the
/// payload entries by type and id.
pub fn parse_notification(body: &Value) -> Result<ParsedNotification, NotificationError> {
    let bundle_type = bundle_type(body)?;
    if bundle_type == "message" {
        return parse_notification(inner_bundle(body)?);
    }
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let status = entries
        .first()
        .and_then(|e| e.get("resource"))
        .ok_or(NotificationError::MissingStatus)?;
    let mut parsed = parse_status(status, bundle_type)?;
    let payload = entries.get(1..).unwrap_or_default();
    for event in &mut parsed.events {
        event.focus_resource = event
            .focus
            .as_deref()
            .and_then(|r| resolve_entry(payload, r))
            .cloned();
    }
    Ok(parsed)
}

/// Parses a `$status` result (a `searchset`, or leniently any Bundle) into one
/// [`ParsedNotification`] per status resource it holds, in entry order.
pub fn parse_status_bundle(body: &Value) -> Result<Vec<ParsedNotification>, NotificationError> {
    let bundle_type = bundle_type(body)?;
    body.get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("resource"))
        .filter(|r| {
            matches!(
                r.get("resourceType").and_then(Value::as_str),
                Some("Parameters" | "SubscriptionStatus")
            )
        })
        .map(|r| parse_status(r, bundle_type))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

struct StatusData<'a> {
    kind: NotificationType,
    sub: &'a SubscriptionRef,
    events_since_start: u64,
    events: &'a [EventRecord],
    content: PayloadContent,
    errors: &'a [Value],
}

impl StatusData<'_> {
    fn topic(&self) -> Option<&str> {
        (self.content != PayloadContent::Empty && !self.sub.topic.is_empty())
            .then_some(self.sub.topic.as_str())
    }

    fn base(&self) -> &str {
        trim_base(&self.sub.base_url)
    }
}

fn subscription_reference(sub: &SubscriptionRef) -> Value {
    let mut reference = Map::new();
    reference.insert("reference".into(), json!(sub.reference()));
    if let Some(identifier) = sub.identifier.first() {
        reference.insert("identifier".into(), identifier.clone());
    }
    Value::Object(reference)
}

fn resource_reference(base: &str, r: &ResourceAtVersion) -> Value {
    let mut url = format!("{base}/{}/{}", r.resource_type, r.id);
    if !r.version.is_empty() {
        url.push_str("/_history/");
        url.push_str(&r.version);
    }
    json!({ "reference": url, "type": r.resource_type })
}

/// A JSON object from owned values, in order. (`json!` serialises every value it embeds, which
/// deep-copies a `Value`: for a notification that was most of the cost of building it.)
fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn r4_status(data: &StatusData, status_id: &str) -> Value {
    let mut params = vec![obj([
        ("name", json!("subscription")),
        ("valueReference", subscription_reference(data.sub)),
    ])];
    if let Some(topic) = data.topic() {
        params.push(json!({ "name": "topic", "valueCanonical": topic }));
    }
    if !data.sub.status.is_empty() {
        params.push(json!({ "name": "status", "valueCode": data.sub.status }));
    }
    params.push(json!({ "name": "type", "valueCode": data.kind.code() }));
    params.push(json!({
        "name": "events-since-subscription-start",
        "valueString": data.events_since_start.to_string(),
    }));
    for event in data.events {
        let mut parts =
            vec![json!({ "name": "event-number", "valueString": event.number.to_string() })];
        if !event.timestamp.is_empty() {
            parts.push(json!({ "name": "timestamp", "valueInstant": event.timestamp }));
        }
        if data.content != PayloadContent::Empty {
            parts.push(obj([
                ("name", json!("focus")),
                (
                    "valueReference",
                    resource_reference(data.base(), &event.focus),
                ),
            ]));
            for ctx in &event.additional_context {
                parts.push(obj([
                    ("name", json!("additional-context")),
                    ("valueReference", resource_reference(data.base(), ctx)),
                ]));
            }
        }
        params.push(obj([
            ("name", json!("notification-event")),
            ("part", Value::Array(parts)),
        ]));
    }
    for error in data.errors {
        params.push(json!({ "name": "error", "valueCodeableConcept": error }));
    }
    obj([
        ("resourceType", json!("Parameters")),
        ("id", json!(status_id)),
        ("meta", json!({ "profile": [BACKPORT_STATUS_PROFILE_R4] })),
        ("parameter", Value::Array(params)),
    ])
}

fn r5_status(data: &StatusData, status_id: &str) -> Value {
    let mut status = Map::new();
    status.insert("resourceType".into(), json!("SubscriptionStatus"));
    status.insert("id".into(), json!(status_id));
    insert_str(&mut status, "status", &data.sub.status);
    status.insert("type".into(), json!(data.kind.code()));
    status.insert(
        "eventsSinceSubscriptionStart".into(),
        json!(data.events_since_start.to_string()),
    );
    if !data.events.is_empty() {
        let events: Vec<Value> = data
            .events
            .iter()
            .map(|event| {
                let mut e = Map::new();
                e.insert("eventNumber".into(), json!(event.number.to_string()));
                insert_str(&mut e, "timestamp", &event.timestamp);
                if data.content != PayloadContent::Empty {
                    e.insert(
                        "focus".into(),
                        resource_reference(data.base(), &event.focus),
                    );
                    if !event.additional_context.is_empty() {
                        let ctx: Vec<Value> = event
                            .additional_context
                            .iter()
                            .map(|c| resource_reference(data.base(), c))
                            .collect();
                        e.insert("additionalContext".into(), Value::Array(ctx));
                    }
                }
                Value::Object(e)
            })
            .collect();
        status.insert("notificationEvent".into(), Value::Array(events));
    }
    status.insert("subscription".into(), subscription_reference(data.sub));
    if let Some(topic) = data.topic() {
        status.insert("topic".into(), json!(topic));
    }
    if !data.errors.is_empty() {
        status.insert("error".into(), Value::Array(data.errors.to_vec()));
    }
    Value::Object(status)
}

fn payload_entries(
    version: FhirVersion,
    content: PayloadContent,
    base: &str,
    events: &[EventRecord],
) -> Vec<Value> {
    // R5 bdl-7: same fullUrl only with different meta.versionId; id-only entries have none.
    let collapse_versions = matches!(version, FhirVersion::R5) && content == PayloadContent::IdOnly;
    let mut seen: HashSet<(&str, &str, &str)> = HashSet::new();
    let mut entries = Vec::new();
    let items = events.iter().flat_map(|ev| {
        std::iter::once((&ev.focus, Some(ev.interaction)))
            .chain(ev.additional_context.iter().map(|c| (c, None)))
    });
    for (r, interaction) in items {
        let key_version = if collapse_versions {
            ""
        } else {
            r.version.as_str()
        };
        if !seen.insert((r.resource_type.as_str(), r.id.as_str(), key_version)) {
            continue;
        }
        entries.push(payload_entry(version, content, base, r, interaction));
    }
    entries
}

fn payload_entry(
    version: FhirVersion,
    content: PayloadContent,
    base: &str,
    r: &ResourceAtVersion,
    interaction: Option<Interaction>,
) -> Value {
    let type_and_id = format!("{}/{}", r.resource_type, r.id);
    let (method, url, status) = match interaction {
        Some(Interaction::Create) => ("POST", r.resource_type.clone(), "201"),
        Some(Interaction::Update) => ("PUT", type_and_id.clone(), "200"),
        Some(Interaction::Delete) => ("DELETE", type_and_id.clone(), "204"),
        None => ("GET", type_and_id.clone(), "200"),
    };
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(format!("{base}/{type_and_id}")));
    if content == PayloadContent::FullResource
        && interaction != Some(Interaction::Delete)
        && let Some(resource) = &r.resource
    {
        entry.insert("resource".into(), resource.clone());
    }
    entry.insert("request".into(), json!({ "method": method, "url": url }));
    if matches!(version, FhirVersion::R4 | FhirVersion::R4B) {
        entry.insert("response".into(), json!({ "status": status }));
    }
    Value::Object(entry)
}

fn trim_base(base: &str) -> &str {
    base.trim_end_matches('/')
}

fn insert_str(map: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.into(), json!(value));
    }
}

/// A UUID (version 8, RFC 9562 "custom") derived from `seed` and `salt` with two FNV-1a
/// passes. Not cryptographic: it is as unique as the seed (a fresh Bundle id per send).
fn derived_uuid(seed: &str, salt: &str) -> String {
    fn fnv1a(offset: u64, parts: &[&[u8]]) -> u64 {
        let mut hash = offset;
        for part in parts {
            for byte in *part {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    }
    let parts: [&[u8]; 3] = [seed.as_bytes(), &[0xff], salt.as_bytes()];
    let hi = fnv1a(0xcbf2_9ce4_8422_2325, &parts);
    let lo = fnv1a(
        0x6c62_272e_07bb_0142,
        &[salt.as_bytes(), &[0xfe], seed.as_bytes()],
    );
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

fn bundle_type(body: &Value) -> Result<&str, NotificationError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(NotificationError::NotABundle);
    }
    Ok(body.get("type").and_then(Value::as_str).unwrap_or_default())
}

/// The notification Bundle inside a `message` Bundle: the entry the MessageHeader focuses, or
/// else the first entry holding a Bundle.
fn inner_bundle(message: &Value) -> Result<&Value, NotificationError> {
    let entries = message
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_bundle = |e: &&Value| {
        e.get("resource")
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str)
            == Some("Bundle")
    };
    let focused = entries
        .first()
        .and_then(|e| e.get("resource"))
        .and_then(|h| h.get("focus"))
        .and_then(Value::as_array)
        .and_then(|f| f.first())
        .and_then(|f| f.get("reference"))
        .and_then(Value::as_str);
    let by_focus = focused.and_then(|reference| {
        entries
            .iter()
            .filter(is_bundle)
            .find(|e| e.get("fullUrl").and_then(Value::as_str) == Some(reference))
    });
    by_focus
        .or_else(|| entries.iter().find(is_bundle))
        .and_then(|e| e.get("resource"))
        .ok_or(NotificationError::NoInnerBundle)
}

fn parse_status(
    status: &Value,
    bundle_type: &str,
) -> Result<ParsedNotification, NotificationError> {
    match status.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => parse_r4_status(status, bundle_type),
        Some("SubscriptionStatus") => parse_r5_status(status, bundle_type),
        other => Err(NotificationError::NotAStatus(
            other.unwrap_or("resource without resourceType").to_string(),
        )),
    }
}

fn lenient_u64(field: &'static str, value: &Value) -> Result<u64, NotificationError> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| NotificationError::BadNumber {
        field,
        value: value.to_string(),
    })
}

fn parse_kind(code: Option<&str>) -> Result<NotificationType, NotificationError> {
    let code = code.ok_or(NotificationError::Missing("type"))?;
    NotificationType::from_code(code).ok_or_else(|| NotificationError::UnknownType(code.into()))
}

fn reference_string(reference: &Value) -> Option<String> {
    reference
        .get("reference")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Reads a subscription given as a Reference (reference and/or identifier) or as a string.
fn subscription_of(value: &Value) -> (Option<String>, Option<Value>) {
    match value {
        Value::String(s) => (Some(s.clone()), None),
        Value::Object(_) => (reference_string(value), value.get("identifier").cloned()),
        _ => (None, None),
    }
}

fn parse_r5_status(
    status: &Value,
    bundle_type: &str,
) -> Result<ParsedNotification, NotificationError> {
    let str_of = |key: &str| status.get(key).and_then(Value::as_str).map(str::to_string);
    let kind = parse_kind(status.get("type").and_then(Value::as_str))?;
    let events_since_start = status
        .get("eventsSinceSubscriptionStart")
        .map(|v| lenient_u64("eventsSinceSubscriptionStart", v))
        .transpose()?;
    let (subscription_reference, subscription_identifier) = status
        .get("subscription")
        .map(subscription_of)
        .unwrap_or_default();
    let events = status
        .get("notificationEvent")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|event| {
            let number = event
                .get("eventNumber")
                .ok_or(NotificationError::Missing("notificationEvent.eventNumber"))?;
            Ok(ParsedEvent {
                number: lenient_u64("notificationEvent.eventNumber", number)?,
                timestamp: event
                    .get("timestamp")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                focus: event.get("focus").and_then(reference_string),
                additional_context: event
                    .get("additionalContext")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(reference_string)
                    .collect(),
                focus_resource: None,
            })
        })
        .collect::<Result<Vec<_>, NotificationError>>()?;
    Ok(ParsedNotification {
        bundle_type: bundle_type.to_string(),
        kind,
        subscription_reference,
        subscription_identifier,
        topic: str_of("topic"),
        status: str_of("status"),
        events_since_start,
        events,
        errors: status
            .get("error")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    })
}

/// The `value[x]` of a Parameters parameter, whatever its type suffix.
fn param_value(param: &Value) -> Option<&Value> {
    param
        .as_object()?
        .iter()
        .find(|(key, _)| key.starts_with("value"))
        .map(|(_, value)| value)
}

/// A code or string parameter value, also accepting a Coding (its `code`).
fn param_code(param: &Value) -> Option<String> {
    match param_value(param)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("code").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A reference parameter value: `valueReference.reference` or a string-typed value.
fn param_reference(param: &Value) -> Option<String> {
    match param_value(param)? {
        Value::String(s) => Some(s.clone()),
        reference @ Value::Object(_) => reference_string(reference),
        _ => None,
    }
}

fn named<'a>(params: &'a [Value], name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    params
        .iter()
        .filter(move |p| p.get("name").and_then(Value::as_str) == Some(name))
}

fn parse_r4_status(
    status: &Value,
    bundle_type: &str,
) -> Result<ParsedNotification, NotificationError> {
    let params = status
        .get("parameter")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let first = |name: &'static str| named(params, name).next();
    let kind = parse_kind(first("type").and_then(param_code).as_deref())?;
    let events_since_start = first("events-since-subscription-start")
        .map(|p| {
            let value = param_value(p).ok_or(NotificationError::Missing(
                "events-since-subscription-start value",
            ))?;
            lenient_u64("events-since-subscription-start", value)
        })
        .transpose()?;
    let (subscription_reference, subscription_identifier) = first("subscription")
        .and_then(param_value)
        .map(subscription_of)
        .unwrap_or_default();
    let events = named(params, "notification-event")
        .map(|event| {
            let parts = event
                .get("part")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let number = named(parts, "event-number")
                .next()
                .and_then(param_value)
                .ok_or(NotificationError::Missing(
                    "notification-event.event-number",
                ))?;
            Ok(ParsedEvent {
                number: lenient_u64("notification-event.event-number", number)?,
                timestamp: named(parts, "timestamp").next().and_then(param_code),
                focus: named(parts, "focus").next().and_then(param_reference),
                additional_context: named(parts, "additional-context")
                    .filter_map(param_reference)
                    .collect(),
                focus_resource: None,
            })
        })
        .collect::<Result<Vec<_>, NotificationError>>()?;
    Ok(ParsedNotification {
        bundle_type: bundle_type.to_string(),
        kind,
        subscription_reference,
        subscription_identifier,
        topic: first("topic").and_then(param_code),
        status: first("status").and_then(param_code),
        events_since_start,
        events,
        errors: named(params, "error")
            .filter_map(param_value)
            .cloned()
            .collect(),
    })
}

/// Splits a reference into type, id and optional version (`.../Type/id[/_history/v]`).
fn split_reference(reference: &str) -> Option<(&str, &str, Option<&str>)> {
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (ty, id, version) = match segments.as_slice() {
        [.., ty, id, "_history", version] => (*ty, *id, Some(*version)),
        [.., ty, id] => (*ty, *id, None),
        _ => return None,
    };
    ty.starts_with(|c: char| c.is_ascii_uppercase())
        .then_some((ty, id, version))
}

/// The resource of the payload entry a reference points to: exact `fullUrl` match first, then
/// by resource type and id (preferring the referenced `meta.versionId`), so that `http` versus
/// `https` or relative versus absolute references still resolve.
fn resolve_entry<'a>(entries: &'a [Value], reference: &str) -> Option<&'a Value> {
    if let Some(found) = entries
        .iter()
        .find(|e| e.get("fullUrl").and_then(Value::as_str) == Some(reference))
        .and_then(|e| e.get("resource"))
    {
        return Some(found);
    }
    let (ty, id, version) = split_reference(reference)?;
    let mut candidates = entries
        .iter()
        .filter_map(|e| e.get("resource"))
        .filter(|r| {
            r.get("resourceType").and_then(Value::as_str) == Some(ty)
                && r.get("id").and_then(Value::as_str) == Some(id)
        });
    let Some(version) = version else {
        return candidates.next();
    };
    let version_of = |r: &Value| {
        r.get("meta")
            .and_then(|m| m.get("versionId"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let candidates: Vec<&Value> = candidates.collect();
    candidates
        .iter()
        .find(|r| version_of(r).as_deref() == Some(version))
        .or_else(|| candidates.iter().find(|r| version_of(r).is_none()))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuid_is_a_well_formed_rfc9562_v8_uuid_and_depends_on_seed_and_salt() {
        let a = derived_uuid("bundle-1", "status");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, derived_uuid("bundle-2", "status"));
        assert_ne!(a, derived_uuid("bundle-1", "status-0"));
        assert_eq!(a, derived_uuid("bundle-1", "status"));
    }

    #[test]
    fn split_reference_reads_type_id_and_version() {
        assert_eq!(
            split_reference("http://x/fhir/Task/t1/_history/3"),
            Some(("Task", "t1", Some("3")))
        );
        assert_eq!(split_reference("Task/t1"), Some(("Task", "t1", None)));
        assert_eq!(split_reference("urn:uuid:abc"), None);
    }
}
