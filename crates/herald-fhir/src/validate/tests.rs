//! Unit tests of the validator, one group per rule class. The official examples are checked in
//! `tests/official_examples.rs`.

use super::*;
use serde_json::json;

/// The error's expression and message, or "ok".
fn check(version: FhirVersion, v: Value) -> (String, String) {
    match check_resource(version, &v) {
        Ok(()) => ("ok".into(), String::new()),
        Err(FhirError::InvalidElement {
            expression,
            message,
        }) => (expression, message),
        Err(e) => ("other".into(), e.to_string()),
    }
}

fn r4(v: Value) -> (String, String) {
    check(FhirVersion::R4, v)
}

fn task(extra: Value) -> Value {
    let mut t = json!({"resourceType":"Task","status":"requested","intent":"order"});
    if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            t.insert(k.clone(), v.clone());
        }
    }
    t
}

#[test]
fn valid_task_passes() {
    let t = task(json!({"id":"t1","meta":{"versionId":"1"},
        "_status": {"extension":[{"url":"http://x","valueString":"y"}]},
        "contained":[{"resourceType":"Patient","id":"p"}],
        "owner":{"reference":"Organization/lab"},
        "input":[{"type":{"text":"x"},"valueString":"y"}]}));
    assert_eq!(r4(t).0, "ok");
}

#[test]
fn non_object_body_and_missing_resource_type_are_invalid() {
    assert!(check_resource(FhirVersion::R4, &json!([1])).is_err());
    assert_eq!(r4(json!({"id":"x"})).1, "missing resourceType");
}

#[test]
fn unknown_resource_type_is_reported_as_such() {
    let r = check_resource(
        FhirVersion::R4,
        &json!({"resourceType":"SubscriptionTopic"}),
    );
    assert!(matches!(r, Err(FhirError::UnknownResourceType(_))));
    let topic = json!({"resourceType":"SubscriptionTopic","url":"http://x","status":"active"});
    assert_eq!(check(FhirVersion::R5, topic).0, "ok");
}

#[test]
fn bad_id_is_invalid() {
    assert_eq!(r4(task(json!({"id":"a b"}))).0, "Task.id");
    assert_eq!(r4(task(json!({"id":5}))).0, "Task.id");
}

#[test]
fn unknown_elements_are_refused_at_every_level() {
    assert_eq!(
        r4(task(json!({"ownr":{"reference":"x"}}))),
        ("Task.ownr".into(), "unknown element".into())
    );
    assert_eq!(r4(task(json!({"owner":{"ref":"x"}}))).0, "Task.owner.ref");
    assert_eq!(
        r4(task(
            json!({"input":[{"type":{"text":"x"},"valueStrin":"y"}]})
        ))
        .0,
        "Task.input[0].valueStrin"
    );
    // R5-only elements are unknown in R4.
    assert_eq!(r4(json!({"resourceType":"Subscription","status":"active","reason":"x","criteria":"Task?","channel":{"type":"rest-hook"},"topic":"http://x"})).0, "Subscription.topic");
}

#[test]
fn data_types_are_checked() {
    let (expr, msg) = r4(task(json!({"owner":"Organization/lab"})));
    assert_eq!(expr, "Task.owner");
    assert!(msg.contains("JSON object"), "{msg}");
    assert_eq!(
        r4(task(json!({"description":{"text":"x"}}))).0,
        "Task.description"
    );
    assert_eq!(
        r4(task(json!({"restriction":{"repetitions":0}}))).0,
        "Task.restriction.repetitions"
    );
    assert_eq!(
        r4(task(json!({"authoredOn":"yesterday"}))).0,
        "Task.authoredOn"
    );
    assert_eq!(
        r4(json!({"resourceType":"Patient","active":"true"})).0,
        "Patient.active"
    );
}

