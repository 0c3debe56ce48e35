//! Lenient parsing of the published notification examples (R4 backport, R4B, R5, COW) and
//! round trips of what Herald builds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod notification_common;

use std::path::PathBuf;

use herald_fhir::FhirVersion;
use herald_subscriptions::notification::{
    EventRecord, Interaction, NotificationError, NotificationInput, NotificationType, ParsedEvent,
    ParsedNotification, PayloadContent, ResourceAtVersion, SubscriptionRef, build_notification,
    build_status_bundle, parse_notification, parse_status_bundle,
};
use notification_common::*;
use serde_json::{Value, json};

fn fixture(path: &str) -> Value {
    let full: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/notification",
        path,
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn parse(path: &str) -> ParsedNotification {
    parse_notification(&fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn numbers(p: &ParsedNotification) -> Vec<u64> {
    p.events.iter().map(|e| e.number).collect()
}

/// (file, kind, status, events since start, event numbers, every event has a focus)
type Expectation = (
    &'static str,
    NotificationType,
    &'static str,
    Option<u64>,
    &'static [u64],
    bool,
);

#[rustfmt::skip]
const EXPECTED: &[Expectation] = {
    use NotificationType::*;
    &[
        ("r4-backport/Bundle-r4-notification-handshake.json", Handshake, "requested", Some(0), &[], false),
        ("r4-backport/Bundle-r4-notification-heartbeat.json", Heartbeat, "active", Some(2), &[], false),
        ("r4-backport/Bundle-r4-notification-empty.json", EventNotification, "active", Some(2), &[2], false),
        ("r4-backport/Bundle-r4-notification-id-only.json", EventNotification, "active", Some(2), &[2], true),
        ("r4-backport/Bundle-r4-notification-full-resource.json", EventNotification, "active", Some(2), &[2], true),
        ("r4-backport/Bundle-r4-notification-multi-resource.json", EventNotification, "active", Some(2), &[2], true),
        ("r4-backport/Bundle-r4-notification-error.json", QueryStatus, "error", Some(3), &[], false),
        ("r4b/notification-handshake.json", Handshake, "requested", Some(0), &[], false),
        ("r4b/notification-heartbeat.json", Heartbeat, "active", Some(310), &[], false),
        ("r4b/notification-empty.json", EventNotification, "active", Some(2), &[2], false),
        ("r4b/notification-id-only.json", EventNotification, "active", Some(2), &[2], true),
        ("r4b/notification-id-only-with-patient.json", EventNotification, "active", Some(2), &[2], true),
        ("r4b/notification-id-only-query.json", QueryEvent, "active", Some(2), &[1, 2], true),
        ("r4b/notification-full-resource.json", EventNotification, "active", Some(2), &[2], true),
        ("r4b/notification-full-resource-with-patient.json", EventNotification, "active", Some(2), &[2], true),
        ("r4b/notification-query-status.json", QueryStatus, "active", Some(310), &[], false),
        ("r4b/notification-message-full-resource.json", EventNotification, "active", Some(2), &[2], true),
        ("r5/notification-handshake.json", Handshake, "requested", Some(0), &[], false),
        ("r5/notification-heartbeat.json", Heartbeat, "active", Some(310), &[], false),
        ("r5/notification-empty.json", EventNotification, "active", Some(2), &[2], false),
        ("r5/notification-id-only.json", EventNotification, "active", Some(2), &[2], true),
        ("r5/notification-id-only-with-patient.json", EventNotification, "active", Some(2), &[2], true),
        ("r5/notification-full-resource.json", EventNotification, "active", Some(2), &[2], true),
        ("r5/notification-full-resource-with-patient.json", EventNotification, "active", Some(2), &[2], true),
        ("r5/notification-query-status.json", QueryStatus, "active", Some(310), &[], false),
        ("r5/notification-query-event.json", QueryEvent, "active", Some(310), &[307, 308], true),
        ("r5/notification-error.json", EventNotification, "error", Some(328), &[328], false),
        ("r5/notification-message-full-resource.json", EventNotification, "active", Some(2), &[2], true),
        ("cow/Bundle-cow-notification-status-only-example.json", EventNotification, "active", None, &[3323], true),
    ]
};

#[test]
fn every_published_notification_example_parses_leniently() {
    for (file, kind, status, count, nums, focused) in EXPECTED {
        let p = parse(file);
        assert_eq!(p.kind, *kind, "{file}");
        assert_eq!(p.status.as_deref(), Some(*status), "{file}");
        assert_eq!(p.events_since_start, *count, "{file}");
        assert_eq!(numbers(&p), *nums, "{file}");
        assert!(
            p.subscription_reference.is_some() || p.subscription_identifier.is_some(),
            "{file}"
        );
        for e in &p.events {
            assert_eq!(e.focus.is_some(), *focused, "{file}");
        }
    }
}

#[test]
fn every_fixture_file_is_covered_by_the_expectation_table() {
    let root: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/notification"]
        .iter()
        .collect();
    let mut found = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap();
        if !dir.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let name = file.unwrap().file_name().into_string().unwrap();
            found.push(format!("{}/{name}", dir.file_name().into_string().unwrap()));
        }
    }
    found.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|e| e.0.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

#[test]
fn r5_integer64_written_as_json_numbers_is_accepted() {
    // Q1: the R5 examples write integer64 as numbers
    let raw = fixture("r5/notification-query-event.json");
    assert!(raw["entry"][0]["resource"]["eventsSinceSubscriptionStart"].is_number());
    let p = parse_notification(&raw).unwrap();
    assert_eq!(p.events_since_start, Some(310));
    assert_eq!(numbers(&p), [307, 308]);
}

#[test]
fn integer64_written_as_strings_is_accepted() {
    let p = parse("r4b/notification-id-only-query.json");
    assert_eq!(p.events_since_start, Some(2));
}

#[test]
fn r4_counts_under_any_value_type_are_accepted() {
    let mut raw = fixture("r4-backport/Bundle-r4-notification-empty.json");
    let params = raw["entry"][0]["resource"]["parameter"]
        .as_array_mut()
        .unwrap();
    for p in params.iter_mut() {
        if p["name"] == "events-since-subscription-start" {
            *p = json!({ "name": "events-since-subscription-start", "valueUnsignedInt": 9 });
        }
        if p["name"] == "notification-event" {
            p["part"][0] = json!({ "name": "event-number", "valueInteger": 9 });
        }
        if p["name"] == "subscription" {
            // fhir-candle style
            *p = json!({ "name": "subscription", "valueString": "https://example.org/fhir/Subscription/admission" });
        }
    }
    let p = parse_notification(&raw).unwrap();
    assert_eq!(p.events_since_start, Some(9));
    assert_eq!(numbers(&p), [9]);
    assert_eq!(
        p.subscription_reference.as_deref(),
        Some("https://example.org/fhir/Subscription/admission")
    );
}

#[test]
fn cow_notification_identifies_the_subscription_by_identifier_only() {
    let p = parse("cow/Bundle-cow-notification-status-only-example.json");
    assert_eq!(p.subscription_reference, None);
    assert_eq!(
        p.subscription_identifier,
        Some(
            json!({ "system": "https://placer.example.org/cow-subscrition/orders", "value": "77240214" })
        )
    );
    assert_eq!(p.topic, None);
    assert_eq!(
        p.events[0].focus.as_deref(),
        Some("Task/cow-coordination-task-example")
    );
    assert_eq!(p.events[0].focus_resource, None);
}

#[test]
fn focus_resource_is_found_despite_scheme_mismatch() {
    // Q3: focus says http://, fullUrl says https://
    let p = parse("r5/notification-full-resource.json");
    let focus = p.events[0].focus_resource.as_ref().expect("focus resource");
    assert_eq!(focus["resourceType"], "Encounter");
    let q = parse("r5/notification-query-event.json");
    assert_eq!(q.events[0].focus_resource.as_ref().unwrap()["id"], "307");
    assert_eq!(q.events[1].focus_resource.as_ref().unwrap()["id"], "308");
    assert_eq!(
        q.events[0].additional_context,
        ["http://example.org/FHIR/R5/Patient/ABC"]
    );
}

#[test]
fn id_only_examples_have_no_focus_resource() {
    for file in [
        "r5/notification-id-only.json",
        "r4b/notification-id-only.json",
        "r4-backport/Bundle-r4-notification-id-only.json",
    ] {
        let p = parse(file);
        assert!(p.events[0].focus_resource.is_none(), "{file}");
    }
}

#[test]
fn message_wrapper_is_unwrapped_to_the_inner_notification() {
    let p = parse("r5/notification-message-full-resource.json");
    assert_eq!(p.bundle_type, "subscription-notification");
    assert_eq!(
        p.events[0].focus_resource.as_ref().unwrap()["resourceType"],
        "Encounter"
    );
}

#[test]
fn errors_are_read_from_both_versions() {
    for file in [
        "r5/notification-error.json",
        "r4-backport/Bundle-r4-notification-error.json",
    ] {
        let p = parse(file);
        assert_eq!(p.errors.len(), 1, "{file}");
        assert_eq!(p.errors[0]["coding"][0]["code"], "no-response", "{file}");
    }
}

#[test]
fn non_notifications_are_rejected_with_a_reason() {
    assert_eq!(
        parse_notification(&json!({ "resourceType": "Patient" })),
        Err(NotificationError::NotABundle)
    );
    assert_eq!(
        parse_notification(&json!({ "resourceType": "Bundle", "type": "history" })),
        Err(NotificationError::MissingStatus)
    );
    assert_eq!(
        parse_notification(&json!({ "resourceType": "Bundle", "type": "history",
            "entry": [{ "resource": { "resourceType": "Task" } }] })),
        Err(NotificationError::NotAStatus("Task".into()))
    );
    assert_eq!(
        parse_notification(
            &json!({ "resourceType": "Bundle", "type": "subscription-notification",
            "entry": [{ "resource": { "resourceType": "SubscriptionStatus", "type": "bogus" } }] })
        ),
        Err(NotificationError::UnknownType("bogus".into()))
    );
    assert!(matches!(
        parse_notification(
            &json!({ "resourceType": "Bundle", "type": "subscription-notification",
            "entry": [{ "resource": { "resourceType": "SubscriptionStatus", "type": "heartbeat",
                "eventsSinceSubscriptionStart": "-1" } }] })
        ),
        Err(NotificationError::BadNumber { .. })
    ));
    assert_eq!(
        parse_notification(&json!({ "resourceType": "Bundle", "type": "message", "entry": [] })),
        Err(NotificationError::NoInnerBundle)
    );
}

// ----- Emit-model shape comparison (R4) -----

/// Structure of a backport notification: Bundle keys, then per entry its keys, request and
/// response keys, and for the status the parameter names with their value[x] key or part shape.
fn r4_shape(bundle: &Value) -> Value {
    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }
    fn param_shape(p: &Value) -> Value {
        let value_key: Vec<String> = keys(p)
            .into_iter()
            .filter(|k| k.starts_with("value"))
            .collect();
        match p.get("part") {
            Some(parts) => json!([
                p["name"],
                parts
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(param_shape)
                    .collect::<Vec<_>>()
            ]),
            None => json!([p["name"], value_key]),
        }
    }
    let entries: Vec<Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let status = match e["resource"]["resourceType"].as_str() {
                Some("Parameters") => json!({
                    "meta": keys(&e["resource"]["meta"]),
                    "params": e["resource"]["parameter"].as_array().unwrap().iter().map(param_shape).collect::<Vec<_>>(),
                }),
                _ => Value::Null,
            };
            json!({
                "keys": keys(e),
                "request": keys(&e["request"]),
                "method": e["request"]["method"],
                "response": keys(&e["response"]),
                "status": status,
            })
        })
        .collect();
    json!({ "keys": keys(bundle), "type": bundle["type"], "entries": entries })
}

