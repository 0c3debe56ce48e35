//! Tests of the model adapters (fixtures from `tests/fixtures/model`), the built-in topics and
//! validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_fhir::FhirVersion;
use serde_json::{Value, json};

use crate::builtin::{self, COW_SERVICEREQUEST_FOR_OWNER, COW_TASK_CHANGED};
use crate::model::*;
use crate::{SubscriptionError, TopicCatalog, TopicLookup, r4, r5};

fn fixture(path: &str) -> Value {
    let full = format!("{}/tests/fixtures/model/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).expect(&full);
    serde_json::from_str(&text).expect("fixture is JSON")
}

// ---------------------------------------------------------------------------------------------
// R5 adapter
// ---------------------------------------------------------------------------------------------

#[test]
fn r5_admission_subscription_fixture_reads_every_element() {
    let sub = r5::parse_subscription(&fixture("r5/subscription-admission.json")).unwrap();
    assert_eq!(sub.id, "admission");
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(
        sub.topic,
        "http://example.org/R5/SubscriptionTopic/admission"
    );
    assert_eq!(
        sub.filters,
        vec![Filter {
            resource_type: None,
            parameter: "patient".into(),
            comparator: None,
            modifier: None,
            value: "Patient/123".into()
        }]
    );
    assert_eq!(sub.channel.kind, ChannelType::RestHook);
    assert_eq!(
        sub.channel.endpoint.as_deref(),
        Some("https://example.org/Endpoints/P123")
    );
    assert_eq!(
        sub.channel.headers,
        vec![(
            "Authorization".to_owned(),
            "Bearer secret-token-abc-123".to_owned()
        )]
    );
    assert_eq!(sub.channel.heartbeat_period, Some(60));
    assert_eq!(sub.channel.timeout, Some(5));
    assert_eq!(sub.channel.content, PayloadContent::IdOnly);
    assert_eq!(sub.channel.max_count, Some(100));
    assert_eq!(sub.end.as_deref(), Some("2019-08-07T11:15:18Z"));
}

#[test]
fn r5_subscription_without_content_reads_as_empty_and_strips_canonical_filter_type() {
    let sub = r5::parse_subscription(&fixture("r5/subscription-example.json")).unwrap();
    assert_eq!(sub.channel.content, PayloadContent::Empty);
    assert_eq!(sub.channel.content_type, "application/fhir+json");
    assert_eq!(sub.filters[0].resource_type.as_deref(), Some("Encounter"));
    assert_eq!(sub.identifier.len(), 1);
}

#[test]
fn r5_subscriptions_round_trip_through_json() {
    for path in [
        "r5/subscription-admission.json",
        "r5/subscription-example.json",
    ] {
        let sub = r5::parse_subscription(&fixture(path)).unwrap();
        let again = r5::parse_subscription(&r5::subscription_to_json(&sub)).unwrap();
        assert_eq!(sub, again, "{path}");
    }
}

#[test]
fn r5_admission_topic_fixture_reads_triggers_filters_and_shape() {
    let topic = r5::parse_topic(&fixture("r5/subscriptiontopic-example-admission.json")).unwrap();
    assert_eq!(
        topic.url,
        "http://example.org/FHIR/R5/SubscriptionTopic/admission"
    );
    let t = &topic.resource_triggers[0];
    assert_eq!(t.resource, "Encounter");
    assert_eq!(
        t.interactions,
        vec![Interaction::Create, Interaction::Update]
    );
    let q = t.query_criteria.as_ref().unwrap();
    assert_eq!(q.previous.as_deref(), Some("status:not=in-progress"));
    assert_eq!(q.current.as_deref(), Some("status=in-progress"));
    assert_eq!(q.result_for_create, Some(TestResult::TestPasses));
    assert_eq!(q.result_for_delete, Some(TestResult::TestFails));
    assert!(q.require_both);
    assert!(t.fhirpath_criteria.is_some());
    assert_eq!(topic.can_filter_by[0].modifiers, vec!["in", "not-in"]);
    assert_eq!(topic.notification_shape[0].include.len(), 7);
}

#[test]
fn r5_topics_round_trip_through_json() {
    for path in [
        "r5/subscriptiontopic-example.json",
        "r5/subscriptiontopic-example-admission.json",
        "r4b/subscriptiontopic-example-admission.json",
    ] {
        let topic = r5::parse_topic(&fixture(path)).unwrap();
        let again = r5::parse_topic(&r5::topic_to_json(&topic, Some("x"))).unwrap();
        assert_eq!(topic, again, "{path}");
    }
}

#[test]
fn r5_topic_comparators_are_kept_apart_from_modifiers() {
    let topic = r5::parse_topic(&fixture("r5/subscriptiontopic-example.json")).unwrap();
    let length = topic
        .can_filter_by
        .iter()
        .find(|c| c.filter_parameter == "length")
        .unwrap();
    assert_eq!(length.comparators, vec!["gt", "lt", "ge", "le"]);
    assert!(length.modifiers.is_empty());
}

#[test]
fn r4b_topic_equals_sign_modifier_means_plain_equality() {
    let topic = r5::parse_topic(&fixture("r4b/subscriptiontopic-example-admission.json")).unwrap();
    assert_eq!(topic.can_filter_by[0].modifiers, vec!["in", "not-in"]);
    assert!(topic.can_filter_by[0].comparators.is_empty());
}

#[test]
fn r5_unknown_channel_system_is_refused() {
    let mut body = fixture("r5/subscription-admission.json");
    body["channelType"] = json!({"system": "http://example.org/ch", "code": "rest-hook"});
    assert!(matches!(
        r5::parse_subscription(&body),
        Err(SubscriptionError::UnknownChannelType { .. })
    ));
}

#[test]
fn r5_set_status_changes_only_status() {
    let mut body = fixture("r5/subscription-admission.json");
    r5::set_status(&mut body, SubscriptionStatus::Error).unwrap();
    assert_eq!(body["status"], "error");
    assert!(body.get("error").is_none());
}

// ---------------------------------------------------------------------------------------------
// R4 backport adapter
// ---------------------------------------------------------------------------------------------

#[test]
fn r4_backport_admission_reads_primitive_and_channel_extensions() {
    let sub = r4::parse_subscription(&fixture(
        "r4-backport/Subscription-subscription-admission.json",
    ))
    .unwrap();
    assert_eq!(sub.topic, "http://hl7.org/SubscriptionTopic/admission");
    assert_eq!(
        sub.filters,
        vec![Filter {
            resource_type: Some("Encounter".into()),
            parameter: "patient".into(),
            comparator: None,
            modifier: None,
            value: "Patient/123".into()
        }]
    );
    assert_eq!(sub.channel.heartbeat_period, Some(86400));
    assert_eq!(sub.channel.timeout, Some(60));
    assert_eq!(sub.channel.max_count, Some(20));
    assert_eq!(sub.channel.content, PayloadContent::IdOnly);
    assert_eq!(sub.channel.content_type, "application/fhir+json");
    assert_eq!(sub.status, SubscriptionStatus::Active);
}

#[test]
fn r4_backport_subscription_round_trips_through_json() {
    let mut body = fixture("r4-backport/Subscription-subscription-admission.json");
    body["extension"] = json!([{
        "url": r4::EXT_SUBSCRIPTION_IDENTIFIER,
        "valueIdentifier": {"system": "http://example.org", "value": "abc"}
    }]);
    body["channel"]["header"] = json!(["Authorization: Bearer x:y"]);
    let sub = r4::parse_subscription(&body).unwrap();
    assert_eq!(
        sub.identifier,
        vec![json!({"system": "http://example.org", "value": "abc"})]
    );
    assert_eq!(
        sub.channel.headers,
        vec![("Authorization".to_owned(), "Bearer x:y".to_owned())]
    );
    let again = r4::parse_subscription(&r4::subscription_to_json(&sub)).unwrap();
    assert_eq!(sub, again);
}

#[test]
fn r4_backport_custom_channel_type_is_refused() {
    let err = r4::parse_subscription(&fixture("r4-backport/Subscription-subscription-zulip.json"))
        .unwrap_err();
    assert_eq!(
        err,
        SubscriptionError::UnknownChannelType {
            channel: "http://example.org/subscription-channel-type|zulip".into()
        }
    );
}

#[test]
fn r4_criteria_based_subscriptions_are_not_topic_based() {
    for path in [
        "r4/subscription-example.json",
        "r4/subscription-example-error.json",
        "r4b/subscription-example.json",
    ] {
        let err = r4::parse_subscription(&fixture(path)).unwrap_err();
        assert!(
            matches!(
                err,
                SubscriptionError::NotTopicBased { .. } | SubscriptionError::MissingContent { .. }
            ),
            "{path}: {err}"
        );
    }
}

#[test]
fn r4_heartbeat_given_as_value_integer_is_read() {
    let mut body = fixture("r4-backport/Subscription-subscription-admission.json");
    body["channel"]["extension"][0] = json!({"url": r4::EXT_HEARTBEAT_PERIOD, "valueInteger": 30});
    let sub = r4::parse_subscription(&body).unwrap();
    assert_eq!(sub.channel.heartbeat_period, Some(30));
}

#[test]
fn r4_filter_criteria_accept_every_documented_form() {
    let f = |s| r4::parse_filter_criteria(s).unwrap();
    let one = |rt: Option<&str>, p: &str, m: Option<&str>, v: &str| Filter {
        resource_type: rt.map(str::to_owned),
        parameter: p.into(),
        comparator: None,
        modifier: m.map(str::to_owned),
        value: v.into(),
    };
    assert_eq!(
        f("Task?owner=Organization/x"),
        vec![one(Some("Task"), "owner", None, "Organization/x")]
    );
    assert_eq!(
        f("Task.owner=Organization/x"),
        vec![one(Some("Task"), "owner", None, "Organization/x")]
    );
    assert_eq!(
        f("owner=Organization/x"),
        vec![one(None, "owner", None, "Organization/x")]
    );
    assert_eq!(
        f("status:not=completed"),
        vec![one(None, "status", Some("not"), "completed")]
    );
    assert_eq!(
        f("Task.status:not=completed"),
        vec![one(Some("Task"), "status", Some("not"), "completed")]
    );
    assert_eq!(
        f("Task?owner=Organization%2Fx&status=requested"),
        vec![
            one(Some("Task"), "owner", None, "Organization/x"),
            one(Some("Task"), "status", None, "requested")
        ]
    );
    for bad in ["", "Task?", "owner", "=x", "owner:=x", "task?owner=x"] {
        assert!(r4::parse_filter_criteria(bad).is_err(), "{bad}");
    }
}

#[test]
fn r4_set_status_writes_and_clears_error() {
    let mut body = fixture("r4-backport/Subscription-subscription-admission.json");
    r4::set_status(&mut body, SubscriptionStatus::Error, Some("timeout")).unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"], "timeout");
    r4::set_status(&mut body, SubscriptionStatus::Active, None).unwrap();
    assert_eq!(body["status"], "active");
    assert!(body.get("error").is_none());
    assert!(matches!(
        r4::set_status(&mut body, SubscriptionStatus::EnteredInError, None),
        Err(SubscriptionError::StatusNotInVersion { .. })
    ));
}

#[test]
fn r4_basic_topic_fixture_reads_43_and_50_extensions() {
    let topic =
        r4::parse_basic_topic(&fixture("r4-backport/Basic-r4-encounter-complete.json")).unwrap();
    assert_eq!(
        topic.url,
        "http://hl7.org/fhir/uv/subscriptions-backport/SubscriptionTopic/r4-encounter-complete"
    );
    assert_eq!(topic.status, TopicStatus::Draft);
    assert_eq!(topic.version.as_deref(), Some("1.2.0"));
    let t = &topic.resource_triggers[0];
    assert_eq!(t.resource, "Encounter");
    assert_eq!(
        t.interactions,
        vec![Interaction::Create, Interaction::Update]
    );
    assert_eq!(
        t.query_criteria.as_ref().unwrap().current.as_deref(),
        Some("status=finished")
    );
    assert_eq!(topic.can_filter_by.len(), 2);
    assert_eq!(
        topic.notification_shape[0].rev_include,
        vec!["Encounter:subject"]
    );
}

#[test]
fn topics_round_trip_through_r4_basic() {
    let mut topics = vec![
        r4::parse_basic_topic(&fixture("r4-backport/Basic-r4-encounter-complete.json")).unwrap(),
        r5::parse_topic(&fixture("r5/subscriptiontopic-example.json")).unwrap(),
    ];
    topics.extend(builtin::topics(FhirVersion::R4));
    for topic in topics {
        let basic = r4::topic_to_basic(&topic, Some("t"));
        assert!(r4::is_basic_topic(&basic));
        assert!(
            basic["extension"][0]["url"]
                .as_str()
                .unwrap()
                .starts_with(r4::XVER_TOPIC_PREFIX_50)
        );
        assert_eq!(
            r4::parse_basic_topic(&basic).unwrap(),
            topic,
            "{}",
            topic.url
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Built-in topics
// ---------------------------------------------------------------------------------------------

#[test]
fn builtin_topics_have_stable_canonicals_under_the_herald_base() {
    let catalog = TopicCatalog::with_builtins(FhirVersion::R4);
    assert_eq!(catalog.len(), builtin::BUILTIN_IDS.len());
    for id in builtin::BUILTIN_IDS {
        let url = format!("http://herald.example.org/fhir/SubscriptionTopic/{id}");
        assert!(catalog.topic(&url).is_some(), "{url}");
        assert!(catalog.topic(&format!("{url}|1.0.0")).is_some());
    }
}

#[test]
fn builtin_task_topic_offers_the_cow_filters_with_core_definitions() {
    let topic = builtin::topics(FhirVersion::R4)
        .into_iter()
        .find(|t| t.url.ends_with(COW_TASK_CHANGED))
        .unwrap();
    for p in [
        "owner",
        "requester",
        "status",
        "business-status",
        "code",
        "focus",
        "based-on",
        "part-of",
        "identifier",
        "patient",
        "intent",
    ] {
        let c = topic.can_filter_by_for(Some("Task"), p).next().unwrap();
        assert!(
            c.filter_definition
                .as_deref()
                .unwrap()
                .starts_with("http://hl7.org/fhir/SearchParameter/"),
            "{p}"
        );
    }
    assert!(
        topic.notification_shape[0]
            .include
            .contains(&"Task:focus".to_owned())
    );
}

#[test]
fn builtin_servicerequest_topic_filters_by_the_requests_own_parameters_with_core_definitions() {
    for v in [FhirVersion::R4, FhirVersion::R5] {
        let topic = builtin::topics(v)
            .into_iter()
            .find(|t| t.url.ends_with(builtin::COW_SERVICEREQUEST_CHANGED))
            .unwrap();
        assert_eq!(topic.resource_triggers[0].resource, "ServiceRequest");
        for (p, is_reference) in builtin::SERVICE_REQUEST_FILTERS {
            let c = topic
                .can_filter_by_for(Some("ServiceRequest"), p)
                .next()
                .unwrap_or_else(|| panic!("{p}"));
            // the core definition (shared ones such as clinical-identifier included)
            assert!(
                c.filter_definition
                    .as_deref()
                    .unwrap()
                    .starts_with("http://hl7.org/fhir/SearchParameter/"),
                "{v:?} {p}"
            );
            // a placer follows requests based on its orders by their identifier system
            assert_eq!(
                c.modifiers.contains(&"identifier".to_owned()),
                is_reference,
                "{p}"
            );
        }
        assert!(
            topic
                .can_filter_by_for(Some("Task"), "owner")
                .next()
                .is_none()
        );
    }
}

#[test]
fn a_subscription_on_requests_based_on_a_placers_orders_is_accepted() {
    let catalog = TopicCatalog::with_builtins(FhirVersion::R4);
    let body = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "specific services under the fulfiller's authority",
        "criteria": builtin::canonical(builtin::COW_SERVICEREQUEST_CHANGED),
        "_criteria": {"extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
            "valueString": "ServiceRequest?based-on:identifier=https://placer.example.org/ehr|"
        }]},
        "channel": {"type": "rest-hook", "endpoint": "https://placer.example.org/notify", "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": r4::EXT_PAYLOAD_CONTENT, "valueCode": "id-only"}]}}
    });
    let sub = crate::validate_subscription(FhirVersion::R4, &body, &catalog).unwrap();
    assert_eq!(sub.filters[0].parameter, "based-on");
    assert_eq!(sub.filters[0].modifier.as_deref(), Some("identifier"));
    let wrong = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "x",
        "criteria": builtin::canonical(builtin::COW_SERVICEREQUEST_CHANGED),
        "_criteria": {"extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
            "valueString": "ServiceRequest?task-owner=Organization/lab-1"
        }]},
        "channel": {"type": "rest-hook", "endpoint": "https://placer.example.org/notify", "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": r4::EXT_PAYLOAD_CONTENT, "valueCode": "id-only"}]}}
    });
    assert!(crate::validate_subscription(FhirVersion::R4, &wrong, &catalog).is_err());
}

