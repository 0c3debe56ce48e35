//! Shape of the notification Bundles Herald emits, per FHIR version, kind and payload level.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod notification_common;

use herald_fhir::FhirVersion;
use herald_subscriptions::notification::{
    BACKPORT_NOTIFICATION_PROFILE_R4, BACKPORT_STATUS_PROFILE_R4, EventRecord, Interaction,
    NotificationType, PayloadContent, build_notification,
};
use notification_common::*;
use serde_json::{Value, json};

fn batch() -> Vec<EventRecord> {
    vec![
        event(17, task("ct-1", "3"), Interaction::Create),
        event(18, task("ct-2", "5"), Interaction::Update),
    ]
}

// ----- R4 backport -----

#[test]
fn r4_bundle_is_history_with_backport_notification_profile() {
    let sub = subscription();
    let events = batch();
    for content in LEVELS {
        let b = build_notification(&input(
            FhirVersion::R4,
            NotificationType::EventNotification,
            &sub,
            18,
            &events,
            content,
        ));
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "history");
        assert_eq!(
            b["meta"]["profile"],
            json!([BACKPORT_NOTIFICATION_PROFILE_R4])
        );
        assert_eq!(b["id"], "4f1c6a53-0e1b-4a45-9f55-0f8b5a6b2c11");
        assert_eq!(b["timestamp"], "2025-01-01T10:00:30Z");
    }
}

#[test]
fn r4_status_entry_is_profiled_parameters_with_urn_uuid_and_status_request() {
    let sub = subscription();
    let b = build_notification(&input(
        FhirVersion::R4,
        NotificationType::Heartbeat,
        &sub,
        4,
        &[],
        PayloadContent::IdOnly,
    ));
    let e0 = &entries(&b)[0];
    let status = &e0["resource"];
    assert_eq!(status["resourceType"], "Parameters");
    assert_eq!(
        status["meta"]["profile"],
        json!([BACKPORT_STATUS_PROFILE_R4])
    );
    let full_url = e0["fullUrl"].as_str().unwrap();
    let uuid = full_url
        .strip_prefix("urn:uuid:")
        .expect("urn:uuid fullUrl");
    assert_eq!(uuid.len(), 36);
    assert_eq!(status["id"], uuid);
    assert_eq!(
        e0["request"],
        json!({ "method": "GET", "url": "Subscription/sub-1/$status" })
    );
    assert_eq!(e0["response"], json!({ "status": "200" }));
}

#[test]
fn status_entry_uuid_is_fresh_per_bundle_id() {
    let sub = subscription();
    let mut a = input(
        FhirVersion::R5,
        NotificationType::Heartbeat,
        &sub,
        4,
        &[],
        PayloadContent::IdOnly,
    );
    let first = build_notification(&a);
    a.bundle_id = "another-bundle".into();
    let second = build_notification(&a);
    assert_ne!(
        entries(&first)[0]["fullUrl"],
        entries(&second)[0]["fullUrl"]
    );
}

#[test]
fn r4_every_entry_has_request_and_response_at_every_level_and_kind() {
    let sub = subscription();
    let mut events = batch();
    events.push(event(19, deleted_task("ct-3", "2"), Interaction::Delete));
    for content in LEVELS {
        for kind in KINDS {
            let b = build_notification(&input(FhirVersion::R4, kind, &sub, 19, &events, content));
            for (i, e) in entries(&b).iter().enumerate() {
                assert!(
                    e["request"]["method"].is_string(),
                    "{kind:?} {content:?} entry {i}"
                );
                assert!(
                    e["request"]["url"].is_string(),
                    "{kind:?} {content:?} entry {i}"
                );
                assert!(
                    e["response"]["status"].is_string(),
                    "{kind:?} {content:?} entry {i}"
                );
                assert!(e["fullUrl"].is_string(), "{kind:?} {content:?} entry {i}");
            }
        }
    }
}

