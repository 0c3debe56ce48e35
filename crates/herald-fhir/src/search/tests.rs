//! Unit tests of search parsing and matching.

use super::*;
use crate::FhirVersion::{R4, R5};
use serde_json::json;

fn fixture(name: &str) -> Value {
    let text = match name {
        "sr" => {
            include_str!("../../tests/fixtures/ServiceRequest-cow-service-request-example.json")
        }
        "task" => include_str!("../../tests/fixtures/Task-cow-coordination-task-example.json"),
        _ => "null",
    };
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn task() -> Value {
    json!({
        "resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
        "meta": {"lastUpdated": "2024-03-15T10:30:00Z", "tag": [{"system": "http://tags", "code": "x"}]},
        "identifier": [{"system": "http://ids", "value": "A-1", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]}}],
        "businessStatus": {"coding": [{"system": "http://bs", "code": "waiting", "display": "Waiting for results"}], "text": "Waiting"},
        "code": {"coding": [{"code": "fulfill"}]},
        "for": {"reference": "Patient/p1"},
        "owner": {"reference": "http://example.org/fhir/Organization/org-1"},
        "requester": {"reference": "Practitioner/pr1/_history/3", "identifier": {"system": "http://npi", "value": "123"}},
        "focus": {"reference": "ServiceRequest/sr1"},
        "authoredOn": "2024-03-15",
        "executionPeriod": {"start": "2024-03-10T00:00:00Z", "end": "2024-03-20T00:00:00Z"},
        "lastModified": "2024-03-15T10:30:00+02:00",
        "output": [{"type": {"text": "r"}, "valueReference": {"reference": "DiagnosticReport/d1"}}]
    })
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1", "active": true, "gender": "female",
        "name": [{"family": "Müller-Lüdenscheidt", "given": ["Renée", "Anne"]}],
        "address": [{"line": ["1 Rue de l'Été"], "city": "Montréal", "postalCode": "H2X"}],
        "telecom": [{"system": "email", "value": "renee@example.org"}, {"system": "phone", "value": "555"}],
        "birthDate": "1980-06", "managingOrganization": {"reference": "Organization/org-1"},
        "deceasedBoolean": false})
}

fn crit(v: FhirVersion, rt: &str, name: &str, value: &str) -> Criterion {
    parse_criterion(v, rt, name, value).unwrap_or_else(|e| panic!("{name}={value}: {e}"))
}

fn m(rt: &str, name: &str, value: &str, res: &Value) -> bool {
    let c = crit(R4, rt, name, value);
    matches(&c, res).unwrap_or_else(|e| panic!("{name}={value}: {e}"))
}

fn t(name: &str, value: &str) -> bool {
    m("Task", name, value, &task())
}

fn p(name: &str, value: &str) -> bool {
    m("Patient", name, value, &patient())
}

// ---- registry ------------------------------------------------------------------------------

#[test]
fn registry_finds_type_specific_and_resource_level_params() {
    for v in [R4, R5] {
        let reg = Registry::for_version(v);
        let owner = reg.get("Task", "owner");
        assert_eq!(owner.map(|d| d.kind), Some(ParamType::Reference));
        assert_eq!(
            reg.get("Task", "_id").map(|d| d.kind),
            Some(ParamType::Token)
        );
        assert_eq!(
            reg.get("Task", "_lastUpdated").map(|d| d.kind),
            Some(ParamType::Date)
        );
        assert!(reg.get("Task", "nope").is_none());
        assert!(reg.get("ServiceRequest", "patient").is_some());
        let codes: Vec<&str> = reg
            .for_resource("Task")
            .iter()
            .map(|d| d.code.as_str())
            .collect();
        assert!(codes.contains(&"status") && codes.contains(&"_id"));
    }
    assert!(Registry::for_version(R5).get("Task", "output").is_some());
    assert!(Registry::for_version(R4).get("Task", "output").is_none());
}

#[test]
fn registry_prefers_specific_definition_over_multi_resource_one() {
    let reg = Registry::for_version(R4);
    let d = reg.get("Patient", "identifier");
    assert_eq!(d.map(|d| d.base.len()), Some(1));
}