#[test]
fn cardinality_is_checked() {
    let (expr, msg) = r4(json!({"resourceType":"Task","intent":"order"}));
    assert_eq!(expr, "Task.status");
    assert!(msg.contains("required"), "{msg}");
    assert_eq!(
        r4(task(json!({"basedOn":{"reference":"ServiceRequest/1"}}))).0,
        "Task.basedOn"
    );
    assert_eq!(
        r4(task(json!({"owner":[{"reference":"Organization/1"}]}))).0,
        "Task.owner"
    );
    assert_eq!(
        r4(task(json!({"input":[{"valueString":"y"}]}))).0,
        "Task.input[0].type"
    );
    assert_eq!(
        r4(task(json!({"input":[{"type":{"text":"x"}}]}))).0,
        "Task.input[0].value"
    );
    // An extension-only primitive counts as present.
    let only_ext = json!({"resourceType":"Task","intent":"order","_status":{"extension":[{"url":"http://x","valueCode":"y"}]}});
    assert_eq!(r4(only_ext).0, "ok");
}

#[test]
fn required_bindings_are_checked() {
    let (expr, msg) = r4(task(json!({"status":"foo"})));
    assert_eq!(expr, "Task.status");
    assert!(msg.contains("task-status"), "{msg}");
    assert_eq!(r4(task(json!({"intent":"bogus"}))).0, "Task.intent");
    assert_eq!(
        check(FhirVersion::R5, json!({"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"Patient/1"}})).0,
        "ok"
    );
    assert_eq!(
        check(FhirVersion::R5, json!({"resourceType":"ServiceRequest","status":"busy","intent":"order","subject":{"reference":"Patient/1"}})).0,
        "ServiceRequest.status"
    );
}

#[test]
fn json_rules_name_their_path() {
    assert_eq!(
        r4(task(json!({"description":null}))),
        ("Task.description".into(), "null is not allowed".into())
    );
    assert_eq!(
        r4(task(json!({"description":""}))).1,
        "empty string is not allowed"
    );
    assert_eq!(
        r4(task(json!({"input":[]}))),
        ("Task.input".into(), "empty array is not allowed".into())
    );
    assert_eq!(
        r4(task(json!({"code":{}}))),
        ("Task.code".into(), "empty object is not allowed".into())
    );
    assert_eq!(
        r4(task(json!({"identifier":[{"system":""}]}))).0,
        "Task.identifier[0].system"
    );
}

#[test]
fn null_placeholders_allowed_only_with_extension_sibling() {
    let ok =
        json!({"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,{"id":"x"}]}]});
    assert_eq!(r4(ok).0, "ok");
    let bad = json!({"resourceType":"Patient","name":[{"given":["a",null]}]});
    assert_eq!(r4(bad).0, "Patient.name[0].given[1]");
    let not_primitive = json!({"resourceType":"Patient","_name":{"id":"x"}});
    assert_eq!(r4(not_primitive).0, "Patient.name");
}

#[test]
fn nested_resources_are_checked() {
    let b = json!({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Nope"}}]});
    assert!(matches!(
        check_resource(FhirVersion::R4, &b),
        Err(FhirError::UnknownResourceType(_))
    ));
    let b = json!({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Task","status":"x","intent":"order"}}]});
    assert_eq!(r4(b).0, "Bundle.entry[0].resource.status");
}

#[test]
fn content_references_reuse_their_target() {
    let q = json!({"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group",
        "item":[{"linkId":"1.1","type":"string","item":[{"linkId":"1.1.1","type":"strin"}]}]}]});
    assert_eq!(r4(q).0, "Questionnaire.item[0].item[0].item[0].type");
}

#[test]
fn r4b_has_its_own_definitions() {
    let sub = json!({"resourceType":"SubscriptionStatus","type":"heartbeat","subscription":{"reference":"Subscription/1"},"topic":"http://x"});
    assert!(check_resource_for("4.3.0", &sub).is_ok());
    assert!(matches!(
        check_resource(FhirVersion::R4, &sub),
        Err(FhirError::UnknownResourceType(_))
    ));
}
