//! Unit tests of the search index's keys: for every parameter kind, a criterion's ranges hold the
//! resource's keys whenever the matcher accepts it, and leave it out for a plainly different
//! value (the index narrows without ever losing a match).

use super::index::{
    IndexScope, KeyRange, MAX_COMPONENT, criterion_ranges, fingerprint, reference_id_range,
    resource_keys,
};
use super::*;
use crate::FhirVersion::{R4, R5};
use serde_json::json;

fn task() -> Value {
    json!({
        "resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
        "meta": {"lastUpdated": "2024-03-15T10:30:00Z", "source": "http://src.example/a",
            "tag": [{"system": "http://tags", "code": "x"}]},
        "identifier": [{"system": "http://ids", "value": "A-1"}, {"value": "no-system"}],
        "businessStatus": {"coding": [{"system": "http://bs", "code": "waiting"}], "text": "Waiting"},
        "code": {"coding": [{"code": "fulfill"}]},
        "for": {"reference": "Patient/p1"},
        "owner": {"reference": "http://example.org/fhir/Organization/org-1"},
        "requester": {"reference": "Practitioner/pr1/_history/3"},
        "focus": {"reference": "ServiceRequest/sr1"},
        "basedOn": [{"reference": "urn:uuid:0d1e"}],
        "authoredOn": "2024-03-15",
        "executionPeriod": {"start": "2024-03-10T00:00:00Z", "end": "2024-03-20T00:00:00Z"},
        "lastModified": "2024-03-15T10:30:00+02:00"
    })
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1", "active": true,
        "name": [{"family": "Müller-Lüdenscheidt", "given": ["Renée"]}],
        "address": [{"city": "Montréal"}], "birthDate": "1980-06",
        "generalPractitioner": [{"reference": "Organization/org-1"}]})
}

fn in_ranges(keys: &[Vec<u8>], ranges: &[KeyRange]) -> bool {
    // The store appends `\0 id` to every key: ranges are checked against that shape.
    keys.iter().any(|k| {
        let mut full = k.clone();
        full.extend_from_slice(b"\0some-id");
        ranges.iter().any(|r| full >= r.start && full < r.end)
    })
}

/// (criterion, matcher's answer, index's answer) for one resource.
fn check(rt: &str, res: &Value, name: &str, value: &str) -> (bool, bool) {
    let c = parse_criterion(R4, rt, name, value).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
    let ranges = criterion_ranges(&c).unwrap_or_else(|| panic!("{name}={value} not indexable"));
    let matched = matches(&c, res).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
    (
        matched,
        in_ranges(&resource_keys(R4, res, &IndexScope::all()), &ranges),
    )
}

/// Each case: (parameter, value, does the matcher accept, does the index leave it out when the
/// matcher does not). Bounds and `:exact` are supersets by design.
fn assert_narrows(rt: &str, res: &Value, cases: &[(&str, &str, bool)], exact: bool) {
    for (name, value, expected) in cases {
        let (matched, found) = check(rt, res, name, value);
        assert_eq!(matched, *expected, "matcher on {name}={value}");
        assert!(
            found || !matched,
            "{name}={value} matches but the index misses it"
        );
        if !matched && exact {
            assert!(
                !found,
                "{name}={value} does not match; the index should not offer it"
            );
        }
    }
}

#[test]
fn token_keys_answer_code_system_code_and_no_system() {
    assert_narrows(
        "Task",
        &task(),
        &[
            ("status", "requested", true),
            ("status", "|requested", true),
            ("status", "draft,requested", true),
            ("status", "draft", false),
            ("status", "http://x|requested", false),
            ("business-status", "waiting", true),
            ("business-status", "http://bs|waiting", true),
            ("business-status", "|waiting", false),
            ("business-status", "http://other|waiting", false),
            ("code", "|fulfill", true),
            ("identifier", "http://ids|A-1", true),
            ("identifier", "A-1", true),
            ("identifier", "|no-system", true),
            ("identifier", "http://ids|A-2", false),
            ("identifier", "A", false),
            ("_tag", "http://tags|x", true),
        ],
        true,
    );
}