// ---- parse errors --------------------------------------------------------------------------

#[test]
fn unknown_parameter_is_reported() {
    assert!(matches!(
        parse_criterion(R4, "Task", "colour", "red"),
        Err(FhirError::UnknownSearchParameter { .. })
    ));
    assert!(matches!(
        parse_criterion(R4, "Nope", "status", "x"),
        Err(FhirError::UnknownResourceType(_))
    ));
}

#[test]
fn bad_values_are_reported() {
    for (n, v) in [
        ("authored-on", "yesterday"),
        ("authored-on", "gt2024-13"),
        ("status:missing", "maybe"),
        ("status", "a|b|c"),
    ] {
        assert!(
            matches!(
                parse_criterion(R4, "Task", n, v),
                Err(FhirError::InvalidSearchValue { .. })
            ),
            "{n}={v}"
        );
    }
    // Type not among the parameter's targets.
    assert!(matches!(
        parse_criterion(R4, "Task", "patient", "Organization/1"),
        Err(FhirError::InvalidSearchValue { .. })
    ));
}

#[test]
fn modifiers_invalid_for_type_are_refused() {
    for (n, v) in [
        ("status:exact", "x"),
        ("authored-on:not", "2024"),
        ("owner:contains", "x"),
        ("status:in", "http://vs"),
        ("status:below", "x"),
        ("owner:Observation", "1"),
        ("status:bogus", "x"),
    ] {
        assert!(
            matches!(
                parse_criterion(R4, "Task", n, v),
                Err(FhirError::UnsupportedModifier { .. })
            ),
            "{n}={v}"
        );
    }
}

#[test]
fn unsupported_parameters_are_reported() {
    for n in [
        "_text",
        "_content",
        "subject.name",
        "_has:Observation:patient:code",
    ] {
        assert!(
            matches!(
                parse_criterion(R4, "Task", n, "x"),
                Err(FhirError::UnsupportedSearchParameter { .. })
            ),
            "{n}"
        );
    }
}

// ---- token -------------------------------------------------------------------------------

#[test]
fn token_code_only_matches_any_system() {
    assert!(t("status", "requested"));
    assert!(!t("status", "completed"));
    assert!(t("business-status", "waiting"));
    assert!(t("identifier", "A-1"));
}

#[test]
fn token_system_and_code() {
    assert!(t("business-status", "http://bs|waiting"));
    assert!(!t("business-status", "http://other|waiting"));
    assert!(t("identifier", "http://ids|A-1"));
}

#[test]
fn token_no_system_form() {
    assert!(t("code", "|fulfill"));
    assert!(!t("business-status", "|waiting"));
    assert!(t("status", "|requested"));
}

#[test]
fn token_system_only_form() {
    assert!(t("business-status", "http://bs|"));
    assert!(!t("business-status", "http://nope|"));
}

#[test]
fn token_comma_is_or() {
    assert!(t("status", "draft,requested"));
    assert!(!t("status", "draft,completed"));
}

#[test]
fn token_not_matches_when_no_value_matches_including_absent() {
    assert!(t("status:not", "completed"));
    assert!(!t("status:not", "completed,requested"));
    assert!(t("priority:not", "stat")); // no priority at all
}

#[test]
fn token_missing() {
    assert!(t("priority:missing", "true"));
    assert!(!t("status:missing", "true"));
    assert!(t("status:missing", "false"));
}

#[test]
fn token_text_searches_text_and_display() {
    assert!(t("business-status:text", "waiting for"));
    assert!(t("business-status:text", "result"));
    assert!(!t("business-status:text", "done"));
}

#[test]
fn token_of_type_matches_identifier_type_and_value() {
    assert!(t(
        "identifier:of-type",
        "http://terminology.hl7.org/CodeSystem/v2-0203|PLAC|A-1"
    ));
    assert!(!t(
        "identifier:of-type",
        "http://terminology.hl7.org/CodeSystem/v2-0203|MR|A-1"
    ));
}