#[test]
fn r4_subscription_parameter_has_reference_and_first_identifier() {
    let sub = subscription();
    let b = build_notification(&input(
        FhirVersion::R4,
        NotificationType::Handshake,
        &sub,
        0,
        &[],
        PayloadContent::IdOnly,
    ));
    let p = params(&b, "subscription");
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0]["valueReference"],
        json!({
            "reference": "http://127.0.0.1:8080/fhir/r4/Subscription/sub-1",
            "identifier": { "system": "https://placer.example.org/cow-subscriptions", "value": "77240214" }
        })
    );
}

#[test]
fn subscription_reference_omits_identifier_when_subscription_has_none() {
    let sub = subscription_without_identifier();
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::Handshake,
            &sub,
            0,
            &[],
            PayloadContent::IdOnly,
        ));
        let reference = match version {
            FhirVersion::R4 => params(&b, "subscription")[0]["valueReference"].clone(),
            FhirVersion::R4B | FhirVersion::R5 => status_resource(&b)["subscription"].clone(),
        };
        assert_eq!(
            reference,
            json!({ "reference": "http://127.0.0.1:8080/fhir/r4/Subscription/sub-1" })
        );
    }
}

#[test]
fn r4_parameters_use_backport_names_and_value_types() {
    let sub = subscription();
    let events = batch();
    let mut inp = input(
        FhirVersion::R4,
        NotificationType::EventNotification,
        &sub,
        18,
        &events,
        PayloadContent::IdOnly,
    );
    inp.errors = vec![
        json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/subscription-error", "code": "no-response" }] }),
    ];
    let b = build_notification(&inp);
    let names: Vec<&str> = status_resource(&b)["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "subscription",
            "topic",
            "status",
            "type",
            "events-since-subscription-start",
            "notification-event",
            "notification-event",
            "error"
        ]
    );
    assert_eq!(
        params(&b, "topic")[0]["valueCanonical"],
        "http://herald.example/SubscriptionTopic/cow-task-changed"
    );
    assert_eq!(params(&b, "status")[0]["valueCode"], "active");
    assert_eq!(params(&b, "type")[0]["valueCode"], "event-notification");
    assert_eq!(
        params(&b, "events-since-subscription-start")[0]["valueString"],
        "18"
    );
    let ev = params(&b, "notification-event")[0];
    assert_eq!(parts(ev, "event-number")[0]["valueString"], "17");
    assert_eq!(
        parts(ev, "timestamp")[0]["valueInstant"],
        "2025-01-01T10:00:17Z"
    );
    assert_eq!(
        parts(ev, "focus")[0]["valueReference"]["reference"],
        "http://127.0.0.1:8080/fhir/r4/Task/ct-1/_history/3"
    );
    let ctx = parts(ev, "additional-context");
    assert_eq!(ctx.len(), 1);
    assert_eq!(
        ctx[0]["valueReference"]["reference"],
        "http://127.0.0.1:8080/fhir/r4/ServiceRequest/sr-1/_history/1"
    );
    assert_eq!(
        params(&b, "error")[0]["valueCodeableConcept"]["coding"][0]["code"],
        "no-response"
    );
}

#[test]
fn r4_additional_context_is_repeated_once_per_resource() {
    let sub = subscription();
    let mut ev = event(1, task("ct-1", "1"), Interaction::Create);
    ev.additional_context.push(task("ct-parent", "2"));
    let events = [ev];
    let b = build_notification(&input(
        FhirVersion::R4,
        NotificationType::EventNotification,
        &sub,
        1,
        &events,
        PayloadContent::IdOnly,
    ));
    let ne = params(&b, "notification-event")[0];
    assert_eq!(parts(ne, "additional-context").len(), 2);
}

// ----- R5 -----

#[test]
fn r5_bundle_is_subscription_notification_and_no_entry_has_response() {
    let sub = subscription();
    let mut events = batch();
    events.push(event(19, deleted_task("ct-3", "2"), Interaction::Delete));
    for content in LEVELS {
        for kind in KINDS {
            let b = build_notification(&input(FhirVersion::R5, kind, &sub, 19, &events, content));
            assert_eq!(b["type"], "subscription-notification");
            assert!(b.get("total").is_none());
            for (i, e) in entries(&b).iter().enumerate() {
                assert!(
                    e.get("response").is_none(),
                    "{kind:?} {content:?} entry {i}"
                );
                assert!(e.get("search").is_none(), "{kind:?} {content:?} entry {i}");
                assert!(e["fullUrl"].is_string(), "{kind:?} {content:?} entry {i}");
            }
        }
    }
}

