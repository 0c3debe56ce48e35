//! End-to-end: writes are validated against the core definitions of the tenant's FHIR version,
//! and a refusal is a 400 OperationOutcome whose issue names the element (`expression`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use herald_tests::{Herald, client, send, task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn refused_at(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    body: &Value,
    expression: &str,
) {
    let (s, oo) = send(c, method.clone(), url, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {url}: {oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
    assert_eq!(oo["issue"][0]["code"], "invalid", "{oo}");
    assert_eq!(oo["issue"][0]["expression"], json!([expression]), "{oo}");
    let diag = oo["issue"][0]["diagnostics"].as_str().unwrap_or_default();
    assert!(diag.contains(expression), "{diag}");
}

#[tokio::test]
async fn malformed_tasks_are_refused_naming_the_element_in_r4_and_r5() {
    let h = Herald::start();
    let c = client();
    for tenant in ["r4", "r5"] {
        let base = h.fhir(tenant);
        let mut bad_status = task("Organization/lab");
        bad_status["status"] = json!("foo");
        let mut string_owner = task("Organization/lab");
        string_owner["owner"] = json!("Organization/lab");
        let mut typo = task("Organization/lab");
        typo["ownr"] = json!({"reference": "Organization/lab"});
        let cases = [
            (bad_status, "Task.status"),
            (string_owner, "Task.owner"),
            (typo, "Task.ownr"),
        ];
        for (body, expression) in &cases {
            refused_at(&c, Method::POST, &format!("{base}/Task"), body, expression).await;
            let mut with_id = body.clone();
            with_id["id"] = json!("t-bad");
            refused_at(
                &c,
                Method::PUT,
                &format!("{base}/Task/t-bad"),
                &with_id,
                expression,
            )
            .await;
        }
        // Nothing was written.
        let (s, _) = herald_tests::get(&c, &format!("{base}/Task/t-bad")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{tenant}");
        let (s, bundle) = herald_tests::get(&c, &format!("{base}/Task")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(bundle["total"], 0, "{tenant}: {bundle}");
        // The well-formed Task is taken.
        let (s, created) = send(
            &c,
            Method::POST,
            &format!("{base}/Task"),
            &task("Organization/lab"),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
    }
}

#[tokio::test]
async fn version_specific_elements_are_checked_per_tenant() {
    let h = Herald::start();
    let c = client();
    // R5 ServiceRequest has no `reasonCode` (R4 has): it is an unknown element there.
    let sr = json!({"resourceType":"ServiceRequest","status":"active","intent":"order",
        "subject":{"reference":"Patient/p1"},"reasonCode":[{"text":"x"}]});
    let (s, v) = send(
        &c,
        Method::POST,
        &format!("{}/ServiceRequest", h.fhir("r4")),
        &sr,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    refused_at(
        &c,
        Method::POST,
        &format!("{}/ServiceRequest", h.fhir("r5")),
        &sr,
        "ServiceRequest.reasonCode",
    )
    .await;
    // A missing required element.
    let no_subject = json!({"resourceType":"ServiceRequest","status":"active","intent":"order"});
    refused_at(
        &c,
        Method::POST,
        &format!("{}/ServiceRequest", h.fhir("r4")),
        &no_subject,
        "ServiceRequest.subject",
    )
    .await;
}