#[test]
fn token_matches_boolean_contact_point_and_id() {
    assert!(p("active", "true"));
    assert!(!p("active", "false"));
    assert!(p("email", "renee@example.org"));
    assert!(!p("email", "555"));
    assert!(p("phone", "555"));
    assert!(p("_id", "p1"));
    assert!(!p("_id", "p2"));
    assert!(p("deceased", "false"));
    assert!(t("_tag", "http://tags|x"));
}

#[test]
fn escaped_comma_is_part_of_the_value() {
    let c = crit(R4, "Task", "status", "a\\,b,c");
    assert_eq!(c.values.len(), 2);
    assert_eq!(
        c.values[0],
        SearchValue::Token {
            system: None,
            code: Some("a,b".into())
        }
    );
}

// ---- reference -----------------------------------------------------------------------------

#[test]
fn reference_type_and_id() {
    assert!(t("patient", "Patient/p1"));
    assert!(t("subject", "Patient/p1"));
    assert!(!t("subject", "Patient/p2"));
    assert!(t("focus", "ServiceRequest/sr1"));
}

#[test]
fn reference_bare_id_matches_any_type() {
    assert!(t("subject", "p1"));
    assert!(t("requester", "pr1"));
    assert!(!t("subject", "zz"));
}

#[test]
fn reference_type_modifier_constrains_bare_id() {
    assert!(t("subject:Patient", "p1"));
    assert!(!t("subject:Group", "p1"));
}

#[test]
fn reference_absolute_url_matches_relative_reference_and_same_absolute() {
    assert!(t("subject", "http://example.org/fhir/Patient/p1"));
    assert!(t("owner", "http://example.org/fhir/Organization/org-1"));
    assert!(!t("owner", "http://other.org/fhir/Organization/org-1"));
    // A relative value does not match an absolute reference to another server.
    assert!(!t("owner", "Organization/org-1"));
}

#[test]
fn reference_version_specific() {
    assert!(t("requester", "Practitioner/pr1"));
    assert!(t("requester", "Practitioner/pr1/_history/3"));
    assert!(!t("requester", "Practitioner/pr1/_history/2"));
    assert!(!t("subject", "Patient/p1/_history/1"));
}

#[test]
fn reference_identifier_modifier() {
    assert!(t("requester:identifier", "http://npi|123"));
    assert!(!t("requester:identifier", "http://npi|999"));
    let sr = fixture("sr");
    assert!(m(
        "ServiceRequest",
        "subject:identifier",
        "https://placer.example.org/ehr|553242",
        &sr
    ));
}

#[test]
fn reference_missing_and_not() {
    assert!(t("part-of:missing", "true"));
    assert!(t("owner:missing", "false"));
    assert!(t("subject:not", "Patient/p2"));
    assert!(!t("subject:not", "Patient/p1"));
}

#[test]
fn r5_output_reference_uses_choice_type() {
    let c = crit(R5, "Task", "output", "DiagnosticReport/d1");
    assert_eq!(matches(&c, &task()).ok(), Some(true));
}

#[test]
fn patient_param_on_service_request_fixture() {
    let sr = fixture("sr");
    // subject has only an identifier and type: no literal reference to match.
    assert!(!m("ServiceRequest", "patient", "Patient/553242", &sr));
    assert!(m("ServiceRequest", "status", "active", &sr));
    assert!(m("ServiceRequest", "code", "http://loinc.org|2345-7", &sr));
    let task = fixture("task");
    assert!(m(
        "Task",
        "focus",
        "ServiceRequest/cow-service-request-example",
        &task
    ));
}

// ---- string --------------------------------------------------------------------------------

#[test]
fn string_default_is_case_and_accent_insensitive_prefix() {
    assert!(p("family", "muller"));
    assert!(p("family", "MÜLL"));
    assert!(!p("family", "ludenscheidt"));
    assert!(p("given", "renee"));
    assert!(p("name", "anne"));
    assert!(p("address-city", "montreal"));
    assert!(p("address", "1 rue"));
}

#[test]
fn string_exact_is_case_and_accent_sensitive_whole_value() {
    assert!(p("given:exact", "Renée"));
    assert!(!p("given:exact", "Renee"));
    assert!(!p("given:exact", "Ren"));
}

