//! How Subscription filters meet updates, end to end on R4 and R5: a filter matches an update
//! when the previous or the current version matches. Both sides are pinned: the subscriber a
//! resource leaves hears the change that takes it away and nothing after it; the one it enters
//! hears that change and everything after it. Also: `$events` and other operations asked for in
//! the wrong place say what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_tests::{Herald, client, create, get, r4_subscription, r5_subscription, send, task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOOK: &str = "https://placer.example.org/notify";

/// A subscription on `cow-task-changed` with one Task filter, on tenant `v`.
async fn subscribe(c: &reqwest::Client, base: &str, v: &str, param: &str, value: &str) -> String {
    let body = if v == "r4" {
        r4_subscription(
            "cow-task-changed",
            &[&format!("Task?{param}={value}")],
            HOOK,
            "id-only",
        )
    } else {
        r5_subscription("cow-task-changed", &[(param, value)], HOOK, "id-only")
    };
    create(c, base, "Subscription", &body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The Task versions (`_history/N` → N) a subscription's events are about, in event order.
async fn versions_heard(c: &reqwest::Client, base: &str, v: &str, sub: &str) -> Vec<u64> {
    let (s, b) = get(c, &format!("{base}/Subscription/{sub}/$events")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let status = &b["entry"][0]["resource"];
    let focus: Vec<String> = if v == "r4" {
        status["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "notification-event")
            .filter_map(|p| {
                p["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == "focus")
                    .and_then(|x| x["valueReference"]["reference"].as_str())
                    .map(str::to_owned)
            })
            .collect()
    } else {
        status["notificationEvent"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["focus"]["reference"].as_str().map(str::to_owned))
            .collect()
    };
    focus
        .iter()
        .map(|f| f.rsplit('/').next().unwrap().parse().unwrap())
        .collect()
}

async fn update(c: &reqwest::Client, url: &str, t: &Value) {
    let (s, b) = send(c, Method::PUT, url, t).await;
    assert!(s.is_success(), "{b}");
}

#[tokio::test]
async fn owner_moving_from_a_to_b_is_heard_by_a_once_and_by_b_from_then_on() {
    let h = Herald::start();
    let c = client();
    for v in ["r4", "r5"] {
        let base = h.fhir(v);
        let a = subscribe(&c, &base, v, "owner", "Organization/a").await;
        let b = subscribe(&c, &base, v, "owner", "Organization/b").await;
        let t = create(&c, &base, "Task", &task("Organization/a")).await; // v1: A's
        let url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
        let mut t = t.clone();
        t["status"] = json!("received");
        update(&c, &url, &t).await; // v2: still A's
        t["owner"] = json!({"reference": "Organization/b"});
        update(&c, &url, &t).await; // v3: A → B
        t["status"] = json!("accepted");
        update(&c, &url, &t).await; // v4: B's
        t["status"] = json!("in-progress");
        update(&c, &url, &t).await; // v5: B's
        assert_eq!(
            versions_heard(&c, &base, v, &a).await,
            [1, 2, 3],
            "{v}: A hears the reassignment away, then nothing"
        );
        assert_eq!(
            versions_heard(&c, &base, v, &b).await,
            [3, 4, 5],
            "{v}: B hears the reassignment and everything after"
        );
    }
}

#[tokio::test]
async fn status_filter_hears_the_update_that_enters_and_the_one_that_leaves() {
    let h = Herald::start();
    let c = client();
    for v in ["r4", "r5"] {
        let base = h.fhir(v);
        let s = subscribe(&c, &base, v, "status", "in-progress").await;
        let t = create(&c, &base, "Task", &task("Organization/a")).await; // v1 requested
        let url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
        let mut t = t.clone();
        t["status"] = json!("in-progress");
        update(&c, &url, &t).await; // v2: enters
        t["description"] = json!("working on it");
        update(&c, &url, &t).await; // v3: inside
        t["status"] = json!("completed");
        update(&c, &url, &t).await; // v4: leaves
        t["description"] = json!("done");
        update(&c, &url, &t).await; // v5: outside
        assert_eq!(versions_heard(&c, &base, v, &s).await, [2, 3, 4], "{v}");
    }
}

#[tokio::test]
async fn builtin_topics_and_the_capability_statement_say_how_filters_meet_updates() {
    let h = Herald::start();
    let c = client();
    for v in ["r4", "r5"] {
        let base = h.fhir(v);
        let (rtype, field) = if v == "r4" {
            ("Basic", "extension")
        } else {
            ("SubscriptionTopic", "description")
        };
        let (s, topic) = get(&c, &format!("{base}/{rtype}/cow-task-changed")).await;
        assert_eq!(s, StatusCode::OK);
        let text = if field == "description" {
            topic["description"].as_str().unwrap().to_owned()
        } else {
            topic.to_string()
        };
        assert!(
            text.contains("previous or the current version"),
            "{v}: {text}"
        );
        let (_, cs) = get(&c, &format!("{base}/metadata")).await;
        let sub = cs["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Subscription")
            .unwrap();
        let doc = sub["documentation"].as_str().unwrap();
        assert!(
            doc.contains("previous or the current version"),
            "{v}: {doc}"
        );
    }
}

/// The OperationOutcome answer to a GET (or POST with an empty Parameters) of `url`.
async fn refused(c: &reqwest::Client, method: Method, url: &str) -> (StatusCode, String) {
    let mut r = c.request(method.clone(), url);
    if method == Method::POST {
        r = r
            .header("content-type", "application/fhir+json")
            .body(json!({"resourceType": "Parameters"}).to_string());
    }
    let r = r.send().await.unwrap();
    let s = r.status();
    let b: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(b["resourceType"], "OperationOutcome", "{method} {url}: {b}");
    (
        s,
        b["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn misplaced_operations_say_what_is_wrong() {
    let h = Herald::start();
    let c = client();
    for v in ["r4", "r5"] {
        let base = h.fhir(v);
        let sub = subscribe(&c, &base, v, "owner", "Organization/a").await;
        for (method, path, needle) in [
            (
                Method::GET,
                "Subscription/$events",
                "$events needs a Subscription id",
            ),
            (
                Method::POST,
                "Subscription/$events",
                "$events needs a Subscription id",
            ),
            (
                Method::GET,
                "Subscription/$signing-secret",
                "$signing-secret needs a Subscription id",
            ),
            (
                Method::GET,
                "Task/$status",
                "$status is an operation on Subscription, not Task",
            ),
            (
                Method::GET,
                "Task/$get-ws-binding-token",
                "$get-ws-binding-token is an operation on Subscription, not Task",
            ),
            (
                Method::GET,
                "Task/t1/$events",
                "$events is an operation on Subscription, not Task",
            ),
            (
                Method::GET,
                "$events",
                "$events is an operation on Subscription",
            ),
            (
                Method::POST,
                "$status",
                "$status is an operation on Subscription",
            ),
            (
                Method::GET,
                "$get-ws-binding-token",
                "$get-ws-binding-token is an operation on Subscription",
            ),
            (
                Method::GET,
                "$signing-secret",
                "Subscription/{id}/$signing-secret",
            ),
        ] {
            let (s, diag) = refused(&c, method.clone(), &format!("{base}/{path}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v} {method} {path}: {diag}");
            assert!(diag.contains(needle), "{v} {method} {path}: '{diag}'");
        }
        for path in [
            "Subscription/$foo".to_owned(),
            format!("Subscription/{sub}/$foo"),
            "Task/t1/$foo".to_owned(),
        ] {
            let (s, diag) = refused(&c, Method::GET, &format!("{base}/{path}")).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{v} {path}: {diag}");
            assert!(
                diag.contains("unknown operation $foo"),
                "{v} {path}: '{diag}'"
            );
            for known in [
                "$status",
                "$events",
                "$get-ws-binding-token",
                "$signing-secret",
            ] {
                assert!(diag.contains(known), "{v} {path}: '{diag}' names {known}");
            }
        }
    }
}
