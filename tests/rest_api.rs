//! The FHIR REST API over real HTTP against the real binary: every interaction the foundation
//! promises and every error status, each answered with an OperationOutcome.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_tests::{Herald, client, task};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FHIR: &str = "application/fhir+json";

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    c.post(url)
        .header("content-type", FHIR)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

async fn put(c: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    c.put(url)
        .header("content-type", FHIR)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

/// Asserts an OperationOutcome with the given status whose diagnostics mention `needle`.
async fn assert_outcome(r: reqwest::Response, status: StatusCode, needle: &str) {
    assert_eq!(r.status(), status);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with(FHIR), "content-type {ct}");
    let body = json_of(r).await;
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let diag = body["issue"][0]["diagnostics"].as_str().unwrap_or("");
    assert!(
        diag.to_lowercase().contains(&needle.to_lowercase()),
        "diagnostics '{diag}' should mention '{needle}'"
    );
}

#[tokio::test]
async fn create_assigns_id_version_location_and_etag() {
    let h = Herald::start();
    let c = client();
    let r = post(
        &c,
        &format!("{}/Task", h.fhir("r4")),
        &task("Organization/o1"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["etag"], "W/\"1\"");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(r.headers().contains_key("last-modified"));
    let body = json_of(r).await;
    let id = body["id"].as_str().expect("id");
    assert_eq!(location, format!("{}/Task/{id}/_history/1", h.fhir("r4")));
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().is_some());
    // read gives the same resource
    let read = json_of(
        c.get(format!("{}/Task/{id}", h.fhir("r4")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(read, body);
}

#[tokio::test]
async fn create_accepts_plain_application_json_and_decimals_round_trip() {
    let h = Herald::start();
    let c = client();
    let obs = r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}"#;
    let r = c
        .post(format!("{}/Observation", h.fhir("r4")))
        .header("content-type", "application/json")
        .body(obs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"value\":1.50"),
        "decimal precision lost: {text}"
    );
}

#[tokio::test]
async fn update_creates_versions_and_vread_returns_each() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task/t1", h.fhir("r4"));
    let mut t = task("Organization/o1");
    t["id"] = json!("t1");
    let r = put(&c, &url, &t).await;
    assert_eq!(r.status(), StatusCode::CREATED, "update-as-create");
    assert!(r.headers().contains_key("location"));
    t["status"] = json!("accepted");
    let r = put(&c, &url, &t).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "W/\"2\"");
    let v1 = json_of(c.get(format!("{url}/_history/1")).send().await.unwrap()).await;
    assert_eq!(v1["status"], "requested");
    let v2 = json_of(c.get(format!("{url}/_history/2")).send().await.unwrap()).await;
    assert_eq!(v2["status"], "accepted");
    let missing = c.get(format!("{url}/_history/9")).send().await.unwrap();
    assert_outcome(missing, StatusCode::NOT_FOUND, "no version 9").await;
}

#[tokio::test]
async fn identical_update_keeps_the_version() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task/same", h.fhir("r4"));
    let mut t = task("Organization/o1");
    t["id"] = json!("same");
    put(&c, &url, &t).await;
    let r = put(&c, &url, &t).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "W/\"1\"");
}

#[tokio::test]
async fn stale_if_match_gets_412_and_current_if_match_succeeds() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task/lock", h.fhir("r4"));
    let mut t = task("Organization/o1");
    t["id"] = json!("lock");
    put(&c, &url, &t).await;
    t["status"] = json!("accepted");
    put(&c, &url, &t).await;
    t["status"] = json!("rejected");
    let stale = c
        .put(&url)
        .header("content-type", FHIR)
        .header("if-match", "W/\"1\"")
        .body(t.to_string())
        .send()
        .await
        .unwrap();
    assert_outcome(stale, StatusCode::PRECONDITION_FAILED, "expected version 1").await;
    let ok = c
        .put(&url)
        .header("content-type", FHIR)
        .header("if-match", "W/\"2\"")
        .body(t.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["etag"], "W/\"3\"");
}