#[test]
fn r5_status_is_subscription_status_with_counts_as_json_strings() {
    let sub = subscription();
    let events = batch();
    let b = build_notification(&input(
        FhirVersion::R5,
        NotificationType::EventNotification,
        &sub,
        18,
        &events,
        PayloadContent::IdOnly,
    ));
    let e0 = &entries(&b)[0];
    assert!(e0["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    assert!(e0.get("request").is_none());
    let s = &e0["resource"];
    assert_eq!(s["resourceType"], "SubscriptionStatus");
    assert_eq!(s["status"], "active");
    assert_eq!(s["type"], "event-notification");
    assert_eq!(s["eventsSinceSubscriptionStart"], json!("18"));
    assert_eq!(s["notificationEvent"][0]["eventNumber"], json!("17"));
    assert_eq!(s["notificationEvent"][1]["eventNumber"], json!("18"));
    assert_eq!(
        s["notificationEvent"][0]["timestamp"],
        "2025-01-01T10:00:17Z"
    );
    assert_eq!(
        s["subscription"],
        json!({
            "reference": "http://127.0.0.1:8080/fhir/r4/Subscription/sub-1",
            "identifier": { "system": "https://placer.example.org/cow-subscriptions", "value": "77240214" }
        })
    );
    assert_eq!(
        s["topic"],
        "http://herald.example/SubscriptionTopic/cow-task-changed"
    );
}

#[test]
fn r5_payload_entries_carry_request_but_no_response() {
    let sub = subscription();
    let events = batch();
    for content in [PayloadContent::IdOnly, PayloadContent::FullResource] {
        let b = build_notification(&input(
            FhirVersion::R5,
            NotificationType::EventNotification,
            &sub,
            18,
            &events,
            content,
        ));
        for e in &entries(&b)[1..] {
            assert!(e["request"]["method"].is_string());
            assert!(e.get("response").is_none());
        }
    }
}

#[test]
fn r5_errors_are_listed_on_the_status() {
    let sub = subscription();
    let mut inp = input(
        FhirVersion::R5,
        NotificationType::Heartbeat,
        &sub,
        3,
        &[],
        PayloadContent::Empty,
    );
    let err = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/subscription-error", "code": "no-response" }] });
    inp.errors = vec![err.clone()];
    let b = build_notification(&inp);
    assert_eq!(status_resource(&b)["error"], json!([err]));
}

// ----- Payload levels -----

#[test]
fn empty_content_has_only_the_status_entry_without_focus_or_topic() {
    let sub = subscription();
    let events = batch();
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::EventNotification,
            &sub,
            18,
            &events,
            PayloadContent::Empty,
        ));
        assert_eq!(entries(&b).len(), 1, "{version:?}");
        let text = b.to_string();
        assert!(
            !text.contains("cow-task-changed"),
            "topic leaked in {version:?}"
        );
        assert!(!text.contains("Task/ct-"), "focus leaked in {version:?}");
        assert!(
            !text.contains("ServiceRequest"),
            "context leaked in {version:?}"
        );
        match version {
            FhirVersion::R4 => {
                assert!(params(&b, "topic").is_empty());
                let ne = params(&b, "notification-event");
                assert_eq!(ne.len(), 2);
                let names: Vec<&str> = ne[0]["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                assert_eq!(names, ["event-number", "timestamp"]);
            }
            FhirVersion::R4B | FhirVersion::R5 => {
                let s = status_resource(&b);
                assert!(s.get("topic").is_none());
                assert_eq!(
                    s["notificationEvent"][0],
                    json!({ "eventNumber": "17", "timestamp": "2025-01-01T10:00:17Z" })
                );
            }
        }
    }
}