#[test]
fn builtin_topics_validate_in_both_versions() {
    for v in [FhirVersion::R4, FhirVersion::R5] {
        for topic in builtin::topics(v) {
            let body = crate::topic_to_json(v, &topic, None);
            let back = crate::validate_topic(v, &body).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, topic);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn r5_request() -> Value {
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "topic": builtin::canonical(COW_TASK_CHANGED),
        "reason": "Placer wants updates on Tasks it created",
        "filterBy": [{ "resourceType": "Task", "filterParameter": "requester", "value": "Organization/placer-1" }],
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
        "endpoint": "https://placer.example/fhir-notify",
        "parameter": [{ "name": "Authorization", "value": "Bearer s" }],
        "heartbeatPeriod": 300,
        "timeout": 30,
        "contentType": "application/fhir+json",
        "content": "id-only",
        "maxCount": 10
    })
}

fn r4_request() -> Value {
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
                { "url": r4::EXT_TIMEOUT, "valueUnsignedInt": 30 },
                { "url": r4::EXT_MAX_COUNT, "valuePositiveInt": 10 } ],
            "type": "rest-hook",
            "endpoint": "https://placer.example/fhir-notify",
            "payload": "application/fhir+json",
            "_payload": { "extension": [ { "url": r4::EXT_PAYLOAD_CONTENT, "valueCode": "id-only" } ] },
            "header": [ "Authorization: Bearer s" ]
        }
    })
}

