//! The R4B adapter: Subscriptions in R4's backport shape, native R4B `SubscriptionTopic`s (no
//! `name`, comparators among the modifiers), and notifications as `history` Bundles around a
//! `SubscriptionStatus`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod notification_common;

use herald_fhir::FhirVersion;
use herald_subscriptions::builtin::{self, COW_TASK_CHANGED};
use herald_subscriptions::notification::{
    BACKPORT_NOTIFICATION_PROFILE_R4B, EventRecord, Interaction, NotificationType, PayloadContent,
    build_notification, build_status_bundle, parse_notification, parse_status_bundle,
};
use herald_subscriptions::{
    CanFilterBy, SubscriptionError, SubscriptionStatus, TopicCatalog, parse_subscription,
    parse_topic, r4, r4b, set_subscription_status, subscription_to_json, topic_to_json,
    validate_subscription, validate_topic,
};
use notification_common::*;
use serde_json::{Value, json};

const V: FhirVersion = FhirVersion::R4B;

fn model_fixture(path: &str) -> Value {
    let full = format!("{}/tests/fixtures/model/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&full).expect(&full)).expect("JSON")
}

fn request() -> Value {
    json!({
        "resourceType": "Subscription",
        "meta": { "profile": [r4::PROFILE_BACKPORT_SUBSCRIPTION] },
        "status": "requested",
        "reason": "Placer wants updates on Tasks it created",
        "criteria": builtin::canonical(COW_TASK_CHANGED),
        "_criteria": { "extension": [
            { "url": r4::EXT_FILTER_CRITERIA, "valueString": "Task?requester=Organization/placer-1" } ] },
        "channel": {
            "extension": [
                { "url": r4::EXT_HEARTBEAT_PERIOD, "valueUnsignedInt": 300 },
                { "url": r4::EXT_MAX_COUNT, "valuePositiveInt": 10 } ],
            "type": "rest-hook",
            "endpoint": "https://placer.example/fhir-notify",
            "payload": "application/fhir+json;fhirVersion=4.3",
            "_payload": { "extension": [ { "url": r4::EXT_PAYLOAD_CONTENT, "valueCode": "id-only" } ] }
        }
    })
}

fn catalog() -> TopicCatalog {
    TopicCatalog::with_builtins(V)
}

// ----- Subscription -----

#[test]
fn r4b_backport_subscription_is_read_like_r4_and_round_trips() {
    let sub = validate_subscription(V, &request(), &catalog()).unwrap();
    assert_eq!(sub.topic, builtin::canonical(COW_TASK_CHANGED));
    assert_eq!(sub.filters.len(), 1);
    assert_eq!(sub.filters[0].parameter, "requester");
    assert_eq!(sub.channel.content, PayloadContent::IdOnly);
    assert_eq!(sub.channel.heartbeat_period, Some(300));
    assert_eq!(sub.channel.max_count, Some(10));
    let json = subscription_to_json(V, &sub);
    assert_eq!(json["criteria"], builtin::canonical(COW_TASK_CHANGED));
    assert_eq!(
        json["meta"]["profile"],
        json!([r4::PROFILE_BACKPORT_SUBSCRIPTION])
    );
    assert_eq!(parse_subscription(V, &json).unwrap(), sub);
}

#[test]
fn r4b_subscription_for_another_fhir_version_is_refused() {
    let mut body = request();
    body["channel"]["payload"] = json!("application/fhir+json;fhirVersion=4.0");
    assert!(matches!(
        validate_subscription(V, &body, &catalog()),
        Err(SubscriptionError::FhirVersionMismatch { .. })
    ));
}

#[test]
fn r4b_subscription_without_content_level_is_refused() {
    let mut body = request();
    body["channel"].as_object_mut().unwrap().remove("_payload");
    assert!(matches!(
        validate_subscription(V, &body, &catalog()),
        Err(SubscriptionError::MissingContent { .. })
    ));
}

#[test]
fn r4b_core_criteria_subscription_is_not_topic_based() {
    let body = model_fixture("r4b/subscription-example.json");
    assert!(matches!(
        parse_subscription(V, &body),
        Err(SubscriptionError::NotTopicBased { .. })
    ));
}

#[test]
fn r4b_status_has_no_entered_in_error() {
    let mut body = subscription_to_json(
        V,
        &validate_subscription(V, &request(), &catalog()).unwrap(),
    );
    let err = set_subscription_status(V, &mut body, SubscriptionStatus::EnteredInError, None);
    assert!(
        matches!(err, Err(SubscriptionError::StatusNotInVersion { ref version, .. }) if version == "R4B")
    );
    set_subscription_status(V, &mut body, SubscriptionStatus::Error, Some("no-response")).unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"], "no-response");
}

// ----- SubscriptionTopic -----

#[test]
fn builtin_topics_render_as_r4b_subscription_topics_and_round_trip() {
    for topic in builtin::topics(V) {
        let body = topic_to_json(V, &topic, Some("t"));
        assert_eq!(body["resourceType"], "SubscriptionTopic");
        assert!(
            body.get("name").is_none(),
            "R4B has no SubscriptionTopic.name"
        );
        for c in body["canFilterBy"].as_array().into_iter().flatten() {
            assert!(
                c.get("comparator").is_none(),
                "R4B has no canFilterBy.comparator"
            );
        }
        let back = validate_topic(V, &body).unwrap_or_else(|e| panic!("{}: {e}", topic.url));
        assert_eq!(back, topic);
    }
}

#[test]
fn r4b_topic_keeps_name_in_a_cross_version_extension() {
    let mut topic = builtin::topics(V).remove(0);
    topic.name = Some("CowTaskChanged".to_owned());
    let body = topic_to_json(V, &topic, None);
    assert_eq!(body["extension"][0]["url"], r4b::name_extension_url());
    assert_eq!(body["extension"][0]["valueString"], "CowTaskChanged");
    assert_eq!(
        parse_topic(V, &body).unwrap().name.as_deref(),
        Some("CowTaskChanged")
    );
}

#[test]
fn r4b_topic_writes_comparators_among_the_modifiers() {
    let mut topic = builtin::topics(V).remove(0);
    topic.can_filter_by = vec![CanFilterBy {
        description: None,
        resource: Some("Task".to_owned()),
        filter_parameter: "authored-on".to_owned(),
        filter_definition: None,
        comparators: vec!["gt".to_owned(), "lt".to_owned()],
        modifiers: vec!["missing".to_owned()],
    }];
    let body = topic_to_json(V, &topic, None);
    // `missing` is outside R4B's required value set: it travels in the R5 element's
    // cross-version extension.
    assert_eq!(body["canFilterBy"][0]["modifier"], json!(["gt", "lt"]));
    assert_eq!(
        body["canFilterBy"][0]["extension"][0]["valueCode"],
        json!("missing")
    );
    let back = parse_topic(V, &body).unwrap();
    assert_eq!(back.can_filter_by[0].comparators, vec!["gt", "lt"]);
    assert_eq!(back.can_filter_by[0].modifiers, vec!["missing"]);
}

#[test]
fn r4b_core_topic_example_is_read_with_its_modifier_codes() {
    let body = model_fixture("r4b/subscriptiontopic-example-admission.json");
    let topic = parse_topic(V, &body).unwrap();
    assert_eq!(topic.resource_triggers[0].resource, "Encounter");
    assert_eq!(topic.can_filter_by[0].modifiers, vec!["in", "not-in"]);
    assert!(topic.can_filter_by[0].comparators.is_empty());
}

#[test]
fn r5_only_topic_elements_are_refused_on_r4b() {
    let topic = builtin::topics(FhirVersion::R5).remove(0);
    let mut named = topic_to_json(FhirVersion::R5, &topic, None);
    named["name"] = json!("CowTaskChanged");
    assert!(matches!(
        validate_topic(V, &named),
        Err(SubscriptionError::Invalid { ref element, .. }) if element == "SubscriptionTopic.name"
    ));
    let mut compared = topic_to_json(V, &topic, None);
    compared["canFilterBy"][0]["comparator"] = json!(["eq"]);
    assert!(matches!(
        validate_topic(V, &compared),
        Err(SubscriptionError::Invalid { ref element, .. })
            if element == "SubscriptionTopic.canFilterBy.comparator"
    ));
}

// ----- Notifications -----

fn batch() -> Vec<EventRecord> {
    vec![
        event(17, task("ct-1", "3"), Interaction::Create),
        event(18, task("ct-2", "5"), Interaction::Update),
    ]
}

#[test]
fn r4b_notification_is_a_history_bundle_with_subscription_status_first() {
    let sub = subscription();
    let events = batch();
    for content in LEVELS {
        let b = build_notification(&input(
            V,
            NotificationType::EventNotification,
            &sub,
            18,
            &events,
            content,
        ));
        assert_eq!(b["type"], "history");
        assert_eq!(
            b["meta"]["profile"],
            json!([BACKPORT_NOTIFICATION_PROFILE_R4B])
        );
        let e0 = &b["entry"][0];
        let status = &e0["resource"];
        assert_eq!(status["resourceType"], "SubscriptionStatus");
        assert_eq!(status["type"], "event-notification");
        assert_eq!(status["eventsSinceSubscriptionStart"], "18");
        assert_eq!(status["notificationEvent"][0]["eventNumber"], "17");
        assert_eq!(status["notificationEvent"][1]["eventNumber"], "18");
        assert_eq!(
            e0["request"],
            json!({"method": "GET", "url": "Subscription/sub-1/$status"})
        );
        assert_eq!(e0["response"], json!({"status": "200"}));
        let payload: Vec<&Value> = b["entry"].as_array().unwrap()[1..].iter().collect();
        match content {
            PayloadContent::Empty => {
                assert!(payload.is_empty());
                assert!(status.get("topic").is_none());
                assert!(status["notificationEvent"][0].get("focus").is_none());
            }
            _ => {
                assert_eq!(status["topic"], sub.topic);
                assert_eq!(
                    payload[0]["request"],
                    json!({"method": "POST", "url": "Task"})
                );
                assert_eq!(payload[0]["response"], json!({"status": "201"}));
                assert_eq!(
                    payload[0].get("resource").is_some(),
                    content == PayloadContent::FullResource
                );
            }
        }
    }
}

#[test]
fn r4b_handshake_and_heartbeat_carry_counts_but_no_events() {
    let sub = subscription();
    let events = batch();
    for (kind, count) in [
        (NotificationType::Handshake, 0),
        (NotificationType::Heartbeat, 18),
    ] {
        let b = build_notification(&input(
            V,
            kind,
            &sub,
            count,
            &events,
            PayloadContent::IdOnly,
        ));
        assert_eq!(b["entry"].as_array().unwrap().len(), 1);
        let status = &b["entry"][0]["resource"];
        assert_eq!(status["type"], kind.code());
        assert_eq!(status["eventsSinceSubscriptionStart"], count.to_string());
        assert!(status.get("notificationEvent").is_none());
    }
}

#[test]
fn r4b_query_event_names_events_in_the_status_request() {
    let sub = subscription();
    let events = batch();
    let b = build_notification(&input(
        V,
        NotificationType::QueryEvent,
        &sub,
        18,
        &events,
        PayloadContent::IdOnly,
    ));
    assert_eq!(
        b["entry"][0]["request"]["url"],
        "Subscription/sub-1/$events"
    );
}

#[test]
fn r4b_notifications_round_trip_through_the_parser() {
    let sub = subscription();
    let events = batch();
    let b = build_notification(&input(
        V,
        NotificationType::EventNotification,
        &sub,
        18,
        &events,
        PayloadContent::FullResource,
    ));
    let parsed = parse_notification(&b).unwrap();
    assert_eq!(parsed.kind, NotificationType::EventNotification);
    assert_eq!(parsed.events_since_start, Some(18));
    let numbers: Vec<u64> = parsed.events.iter().map(|e| e.number).collect();
    assert_eq!(numbers, vec![17, 18]);
    assert!(parsed.events.iter().all(|e| e.focus_resource.is_some()));
}

#[test]
fn r4b_status_result_is_a_searchset_of_subscription_statuses() {
    let sub = subscription();
    let b = build_status_bundle(V, &[(sub, 7, Vec::new())], "b-1", "2025-01-01T10:00:00Z");
    assert_eq!(b["type"], "searchset");
    let status = &b["entry"][0]["resource"];
    assert_eq!(status["resourceType"], "SubscriptionStatus");
    assert_eq!(status["type"], "query-status");
    assert_eq!(status["eventsSinceSubscriptionStart"], "7");
    let parsed = parse_status_bundle(&b).unwrap();
    assert_eq!(parsed[0].events_since_start, Some(7));
}
