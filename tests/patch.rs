//! End-to-end: `PATCH [base]/[type]/[id]` with JSON Patch and FHIRPath Patch — applied,
//! validated, written through the write path (so it is matched and notified like any update),
//! `If-Match` honoured, and every refusal leaves the resource as it was.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use herald_tests::receiver::{Receiver, delivered_events};
use herald_tests::{Herald, client, create, get, r4_subscription, task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const JSON_PATCH: &str = "application/json-patch+json";
const FHIR: &str = "application/fhir+json";

async fn patch(
    c: &reqwest::Client,
    url: &str,
    content_type: &str,
    if_match: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = c
        .request(Method::PATCH, url)
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(m) = if_match {
        req = req.header("if-match", m);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn fhirpath_op(kind: &str, path: &str, more: Value) -> Value {
    let mut parts = vec![
        json!({"name":"type","valueCode":kind}),
        json!({"name":"path","valueString":path}),
    ];
    parts.extend(more.as_array().cloned().unwrap_or_default());
    json!({"name":"operation","part":parts})
}

#[tokio::test]
async fn a_json_patch_is_written_as_an_update_and_notified() {
    let rx = Receiver::start().await;
    let h = Herald::start_with(&[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    let base = h.fhir("r4");
    let sub = r4_subscription("cow-task-changed", &[], &rx.url("/patched"), "id-only");
    create(&c, &base, "Subscription", &sub).await;
    let t = create(&c, &base, "Task", &task("Organization/lab")).await;
    let url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
    let ops = json!([
        {"op":"test","path":"/status","value":"requested"},
        {"op":"replace","path":"/status","value":"accepted"},
        {"op":"add","path":"/note","value":[{"text":"taken"}]}
    ]);
    let (s, v) = patch(&c, &url, JSON_PATCH, Some("W/\"1\""), &ops).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["meta"]["versionId"], "2");
    let (_, read) = get(&c, &url).await;
    assert_eq!(read["note"][0]["text"], "taken");
    // The create and the patch are both events of the subscription.
    rx.wait_until("/patched", "events 1 and 2", Duration::from_secs(60), |l| {
        delivered_events(l).contains(&2)
    })
    .await;
}

#[tokio::test]
async fn a_fhirpath_patch_applies_its_operations_in_r5() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    let mut body = task("Organization/lab");
    body["note"] = json!([{"text":"a"},{"text":"b"}]);
    let t = create(&c, &base, "Task", &body).await;
    let url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
    let params = json!({"resourceType":"Parameters","parameter":[
        fhirpath_op("replace", "Task.status", json!([{"name":"value","valueCode":"in-progress"}])),
        fhirpath_op("add", "Task", json!([{"name":"name","valueString":"description"},{"name":"value","valueString":"patched"}])),
        fhirpath_op("delete", "Task.note.where(text = 'a')", json!([])),
        fhirpath_op("insert", "Task.note", json!([{"name":"value","valueAnnotation":{"text":"first"}},{"name":"index","valueInteger":0}])),
    ]});
    let (s, v) = patch(&c, &url, FHIR, None, &params).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "in-progress");
    assert_eq!(v["description"], "patched");
    assert_eq!(v["note"], json!([{"text":"first"},{"text":"b"}]));
}

/// (content type, If-Match, patch body, expected status, expected issue expression).
type Refusal = (
    &'static str,
    Option<&'static str>,
    Value,
    StatusCode,
    Option<&'static str>,
);

#[tokio::test]
async fn refused_patches_leave_the_resource_unchanged() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let t = create(&c, &base, "Task", &task("Organization/lab")).await;
    let id = t["id"].as_str().unwrap().to_owned();
    let url = format!("{base}/Task/{id}");
    let cases: Vec<Refusal> = vec![
        // A stale If-Match.
        (
            JSON_PATCH,
            Some("W/\"7\""),
            json!([{"op":"replace","path":"/status","value":"accepted"}]),
            StatusCode::PRECONDITION_FAILED,
            None,
        ),
        // id and resourceType are not the patch's to change.
        (
            JSON_PATCH,
            None,
            json!([{"op":"replace","path":"/id","value":"other"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Task.id"),
        ),
        (
            JSON_PATCH,
            None,
            json!([{"op":"remove","path":"/id"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Task.id"),
        ),
        (
            JSON_PATCH,
            None,
            json!([{"op":"replace","path":"/resourceType","value":"Patient"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Task.resourceType"),
        ),
        // A result that is not valid FHIR.
        (
            JSON_PATCH,
            None,
            json!([{"op":"replace","path":"/status","value":"foo"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Task.status"),
        ),
        (
            JSON_PATCH,
            None,
            json!([{"op":"add","path":"/ownr","value":{"reference":"x"}}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Task.ownr"),
        ),
        (
            FHIR,
            None,
            json!({"resourceType":"Parameters","parameter":[fhirpath_op("delete", "Task.intent", json!([]))]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Task.intent"),
        ),
        // A failed test, a malformed document, an unknown operation, a path that selects nothing.
        (
            JSON_PATCH,
            None,
            json!([{"op":"test","path":"/status","value":"draft"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            JSON_PATCH,
            None,
            json!({"op":"replace"}),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            FHIR,
            None,
            json!({"resourceType":"Parameters","parameter":[fhirpath_op("upsert", "Task", json!([]))]}),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            FHIR,
            None,
            json!({"resourceType":"Parameters","parameter":[fhirpath_op("replace", "Task.description", json!([{"name":"value","valueString":"x"}]))]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        // Not a patch format.
        (
            "text/plain",
            None,
            json!([]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
    ];
    for (ct, if_match, body, want, expression) in cases {
        let (s, oo) = patch(&c, &url, ct, if_match, &body).await;
        assert_eq!(s, want, "{body}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
        if let Some(e) = expression {
            assert_eq!(oo["issue"][0]["expression"], json!([e]), "{body}: {oo}");
        }
        let (_, now) = get(&c, &url).await;
        assert_eq!(
            now["meta"]["versionId"], "1",
            "{body} changed the Task: {now}"
        );
        assert_eq!(now["status"], "requested");
    }
    let (s, _) = patch(
        &c,
        &format!("{base}/Task/nope"),
        JSON_PATCH,
        None,
        &json!([]),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_capability_statement_lists_patch() {
    let h = Herald::start();
    let c = client();
    for tenant in ["r4", "r5"] {
        let (_, cs) = get(&c, &format!("{}/metadata", h.fhir(tenant))).await;
        let task = cs["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Task")
            .unwrap()
            .clone();
        assert!(
            task["interaction"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["code"] == "patch"),
            "{tenant}: {task}"
        );
    }
}