fn validate(v: FhirVersion, body: &Value) -> Result<Subscription, SubscriptionError> {
    crate::validate_subscription(v, body, &TopicCatalog::with_builtins(v))
}

#[test]
fn cow_placer_subscription_is_accepted_in_r5_and_r4() {
    let r5 = validate(FhirVersion::R5, &r5_request()).unwrap();
    let r4 = validate(FhirVersion::R4, &r4_request()).unwrap();
    assert_eq!(r5.filters, r4.filters);
    assert_eq!(r5.channel, r4.channel);
    assert_eq!(r5.topic, r4.topic);
}

#[test]
fn unknown_topic_is_refused() {
    let mut body = r5_request();
    body["topic"] = json!("http://example.org/SubscriptionTopic/nope");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::UnknownTopic { .. })
    ));
}

#[test]
fn filter_the_topic_does_not_offer_is_refused() {
    let mut body = r5_request();
    body["filterBy"][0]["filterParameter"] = json!("performer");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::FilterNotAllowed { .. })
    ));
    let mut body = r4_request();
    body["_criteria"]["extension"][0]["valueString"] = json!("Patient?name=x");
    assert!(matches!(
        validate(FhirVersion::R4, &body),
        Err(SubscriptionError::FilterNotAllowed { .. })
    ));
}

