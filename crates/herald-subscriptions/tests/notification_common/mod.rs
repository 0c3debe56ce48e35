//! Shared builders for the notification tests.
#![allow(dead_code)]

use herald_fhir::FhirVersion;
use herald_subscriptions::notification::{
    EventRecord, Interaction, NotificationInput, NotificationType, PayloadContent,
    ResourceAtVersion, SubscriptionRef,
};
use serde_json::{Value, json};

pub const BASE: &str = "http://127.0.0.1:8080/fhir/r4";

pub fn subscription() -> SubscriptionRef {
    SubscriptionRef {
        id: "sub-1".into(),
        base_url: format!("{BASE}/"),
        identifier: vec![
            json!({ "system": "https://placer.example.org/cow-subscriptions", "value": "77240214" }),
            json!({ "system": "urn:second", "value": "ignored" }),
        ],
        topic: "http://herald.example/SubscriptionTopic/cow-task-changed".into(),
        status: "active".into(),
    }
}

pub fn subscription_without_identifier() -> SubscriptionRef {
    SubscriptionRef {
        identifier: Vec::new(),
        ..subscription()
    }
}

pub fn task(id: &str, version: &str) -> ResourceAtVersion {
    ResourceAtVersion {
        resource_type: "Task".into(),
        id: id.into(),
        version: version.into(),
        resource: Some(json!({
            "resourceType": "Task", "id": id,
            "meta": { "versionId": version },
            "status": "requested", "intent": "order"
        })),
    }
}

pub fn service_request(id: &str, version: &str) -> ResourceAtVersion {
    ResourceAtVersion {
        resource_type: "ServiceRequest".into(),
        id: id.into(),
        version: version.into(),
        resource: Some(json!({
            "resourceType": "ServiceRequest", "id": id,
            "meta": { "versionId": version },
            "status": "active", "intent": "order"
        })),
    }
}

pub fn event(number: u64, focus: ResourceAtVersion, interaction: Interaction) -> EventRecord {
    EventRecord {
        number,
        timestamp: format!("2025-01-01T10:00:{:02}Z", number % 60),
        focus,
        additional_context: vec![service_request("sr-1", "1")],
        interaction,
    }
}

pub fn deleted_task(id: &str, version: &str) -> ResourceAtVersion {
    ResourceAtVersion {
        resource: None,
        ..task(id, version)
    }
}

pub fn input<'a>(
    version: FhirVersion,
    kind: NotificationType,
    sub: &'a SubscriptionRef,
    events_since_start: u64,
    events: &'a [EventRecord],
    content: PayloadContent,
) -> NotificationInput<'a> {
    NotificationInput {
        version,
        kind,
        subscription: sub,
        events_since_start,
        events,
        content,
        errors: Vec::new(),
        bundle_id: "4f1c6a53-0e1b-4a45-9f55-0f8b5a6b2c11".into(),
        timestamp: "2025-01-01T10:00:30Z".into(),
    }
}

pub fn entries(bundle: &Value) -> &Vec<Value> {
    bundle["entry"].as_array().expect("entry array")
}

pub fn status_resource(bundle: &Value) -> &Value {
    &entries(bundle)[0]["resource"]
}

/// R4 status parameters with the given name.
pub fn params<'a>(bundle: &'a Value, name: &str) -> Vec<&'a Value> {
    status_resource(bundle)["parameter"]
        .as_array()
        .expect("parameter array")
        .iter()
        .filter(|p| p["name"] == name)
        .collect()
}

pub fn parts<'a>(event: &'a Value, name: &str) -> Vec<&'a Value> {
    event["part"]
        .as_array()
        .expect("part array")
        .iter()
        .filter(|p| p["name"] == name)
        .collect()
}

pub const LEVELS: [PayloadContent; 3] = [
    PayloadContent::Empty,
    PayloadContent::IdOnly,
    PayloadContent::FullResource,
];

pub const VERSIONS: [FhirVersion; 3] = [FhirVersion::R4, FhirVersion::R4B, FhirVersion::R5];

pub const KINDS: [NotificationType; 5] = [
    NotificationType::Handshake,
    NotificationType::Heartbeat,
    NotificationType::EventNotification,
    NotificationType::QueryStatus,
    NotificationType::QueryEvent,
];