#[tokio::test]
async fn delete_then_read_is_410_and_history_shows_the_deletion() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task/gone", h.fhir("r4"));
    let mut t = task("Organization/o1");
    t["id"] = json!("gone");
    put(&c, &url, &t).await;
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_outcome(
        c.get(&url).send().await.unwrap(),
        StatusCode::GONE,
        "deleted",
    )
    .await;
    let hist = json_of(c.get(format!("{url}/_history")).send().await.unwrap()).await;
    assert_eq!(hist["type"], "history");
    assert_eq!(hist["total"], 2);
    assert_eq!(hist["entry"][0]["request"]["method"], "DELETE");
    assert!(hist["entry"][0].get("resource").is_none());
    assert_eq!(hist["entry"][1]["request"]["method"], "POST");
    assert_eq!(hist["entry"][1]["resource"]["status"], "requested");
    for e in hist["entry"].as_array().unwrap() {
        assert!(
            e.get("response").is_some(),
            "every history entry has a response"
        );
    }
    // deleting again is idempotent
    assert_eq!(
        c.delete(&url).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn type_history_lists_versions_of_all_resources_newest_first() {
    let h = Herald::start();
    let c = client();
    for i in 0..3 {
        post(
            &c,
            &format!("{}/Task", h.fhir("r4")),
            &task(&format!("Organization/o{i}")),
        )
        .await;
    }
    let hist = json_of(
        c.get(format!("{}/Task/_history?_count=2", h.fhir("r4")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(hist["type"], "history");
    assert_eq!(hist["total"], 3);
    assert_eq!(hist["entry"].as_array().unwrap().len(), 2);
    assert_eq!(
        hist["entry"][0]["resource"]["owner"]["reference"],
        "Organization/o2"
    );
    assert!(
        hist["link"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "next")
    );
}

#[tokio::test]
async fn conditional_create_returns_the_existing_match_instead_of_duplicating() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task", h.fhir("r4"));
    let mut t = task("Organization/o1");
    t["identifier"] = json!([{"system": "urn:placer", "value": "order-1"}]);
    let cond = |c: &reqwest::Client| {
        c.post(&url)
            .header("content-type", FHIR)
            .header("if-none-exist", "identifier=urn:placer|order-1")
            .body(t.to_string())
    };
    let first = cond(&c).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let id = json_of(first).await["id"].as_str().unwrap().to_string();
    let second = cond(&c).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(json_of(second).await["id"], id.as_str());
    let all = json_of(c.get(&url).send().await.unwrap()).await;
    assert_eq!(all["total"], 1);
    // two matches: 412
    post(&c, &url, &t).await;
    assert_outcome(
        cond(&c).send().await.unwrap(),
        StatusCode::PRECONDITION_FAILED,
        "matches 2",
    )
    .await;
}

#[tokio::test]
async fn prefer_header_selects_minimal_representation_or_outcome() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task", h.fhir("r4"));
    let minimal = c
        .post(&url)
        .header("content-type", FHIR)
        .header("prefer", "return=minimal")
        .body(task("Organization/o1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(minimal.status(), StatusCode::CREATED);
    assert!(minimal.headers().contains_key("location"));
    assert!(minimal.text().await.unwrap().is_empty());
    let oo = c
        .post(&url)
        .header("content-type", FHIR)
        .header("prefer", "return=OperationOutcome")
        .body(task("Organization/o1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(oo.status(), StatusCode::CREATED);
    let body = json_of(oo).await;
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["severity"], "information");
}

async fn seed_tasks(c: &reqwest::Client, base: &str) {
    let tasks = [
        json!({"resourceType":"Task","id":"a","status":"requested","intent":"order","owner":{"reference":"Organization/lab"},"code":{"coding":[{"system":"http://hl7.org/fhir/CodeSystem/task-code","code":"fulfill"}]},"authoredOn":"2026-01-15T10:00:00Z","for":{"reference":"Patient/p1"}}),
        json!({"resourceType":"Task","id":"b","status":"in-progress","intent":"order","owner":{"reference":"Organization/imaging"},"code":{"coding":[{"system":"http://hl7.org/fhir/CodeSystem/task-code","code":"abort"}]},"authoredOn":"2026-03-01","for":{"reference":"Patient/p2"}}),
        json!({"resourceType":"Task","id":"c","status":"completed","intent":"order","authoredOn":"2025-12-31"}),
    ];
    for t in tasks {
        let id = t["id"].as_str().unwrap().to_string();
        let r = put(c, &format!("{base}/Task/{id}"), &t).await;
        assert!(r.status().is_success());
    }
}

async fn ids(c: &reqwest::Client, url: &str) -> Vec<String> {
    let b = json_of(c.get(url).send().await.unwrap()).await;
    assert_eq!(b["type"], "searchset", "{b}");
    let mut v: Vec<String> = b["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn search_supports_token_reference_date_id_missing_and_not() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    seed_tasks(&c, &base).await;
    assert_eq!(
        ids(&c, &format!("{base}/Task?status=requested")).await,
        ["a"]
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?status=requested,completed")).await,
        ["a", "c"]
    );
    assert_eq!(
        ids(
            &c,
            &format!("{base}/Task?code=http://hl7.org/fhir/CodeSystem/task-code|abort")
        )
        .await,
        ["b"]
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?owner=Organization/lab")).await,
        ["a"]
    );
    assert_eq!(ids(&c, &format!("{base}/Task?owner=imaging")).await, ["b"]);
    assert_eq!(
        ids(
            &c,
            &format!("{base}/Task?owner={}/Organization/lab", h.fhir("r4"))
        )
        .await,
        ["a"]
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?patient=Patient/p2")).await,
        ["b"]
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?authored-on=ge2026-01-01")).await,
        ["a", "b"]
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?authored-on=lt2026")).await,
        ["c"]
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?authored-on=2026-03")).await,
        ["b"]
    );
    assert_eq!(ids(&c, &format!("{base}/Task?_id=a,c")).await, ["a", "c"]);
    assert_eq!(
        ids(&c, &format!("{base}/Task?owner:missing=true")).await,
        ["c"]
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?status:not=requested")).await,
        ["b", "c"]
    );
    assert_eq!(
        ids(
            &c,
            &format!("{base}/Task?status=requested&owner=Organization/imaging")
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&c, &format!("{base}/Task?_lastUpdated=gt2000-01-01")).await,
        ["a", "b", "c"]
    );
}

#[tokio::test]
async fn search_on_string_parameters_of_patient_is_prefix_and_case_insensitive() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let p = json!({"resourceType":"Patient","id":"p1","name":[{"family":"Chalmers","given":["Peter"]}],"birthDate":"1974-12-25"});
    put(&c, &format!("{base}/Patient/p1"), &p).await;
    assert_eq!(
        ids(&c, &format!("{base}/Patient?family=chal")).await,
        ["p1"]
    );
    assert_eq!(ids(&c, &format!("{base}/Patient?name=peter")).await, ["p1"]);
    assert_eq!(
        ids(&c, &format!("{base}/Patient?family:exact=chal")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&c, &format!("{base}/Patient?birthdate=1974")).await,
        ["p1"]
    );
}

#[tokio::test]
async fn post_search_combines_form_body_and_query() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    seed_tasks(&c, &base).await;
    let b = json_of(
        c.post(format!("{base}/Task/_search?intent=order"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("status=in-progress")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(b["total"], 1);
    assert_eq!(b["entry"][0]["resource"]["id"], "b");
}

#[tokio::test]
async fn search_pages_with_count_and_next_links() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    for i in 0..5 {
        post(
            &c,
            &format!("{base}/Task"),
            &task(&format!("Organization/o{i}")),
        )
        .await;
    }
    let mut url = format!("{base}/Task?intent=order&_count=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let b = json_of(c.get(&url).send().await.unwrap()).await;
        assert_eq!(b["total"], 5);
        pages += 1;
        for e in b["entry"].as_array().unwrap() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
        }
        match b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn unknown_search_parameter_is_reported_or_refused_when_strict() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    seed_tasks(&c, &base).await;
    let b = json_of(c.get(format!("{base}/Task?bogus=1")).send().await.unwrap()).await;
    assert_eq!(b["total"], 3);
    let oo = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome entry");
    assert!(
        oo["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
    let strict = c
        .get(format!("{base}/Task?bogus=1"))
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_outcome(strict, StatusCode::BAD_REQUEST, "bogus").await;
    let bad_date = c
        .get(format!("{base}/Task?authored-on=notadate"))
        .send()
        .await
        .unwrap();
    assert_outcome(bad_date, StatusCode::BAD_REQUEST, "notadate").await;
}

#[tokio::test]
async fn r5_tenant_has_its_own_data_and_version() {
    let h = Herald::start();
    let c = client();
    let mut t = task("Organization/o1");
    t["id"] = json!("shared-id");
    put(&c, &format!("{}/Task/shared-id", h.fhir("r4")), &t).await;
    let r = c
        .get(format!("{}/Task/shared-id", h.fhir("r5")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let meta4 = json_of(
        c.get(format!("{}/metadata", h.fhir("r4")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let meta5 = json_of(
        c.get(format!("{}/metadata", h.fhir("r5")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(meta4["fhirVersion"], "4.0.1");
    assert_eq!(meta5["fhirVersion"], "5.0.0");
    // R5-only type is refused on R4, accepted on R5
    let sst = json!({"resourceType":"SubscriptionStatus","status":"active","type":"heartbeat","topic":"http://x",
        "subscription":{"reference":"Subscription/s1"}});
    let r4 = post(&c, &format!("{}/SubscriptionStatus", h.fhir("r4")), &sst).await;
    assert_outcome(
        r4,
        StatusCode::NOT_FOUND,
        "not a resource type of FHIR 4.0.1",
    )
    .await;
    let r5 = post(&c, &format!("{}/SubscriptionStatus", h.fhir("r5")), &sst).await;
    assert_eq!(r5.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn capability_statement_describes_task_search_and_interactions() {
    let h = Herald::start();
    let c = client();
    let cs = json_of(
        c.get(format!("{}/metadata", h.fhir("r4")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    let task = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Task")
        .expect("Task");
    let names: Vec<&str> = task["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "owner",
        "requester",
        "status",
        "business-status",
        "code",
        "focus",
        "patient",
        "authored-on",
    ] {
        assert!(
            names.contains(&p),
            "Task search param {p} missing from {names:?}"
        );
    }
    let interactions: Vec<&str> = task["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    for i in [
        "read",
        "vread",
        "update",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ] {
        assert!(interactions.contains(&i));
    }
    assert_eq!(task["conditionalCreate"], true);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let h = Herald::start();
    let c = client();
    let r = c
        .post(format!("{}/Task", h.fhir("r4")))
        .header("content-type", FHIR)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_outcome(r, StatusCode::BAD_REQUEST, "not valid JSON").await;
}

#[tokio::test]
async fn structurally_invalid_fhir_is_400() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task", h.fhir("r4"));
    assert_outcome(
        post(&c, &url, &json!({"status":"requested"})).await,
        StatusCode::BAD_REQUEST,
        "resourceType",
    )
    .await;
    assert_outcome(
        post(&c, &url, &json!({"resourceType":"Patient"})).await,
        StatusCode::BAD_REQUEST,
        "does not match",
    )
    .await;
    assert_outcome(
        post(
            &c,
            &url,
            &json!({"resourceType":"Task","status":"requested","intent":"order","note":[]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "note",
    )
    .await;
    assert_outcome(
        post(
            &c,
            &url,
            &json!({"resourceType":"Task","status":null,"intent":"order"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "status",
    )
    .await;
    assert_outcome(post(&c, &url, &json!({"resourceType":"Task","status":"requested","intent":"order","authoredOn":"notadate"})).await, StatusCode::BAD_REQUEST, "notadate").await;
    let mut t = task("Organization/o1");
    t["id"] = json!("other");
    assert_outcome(
        put(&c, &format!("{url}/mine"), &t).await,
        StatusCode::BAD_REQUEST,
        "does not match the URL id",
    )
    .await;
    assert_outcome(
        put(&c, &format!("{url}/bad$id"), &t).await,
        StatusCode::BAD_REQUEST,
        "not a valid FHIR id",
    )
    .await;
    // nothing was stored
    let all = json_of(c.get(&url).send().await.unwrap()).await;
    assert_eq!(all["total"], 0);
}

#[tokio::test]
async fn a_missing_required_element_is_400_naming_it_and_stores_nothing() {
    let h = Herald::start();
    let c = client();
    let url = format!("{}/Task", h.fhir("r4"));
    let r = post(
        &c,
        &url,
        &json!({"resourceType":"Task","status":"requested"}),
    )
    .await;
    assert_outcome(r, StatusCode::BAD_REQUEST, "Task.intent").await;
    assert_eq!(json_of(c.get(&url).send().await.unwrap()).await["total"], 0);
}

#[tokio::test]
async fn unknown_resource_type_tenant_and_route_are_404() {
    let h = Herald::start();
    let c = client();
    assert_outcome(
        c.get(format!("{}/Foo/1", h.fhir("r4")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "Foo",
    )
    .await;
    assert_outcome(
        c.get(format!("{}/Task/1", h.fhir("nope")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "nope",
    )
    .await;
    assert_outcome(
        c.get(format!("{}/Task/missing", h.fhir("r4")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "missing",
    )
    .await;
    assert_outcome(
        c.get(format!("{}/elsewhere", h.root)).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "elsewhere",
    )
    .await;
}

#[tokio::test]
async fn wrong_method_is_405() {
    let h = Herald::start();
    let c = client();
    // PATCH is an interaction on an instance, not on the type.
    let r = c
        .patch(format!("{}/Task", h.fhir("r4")))
        .send()
        .await
        .unwrap();
    assert_outcome(r, StatusCode::METHOD_NOT_ALLOWED, "PATCH").await;
    let r = c
        .delete(format!("{}/metadata", h.fhir("r4")))
        .send()
        .await
        .unwrap();
    assert_outcome(r, StatusCode::METHOD_NOT_ALLOWED, "DELETE").await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let h = Herald::start_with(&[("HERALD_MAX_BODY_BYTES", "1000")]);
    let c = client();
    let mut t = task("Organization/o1");
    t["description"] = json!("x".repeat(2000));
    let r = post(&c, &format!("{}/Task", h.fhir("r4")), &t).await;
    assert_outcome(r, StatusCode::PAYLOAD_TOO_LARGE, "1000 bytes").await;
}

#[tokio::test]
async fn unsupported_media_type_is_415() {
    let h = Herald::start();
    let c = client();
    let r = c
        .post(format!("{}/Task", h.fhir("r4")))
        .header("content-type", "application/fhir+xml")
        .body("<Task/>")
        .send()
        .await
        .unwrap();
    assert_outcome(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/fhir+xml",
    )
    .await;
}

#[tokio::test]
async fn health_endpoints_answer_and_requests_get_ids() {
    let h = Herald::start();
    let c = client();
    let r = c.get(format!("{}/healthz", h.root)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(
        c.get(format!("{}/readyz", h.root))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = c
        .get(format!("{}/healthz", h.root))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let mut h = Herald::start();
    let c = client();
    let mut t = task("Organization/o1");
    t["id"] = json!("keep");
    put(&c, &format!("{}/Task/keep", h.fhir("r4")), &t).await;
    assert!(h.terminate(), "SIGTERM exits cleanly");
    h.restart();
    let r = c
        .get(format!("{}/Task/keep", h.fhir("r4")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Concurrent writes are applied in batches (the committer); each must still succeed or fail on
/// its own: of 24 simultaneous `If-Match: W/"1"` updates of one Task exactly one wins, the others
/// get 412, and the history holds exactly the winner as version 2. Concurrent creates alongside
/// them all succeed with distinct ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conditional_updates_let_exactly_one_win_while_other_writes_go_through() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let created = json_of(post(&c, &format!("{base}/Task"), &task("Organization/o")).await).await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut updates = Vec::new();
    for i in 0..24 {
        let (c, url) = (c.clone(), format!("{base}/Task/{id}"));
        let mut body = task("Organization/o");
        body["id"] = json!(id);
        body["description"] = json!(format!("writer {i}"));
        updates.push(tokio::spawn(async move {
            let r = c
                .put(&url)
                .header("content-type", FHIR)
                .header("if-match", "W/\"1\"")
                .body(body.to_string())
                .send()
                .await
                .expect("request");
            (i, r.status())
        }));
    }
    let mut creates = Vec::new();
    for _ in 0..24 {
        let (c, url) = (c.clone(), format!("{base}/Task"));
        creates.push(tokio::spawn(async move {
            let r = post(&c, &url, &task("Organization/p")).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            json_of(r).await["id"].as_str().unwrap().to_string()
        }));
    }
    let mut winners = Vec::new();
    for u in updates {
        let (i, status) = u.await.unwrap();
        match status {
            StatusCode::OK => winners.push(i),
            StatusCode::PRECONDITION_FAILED => {}
            other => panic!("writer {i}: unexpected {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one If-Match update wins: {winners:?}"
    );
    let mut ids = Vec::new();
    for t in creates {
        ids.push(t.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 24, "every concurrent create got its own id");
    let hist = json_of(
        c.get(format!("{base}/Task/{id}/_history"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(hist["total"], 2, "{hist}");
    let current = json_of(c.get(format!("{base}/Task/{id}")).send().await.unwrap()).await;
    assert_eq!(current["meta"]["versionId"], "2");
    assert_eq!(
        current["description"],
        format!("writer {}", winners[0]),
        "the stored version 2 is the winner's"
    );
}