#[test]
fn string_contains_matches_anywhere() {
    assert!(p("family:contains", "lüden"));
    assert!(p("family:contains", "LUDEN"));
    assert!(!p("family:contains", "xyz"));
}

// ---- date: one test per prefix with partial dates -------------------------------------------

#[test]
fn date_eq_requires_target_within_value_range() {
    assert!(t("authored-on", "2024"));
    assert!(t("authored-on", "2024-03"));
    assert!(t("authored-on", "eq2024-03-15"));
    assert!(!t("authored-on", "2024-04"));
    assert!(!t("period", "2024-03-15")); // period spans more than the day
    assert!(t("period", "2024-03"));
}

#[test]
fn date_ne_is_not_eq() {
    assert!(t("authored-on", "ne2024-04"));
    assert!(!t("authored-on", "ne2024"));
}

#[test]
fn date_gt_needs_target_beyond_value() {
    assert!(t("authored-on", "gt2024-03-14"));
    assert!(!t("authored-on", "gt2024-03"));
    assert!(t("period", "gt2024-03-15"));
    assert!(!t("period", "gt2024"));
}

#[test]
fn date_lt_needs_target_before_value() {
    assert!(t("authored-on", "lt2024-03-16"));
    assert!(!t("authored-on", "lt2024-03"));
    assert!(t("period", "lt2024-03-15"));
}

#[test]
fn date_ge_includes_equal() {
    assert!(t("authored-on", "ge2024-03-15"));
    assert!(t("authored-on", "ge2024"));
    assert!(!t("authored-on", "ge2024-03-16"));
}

#[test]
fn date_le_includes_equal() {
    assert!(t("authored-on", "le2024-03-15"));
    assert!(t("authored-on", "le2024-03"));
    assert!(!t("authored-on", "le2024-03-14"));
}

#[test]
fn date_sa_starts_after_value_ends() {
    assert!(t("authored-on", "sa2024-02"));
    assert!(!t("authored-on", "sa2024-03"));
    assert!(t("period", "sa2024-03-09"));
    assert!(!t("period", "sa2024-03-10"));
}

#[test]
fn date_eb_ends_before_value_starts() {
    assert!(t("authored-on", "eb2024-04"));
    assert!(!t("authored-on", "eb2024-03"));
    assert!(t("period", "eb2024-03-21"));
    assert!(!t("period", "eb2024-03-19"));
}

#[test]
fn date_ap_is_approximate() {
    assert!(t("authored-on", "ap2024-03-14"));
    assert!(!t("authored-on", "ap1990"));
}

#[test]
fn date_with_timezone_is_normalised() {
    // lastModified 10:30+02:00 is 08:30Z.
    assert!(t("modified", "2024-03-15T08:30:00Z"));
    assert!(t("modified", "lt2024-03-15T09:00:00Z"));
    assert!(t("modified", "gt2024-03-15T10:00:00+03:00"));
}

#[test]
fn last_updated_uses_meta() {
    assert!(t("_lastUpdated", "2024-03"));
    assert!(t("_lastUpdated", "gt2024-03-15T10:00:00Z"));
    assert!(!t("_lastUpdated", "lt2024"));
}

#[test]
fn date_partial_birthdate() {
    assert!(p("birthdate", "1980"));
    assert!(!p("birthdate", "1980-06-01"));
    assert!(p("birthdate", "ge1980-06-01"));
    assert!(p("birthdate", "lt1980-06-02"));
}

#[test]
fn date_on_timing_events_and_dates_of_service_request() {
    let sr = json!({"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"Patient/p"},
        "occurrenceTiming":{"event":["2024-01-01","2024-06-01"]}});
    assert!(m("ServiceRequest", "occurrence", "2024-06", &sr));
    assert!(!m("ServiceRequest", "occurrence", "2024-03", &sr));
    let c = crit(R5, "ServiceRequest", "occurrence", "2024-01");
    assert_eq!(matches(&c, &sr).ok(), Some(true));
}

// ---- uri -----------------------------------------------------------------------------------