#[test]
fn modifier_the_topic_does_not_allow_is_refused() {
    let mut body = r5_request();
    body["filterBy"][0]["modifier"] = json!("below");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::ModifierNotAllowed { .. })
    ));
}

#[test]
fn comparator_with_modifier_is_refused_by_scr_1() {
    let mut body = r5_request();
    body["filterBy"][0]["modifier"] = json!("identifier");
    body["filterBy"][0]["comparator"] = json!("eq");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::ComparatorAndModifier { .. })
    ));
}

#[test]
fn comparator_the_topic_does_not_allow_is_refused() {
    let mut body = r5_request();
    body["filterBy"][0]["comparator"] = json!("gt");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::ComparatorNotAllowed { .. })
    ));
}

fn dated_topic() -> Topic {
    Topic {
        url: "http://example.org/SubscriptionTopic/dated".into(),
        version: None,
        name: None,
        title: None,
        status: TopicStatus::Active,
        date: None,
        description: None,
        resource_triggers: vec![ResourceTrigger {
            description: None,
            resource: "Task".into(),
            interactions: vec![],
            query_criteria: None,
            fhirpath_criteria: None,
        }],
        can_filter_by: vec![CanFilterBy {
            description: None,
            resource: Some("Task".into()),
            filter_parameter: "authored-on".into(),
            filter_definition: None,
            comparators: vec!["ge".into()],
            modifiers: vec![],
        }],
        notification_shape: vec![],
    }
}

