//! The official HL7 examples (CC0, copied from `shared/fixtures/` into `tests/fixtures/examples/
//! <fhirVersion>/`) against the validator: every example is accepted, except the few that break
//! a rule of their own specification (listed below with the element they break, so they are
//! refused there and nowhere else); and a mutated copy of each accepted example is refused with
//! the expression of the mutated element, one mutation per rule class.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use herald_fhir::FhirError;
use herald_fhir::validate::check_resource_for;
use serde_json::{Map, Value, json};

/// Examples that break a rule of their own version (the fixtures README's "lenient-only" Q1:
/// R5 writes integer64 as a JSON string, these examples write numbers), with the element they
/// are refused at.
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[
    (
        "5.0.0/notification-empty.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-error.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-full-resource-with-patient.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-full-resource.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-handshake.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-heartbeat.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-id-only-with-patient.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-id-only.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-message-full-resource.json",
        "Bundle.entry[1].resource.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-query-event.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/notification-query-status.json",
        "Bundle.entry[0].resource.eventsSinceSubscriptionStart",
    ),
    (
        "5.0.0/subscriptionstatus-example.json",
        "SubscriptionStatus.eventsSinceSubscriptionStart",
    ),
];

fn examples() -> Vec<(String, String, Value)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/examples");
    let mut out = Vec::new();
    for version in herald_fhir::definitions::FHIR_VERSIONS {
        let dir = root.join(version);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("readable fixture");
            let value: Value = serde_json::from_str(&text).expect("fixture is JSON");
            let name = format!(
                "{version}/{}",
                f.file_name().and_then(|n| n.to_str()).unwrap_or("")
            );
            out.push((version.to_string(), name, value));
        }
    }
    assert!(out.len() > 80, "the examples are there");
    out
}

fn expression(r: Result<(), FhirError>) -> String {
    match r {
        Ok(()) => "accepted".into(),
        Err(FhirError::InvalidElement { expression, .. }) => expression,
        Err(e) => format!("other error: {e}"),
    }
}

#[test]
fn every_official_example_is_accepted_except_the_documented_deviations() {
    let mut wrong = Vec::new();
    for (version, name, value) in examples() {
        let got = expression(check_resource_for(&version, &value));
        let expected = KNOWN_DEVIATIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("accepted", |(_, e)| e);
        if got != expected {
            wrong.push(format!(
                "{name}: expected {expected}, got {got}: {:?}",
                check_resource_for(&version, &value).err()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The accepted examples, with their version and name.
fn accepted() -> Vec<(String, String, Map<String, Value>)> {
    examples()
        .into_iter()
        .filter(|(v, _, value)| check_resource_for(v, value).is_ok())
        .filter_map(|(v, n, value)| match value {
            Value::Object(o) => Some((v, n, o)),
            _ => None,
        })
        .collect()
}

fn refused_at(version: &str, name: &str, body: Map<String, Value>, want: &str) {
    let got = expression(check_resource_for(version, &Value::Object(body)));
    assert_eq!(got, want, "{name}");
}

fn rt(o: &Map<String, Value>) -> String {
    o.get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

#[test]
fn an_unknown_element_is_refused_in_every_example() {
    for (v, name, mut o) in accepted() {
        let t = rt(&o);
        o.insert("heraldUnknown".into(), json!("x"));
        refused_at(&v, &name, o, &format!("{t}.heraldUnknown"));
    }
}

#[test]
fn a_wrong_data_type_is_refused_in_every_example() {
    let mut tried = 0;
    for (v, name, mut o) in accepted() {
        let t = rt(&o);
        // A complex element given as a string, or a primitive given as an object.
        let Some((key, value)) = o
            .iter()
            .find(|(k, v)| *k != "resourceType" && !k.starts_with('_') && !v.is_array())
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            continue;
        };
        let wrong = if value.is_object() {
            json!("Organization/lab")
        } else {
            json!({"value": value})
        };
        o.insert(key.clone(), wrong);
        refused_at(&v, &name, o, &format!("{t}.{key}"));
        tried += 1;
    }
    assert!(tried > 60, "{tried}");
}

#[test]
fn a_malformed_date_is_refused_in_every_example_that_has_one() {
    let mut tried = 0;
    for (v, name, mut o) in accepted() {
        let t = rt(&o);
        let looks_like_date = |s: &str| {
            s.len() >= 10
                && s.as_bytes()[4] == b'-'
                && s.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        };
        let Some(key) = o
            .iter()
            .find(|(_, v)| v.as_str().is_some_and(looks_like_date))
            .map(|(k, _)| k.clone())
        else {
            continue;
        };
        o.insert(key.clone(), json!("yesterday"));
        refused_at(&v, &name, o, &format!("{t}.{key}"));
        tried += 1;
    }
    assert!(tried > 10, "{tried}");
}

#[test]
fn a_repeated_single_element_and_a_missing_required_one_are_refused() {
    let mut tried = 0;
    for (v, name, o) in accepted() {
        let t = rt(&o);
        if let Some(Value::String(status)) = o.get("status") {
            let mut twice = o.clone();
            twice.insert("status".into(), json!([status]));
            refused_at(&v, &name, twice, &format!("{t}.status"));
            tried += 1;
        }
        // Bundle.type and Subscription/CodeSystem/ValueSet.status are required in every version.
        let required = match t.as_str() {
            "Bundle" => Some("type"),
            "Subscription" | "CodeSystem" | "ValueSet" | "SubscriptionTopic" => Some("status"),
            _ => None,
        };
        if let Some(key) = required {
            let mut without = o.clone();
            without.remove(key);
            without.remove(&format!("_{key}"));
            refused_at(&v, &name, without, &format!("{t}.{key}"));
        }
    }
    assert!(tried > 30, "{tried}");
}

#[test]
fn a_status_outside_its_required_value_set_is_refused() {
    let mut tried = 0;
    for (v, name, mut o) in accepted() {
        let t = rt(&o);
        if o.get("status").is_some_and(Value::is_string) {
            o.insert("status".into(), json!("foo"));
            refused_at(&v, &name, o, &format!("{t}.status"));
            tried += 1;
        }
    }
    assert!(tried > 30, "{tried}");
}