#[test]
fn id_only_has_focus_and_payload_entries_without_resource() {
    let sub = subscription();
    let events = batch();
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::EventNotification,
            &sub,
            18,
            &events,
            PayloadContent::IdOnly,
        ));
        let e = entries(&b);
        // ct-1, sr-1, ct-2 (sr-1 at the same version only once)
        assert_eq!(e.len(), 4, "{version:?}");
        for payload in &e[1..] {
            assert!(payload.get("resource").is_none(), "{version:?}");
            assert!(payload["fullUrl"].is_string());
        }
        assert_eq!(e[1]["fullUrl"], format!("{BASE}/Task/ct-1"));
        assert_eq!(e[2]["fullUrl"], format!("{BASE}/ServiceRequest/sr-1"));
        assert_eq!(e[3]["fullUrl"], format!("{BASE}/Task/ct-2"));
        if version == FhirVersion::R5 {
            let ev = &status_resource(&b)["notificationEvent"][0];
            assert_eq!(
                ev["focus"],
                json!({ "reference": format!("{BASE}/Task/ct-1/_history/3"), "type": "Task" })
            );
            assert_eq!(
                ev["additionalContext"],
                json!([{ "reference": format!("{BASE}/ServiceRequest/sr-1/_history/1"), "type": "ServiceRequest" }])
            );
        }
    }
}

#[test]
fn full_resource_includes_the_resource_at_the_triggering_version() {
    let sub = subscription();
    let events = batch();
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::EventNotification,
            &sub,
            18,
            &events,
            PayloadContent::FullResource,
        ));
        let e = entries(&b);
        assert_eq!(e.len(), 4);
        assert_eq!(e[1]["resource"], events[0].focus.resource.clone().unwrap());
        assert_eq!(e[1]["resource"]["meta"]["versionId"], "3");
        assert_eq!(e[2]["resource"]["resourceType"], "ServiceRequest");
        assert_eq!(e[3]["resource"], events[1].focus.resource.clone().unwrap());
        // topic SHOULD be present at full-resource
        match version {
            FhirVersion::R4 => assert_eq!(params(&b, "topic").len(), 1),
            FhirVersion::R4B | FhirVersion::R5 => {
                assert!(status_resource(&b)["topic"].is_string())
            }
        }
    }
}

#[test]
fn payload_full_urls_are_never_version_specific() {
    let sub = subscription();
    let events = batch();
    for version in VERSIONS {
        for content in [PayloadContent::IdOnly, PayloadContent::FullResource] {
            let b = build_notification(&input(
                version,
                NotificationType::EventNotification,
                &sub,
                18,
                &events,
                content,
            ));
            for e in entries(&b) {
                assert!(!e["fullUrl"].as_str().unwrap().contains("/_history/"));
            }
        }
    }
}

#[test]
fn deleted_focus_gets_a_delete_request_and_no_resource() {
    let sub = subscription();
    // even if the caller hands over a body, a delete never ships it
    let mut gone = task("ct-9", "4");
    gone.resource = Some(json!({ "resourceType": "Task", "id": "ct-9" }));
    let events = [
        event(5, deleted_task("ct-3", "2"), Interaction::Delete),
        EventRecord {
            additional_context: Vec::new(),
            ..event(6, gone, Interaction::Delete)
        },
    ];
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::EventNotification,
            &sub,
            6,
            &events,
            PayloadContent::FullResource,
        ));
        let e = entries(&b);
        let task_entries: Vec<&Value> = e
            .iter()
            .filter(|x| x["fullUrl"].as_str().unwrap().contains("/Task/"))
            .collect();
        assert_eq!(task_entries.len(), 2);
        for t in task_entries {
            assert!(t.get("resource").is_none(), "{version:?}");
            assert_eq!(t["request"]["method"], "DELETE");
            match version {
                FhirVersion::R4 | FhirVersion::R4B => {
                    assert_eq!(t["response"]["status"], "204")
                }
                FhirVersion::R5 => assert!(t.get("response").is_none()),
            }
        }
    }
}