#[test]
fn filter_value_that_does_not_parse_is_refused() {
    let mut catalog = TopicCatalog::new();
    catalog.insert(dated_topic());
    let mut body = r5_request();
    body["topic"] = json!("http://example.org/SubscriptionTopic/dated");
    body["filterBy"] =
        json!([{ "filterParameter": "authored-on", "comparator": "ge", "value": "not-a-date" }]);
    assert!(matches!(
        crate::validate_subscription(FhirVersion::R5, &body, &catalog),
        Err(SubscriptionError::InvalidFilterValue { .. })
    ));
    body["filterBy"][0]["value"] = json!("2024-01-01");
    crate::validate_subscription(FhirVersion::R5, &body, &catalog).unwrap();
}

#[test]
fn comparator_prefix_inside_the_value_must_be_allowed() {
    let mut catalog = TopicCatalog::new();
    catalog.insert(dated_topic());
    let mut body = r5_request();
    body["topic"] = json!("http://example.org/SubscriptionTopic/dated");
    body["filterBy"] = json!([{ "filterParameter": "authored-on", "value": "lt2024-01-01" }]);
    assert!(matches!(
        crate::validate_subscription(FhirVersion::R5, &body, &catalog),
        Err(SubscriptionError::ComparatorNotAllowed { .. })
    ));
}

#[test]
fn task_owner_filter_value_is_read_as_a_task_owner_reference() {
    let mut body = r5_request();
    body["topic"] = json!(builtin::canonical(COW_SERVICEREQUEST_FOR_OWNER));
    body["filterBy"] = json!([{ "resourceType": "ServiceRequest", "filterParameter": "task-owner", "value": "Organization/fulfiller-1" }]);
    validate(FhirVersion::R5, &body).unwrap();
}

#[test]
fn unknown_channel_types_are_refused() {
    let mut body = r5_request();
    body["channelType"]["code"] = json!("sms");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::UnknownChannelType { .. })
    ));
    let mut body = r4_request();
    body["channel"]["type"] = json!("sms");
    assert!(matches!(
        validate(FhirVersion::R4, &body),
        Err(SubscriptionError::UnknownChannelType { .. })
    ));
}

#[test]
fn endpoint_must_fit_the_channel() {
    let cases: [(&str, Option<&str>, bool); 13] = [
        ("rest-hook", Some("https://a.example/x"), true),
        ("rest-hook", Some("http://a.example"), true),
        ("rest-hook", Some("ftp://a.example/x"), false),
        ("rest-hook", Some("https://"), false),
        ("rest-hook", None, false),
        ("websocket", None, true),
        ("websocket", Some("wss://a.example/ws"), true),
        ("websocket", Some("https://a.example/ws"), false),
        ("email", Some("mailto:someone@example.org"), true),
        ("email", Some("https://a.example"), false),
        ("message", Some("https://a.example/$process-message"), true),
        ("message", Some("urn:uuid:1234"), false),
        ("message", Some("not a url"), false),
    ];
    for (channel, endpoint, ok) in cases {
        let mut body = r5_request();
        body["channelType"]["code"] = json!(channel);
        if channel == "message" {
            body["content"] = json!("full-resource");
        }
        match endpoint {
            Some(e) => body["endpoint"] = json!(e),
            None => {
                body.as_object_mut().unwrap().remove("endpoint");
            }
        }
        let result = validate(FhirVersion::R5, &body);
        assert_eq!(result.is_ok(), ok, "{channel} {endpoint:?}: {result:?}");
    }
}

#[test]
fn the_message_channel_needs_full_resource_content() {
    for (content, ok) in [
        ("full-resource", true),
        ("id-only", false),
        ("empty", false),
    ] {
        let mut body = r5_request();
        body["channelType"]["code"] = json!("message");
        body["endpoint"] = json!("https://a.example/fhir/$process-message");
        body["content"] = json!(content);
        let result = validate(FhirVersion::R5, &body);
        assert_eq!(result.is_ok(), ok, "{content}: {result:?}");
        if let Err(e) = result {
            assert!(e.to_string().contains("full-resource"), "{e}");
        }
    }
}