#[test]
fn uri_exact_below_and_above() {
    let sr = json!({"resourceType":"ServiceRequest","instantiatesUri":["http://acme.org/fhir/protocols/p1"]});
    assert!(m(
        "ServiceRequest",
        "instantiates-uri",
        "http://acme.org/fhir/protocols/p1",
        &sr
    ));
    assert!(!m(
        "ServiceRequest",
        "instantiates-uri",
        "http://acme.org/fhir",
        &sr
    ));
    assert!(m(
        "ServiceRequest",
        "instantiates-uri:below",
        "http://acme.org/fhir",
        &sr
    ));
    assert!(m(
        "ServiceRequest",
        "instantiates-uri:above",
        "http://acme.org/fhir/protocols/p1/v2",
        &sr
    ));
    assert!(!m(
        "ServiceRequest",
        "instantiates-uri:above",
        "http://other.org",
        &sr
    ));
}

// ---- parse_filter and parse_query ----------------------------------------------------------

#[test]
fn filter_with_separate_comparator_and_modifier() {
    let c = parse_filter(R5, "Task", "authored-on", Some("gt"), None, "2024-03-14");
    assert_eq!(
        c.as_ref().ok().map(|c| matches(c, &task()).ok()),
        Some(Some(true))
    );
    let c = parse_filter(R5, "Task", "status", None, Some("not"), "completed");
    assert_eq!(
        c.as_ref().ok().map(|c| matches(c, &task()).ok()),
        Some(Some(true))
    );
    let c = parse_filter(R5, "Task", "subject", None, Some("type"), "Patient/p1");
    assert_eq!(
        c.as_ref().ok().map(|c| matches(c, &task()).ok()),
        Some(Some(true))
    );
    assert!(matches!(
        parse_filter(R5, "Task", "status", Some("gt"), None, "x"),
        Err(FhirError::UnsupportedModifier { .. })
    ));
    assert!(matches!(
        parse_filter(R5, "Task", "status", Some("zz"), None, "x"),
        Err(FhirError::UnsupportedModifier { .. })
    ));
}

#[test]
fn query_splits_criteria_and_result_parameters() {
    let q = "status=requested&owner=Organization%2Forg-1&_count=10&_sort=-_lastUpdated&subject:Patient=p1&_include=Task:owner";
    let (criteria, control) = parse_query(R4, "Task", q).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(criteria.len(), 3);
    assert_eq!(
        control,
        vec![
            ("_count".to_string(), "10".to_string()),
            ("_sort".to_string(), "-_lastUpdated".to_string()),
            ("_include".to_string(), "Task:owner".to_string())
        ]
    );
    assert_eq!(criteria[2].modifier, Some(Modifier::Type("Patient".into())));
}

#[test]
fn query_decodes_values_and_keeps_timezone_plus() {
    let (c, _) = parse_query(
        R4,
        "Task",
        "?modified=gt2024-03-15T10%3A00%3A00%2B03%3A00&_lastUpdated=2024-03-15T12:30:00+02:00",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.iter().all(|c| matches(c, &task()).unwrap_or(false)));
}

#[test]
fn query_reports_first_bad_parameter() {
    assert!(matches!(
        parse_query(R4, "Task", "status=x&bogus=1"),
        Err(FhirError::UnknownSearchParameter { .. })
    ));
}

// ---- index keys ----------------------------------------------------------------------------

#[test]
fn index_keys_of_reference_and_token_params() {
    let reg = Registry::for_version(R4);
    let owner = reg
        .get("Task", "owner")
        .cloned()
        .unwrap_or_else(|| panic!("owner"));
    let keys = index_keys(&owner, &task());
    assert!(keys.contains(&"http://example.org/fhir/Organization/org-1".to_string()));
    let requester = reg
        .get("Task", "requester")
        .cloned()
        .unwrap_or_else(|| panic!("requester"));
    let keys = index_keys(&requester, &task());
    assert!(keys.contains(&"Practitioner/pr1".to_string()));
    assert!(keys.contains(&"Practitioner/pr1/_history/3".to_string()));
    let bs = reg
        .get("Task", "business-status")
        .cloned()
        .unwrap_or_else(|| panic!("bs"));
    let keys = index_keys(&bs, &task());
    for k in ["waiting", "http://bs|waiting", "http://bs|"] {
        assert!(keys.contains(&k.to_string()), "{k}");
    }
    let status = reg
        .get("Task", "status")
        .cloned()
        .unwrap_or_else(|| panic!("status"));
    assert_eq!(
        index_keys(&status, &task()),
        vec!["requested".to_string(), "|requested".to_string()]
    );
}