#[test]
fn entry_request_follows_the_interaction() {
    let sub = subscription();
    let events = [
        EventRecord {
            additional_context: Vec::new(),
            ..event(1, task("a", "1"), Interaction::Create)
        },
        event(2, task("b", "2"), Interaction::Update),
        EventRecord {
            additional_context: Vec::new(),
            ..event(3, deleted_task("c", "3"), Interaction::Delete)
        },
    ];
    let b = build_notification(&input(
        FhirVersion::R4,
        NotificationType::EventNotification,
        &sub,
        3,
        &events,
        PayloadContent::IdOnly,
    ));
    let got: Vec<(Value, Value)> = entries(&b)[1..]
        .iter()
        .map(|e| (e["request"].clone(), e["response"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                json!({ "method": "POST", "url": "Task" }),
                json!({ "status": "201" })
            ),
            (
                json!({ "method": "PUT", "url": "Task/b" }),
                json!({ "status": "200" })
            ),
            (
                json!({ "method": "GET", "url": "ServiceRequest/sr-1" }),
                json!({ "status": "200" })
            ),
            (
                json!({ "method": "DELETE", "url": "Task/c" }),
                json!({ "status": "204" })
            ),
        ]
    );
}

#[test]
fn focus_reference_is_absolute_versioned_and_typed() {
    let sub = subscription();
    let events = [event(1, task("ct-1", "7"), Interaction::Update)];
    let b = build_notification(&input(
        FhirVersion::R5,
        NotificationType::EventNotification,
        &sub,
        1,
        &events,
        PayloadContent::IdOnly,
    ));
    assert_eq!(
        status_resource(&b)["notificationEvent"][0]["focus"],
        json!({ "reference": format!("{BASE}/Task/ct-1/_history/7"), "type": "Task" })
    );
}

#[test]
fn focus_reference_is_unversioned_when_the_version_is_unknown() {
    let sub = subscription();
    let events = [event(1, task("ct-1", ""), Interaction::Update)];
    let b = build_notification(&input(
        FhirVersion::R4,
        NotificationType::EventNotification,
        &sub,
        1,
        &events,
        PayloadContent::IdOnly,
    ));
    let ne = params(&b, "notification-event")[0];
    assert_eq!(
        parts(ne, "focus")[0]["valueReference"]["reference"],
        format!("{BASE}/Task/ct-1")
    );
}

#[test]
fn r5_id_only_lists_a_resource_once_across_versions() {
    let sub = subscription();
    let events = [
        event(1, task("ct-1", "1"), Interaction::Create),
        event(2, task("ct-1", "2"), Interaction::Update),
    ];
    let b = build_notification(&input(
        FhirVersion::R5,
        NotificationType::EventNotification,
        &sub,
        2,
        &events,
        PayloadContent::IdOnly,
    ));
    let urls: Vec<&str> = entries(&b)[1..]
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            format!("{BASE}/Task/ct-1"),
            format!("{BASE}/ServiceRequest/sr-1")
        ]
    );
    // both events still reference their own version
    let ne = &status_resource(&b)["notificationEvent"];
    assert_eq!(
        ne[0]["focus"]["reference"],
        format!("{BASE}/Task/ct-1/_history/1")
    );
    assert_eq!(
        ne[1]["focus"]["reference"],
        format!("{BASE}/Task/ct-1/_history/2")
    );
}

#[test]
fn full_resource_keeps_each_version_of_a_resource_updated_twice_in_a_batch() {
    let sub = subscription();
    let events = [
        event(1, task("ct-1", "1"), Interaction::Create),
        event(2, task("ct-1", "2"), Interaction::Update),
    ];
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::EventNotification,
            &sub,
            2,
            &events,
            PayloadContent::FullResource,
        ));
        let versions: Vec<&Value> = entries(&b)[1..]
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Task")
            .map(|e| &e["resource"]["meta"]["versionId"])
            .collect();
        assert_eq!(versions, [&json!("1"), &json!("2")], "{version:?}");
    }
}

// ----- Kinds -----