#[test]
fn content_type_must_be_fhir_json_of_the_tenant_version() {
    let cases = [
        (FhirVersion::R5, "application/fhir+json", true),
        (FhirVersion::R5, "application/json", true),
        (
            FhirVersion::R5,
            "application/fhir+json;fhirVersion=5.0",
            true,
        ),
        (
            FhirVersion::R5,
            "application/fhir+json; fhirVersion=4.0",
            false,
        ),
        (FhirVersion::R5, "application/fhir+xml", false),
        (
            FhirVersion::R4,
            "application/fhir+json;fhirVersion=4.0",
            true,
        ),
        (
            FhirVersion::R4,
            "application/fhir+json;fhirVersion=5.0",
            false,
        ),
        (FhirVersion::R4, "text/plain", false),
        (
            FhirVersion::R4B,
            "application/fhir+json;fhirVersion=4.3",
            true,
        ),
        (
            FhirVersion::R4B,
            "application/fhir+json;fhirVersion=4.0",
            false,
        ),
    ];
    for (v, mime, ok) in cases {
        let mut body = match v {
            FhirVersion::R4 | FhirVersion::R4B => r4_request(),
            FhirVersion::R5 => r5_request(),
        };
        match v {
            FhirVersion::R4 | FhirVersion::R4B => body["channel"]["payload"] = json!(mime),
            FhirVersion::R5 => body["contentType"] = json!(mime),
        }
        let result = validate(v, &body);
        assert_eq!(result.is_ok(), ok, "{v} {mime}: {result:?}");
    }
}

#[test]
fn missing_or_unknown_content_level_is_refused() {
    let mut body = r5_request();
    body.as_object_mut().unwrap().remove("content");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::MissingContent { .. })
    ));
    body["content"] = json!("everything");
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::UnknownContent { .. })
    ));
    let mut body = r4_request();
    body["channel"].as_object_mut().unwrap().remove("_payload");
    assert!(matches!(
        validate(FhirVersion::R4, &body),
        Err(SubscriptionError::MissingContent { .. })
    ));
}

#[test]
fn cross_version_extension_replaced_by_the_backport_is_refused_on_r4() {
    let mut body = r4_request();
    body["channel"]["extension"] = json!([{
        "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.heartbeatPeriod",
        "valueUnsignedInt": 60
    }]);
    assert!(matches!(
        validate(FhirVersion::R4, &body),
        Err(SubscriptionError::CrossVersionExtension { .. })
    ));
}

const XVER_FILTER_BY: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.filterBy";
/// The filter extension of the Inferno Subscriptions R4 server suite's rejection test
/// (`subscriptions_r4_server_reject_subscription_cross_version_extension`): `_criteria` replaced
/// by one extension with this URL and `valueString: 'Encounter?patient=Patient/123'`.
const INFERNO_XVER_FILTER: &str =
    "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria";

fn unsupported_at(body: &Value) -> (String, String) {
    match validate(FhirVersion::R4, body) {
        Err(SubscriptionError::UnsupportedExtension { url, element, .. })
        | Err(SubscriptionError::CrossVersionExtension { url, element, .. }) => (url, element),
        other => panic!("expected an extension refusal, got {other:?}"),
    }
}