#[test]
fn criterion_keys_intersect_resource_keys_exactly_when_it_matches() {
    let cases = [
        ("owner", "http://example.org/fhir/Organization/org-1"),
        ("owner", "Organization/org-1"),
        ("requester", "Practitioner/pr1"),
        ("requester", "Practitioner/pr1/_history/3"),
        ("requester", "Practitioner/pr1/_history/2"),
        ("subject", "Patient/p1"),
        ("subject", "http://example.org/fhir/Patient/p1"),
        ("subject:Patient", "p1"),
        ("status", "requested"),
        ("status", "|requested"),
        ("status", "draft,requested"),
        ("business-status", "http://bs|waiting"),
        ("business-status", "|waiting"),
        ("business-status", "http://bs|"),
        ("code", "|fulfill"),
        ("identifier", "http://ids|A-1"),
        ("_id", "t1"),
    ];
    let res = task();
    for (name, value) in cases {
        let c = crit(R4, "Task", name, value);
        let ck =
            index_keys_of_criterion(&c).unwrap_or_else(|| panic!("{name}={value} not indexable"));
        let rk = index_keys(&c.param, &res);
        let by_keys = ck.iter().any(|k| rk.contains(k));
        assert_eq!(
            by_keys,
            matches(&c, &res).unwrap_or(false),
            "{name}={value} keys {ck:?} vs {rk:?}"
        );
    }
}

#[test]
fn non_equality_criteria_are_not_indexable() {
    for (n, v) in [
        ("status:not", "x"),
        ("subject", "p1"),
        ("authored-on", "2024"),
        ("status:missing", "true"),
    ] {
        assert!(
            index_keys_of_criterion(&crit(R4, "Task", n, v)).is_none(),
            "{n}={v}"
        );
    }
}

#[test]
fn criterion_does_not_match_other_resource_type() {
    let c = crit(R4, "Task", "_id", "p1");
    assert_eq!(matches(&c, &patient()).ok(), Some(false));
}

#[test]
fn subscription_and_topic_parameters_are_registered_per_version() {
    let r4 = Registry::for_version(FhirVersion::R4);
    assert_eq!(
        r4.get("Subscription", "url")
            .and_then(|d| d.expression.clone())
            .as_deref(),
        Some("Subscription.channel.endpoint")
    );
    assert!(r4.get("Subscription", "topic").is_some());
    let r5 = Registry::for_version(FhirVersion::R5);
    assert_eq!(
        r5.get("Subscription", "url")
            .and_then(|d| d.expression.clone())
            .as_deref(),
        Some("Subscription.endpoint")
    );
    for code in ["url", "resource", "status", "title", "derived-or-self"] {
        assert!(
            r5.get("SubscriptionTopic", code).is_some(),
            "SubscriptionTopic {code}"
        );
    }
}

#[test]
fn r4b_registers_r4_subscription_and_native_topic_parameters() {
    let r4b = Registry::for_version(FhirVersion::R4B);
    assert_eq!(
        r4b.get("Subscription", "url")
            .and_then(|d| d.expression.clone())
            .as_deref(),
        Some("Subscription.channel.endpoint")
    );
    assert_eq!(
        r4b.get("Subscription", "topic")
            .and_then(|d| d.expression.clone())
            .as_deref(),
        Some("Subscription.criteria")
    );
    for code in ["url", "resource", "status", "title", "derived-or-self"] {
        assert!(
            r4b.get("SubscriptionTopic", code).is_some(),
            "SubscriptionTopic {code}"
        );
    }
    for code in [
        "owner",
        "requester",
        "focus",
        "based-on",
        "status",
        "patient",
    ] {
        assert!(r4b.get("Task", code).is_some(), "Task {code}");
    }
    assert_eq!(
        r4b.get("Task", "owner").map(|d| d.kind),
        Some(ParamType::Reference)
    );
}