#[test]
fn reference_keys_answer_type_id_absolute_versioned_bare_and_urn() {
    assert_narrows(
        "Task",
        &task(),
        &[
            ("owner", "http://example.org/fhir/Organization/org-1", true),
            ("owner", "Organization/org-1", false),
            ("owner", "Organization/org-2", false),
            ("owner", "http://other.org/fhir/Organization/org-1", false),
            ("requester", "Practitioner/pr1", true),
            ("requester", "Practitioner/pr1/_history/3", true),
            ("requester", "Practitioner/pr1/_history/2", false),
            ("subject", "Patient/p1", true),
            ("subject", "p1", true),
            ("subject", "p2", false),
            ("subject:Patient", "p1", true),
            ("subject", "http://example.org/fhir/Patient/p1", true),
            ("focus", "ServiceRequest/sr1", true),
            ("based-on", "urn:uuid:0d1e", true),
            ("based-on", "urn:uuid:0d1f", false),
        ],
        true,
    );
}

#[test]
fn string_keys_are_case_and_accent_insensitive_prefixes() {
    assert_narrows(
        "Patient",
        &patient(),
        &[
            ("family", "muller", true),
            ("family", "MÜLLER-LÜD", true),
            ("family", "Lüdenscheidt", false),
            ("given", "renee", true),
            ("name", "ren", true),
            ("address-city", "montreal", true),
            ("address-city", "paris", false),
        ],
        true,
    );
    // `:exact` is answered by the case-insensitive prefix: a superset the matcher then narrows.
    assert_narrows(
        "Patient",
        &patient(),
        &[
            ("family:exact", "Müller-Lüdenscheidt", true),
            ("family:exact", "müller-lüdenscheidt", false),
        ],
        false,
    );
}

#[test]
fn date_keys_answer_every_ordered_prefix() {
    assert_narrows(
        "Task",
        &task(),
        &[
            ("authored-on", "2024-03-15", true),
            ("authored-on", "2024-03", true),
            ("authored-on", "2024-03-16", false),
            ("authored-on", "gt2024-03-14", true),
            ("authored-on", "gt2024-03-15", false),
            ("authored-on", "lt2024-03-16", true),
            ("authored-on", "lt2024-03-15", false),
            ("authored-on", "ge2024-03-15", true),
            ("authored-on", "le2024-03-15", true),
            ("authored-on", "le2024-03-14", false),
            ("authored-on", "sa2024-03-14", true),
            ("authored-on", "sa2024-03-15", false),
            ("authored-on", "eb2024-03-16", true),
            ("authored-on", "eb2024-03-15", false),
            ("period", "ge2024-03-19", true),
            ("period", "2024-03", true),
            ("period", "2024-03-12", false),
            ("_lastUpdated", "gt2024-03-01", true),
            ("_lastUpdated", "lt2024-03-01", false),
            ("modified", "2024-03-15", true),
        ],
        false,
    );
    // Equality and the far side of each bound are left out.
    assert_narrows(
        "Task",
        &task(),
        &[
            ("authored-on", "2024-03-16", false),
            ("authored-on", "gt2024-03-16", false),
            ("authored-on", "lt2024-03-14", false),
            ("authored-on", "sa2024-03-16", false),
            ("authored-on", "eb2024-03-14", false),
        ],
        true,
    );
}

#[test]
fn inverted_periods_are_offered_to_every_date_query() {
    let mut t = task();
    t["executionPeriod"] = json!({"start": "2024-03-20T00:00:00Z", "end": "2024-03-10T00:00:00Z"});
    for v in ["2024-03", "gt2000", "lt2030", "eb1990", "sa2050"] {
        let c = parse_criterion(R4, "Task", "period", v).unwrap_or_else(|e| panic!("{e}"));
        let ranges = criterion_ranges(&c).unwrap_or_else(|| panic!("period={v}"));
        assert!(
            in_ranges(&resource_keys(R4, &t, &IndexScope::all()), &ranges),
            "period={v}"
        );
    }
}

#[test]
fn uri_keys_answer_equality_and_below() {
    assert_narrows(
        "Task",
        &task(),
        &[
            ("_source", "http://src.example/a", true),
            ("_source", "http://src.example", false),
            ("_source:below", "http://src.example", true),
            ("_source:below", "http://other", false),
        ],
        true,
    );
}