#[test]
fn the_inferno_cross_version_filter_shape_is_refused() {
    let mut body = r4_request();
    body["_criteria"] = json!({ "extension": [{
        "url": INFERNO_XVER_FILTER,
        "valueString": "Encounter?patient=Patient/123"
    }] });
    let err = validate(FhirVersion::R4, &body).unwrap_err();
    assert!(
        matches!(err, SubscriptionError::UnsupportedExtension { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(INFERNO_XVER_FILTER), "{text}");
    assert!(text.contains("Subscription.criteria.extension"), "{text}");
    assert_eq!(err.issue_code(), "not-supported");
}

#[test]
fn a_cross_version_filter_on_criteria_or_the_root_is_refused_naming_the_replacement() {
    let xver = json!({ "url": XVER_FILTER_BY, "valueString": "Task?owner=Organization/o1" });
    let mut on_criteria = r4_request();
    on_criteria["_criteria"]["extension"]
        .as_array_mut()
        .unwrap()
        .push(xver.clone());
    let mut on_root = r4_request();
    on_root["extension"] = json!([xver]);
    for (body, element) in [
        (on_criteria, "Subscription.criteria.extension"),
        (on_root, "Subscription.extension"),
    ] {
        match validate(FhirVersion::R4, &body) {
            Err(SubscriptionError::CrossVersionExtension {
                url,
                element: at,
                use_instead,
            }) => {
                assert_eq!(url, XVER_FILTER_BY);
                assert_eq!(at, element);
                assert_eq!(use_instead, r4::EXT_FILTER_CRITERIA);
            }
            other => panic!("{element}: {other:?}"),
        }
    }
}

#[test]
fn a_mistyped_filter_extension_is_refused_not_ignored() {
    let typo =
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-critera";
    let mut body = r4_request();
    body["_criteria"] =
        json!({ "extension": [{ "url": typo, "valueString": "Task?owner=Organization/o1" }] });
    assert_eq!(
        unsupported_at(&body),
        (
            typo.to_owned(),
            "Subscription.criteria.extension".to_owned()
        )
    );
}

#[test]
fn unknown_extensions_on_every_delivery_shaping_element_are_refused() {
    let unknown = "http://example.org/StructureDefinition/mystery";
    let ext = json!([{ "url": unknown, "valueString": "x" }]);
    let places: [(&[&str], &str); 11] = [
        (&["extension"], "Subscription.extension"),
        (&["modifierExtension"], "Subscription.modifierExtension"),
        (
            &["_criteria", "extension"],
            "Subscription.criteria.extension",
        ),
        (&["_end", "extension"], "Subscription.end.extension"),
        (&["channel", "extension"], "Subscription.channel.extension"),
        (
            &["channel", "modifierExtension"],
            "Subscription.channel.modifierExtension",
        ),
        (
            &["channel", "_type", "extension"],
            "Subscription.channel.type.extension",
        ),
        (
            &["channel", "_endpoint", "extension"],
            "Subscription.channel.endpoint.extension",
        ),
        (
            &["channel", "_payload", "extension"],
            "Subscription.channel.payload.extension",
        ),
        (
            &["channel", "_header", "0", "extension"],
            "Subscription.channel.header.extension",
        ),
        (
            &["_criteria", "modifierExtension"],
            "Subscription.criteria.modifierExtension",
        ),
    ];
    for (path, element) in places {
        let mut body = r4_request();
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut body;
        for key in parents {
            node = if *key == "0" {
                if !node.is_array() {
                    *node = json!([{}]);
                }
                &mut node[0]
            } else {
                if node.get(*key).is_none() {
                    node[*key] = json!({});
                }
                &mut node[*key]
            };
        }
        // Added next to what is already there, so the understood extensions stay.
        match node.get_mut(*last).and_then(Value::as_array_mut) {
            Some(list) => list.push(ext[0].clone()),
            None => node[*last] = ext.clone(),
        }
        assert_eq!(
            unsupported_at(&body),
            (unknown.to_owned(), element.to_owned()),
            "{path:?}"
        );
    }
}

#[test]
fn a_backport_extension_in_the_wrong_place_is_refused() {
    let mut body = r4_request();
    body["channel"]["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "url": r4::EXT_PAYLOAD_CONTENT, "valueCode": "full-resource" }));
    assert_eq!(
        unsupported_at(&body),
        (
            r4::EXT_PAYLOAD_CONTENT.to_owned(),
            "Subscription.channel.extension".to_owned()
        )
    );
}

#[test]
fn malformed_extension_lists_on_delivery_shaping_elements_are_refused() {
    let mut not_a_list = r4_request();
    not_a_list["_criteria"] =
        json!({ "extension": { "url": r4::EXT_FILTER_CRITERIA, "valueString": "Task?owner=x" } });
    let mut not_an_object = r4_request();
    not_an_object["_criteria"] = json!([{ "extension": [] }]);
    let mut no_url = r4_request();
    no_url["_criteria"] = json!({ "extension": [{ "valueString": "Task?owner=x" }] });
    for body in [not_a_list, not_an_object, no_url] {
        assert!(
            matches!(
                validate(FhirVersion::R4, &body),
                Err(SubscriptionError::Invalid { .. })
            ),
            "{body}"
        );
    }
}

#[test]
fn understood_extensions_and_extensions_off_the_delivery_path_are_accepted() {
    let mut body = r4_request();
    body["extension"] = json!([{
        "url": r4::EXT_SUBSCRIPTION_IDENTIFIER,
        "valueIdentifier": { "system": "urn:example", "value": "s1" }
    }]);
    body["channel"]["_type"] = json!({ "extension": [{
        "url": r4::EXT_CHANNEL_TYPE,
        "valueCoding": { "system": ChannelType::SYSTEM, "code": "rest-hook" }
    }] });
    body["channel"]["_header"] = json!([null]);
    let elsewhere =
        json!([{ "url": "http://example.org/StructureDefinition/mystery", "valueString": "x" }]);
    body["meta"]["extension"] = elsewhere.clone();
    body["text"] = json!({ "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">s</div>", "extension": elsewhere });
    body["_reason"] = json!({ "extension": elsewhere });
    let sub = validate(FhirVersion::R4, &body).unwrap();
    assert_eq!(sub.identifier.len(), 1);
    assert_eq!(sub.filters.len(), 1);
    assert_eq!(sub.channel.content, PayloadContent::IdOnly);
}

#[test]
fn r4_subscription_fixtures_and_what_herald_writes_pass_the_extension_check() {
    for path in [
        "r4/subscription-example.json",
        "r4/subscription-example-error.json",
    ] {
        let body = fixture(path);
        crate::validate::check_r4_delivery_extensions(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let sub = validate(FhirVersion::R4, &r4_request()).unwrap();
    crate::validate::check_r4_delivery_extensions(&r4::subscription_to_json(&sub)).unwrap();
}

#[test]
fn client_may_submit_only_requested_or_off() {
    for (status, ok) in [
        ("requested", true),
        ("off", true),
        ("active", false),
        ("error", false),
    ] {
        let mut body = r5_request();
        body["status"] = json!(status);
        assert_eq!(validate(FhirVersion::R5, &body).is_ok(), ok, "{status}");
    }
}

#[test]
fn topic_with_unsupported_fhirpath_is_refused() {
    let mut body = fixture("r5/subscriptiontopic-example-admission.json");
    body["resourceTrigger"][0]["fhirPathCriteria"] = json!("%current.status.aggregate($this)");
    assert!(matches!(
        crate::validate_topic(FhirVersion::R5, &body),
        Err(SubscriptionError::UnsupportedCriteria { .. })
    ));
}

#[test]
fn topic_on_unknown_resource_type_is_refused() {
    let mut body = fixture("r5/subscriptiontopic-example-admission.json");
    body["resourceTrigger"][0]["resource"] = json!("Encountre");
    assert!(matches!(
        crate::validate_topic(FhirVersion::R5, &body),
        Err(SubscriptionError::UnknownResourceType { .. })
    ));
}

#[test]
fn topic_with_unparseable_query_is_refused() {
    let mut body = fixture("r5/subscriptiontopic-example-admission.json");
    body["resourceTrigger"][0]["queryCriteria"]["current"] = json!("no-such-param=1");
    assert!(matches!(
        crate::validate_topic(FhirVersion::R5, &body),
        Err(SubscriptionError::UnsupportedCriteria { .. })
    ));
}

#[test]
fn fixture_topics_validate_when_their_search_parameters_are_known() {
    // Herald embeds the workflow search parameters (Task, ServiceRequest, Patient, Resource), so
    // the Encounter examples are moved onto Task, whose `status` search works the same way.
    let mut body = fixture("r5/subscriptiontopic-example-admission.json");
    body["resourceTrigger"][0]["resource"] = json!("http://hl7.org/fhir/StructureDefinition/Task");
    crate::validate_topic(FhirVersion::R5, &body).unwrap();
    let mut body = fixture("r4-backport/Basic-r4-encounter-complete.json");
    body["extension"][6]["extension"][1]["valueUri"] = json!("Task");
    body["extension"][6]["extension"][4]["extension"][0]["valueString"] =
        json!("status:not=completed");
    body["extension"][6]["extension"][4]["extension"][2]["valueString"] = json!("status=completed");
    crate::validate_topic(FhirVersion::R4, &body).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Limits and hostile input
// ---------------------------------------------------------------------------------------------

#[test]
fn r4_header_with_a_line_break_is_refused_at_creation_naming_it() {
    let mut body = r4_request();
    body["channel"]["header"] = json!(["X-A: ok\r\nX-Injected: 1"]);
    let e = validate(FhirVersion::R4, &body).expect_err("refused");
    assert!(matches!(e, SubscriptionError::InvalidHeader { .. }), "{e}");
    assert!(e.to_string().contains("X-A"), "{e}");
    assert!(e.to_string().contains("Subscription.channel.header"), "{e}");
}

#[test]
fn r5_framing_parameter_is_refused_at_creation() {
    let mut body = r5_request();
    body["parameter"] = json!([{"name": "Content-Length", "value": "5"}]);
    let e = validate(FhirVersion::R5, &body).expect_err("refused");
    assert!(e.to_string().contains("Content-Length"), "{e}");
    assert!(e.to_string().contains("Subscription.parameter"), "{e}");
}

#[test]
fn more_filters_than_the_limit_are_refused() {
    let mut body = r5_request();
    let filter = json!({ "resourceType": "Task", "filterParameter": "requester", "value": "Organization/placer-1" });
    body["filterBy"] = json!(vec![filter; crate::validate::MAX_FILTERS + 1]);
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::TooMany { .. })
    ));
}

#[test]
fn a_stored_active_subscription_passes_the_load_check_but_not_client_validation() {
    let mut body = r5_request();
    body["status"] = json!("active");
    let catalog = TopicCatalog::with_builtins(FhirVersion::R5);
    assert!(crate::check_subscription(FhirVersion::R5, &body, &catalog).is_ok());
    assert!(matches!(
        validate(FhirVersion::R5, &body),
        Err(SubscriptionError::StatusNotAllowed { .. })
    ));
    body["parameter"] = json!([{"name": "Host", "value": "elsewhere"}]);
    assert!(matches!(
        crate::check_subscription(FhirVersion::R5, &body, &catalog),
        Err(SubscriptionError::InvalidHeader { .. })
    ));
}

#[test]
fn topic_with_criteria_nested_beyond_the_limit_is_refused_naming_it() {
    let mut body = fixture("r5/subscriptiontopic-example-admission.json");
    body["resourceTrigger"][0]["resource"] = json!("Task");
    body["resourceTrigger"][0]["fhirPathCriteria"] =
        json!(format!("%current.status.exists(){}", ".not()".repeat(1000)));
    let e = crate::validate_topic(FhirVersion::R5, &body).expect_err("refused");
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn topic_with_more_triggers_than_the_limit_is_refused() {
    let mut body = fixture("r5/subscriptiontopic-example-admission.json");
    let mut trigger = body["resourceTrigger"][0].clone();
    trigger["resource"] = json!("Task");
    trigger.as_object_mut().unwrap().remove("queryCriteria");
    body["resourceTrigger"] = json!(vec![trigger; crate::validate::MAX_TRIGGERS + 1]);
    assert!(matches!(
        crate::validate_topic(FhirVersion::R5, &body),
        Err(SubscriptionError::TooMany { .. })
    ));
}