fn r4_encounter(id: &str, with_resource: bool) -> ResourceAtVersion {
    ResourceAtVersion {
        resource_type: "Encounter".into(),
        id: id.into(),
        version: "1".into(),
        resource: with_resource.then(|| json!({ "resourceType": "Encounter", "id": id })),
    }
}

/// (model file, kind, subscription, events since start, events, content)
type ShapeCase<'a> = (
    &'a str,
    NotificationType,
    &'a SubscriptionRef,
    u64,
    &'a [EventRecord],
    PayloadContent,
);

#[test]
fn r4_output_has_the_structure_of_the_backport_emit_model_examples() {
    let sub = subscription_without_identifier();
    let mut requested = sub.clone();
    requested.status = "requested".into();
    let enc = |ctx: bool| EventRecord {
        number: 2,
        timestamp: "2020-05-29T11:44:13.1882432-05:00".into(),
        focus: r4_encounter("e1", true),
        additional_context: if ctx {
            vec![ResourceAtVersion {
                resource_type: "Patient".into(),
                ..r4_encounter("p1", true)
            }]
        } else {
            Vec::new()
        },
        interaction: Interaction::Create,
    };
    let plain = [enc(false)];
    let with_ctx = [enc(true)];
    #[rustfmt::skip]
    let cases: [ShapeCase; 5] = [
        ("Bundle-r4-notification-handshake.json", NotificationType::Handshake, &requested, 0, &[], PayloadContent::IdOnly),
        ("Bundle-r4-notification-heartbeat.json", NotificationType::Heartbeat, &sub, 2, &[], PayloadContent::IdOnly),
        ("Bundle-r4-notification-empty.json", NotificationType::EventNotification, &sub, 2, &plain, PayloadContent::Empty),
        ("Bundle-r4-notification-full-resource.json", NotificationType::EventNotification, &sub, 2, &plain, PayloadContent::FullResource),
        ("Bundle-r4-notification-multi-resource.json", NotificationType::EventNotification, &sub, 2, &with_ctx, PayloadContent::FullResource),
    ];
    for (file, kind, s, count, events, content) in cases {
        let mut model = fixture(&format!("r4-backport/{file}"));
        if content == PayloadContent::Empty {
            // The backport's empty example carries `topic`; the payload rules say it SHOULD NOT
            // be present at `empty`, and Herald leaves it out.
            let params = model["entry"][0]["resource"]["parameter"]
                .as_array_mut()
                .unwrap();
            let before = params.len();
            params.retain(|p| p["name"] != "topic");
            assert_eq!(params.len(), before - 1);
        }
        let ours = build_notification(&input(FhirVersion::R4, kind, s, count, events, content));
        assert_eq!(r4_shape(&ours), r4_shape(&model), "{file}");
    }
}

