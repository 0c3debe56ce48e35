//! Hostile input against the real binary: client-written criteria that would exhaust the stack
//! or the CPU, headers that would corrupt or redirect notifications, ids that are path
//! segments, and poison already at rest in the data directory. Herald refuses what it can at the
//! door (422/400 with an OperationOutcome naming the limit), keeps serving writes, and starts up
//! whatever the store holds.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use herald_fhir::FhirVersion;
use herald_store::{Store, StoreOptions, WriteKind, WriteRequest};
use herald_subscriptions::notification::parse_status_bundle;
use herald_subscriptions::{builtin, topic_to_json};
use herald_tests::{
    Herald, client, create, get, post_refused, r4_subscription, r5_subscription, send, task,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const UNPROCESSABLE: [StatusCode; 1] = [StatusCode::UNPROCESSABLE_ENTITY];

/// An R5 SubscriptionTopic on Task with `criteria` as its FHIRPath trigger.
fn r5_topic(url: &str, criteria: &str) -> Value {
    json!({
        "resourceType": "SubscriptionTopic",
        "url": url,
        "status": "active",
        "resourceTrigger": [{
            "resource": "http://hl7.org/fhir/StructureDefinition/Task",
            "supportedInteraction": ["create", "update"],
            "fhirPathCriteria": criteria
        }],
        "canFilterBy": [{"resource": "Task", "filterParameter": "owner"}]
    })
}

/// An R4 topic (Basic) with `criteria` as its FHIRPath trigger, built from a built-in one.
fn r4_topic(url: &str, criteria: &str) -> Value {
    let mut t = builtin::topics(FhirVersion::R4)
        .into_iter()
        .next()
        .expect("built-in topic");
    t.url = url.to_owned();
    for trigger in &mut t.resource_triggers {
        trigger.query_criteria = None;
        trigger.fhirpath_criteria = Some(criteria.to_owned());
    }
    topic_to_json(FhirVersion::R4, &t, None)
}

fn deep_parens() -> String {
    format!("{}true{}", "(".repeat(5000), ")".repeat(5000))
}

fn long_not_chain(n: usize) -> String {
    format!("%current.status.exists(){}", ".not()".repeat(n))
}

async fn events_since_start(c: &reqwest::Client, base: &str, id: &str) -> u64 {
    let (s, b) = get(c, &format!("{base}/Subscription/{id}/$status")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let parsed = parse_status_bundle(&b).unwrap();
    parsed[0].events_since_start.unwrap_or_default()
}

async fn wait_events(c: &reqwest::Client, base: &str, id: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while events_since_start(c, base, id).await < n {
        assert!(Instant::now() < deadline, "{id} never reached {n} events");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn topics_whose_criteria_exceed_the_limits_are_refused_and_herald_keeps_serving() {
    let h = Herald::start();
    let c = client();
    let r5 = h.fhir("r5");
    let r4 = h.fhir("r4");
    for (criteria, needle) in [
        (deep_parens(), "limit"),
        (long_not_chain(20_000), "8192"),
        (long_not_chain(1_300), "64 levels"),
    ] {
        post_refused(
            &c,
            &format!("{r5}/SubscriptionTopic"),
            &r5_topic("http://example.org/t/deep", &criteria),
            &UNPROCESSABLE,
            needle,
        )
        .await;
        post_refused(
            &c,
            &format!("{r4}/Basic"),
            &r4_topic("http://example.org/t/deep", &criteria),
            &UNPROCESSABLE,
            needle,
        )
        .await;
    }
    // still alive, still writing
    create(&c, &r5, "Task", &task("Organization/lab")).await;
    create(&c, &r4, "Task", &task("Organization/lab")).await;
}

#[tokio::test]
async fn criteria_over_their_step_budget_miss_the_change_but_the_write_and_others_go_through() {
    let h = Herald::start_with(&[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    let base = h.fhir("r5");
    // Within the parse limits, but cubic in the number of notes.
    let url = "http://example.org/t/costly";
    let costly = "%current.note.where(%current.note.where(%current.note.where(text = 'x').exists()).exists()).exists()";
    create(&c, &base, "SubscriptionTopic", &r5_topic(url, costly)).await;
    let mut costly_sub = r5_subscription("x", &[], "http://127.0.0.1:9/hook", "id-only");
    costly_sub["topic"] = json!(url);
    let costly_id = create(&c, &base, "Subscription", &costly_sub).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain = r5_subscription(
        "cow-task-changed",
        &[],
        "http://127.0.0.1:9/hook",
        "id-only",
    );
    let plain_id = create(&c, &base, "Subscription", &plain).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A small Task: both match.
    let mut small = task("Organization/lab");
    small["note"] = json!([{"text": "x"}]);
    create(&c, &base, "Task", &small).await;
    wait_events(&c, &base, &plain_id, 1).await;
    wait_events(&c, &base, &costly_id, 1).await;

    // A large one: the write succeeds, the costly criteria run out of budget (that subscription
    // misses the change), the other subscription is notified.
    let mut large = task("Organization/lab");
    large["note"] = json!(
        (0..400)
            .map(|i| json!({"text": format!("n{i}")}))
            .collect::<Vec<_>>()
    );
    large["note"][0]["text"] = json!("x");
    create(&c, &base, "Task", &large).await;
    wait_events(&c, &base, &plain_id, 2).await;
    assert_eq!(events_since_start(&c, &base, &costly_id).await, 1);

    // and the next small one matches again
    create(&c, &base, "Task", &small).await;
    wait_events(&c, &base, &costly_id, 2).await;
}

#[tokio::test]
async fn subscription_headers_that_cannot_be_sent_safely_are_refused_naming_the_header() {
    let h = Herald::start_with(&[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    let r4 = h.fhir("r4");
    let r5 = h.fhir("r5");
    for (header, needle) in [
        ("X-A: one\r\nX-Injected: two", "X-A"),
        ("X-Nul: a\u{0}b", "X-Nul"),
        ("Bad Name: v", "Bad Name"),
        ("Host: elsewhere.example", "Host"),
        ("Content-Length: 5", "Content-Length"),
        ("Transfer-Encoding: chunked", "Transfer-Encoding"),
        ("Connection: close", "Connection"),
        ("TE: trailers", "TE"),
        ("Upgrade: websocket", "Upgrade"),
    ] {
        let mut sub = r4_subscription(
            "cow-task-changed",
            &[],
            "http://127.0.0.1:9/hook",
            "id-only",
        );
        sub["channel"]["header"] = json!([header]);
        post_refused(
            &c,
            &format!("{r4}/Subscription"),
            &sub,
            &UNPROCESSABLE,
            needle,
        )
        .await;
    }
    let mut sub = r5_subscription(
        "cow-task-changed",
        &[],
        "http://127.0.0.1:9/hook",
        "id-only",
    );
    sub["parameter"] = json!([{"name": "Content-Length", "value": "5"}]);
    post_refused(
        &c,
        &format!("{r5}/Subscription"),
        &sub,
        &UNPROCESSABLE,
        "Content-Length",
    )
    .await;
    sub["parameter"] = json!([{"name": "X-B", "value": "a\nb"}]);
    post_refused(
        &c,
        &format!("{r5}/Subscription"),
        &sub,
        &UNPROCESSABLE,
        "line feed",
    )
    .await;
    // nothing of it was stored
    let (_, all) = get(&c, &format!("{r4}/Subscription")).await;
    assert_eq!(all["total"], 0, "{all}");
}

#[tokio::test]
async fn ids_that_are_dot_segments_are_refused() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    // Sent raw: client libraries resolve dot segments away before sending.
    for id in [".", ".."] {
        let mut body = task("Organization/lab");
        body["id"] = json!(id);
        let (status, answer) = raw_put(&h, &format!("/fhir/r4/Task/{id}"), &body).await;
        assert_eq!(status, 400, "{id}: {answer}");
        assert!(
            answer.contains("OperationOutcome") && answer.contains("not a valid FHIR id"),
            "{answer}"
        );
    }
    let mut body = task("Organization/lab");
    body["id"] = json!("a...b");
    let (s, oo) = send(&c, Method::PUT, &format!("{base}/Task/a...b"), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{oo}");
}

/// A PUT over a plain TCP connection, the path exactly as given; returns the status and the body.
async fn raw_put(h: &Herald, path: &str, body: &Value) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = h.root.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.to_string();
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// Writes `body` into the data directory the way an older Herald, or anything else around the
/// API, could have: straight into the store, no validation.
async fn store_directly(store: &Store, tenant: &str, rtype: &str, id: &str, body: Value) {
    store
        .write(
            WriteRequest {
                tenant,
                resource_type: rtype,
                id,
                kind: WriteKind::Upsert,
                body: Some(body),
                if_match: None,
            },
            &mut |_| Ok(Vec::new()),
        )
        .await
        .expect("direct write");
}

#[tokio::test]
async fn poison_at_rest_is_refused_at_start_up_and_herald_keeps_serving_writes() {
    let mut h = Herald::start();
    // (kill -9: a SIGTERM this early can arrive before the handler is installed)
    h.kill9();
    {
        let store = Store::open(h.data_dir(), &StoreOptions::default()).expect("open store");
        let poison = "http://example.org/t/poison";
        store_directly(
            &store,
            "r4",
            "Basic",
            "poison",
            r4_topic(poison, &long_not_chain(20_000)),
        )
        .await;
        let mut on_poison = r4_subscription("x", &[], "http://127.0.0.1:9/hook", "id-only");
        on_poison["criteria"] = json!(poison);
        on_poison["status"] = json!("active");
        store_directly(&store, "r4", "Subscription", "on-poison", on_poison).await;
        let mut bad_header = r4_subscription(
            "cow-task-changed",
            &[],
            "http://127.0.0.1:9/hook",
            "id-only",
        );
        bad_header["status"] = json!("active");
        bad_header["channel"]["header"] = json!(["Content-Length: 5"]);
        store_directly(&store, "r4", "Subscription", "bad-header", bad_header).await;
        let good = r4_subscription(
            "cow-task-changed",
            &[],
            "http://127.0.0.1:9/hook",
            "id-only",
        );
        store_directly(&store, "r4", "Subscription", "good", good).await;
        store.make_durable().await.expect("durable");
        store.close().expect("close");
    }
    h.restart();
    let c = client();
    // Writes that the poison would have aborted go through, before and after another restart.
    for round in 0..2 {
        let base = h.fhir("r4");
        for _ in 0..3 {
            create(&c, &base, "Task", &task("Organization/lab")).await;
        }
        let (s, on_poison) = get(&c, &format!("{base}/Subscription/on-poison")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(on_poison["status"], "error", "round {round}: {on_poison}");
        let why = on_poison["error"].as_str().unwrap_or_default();
        assert!(why.contains("poison") && why.contains("limit"), "{why}");
        let (_, bad) = get(&c, &format!("{base}/Subscription/bad-header")).await;
        assert_eq!(bad["status"], "error", "{bad}");
        assert!(
            bad["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Content-Length"),
            "{bad}"
        );
        // refused subscriptions record nothing; the good one records every Task
        assert_eq!(events_since_start(&c, &base, "on-poison").await, 0);
        assert_eq!(events_since_start(&c, &base, "bad-header").await, 0);
        wait_events(&c, &base, "good", 3 * (round + 1)).await;
        h.restart();
    }
}

#[tokio::test]
async fn endpoints_at_ipv6_forms_of_internal_addresses_are_refused_at_creation() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    for host in [
        "[::7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "[::ffff:0:7f00:1]",
        "[fec0::1]",
        "[::ffff:10.0.0.1]",
    ] {
        let sub = r4_subscription(
            "cow-task-changed",
            &[],
            &format!("http://{host}:8080/hook"),
            "id-only",
        );
        post_refused(
            &c,
            &format!("{base}/Subscription"),
            &sub,
            &UNPROCESSABLE,
            "internal",
        )
        .await;
    }
    // (public addresses in the same forms are accepted: unit tests of the classifier; no test
    // here makes Herald call outside loopback)
}
