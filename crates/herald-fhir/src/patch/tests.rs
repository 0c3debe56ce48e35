//! Unit tests of JSON Patch and FHIRPath Patch application.

use super::*;
use serde_json::json;

fn task() -> Value {
    json!({"resourceType":"Task","id":"t1","status":"requested","intent":"order",
        "owner":{"reference":"Organization/lab"},
        "note":[{"text":"a"},{"text":"b"},{"text":"c"}]})
}

fn op(kind: &str, path: &str, extra: Value) -> Value {
    let mut parts = vec![
        json!({"name":"type","valueCode":kind}),
        json!({"name":"path","valueString":path}),
    ];
    if let Some(extra) = extra.as_array() {
        parts.extend(extra.iter().cloned());
    }
    json!({"name":"operation","part":parts})
}

fn fhirpath(ops: Vec<Value>) -> Result<Value, FhirError> {
    apply_fhirpath_patch(
        "4.0.1",
        &task(),
        &json!({"resourceType":"Parameters","parameter":ops}),
    )
}

#[test]
fn json_patch_applies_and_a_failed_test_is_reported() {
    let p = json!([{"op":"replace","path":"/status","value":"in-progress"},{"op":"add","path":"/note/-","value":{"text":"d"}}]);
    let out = apply_json_patch(&task(), &p).expect("applies");
    assert_eq!(out["status"], "in-progress");
    assert_eq!(out["note"][3]["text"], "d");
    let failed = apply_json_patch(
        &task(),
        &json!([{"op":"test","path":"/status","value":"draft"}]),
    );
    assert!(
        matches!(failed, Err(FhirError::PatchFailed(_))),
        "{failed:?}"
    );
    let malformed = apply_json_patch(&task(), &json!({"op":"replace"}));
    assert!(
        matches!(malformed, Err(FhirError::InvalidPatch(_))),
        "{malformed:?}"
    );
}

#[test]
fn fhirpath_replace_and_add_follow_the_definitions() {
    let out = fhirpath(vec![
        op("replace", "Task.status", json!([{"name":"value","valueCode":"accepted"}])),
        op("add", "Task", json!([{"name":"name","valueString":"description"},{"name":"value","valueString":"x"}])),
        op("add", "Task", json!([{"name":"name","valueString":"performerType"},{"name":"value","valueCodeableConcept":{"text":"lab"}}])),
        op("add", "Task", json!([{"name":"name","valueString":"note"},{"name":"value","valueAnnotation":{"text":"d"}}])),
    ])
    .expect("applies");
    assert_eq!(out["status"], "accepted");
    assert_eq!(out["description"], "x");
    assert_eq!(
        out["performerType"],
        json!([{"text":"lab"}]),
        "a repeating element is added as a list"
    );
    assert_eq!(out["note"][3]["text"], "d");
}

#[test]
fn fhirpath_add_builds_backbone_values_from_parts() {
    let out = fhirpath(vec![op("add", "Task", json!([
        {"name":"name","valueString":"input"},
        {"name":"value","part":[{"name":"type","valueCodeableConcept":{"text":"t"}},{"name":"valueString","valueString":"v"}]}
    ]))])
    .expect("applies");
    assert_eq!(
        out["input"],
        json!([{"type":{"text":"t"},"valueString":"v"}])
    );
}

#[test]
fn fhirpath_delete_insert_and_move_work_on_list_items() {
    let out =
        fhirpath(vec![op("delete", "Task.note.where(text = 'b')", json!([]))]).expect("applies");
    assert_eq!(out["note"], json!([{"text":"a"},{"text":"c"}]));
    let out = fhirpath(vec![op("delete", "Task.nothing", json!([]))]).expect("no match is a no-op");
    assert_eq!(out, task());
    let out = fhirpath(vec![op(
        "insert",
        "Task.note",
        json!([{"name":"value","valueAnnotation":{"text":"z"}},{"name":"index","valueInteger":1}]),
    )])
    .expect("applies");
    assert_eq!(out["note"][1]["text"], "z");
    let out = fhirpath(vec![op(
        "move",
        "Task.note",
        json!([{"name":"source","valueInteger":0},{"name":"destination","valueInteger":2}]),
    )])
    .expect("applies");
    assert_eq!(out["note"], json!([{"text":"b"},{"text":"c"},{"text":"a"}]));
    let out = fhirpath(vec![op("delete", "Task.owner", json!([]))]).expect("applies");
    assert!(out.get("owner").is_none());
}

#[test]
fn fhirpath_patch_refuses_what_it_cannot_apply() {
    let many = fhirpath(vec![op(
        "replace",
        "Task.note",
        json!([{"name":"value","valueAnnotation":{"text":"z"}}]),
    )]);
    assert!(matches!(many, Err(FhirError::PatchFailed(_))), "{many:?}");
    let unknown = fhirpath(vec![op("upsert", "Task", json!([]))]);
    assert!(
        matches!(unknown, Err(FhirError::InvalidPatch(_))),
        "{unknown:?}"
    );
    let no_value = fhirpath(vec![op("replace", "Task.status", json!([]))]);
    assert!(
        matches!(no_value, Err(FhirError::InvalidPatch(_))),
        "{no_value:?}"
    );
    let not_params = apply_fhirpath_patch("4.0.1", &task(), &json!({"resourceType":"Task"}));
    assert!(matches!(not_params, Err(FhirError::InvalidPatch(_))));
    let bad_path = fhirpath(vec![op("delete", "Task.(", json!([]))]);
    assert!(bad_path.is_err());
    let beyond = fhirpath(vec![op(
        "insert",
        "Task.note",
        json!([{"name":"value","valueAnnotation":{"text":"z"}},{"name":"index","valueInteger":9}]),
    )]);
    assert!(
        matches!(beyond, Err(FhirError::PatchFailed(_))),
        "{beyond:?}"
    );
}