#[test]
fn r4_id_only_status_has_the_structure_of_the_backport_emit_model() {
    // The id-only model comments its payload entry out, so compare the status entry only.
    let sub = subscription_without_identifier();
    let events = [EventRecord {
        number: 2,
        timestamp: "2020-05-29T11:44:13.1882432-05:00".into(),
        focus: r4_encounter("e1", false),
        additional_context: Vec::new(),
        interaction: Interaction::Create,
    }];
    let model = fixture("r4-backport/Bundle-r4-notification-id-only.json");
    let ours = build_notification(&input(
        FhirVersion::R4,
        NotificationType::EventNotification,
        &sub,
        2,
        &events,
        PayloadContent::IdOnly,
    ));
    assert_eq!(
        r4_shape(&ours)["entries"][0],
        r4_shape(&model)["entries"][0]
    );
    assert_eq!(entries(&ours).len(), 2);
}

// ----- Round trips -----

fn expected(inp: &NotificationInput, bundle_type: &str) -> ParsedNotification {
    let sub = inp.subscription;
    let base = sub.base_url.trim_end_matches('/');
    let reference = |r: &ResourceAtVersion| {
        format!("{base}/{}/{}/_history/{}", r.resource_type, r.id, r.version)
    };
    let with_payload = inp.content != PayloadContent::Empty;
    let events = if inp.kind.carries_events() {
        inp.events
            .iter()
            .map(|e| ParsedEvent {
                number: e.number,
                timestamp: Some(e.timestamp.clone()),
                focus: with_payload.then(|| reference(&e.focus)),
                additional_context: if with_payload {
                    e.additional_context.iter().map(reference).collect()
                } else {
                    Vec::new()
                },
                focus_resource: if inp.content == PayloadContent::FullResource
                    && e.interaction != Interaction::Delete
                {
                    e.focus.resource.clone()
                } else {
                    None
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    ParsedNotification {
        bundle_type: bundle_type.into(),
        kind: inp.kind,
        subscription_reference: Some(sub.reference()),
        subscription_identifier: sub.identifier.first().cloned(),
        topic: with_payload.then(|| sub.topic.clone()),
        status: Some(sub.status.clone()),
        events_since_start: Some(inp.events_since_start),
        events,
        errors: inp.errors.clone(),
    }
}

#[test]
fn built_notifications_parse_back_to_what_was_built() {
    let sub = subscription();
    let events = vec![
        event(17, task("ct-1", "3"), Interaction::Create),
        event(18, task("ct-1", "4"), Interaction::Update),
        event(19, deleted_task("ct-2", "2"), Interaction::Delete),
    ];
    for version in VERSIONS {
        for content in LEVELS {
            for kind in KINDS {
                let mut inp = input(version, kind, &sub, 19, &events, content);
                inp.errors = vec![json!({ "text": "late" })];
                let built = build_notification(&inp);
                let bundle_type = match version {
                    FhirVersion::R4 | FhirVersion::R4B => "history",
                    FhirVersion::R5 => "subscription-notification",
                };
                let parsed = parse_notification(&built).unwrap();
                assert_eq!(
                    parsed,
                    expected(&inp, bundle_type),
                    "{version:?} {kind:?} {content:?}"
                );
            }
        }
    }
}

// ----- $status -----

#[test]
fn status_bundle_is_a_searchset_of_query_status_per_subscription() {
    let a = subscription();
    let mut b = subscription_without_identifier();
    b.id = "sub-2".into();
    b.status = "error".into();
    let err = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/subscription-error", "code": "no-response" }] });
    let statuses = vec![
        (a.clone(), 12, Vec::new()),
        (b.clone(), 328, vec![err.clone()]),
    ];
    for version in VERSIONS {
        let bundle = build_status_bundle(
            version,
            &statuses,
            "status-bundle-1",
            "2025-01-01T10:00:00Z",
        );
        assert_eq!(bundle["type"], "searchset");
        assert_eq!(bundle["total"], json!(2));
        let e = entries(&bundle);
        assert_eq!(e.len(), 2);
        assert_ne!(e[0]["fullUrl"], e[1]["fullUrl"]);
        for entry in e {
            assert!(entry["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
            assert_eq!(entry["search"], json!({ "mode": "match" }));
            let rt = &entry["resource"]["resourceType"];
            match version {
                FhirVersion::R4 => assert_eq!(rt, "Parameters"),
                FhirVersion::R4B | FhirVersion::R5 => assert_eq!(rt, "SubscriptionStatus"),
            }
        }
        let parsed = parse_status_bundle(&bundle).unwrap();
        assert_eq!(parsed.len(), 2);
        for (p, (sub, count, errors)) in parsed.iter().zip(&statuses) {
            assert_eq!(p.kind, NotificationType::QueryStatus);
            assert_eq!(p.bundle_type, "searchset");
            assert_eq!(p.subscription_reference, Some(sub.reference()));
            assert_eq!(p.subscription_identifier, sub.identifier.first().cloned());
            assert_eq!(p.topic.as_deref(), Some(sub.topic.as_str()));
            assert_eq!(p.status.as_deref(), Some(sub.status.as_str()));
            assert_eq!(p.events_since_start, Some(*count));
            assert!(p.events.is_empty());
            assert_eq!(&p.errors, errors);
        }
        if version == FhirVersion::R5 {
            assert_eq!(
                e[1]["resource"]["eventsSinceSubscriptionStart"],
                json!("328")
            );
        }
    }
}

#[test]
fn status_bundle_parser_reads_the_published_query_status_examples() {
    for file in [
        "r5/notification-query-status.json",
        "r4b/notification-query-status.json",
        "r4-backport/Bundle-r4-notification-error.json",
    ] {
        let parsed = parse_status_bundle(&fixture(file)).unwrap();
        assert_eq!(parsed.len(), 1, "{file}");
        assert_eq!(parsed[0].kind, NotificationType::QueryStatus, "{file}");
    }
}