#[test]
fn handshake_carries_the_given_count_and_no_events() {
    let mut sub = subscription();
    sub.status = "requested".into();
    let events = batch();
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::Handshake,
            &sub,
            0,
            &events,
            PayloadContent::FullResource,
        ));
        assert_eq!(entries(&b).len(), 1);
        match version {
            FhirVersion::R4 => {
                assert_eq!(params(&b, "type")[0]["valueCode"], "handshake");
                assert_eq!(params(&b, "status")[0]["valueCode"], "requested");
                assert_eq!(
                    params(&b, "events-since-subscription-start")[0]["valueString"],
                    "0"
                );
                assert!(params(&b, "notification-event").is_empty());
            }
            FhirVersion::R4B | FhirVersion::R5 => {
                let s = status_resource(&b);
                assert_eq!(s["type"], "handshake");
                assert_eq!(s["status"], "requested");
                assert_eq!(s["eventsSinceSubscriptionStart"], json!("0"));
                assert!(s.get("notificationEvent").is_none());
            }
        }
    }
}

#[test]
fn heartbeat_carries_no_events_even_when_given_some() {
    let sub = subscription();
    let events = batch();
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::Heartbeat,
            &sub,
            18,
            &events,
            PayloadContent::IdOnly,
        ));
        assert_eq!(entries(&b).len(), 1);
        let text = b.to_string();
        assert!(!text.contains("notification-event") && !text.contains("notificationEvent"));
        assert!(text.contains("heartbeat"));
    }
}

#[test]
fn query_event_has_event_notification_shape_with_type_query_event() {
    let sub = subscription();
    let events = batch();
    for version in VERSIONS {
        for content in LEVELS {
            let mk = |kind| build_notification(&input(version, kind, &sub, 25, &events, content));
            let q = mk(NotificationType::QueryEvent);
            let n = mk(NotificationType::EventNotification);
            assert_eq!(q["type"], n["type"]);
            assert_eq!(entries(&q).len(), entries(&n).len());
            assert_eq!(entries(&q)[1..], entries(&n)[1..]);
            match version {
                FhirVersion::R4 => {
                    assert_eq!(q["type"], "history");
                    assert_eq!(params(&q, "type")[0]["valueCode"], "query-event");
                    assert_eq!(params(&q, "notification-event").len(), 2);
                    assert_eq!(
                        entries(&q)[0]["request"]["url"],
                        "Subscription/sub-1/$events"
                    );
                }
                FhirVersion::R4B | FhirVersion::R5 => {
                    let bundle_type = if version == FhirVersion::R5 {
                        "subscription-notification"
                    } else {
                        "history"
                    };
                    assert_eq!(q["type"], bundle_type);
                    assert_eq!(status_resource(&q)["type"], "query-event");
                    assert_eq!(
                        status_resource(&q)["notificationEvent"]
                            .as_array()
                            .unwrap()
                            .len(),
                        2
                    );
                }
            }
        }
    }
}

#[test]
fn batched_events_are_emitted_in_the_given_order_without_sorting() {
    let sub = subscription();
    let events = [
        event(42, task("z", "1"), Interaction::Update),
        event(40, task("a", "1"), Interaction::Update),
        event(41, task("m", "1"), Interaction::Update),
    ];
    for version in VERSIONS {
        let b = build_notification(&input(
            version,
            NotificationType::EventNotification,
            &sub,
            42,
            &events,
            PayloadContent::IdOnly,
        ));
        let numbers: Vec<String> = match version {
            FhirVersion::R4 => params(&b, "notification-event")
                .iter()
                .map(|e| {
                    parts(e, "event-number")[0]["valueString"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect(),
            FhirVersion::R4B | FhirVersion::R5 => status_resource(&b)["notificationEvent"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["eventNumber"].as_str().unwrap().to_string())
                .collect(),
        };
        assert_eq!(numbers, ["42", "40", "41"]);
        let tasks: Vec<&str> = entries(&b)[1..]
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap())
            .filter(|u| u.contains("/Task/"))
            .collect();
        assert_eq!(
            tasks,
            [
                format!("{BASE}/Task/z"),
                format!("{BASE}/Task/a"),
                format!("{BASE}/Task/m")
            ]
        );
    }
}