#[test]
fn long_values_are_cut_alike_on_both_sides() {
    let long = "x".repeat(MAX_COMPONENT * 2);
    let mut t = task();
    t["identifier"] = json!([{"system": "http://ids", "value": long}]);
    let c = parse_criterion(R4, "Task", "identifier", &format!("http://ids|{long}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ranges = criterion_ranges(&c).unwrap_or_else(|| panic!("identifier"));
    assert!(in_ranges(
        &resource_keys(R4, &t, &IndexScope::all()),
        &ranges
    ));
    assert!(
        resource_keys(R4, &t, &IndexScope::all())
            .iter()
            .all(|k| k.len() <= 2 * MAX_COMPONENT + 32)
    );
}

#[test]
fn criteria_the_index_cannot_answer_are_left_to_the_scan() {
    for (n, v) in [
        ("status:not", "draft"),
        ("status:missing", "true"),
        ("business-status", "http://bs|"),
        ("business-status:text", "wait"),
        ("identifier:of-type", "http://t|PLAC|A-1"),
        ("owner:identifier", "http://ids|1"),
        ("authored-on", "ne2024-03-15"),
        ("authored-on", "ap2024-03-15"),
        ("status", "requested,http://bs|"),
        // Resources are stored by id: `_id` is read directly, never from the index.
        ("_id", "t1"),
    ] {
        let c = parse_criterion(R4, "Task", n, v).unwrap_or_else(|e| panic!("{n}={v}: {e}"));
        assert!(criterion_ranges(&c).is_none(), "{n}={v}");
    }
    let c =
        parse_criterion(R4, "Patient", "family:contains", "ller").unwrap_or_else(|e| panic!("{e}"));
    assert!(criterion_ranges(&c).is_none());
}

#[test]
fn resource_keys_are_sorted_unique_and_name_their_parameter() {
    let keys = resource_keys(R4, &task(), &IndexScope::all());
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted);
    assert!(keys.iter().any(|k| k.starts_with(b"owner\0")));
    assert!(keys.iter().any(|k| k.starts_with(b"_lastUpdated\0S")));
    assert!(
        !keys.iter().any(|k| k.starts_with(b"_id\0")),
        "resources are stored by id: no _id entries"
    );
    assert!(resource_keys(R4, &json!({"no": "type"}), &IndexScope::all()).is_empty());
}

#[test]
fn fingerprint_differs_between_versions_and_is_stable() {
    assert_eq!(fingerprint(R4), fingerprint(R4));
    assert_ne!(fingerprint(R4), fingerprint(R5));
    assert!(fingerprint(R4).starts_with("format "));
}

#[test]
fn a_reference_id_range_finds_references_to_that_id_on_any_server() {
    let t = task();
    let hit = |code: &str, id: &str| {
        in_ranges(
            &resource_keys(R4, &t, &IndexScope::all()),
            &[reference_id_range(code, id)],
        )
    };
    assert!(hit("focus", "sr1"));
    assert!(
        hit("owner", "org-1"),
        "an absolute reference is found by its id too"
    );
    assert!(!hit("focus", "sr2"));
    assert!(!hit("owner", "sr1"));
}

#[test]
fn a_plain_relative_reference_is_filed_under_one_key_that_answers_typed_and_bare_id_criteria() {
    let t = json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "owner": {"reference": "Organization/org-9"}});
    let owner: Vec<_> = resource_keys(R4, &t, &IndexScope::all())
        .into_iter()
        .filter(|k| k.starts_with(b"owner\0"))
        .collect();
    assert_eq!(owner, vec![b"owner\0iorg-9\0Organization".to_vec()]);
    assert_narrows(
        "Task",
        &t,
        &[
            ("owner", "Organization/org-9", true),
            ("owner", "org-9", true),
            ("owner:Organization", "org-9", true),
            ("owner", "Practitioner/org-9", false),
            ("owner", "Organization/org-90", false),
            ("owner", "org-90", false),
        ],
        true,
    );
    assert!(in_ranges(&owner, &[reference_id_range("owner", "org-9")]));
}

#[test]
fn a_scope_files_only_the_listed_parameters_of_a_listed_type() {
    let scope = IndexScope::only([(
        "Task".to_string(),
        ["identifier".to_string(), "owner".to_string()],
    )]);
    assert!(scope.covers("Task", "owner"));
    assert!(!scope.covers("Task", "status"));
    assert!(
        scope.covers("ServiceRequest", "status"),
        "types not listed keep every parameter"
    );
    let keys = resource_keys(R4, &task(), &scope);
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k.starts_with(b"identifier\0") || k.starts_with(b"owner\0")),
        "only the listed parameters are filed"
    );
    assert!(keys.iter().any(|k| k.starts_with(b"owner\0")));
    assert_ne!(scope.describe(), IndexScope::all().describe());
    assert_eq!(IndexScope::all().describe(), "all");
    assert_eq!(scope.describe(), "Task: identifier,owner");
}
