//! Rest-hook delivery end to end, against a real HTTP receiver on loopback
//! (`herald_tests::receiver`): the handshake and the move to `active`; the notification shape of
//! every payload level in both versions (R4 backport `history` Bundles, R5
//! `subscription-notification` Bundles); the focus at the version that triggered each event;
//! channel headers and content type; heartbeats only when asked; order and `maxCount`
//! batching; outages (5xx answers and refused connections) with the `error` status coming and
//! going and nothing lost; `Retry-After`; the egress guard at creation; and the admin API
//! (delivery log, subscription delivery state, redrive).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use herald_subscriptions::notification::{NotificationType, parse_status_bundle};
use herald_tests::receiver::{
    Behaviour, Received, Receiver, delivered_events, has_all_events, of_kind, summary,
};
use herald_tests::{
    Herald, client, create, post_refused, r4_subscription, r5_subscription, send, task,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FHIR: &str = "application/fhir+json";
/// Upper bound of every wait: generous, so that a loaded machine does not fail the tests.
const WAIT: Duration = Duration::from_secs(20);
const R4_IDENTIFIER: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.identifier";
const R4_HEARTBEAT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";
const R4_MAX_COUNT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count";
const R4_STATUS_PROFILE: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";

/// Herald with loopback endpoints allowed, a one-second retry schedule and `error` after
/// `error_after` consecutive failures, plus `extra` settings.
fn herald(error_after: u32, extra: &[(&str, &str)]) -> Herald {
    let error_after = error_after.to_string();
    let mut env = vec![
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
        (
            "HERALD__DELIVERY__ERROR_AFTER_FAILURES",
            error_after.as_str(),
        ),
    ];
    env.extend_from_slice(extra);
    Herald::start_with(&env)
}

async fn get(c: &reqwest::Client, url: &str) -> Value {
    let (status, v) = herald_tests::get(c, url).await;
    assert!(status.is_success(), "GET {url}: {status}");
    v
}

async fn put(c: &reqwest::Client, base: &str, body: &Value) -> Value {
    let url = format!(
        "{base}/{}/{}",
        body["resourceType"].as_str().unwrap(),
        body["id"].as_str().unwrap()
    );
    let (s, v) = send(c, reqwest::Method::PUT, &url, body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// Creates a Subscription and returns its id.
async fn subscribe(c: &reqwest::Client, base: &str, body: &Value) -> String {
    create(c, base, "Subscription", body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls the stored Subscription until its status is `want`; returns the resource.
async fn wait_status(c: &reqwest::Client, base: &str, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = get(c, &format!("{base}/Subscription/{id}")).await;
        if s["status"] == want {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "Subscription/{id} never became {want}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `$status` of one subscription: (status code, events since start).
async fn status_op(c: &reqwest::Client, base: &str, id: &str) -> (String, u64) {
    let b = get(c, &format!("{base}/Subscription/{id}/$status")).await;
    let parsed = parse_status_bundle(&b).unwrap();
    assert_eq!(parsed.len(), 1, "{b}");
    (
        parsed[0].status.clone().unwrap_or_default(),
        parsed[0].events_since_start.unwrap_or_default(),
    )
}

/// The `/admin/subscriptions` row of `id`.
async fn admin_row(c: &reqwest::Client, h: &Herald, id: &str) -> Value {
    let all = get(c, &format!("{}/admin/subscriptions", h.root)).await;
    all["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {all}"))
}

/// Polls `/admin/deliveries?{query}` until at least `n` entries match; returns them.
async fn wait_attempts(c: &reqwest::Client, h: &Herald, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let b = get(c, &format!("{}/admin/deliveries?{query}", h.root)).await;
        let entries = b["entries"].as_array().unwrap().clone();
        if entries.len() >= n {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} attempts for {query}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn r4_ext(s: &mut Value, url: &str, key: &str, value: Value) {
    let ext = s["channel"]
        .as_object_mut()
        .unwrap()
        .entry("extension")
        .or_insert_with(|| json!([]));
    ext.as_array_mut()
        .unwrap()
        .push(json!({"url": url, key: value}));
}

fn identifier(value: &str) -> Value {
    json!({"system": "urn:example:placer-subscriptions", "value": value})
}

/// An R4 subscription to every Task change with an identifier and channel headers.
fn r4_sub(endpoint: &str, content: &str, mime: &str, headers: &[&str], ident: &str) -> Value {
    let mut s = r4_subscription("cow-task-changed", &[], endpoint, content);
    s["channel"]["payload"] = json!(mime);
    if !headers.is_empty() {
        s["channel"]["header"] = json!(headers);
    }
    s["extension"] = json!([{"url": R4_IDENTIFIER, "valueIdentifier": identifier(ident)}]);
    s
}

/// An R5 subscription to every Task change with an identifier and channel headers.
fn r5_sub(
    endpoint: &str,
    content: &str,
    mime: &str,
    headers: &[(&str, &str)],
    ident: &str,
) -> Value {
    let mut s = r5_subscription("cow-task-changed", &[], endpoint, content);
    s["contentType"] = json!(mime);
    if !headers.is_empty() {
        s["parameter"] = json!(
            headers
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect::<Vec<_>>()
        );
    }
    s["identifier"] = json!([identifier(ident)]);
    s
}

fn entries(r: &Received) -> &Vec<Value> {
    r.body["entry"].as_array().unwrap()
}

/// Checks one notification against the Bundle shape its version requires (spec §1.G, §1.H,
/// §2.8; design note §5 items 1–3).
fn assert_bundle_shape(r: &Received, r5: bool) {
    let b = &r.body;
    let first = &entries(r)[0]["resource"];
    if r5 {
        assert_eq!(b["type"], "subscription-notification", "{b}");
        assert_eq!(first["resourceType"], "SubscriptionStatus", "{b}");
        assert!(
            first["eventsSinceSubscriptionStart"].is_string(),
            "integer64 as a JSON string: {b}"
        );
        for e in first["notificationEvent"].as_array().into_iter().flatten() {
            assert!(
                e["eventNumber"].is_string(),
                "integer64 as a JSON string: {b}"
            );
        }
        for e in entries(r) {
            assert!(
                e["fullUrl"].is_string(),
                "every R5 entry has a fullUrl: {b}"
            );
            assert!(e.get("response").is_none(), "no entry.response in R5: {b}");
        }
    } else {
        assert_eq!(b["type"], "history", "{b}");
        assert_eq!(first["resourceType"], "Parameters", "{b}");
        assert_eq!(first["meta"]["profile"][0], R4_STATUS_PROFILE, "{b}");
        let sub_param = first["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "subscription")
            .expect("subscription parameter");
        assert!(
            sub_param["valueReference"]["reference"].is_string(),
            "{sub_param}"
        );
        assert!(
            sub_param["valueReference"]["identifier"].is_object(),
            "{sub_param}"
        );
        for e in entries(r) {
            assert!(e["request"]["method"].is_string(), "entry.request: {b}");
            assert!(e["request"]["url"].is_string(), "entry.request: {b}");
            assert!(e["response"]["status"].is_string(), "entry.response: {b}");
        }
    }
}

/// Per-subscription expectations for the shape test.
struct Case {
    path: &'static str,
    r5: bool,
    content: &'static str,
    mime: &'static str,
    trace: &'static str,
    id: String,
}

#[tokio::test]
async fn handshake_then_active_then_every_payload_level_in_both_versions_has_its_shape() {
    let rx = Receiver::start().await;
    let h = herald(3, &[]);
    let c = client();
    let mut cases = Vec::new();
    for (r5, content, mime) in [
        (false, "empty", FHIR),
        (false, "id-only", FHIR),
        (false, "full-resource", "application/json"),
        (true, "empty", FHIR),
        (true, "id-only", "application/json"),
        (true, "full-resource", FHIR),
    ] {
        let v = if r5 { "r5" } else { "r4" };
        let path: &'static str = format!("/{v}-{content}").leak();
        let trace: &'static str = format!("trace-{v}-{content}").leak();
        let body = if r5 {
            r5_sub(
                &rx.url(path),
                content,
                mime,
                &[("Authorization", "Bearer s3cret"), ("X-Trace", trace)],
                path,
            )
        } else {
            r4_sub(
                &rx.url(path),
                content,
                mime,
                &["Authorization: Bearer s3cret", &format!("X-Trace: {trace}")],
                path,
            )
        };
        let id = subscribe(&c, &h.fhir(v), &body).await;
        cases.push(Case {
            path,
            r5,
            content,
            mime,
            trace,
            id,
        });
    }
    // handshake first (status requested, counter 0), then the stored status is active
    for case in &cases {
        let got = rx
            .wait_until(case.path, "a handshake", WAIT, |l| {
                l.iter()
                    .any(|r| r.kind() == Some(NotificationType::Handshake))
            })
            .await;
        let hs = &got[0];
        assert_eq!(
            hs.kind(),
            Some(NotificationType::Handshake),
            "{}",
            case.path
        );
        let n = hs.notification.as_ref().unwrap();
        assert_eq!(n.status.as_deref(), Some("requested"), "{}", case.path);
        assert_eq!(n.events_since_start, Some(0), "{}", case.path);
        assert!(n.events.is_empty());
        assert_bundle_shape(hs, case.r5);
        let v = if case.r5 { "r5" } else { "r4" };
        wait_status(&c, &h.fhir(v), &case.id, "active").await;
        assert_eq!(status_op(&c, &h.fhir(v), &case.id).await.0, "active");
    }
    // two events per subscription: a create and an update of one Task per tenant
    let mut tasks = Vec::new();
    for v in ["r4", "r5"] {
        let t = create(&c, &h.fhir(v), "Task", &task("Organization/lab")).await;
        let mut t2 = t.clone();
        t2["status"] = json!("accepted");
        put(&c, &h.fhir(v), &t2).await;
        tasks.push((v, t["id"].as_str().unwrap().to_owned()));
    }
    for case in &cases {
        let v = if case.r5 { "r5" } else { "r4" };
        let tid = &tasks.iter().find(|(t, _)| *t == v).unwrap().1;
        let got = rx
            .wait_until(case.path, "events 1 and 2", WAIT, |l| has_all_events(l, 2))
            .await;
        assert_eq!(delivered_events(&got), [1, 2], "{}", summary(&got));
        for r in &got {
            assert!(r.accepted());
            assert_bundle_shape(r, case.r5);
            // content type and every channel header, exactly as given and exactly once
            assert_eq!(r.header("content-type"), [case.mime], "{}", case.path);
            assert_eq!(
                r.header("authorization"),
                ["Bearer s3cret"],
                "{}",
                case.path
            );
            assert_eq!(r.header("x-trace"), [case.trace], "{}", case.path);
            let n = r.notification.as_ref().unwrap();
            assert!(
                n.subscription_reference
                    .as_deref()
                    .unwrap()
                    .ends_with(&format!("/Subscription/{}", case.id)),
                "{n:?}"
            );
            assert_eq!(
                n.subscription_identifier.as_ref(),
                Some(&identifier(case.path)),
                "the subscription is named by reference and identifier"
            );
            if r.kind() != Some(NotificationType::EventNotification) {
                continue;
            }
            // `active` is stored (checked above); the dispatcher learns it from the server a
            // moment later, so the first notification may still say `requested`
            assert!(
                matches!(n.status.as_deref(), Some("active" | "requested")),
                "{}",
                r.body
            );
            assert_eq!(
                n.events_since_start,
                n.events.last().map(|e| e.number),
                "the highest event number equals eventsSinceSubscriptionStart: {}",
                r.body
            );
            let payload = &entries(r)[1..];
            match case.content {
                "empty" => {
                    assert!(payload.is_empty(), "empty: status entry only: {}", r.body);
                    assert!(n.events.iter().all(|e| e.focus.is_none()), "{}", r.body);
                    assert!(n.topic.is_none(), "empty: no topic: {}", r.body);
                }
                "id-only" => {
                    assert!(!payload.is_empty(), "{}", r.body);
                    assert!(payload.iter().all(|e| e.get("resource").is_none()));
                    for e in &n.events {
                        let focus = e.focus.as_deref().unwrap();
                        assert!(
                            focus.ends_with(&format!("Task/{tid}/_history/{}", e.number)),
                            "{focus}"
                        );
                    }
                }
                _ => {
                    for e in &n.events {
                        let res = e.focus_resource.as_ref().expect("focus resource");
                        assert_eq!(res["id"], tid.as_str());
                        assert_eq!(res["meta"]["versionId"], e.number.to_string());
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn full_resource_carries_each_focus_at_the_version_that_triggered_its_event() {
    let rx = Receiver::start().await;
    let h = herald(100, &[]);
    let c = client();
    let s4 = subscribe(
        &c,
        &h.fhir("r4"),
        &r4_sub(&rx.url("/r4"), "full-resource", FHIR, &[], "r4"),
    )
    .await;
    let s5 = subscribe(
        &c,
        &h.fhir("r5"),
        &r5_sub(&rx.url("/r5"), "full-resource", FHIR, &[], "r5"),
    )
    .await;
    wait_status(&c, &h.fhir("r4"), &s4, "active").await;
    wait_status(&c, &h.fhir("r5"), &s5, "active").await;
    // hold deliveries so that every notification is built after all three versions exist
    rx.set(Behaviour::Status(503, None));
    for v in ["r4", "r5"] {
        let mut t = create(&c, &h.fhir(v), "Task", &task("Organization/lab")).await;
        for status in ["accepted", "in-progress"] {
            t["status"] = json!(status);
            t = put(&c, &h.fhir(v), &t).await;
        }
    }
    rx.set(Behaviour::Accept);
    for path in ["/r4", "/r5"] {
        let got = rx
            .wait_until(path, "events 1..=3", WAIT, |l| has_all_events(l, 3))
            .await;
        assert_eq!(delivered_events(&got), [1, 2, 3], "{}", summary(&got));
        for r in got.iter().filter(|r| r.accepted()) {
            for e in &r.notification.as_ref().unwrap().events {
                let res = e.focus_resource.as_ref().expect("focus resource");
                assert_eq!(
                    res["meta"]["versionId"],
                    e.number.to_string(),
                    "event {} carries the version that triggered it: {}",
                    e.number,
                    r.body
                );
                let want = ["requested", "accepted", "in-progress"][e.number as usize - 1];
                assert_eq!(res["status"], want);
            }
        }
    }
}

#[tokio::test]
async fn heartbeats_arrive_while_idle_only_when_a_period_is_set() {
    let rx = Receiver::start().await;
    let h = herald(3, &[]);
    let c = client();
    let mut beat5 = r5_sub(&rx.url("/beat-r5"), "id-only", FHIR, &[], "b5");
    beat5["heartbeatPeriod"] = json!(1);
    subscribe(&c, &h.fhir("r5"), &beat5).await;
    let mut beat4 = r4_sub(&rx.url("/beat-r4"), "empty", FHIR, &[], "b4");
    r4_ext(&mut beat4, R4_HEARTBEAT, "valueUnsignedInt", json!(1));
    subscribe(&c, &h.fhir("r4"), &beat4).await;
    subscribe(
        &c,
        &h.fhir("r5"),
        &r5_sub(&rx.url("/quiet-r5"), "id-only", FHIR, &[], "q5"),
    )
    .await;
    subscribe(
        &c,
        &h.fhir("r4"),
        &r4_sub(&rx.url("/quiet-r4"), "id-only", FHIR, &[], "q4"),
    )
    .await;
    let start = Instant::now();
    for (path, r5) in [("/beat-r5", true), ("/beat-r4", false)] {
        let got = rx
            .wait_until(path, "two heartbeats", WAIT, |l| {
                of_kind(l, NotificationType::Heartbeat).len() >= 2
            })
            .await;
        for hb in of_kind(&got, NotificationType::Heartbeat) {
            assert!(hb.accepted());
            assert_bundle_shape(hb, r5);
            let n = hb.notification.as_ref().unwrap();
            assert!(n.events.is_empty(), "{}", hb.body);
            assert_eq!(n.events_since_start, Some(0));
            assert_eq!(entries(hb).len(), 1, "{}", hb.body);
        }
    }
    // the quiet ones have been idle at least as long (plus a margin): handshake only
    tokio::time::sleep((Duration::from_secs(3)).saturating_sub(start.elapsed())).await;
    for path in ["/quiet-r5", "/quiet-r4"] {
        let got = rx.on(path);
        assert_eq!(got.len(), 1, "{path}: {}", summary(&got));
        assert_eq!(got[0].kind(), Some(NotificationType::Handshake));
    }
}

#[tokio::test]
async fn a_backlog_is_delivered_in_order_in_notifications_of_at_most_max_count_events() {
    let rx = Receiver::start().await;
    let h = herald(100, &[]);
    let c = client();
    let mut s4 = r4_sub(&rx.url("/r4"), "id-only", FHIR, &[], "r4");
    r4_ext(&mut s4, R4_MAX_COUNT, "valuePositiveInt", json!(3));
    let id4 = subscribe(&c, &h.fhir("r4"), &s4).await;
    let mut s5 = r5_sub(&rx.url("/r5"), "full-resource", FHIR, &[], "r5");
    s5["maxCount"] = json!(4);
    let id5 = subscribe(&c, &h.fhir("r5"), &s5).await;
    wait_status(&c, &h.fhir("r4"), &id4, "active").await;
    wait_status(&c, &h.fhir("r5"), &id5, "active").await;
    rx.set(Behaviour::Status(503, None));
    for v in ["r4", "r5"] {
        for i in 0..11 {
            create(&c, &h.fhir(v), "Task", &task(&format!("Organization/o{i}"))).await;
        }
    }
    rx.set(Behaviour::Accept);
    for (path, max) in [("/r4", 3), ("/r5", 4)] {
        let got = rx
            .wait_until(path, "events 1..=11", WAIT, |l| has_all_events(l, 11))
            .await;
        assert_eq!(
            delivered_events(&got),
            (1..=11).collect::<Vec<u64>>(),
            "in order, each once: {}",
            summary(&got)
        );
        let sizes: Vec<usize> = got
            .iter()
            .filter(|r| r.kind() == Some(NotificationType::EventNotification))
            .map(|r| r.event_numbers().len())
            .collect();
        assert!(
            sizes.iter().all(|n| (1..=max).contains(n)),
            "never more than maxCount={max}: {sizes:?}"
        );
        assert!(
            sizes.iter().any(|n| *n > 1),
            "a backlog is batched: {sizes:?}"
        );
    }
}

#[tokio::test]
async fn a_5xx_outage_sets_error_keeps_counting_and_recovery_delivers_everything_then_active() {
    let rx = Receiver::start().await;
    let h = herald(2, &[]);
    let c = client();
    let base = h.fhir("r4");
    let id = subscribe(
        &c,
        &base,
        &r4_sub(
            &rx.url("/hook"),
            "id-only",
            FHIR,
            &[
                "Authorization: Bearer s3cret",
                "X-Correlation-Id: outage",
                "X-Auth: s3cret",
                "X-Client-Credential: s3cret",
                "Bearer: s3cret",
            ],
            "outage",
        ),
    )
    .await;
    wait_status(&c, &base, &id, "active").await;
    rx.set(Behaviour::Status(500, None));
    for _ in 0..3 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    // error after two consecutive failures: in the stored resource, $status and the admin view
    let stored = wait_status(&c, &base, &id, "error").await;
    assert!(
        stored["error"].as_str().is_some_and(|e| e.contains("500")),
        "the reason is recorded: {stored}"
    );
    assert_eq!(status_op(&c, &base, &id).await.0, "error");
    // events keep being recorded and counted while in error
    for _ in 0..2 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    assert_eq!(status_op(&c, &base, &id).await, ("error".to_owned(), 5));
    let row = admin_row(&c, &h, &id).await;
    assert_eq!(row["status"], "error", "{row}");
    assert_eq!(row["events_since_start"], 5, "{row}");
    assert_eq!(row["last_delivered_event"], 0, "{row}");
    assert_eq!(row["queue_depth"], 5, "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{row}"
    );
    // the delivery log lists the failed attempts, every header value redacted but the few
    // known-harmless ones
    let failed = wait_attempts(&c, &h, &format!("subscription={id}&outcome=failed"), 2).await;
    for a in &failed {
        assert_eq!(a["outcome"], "failed", "{a}");
        assert_eq!(a["subscription"], id.as_str(), "{a}");
        assert_eq!(a["http_status"], 500, "{a}");
        assert!(a["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{a}");
        let headers = a["request_headers"].as_array().unwrap();
        assert!(
            headers.contains(&json!(["authorization", "[redacted]"])),
            "{a}"
        );
        assert!(
            headers.contains(&json!(["x-correlation-id", "outage"])),
            "{a}"
        );
        for name in ["x-auth", "x-client-credential", "bearer"] {
            assert!(
                headers.contains(&json!([name, "[redacted]"])),
                "{name}: {a}"
            );
        }
        assert!(!a.to_string().contains("s3cret"), "{a}");
    }
    // recovery: every event arrives, in order, once; the status goes back to active
    rx.set(Behaviour::Accept);
    let got = rx
        .wait_until("/hook", "events 1..=5", WAIT, |l| has_all_events(l, 5))
        .await;
    assert_eq!(delivered_events(&got), [1, 2, 3, 4, 5], "{}", summary(&got));
    wait_status(&c, &base, &id, "active").await;
    assert_eq!(status_op(&c, &base, &id).await, ("active".to_owned(), 5));
    let row = admin_row(&c, &h, &id).await;
    assert_eq!(row["last_delivered_event"], 5, "{row}");
    assert_eq!(row["queue_depth"], 0, "{row}");
    let delivered = wait_attempts(&c, &h, &format!("subscription={id}&outcome=delivered"), 2).await;
    assert!(delivered.iter().all(|a| a["outcome"] == "delivered"));
}

#[tokio::test]
async fn refused_connections_are_retried_and_a_redrive_delivers_without_waiting_for_the_schedule() {
    let rx = Receiver::start().await;
    // after the second failure the next attempt is a minute away: only a redrive is quick
    let h = herald(2, &[("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1, 60]")]);
    let c = client();
    let base = h.fhir("r5");
    let id = subscribe(
        &c,
        &base,
        &r5_sub(&rx.url("/down"), "id-only", FHIR, &[], "down"),
    )
    .await;
    wait_status(&c, &base, &id, "active").await;
    rx.refuse().await;
    create(&c, &base, "Task", &task("Organization/lab")).await;
    create(&c, &base, "Task", &task("Organization/lab")).await;
    let failed = wait_attempts(&c, &h, &format!("subscription={id}&outcome=failed"), 2).await;
    for a in &failed {
        assert!(a["http_status"].is_null(), "{a}");
        assert!(
            a["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("connect")),
            "{a}"
        );
    }
    wait_status(&c, &base, &id, "error").await;
    let row = admin_row(&c, &h, &id).await;
    assert_eq!(row["queue_depth"], 2, "{row}");
    assert!(row["next_attempt_at_ms"].is_u64(), "{row}");
    rx.recover().await;
    let r = c
        .post(format!("{}/admin/subscriptions/r5/{id}/redrive", h.root))
        .send()
        .await
        .unwrap();
    // carried out (and audited) before the answer
    assert_eq!(r.status(), StatusCode::OK);
    let got = rx
        .wait_until("/down", "events 1 and 2 after the redrive", WAIT, |l| {
            has_all_events(l, 2)
        })
        .await;
    assert_eq!(delivered_events(&got), [1, 2], "{}", summary(&got));
    wait_status(&c, &base, &id, "active").await;
    // redriving something that does not exist is a 404
    let r = c
        .post(format!("{}/admin/subscriptions/r5/nope/redrive", h.root))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn retry_after_on_429_and_503_is_honoured_over_the_schedule() {
    let rx = Receiver::start().await;
    // the schedule says ~1 s; the subscriber says 2 s
    let h = herald(100, &[]);
    let c = client();
    let base = h.fhir("r4");
    let id = subscribe(
        &c,
        &base,
        &r4_sub(&rx.url("/busy"), "id-only", FHIR, &[], "busy"),
    )
    .await;
    wait_status(&c, &base, &id, "active").await;
    for status in [429, 503] {
        rx.set(Behaviour::Status(status, Some(2)));
        create(&c, &base, "Task", &task("Organization/lab")).await;
        let got = rx
            .wait_until("/busy", "two refused attempts", WAIT, |l| {
                l.iter().filter(|r| r.answered == status).count() >= 2
            })
            .await;
        let at: Vec<Instant> = got
            .iter()
            .filter(|r| r.answered == status)
            .map(|r| r.at)
            .collect();
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(1900),
                "Retry-After: 2 after a {status} was not honoured: retried after {gap:?}"
            );
        }
        rx.set(Behaviour::Accept);
    }
    let got = rx
        .wait_until("/busy", "events 1 and 2", WAIT, |l| has_all_events(l, 2))
        .await;
    assert_eq!(delivered_events(&got), [1, 2], "{}", summary(&got));
}

#[tokio::test]
async fn loopback_endpoints_are_refused_at_creation_unless_private_endpoints_are_allowed() {
    let h = Herald::start();
    let c = client();
    for (v, endpoint, mentions) in [
        ("r4", "http://127.0.0.1:9/hook", "127.0.0.1"),
        ("r4", "http://localhost:9/hook", "localhost"),
        ("r5", "http://127.0.0.1:9/hook", "127.0.0.1"),
        ("r5", "http://localhost:9/hook", "localhost"),
        ("r5", "http://[::1]:9/hook", "::1"),
    ] {
        let body = if v == "r4" {
            r4_subscription("cow-task-changed", &[], endpoint, "id-only")
        } else {
            r5_subscription("cow-task-changed", &[], endpoint, "id-only")
        };
        let (s, oo) = send(
            &c,
            reqwest::Method::POST,
            &format!("{}/Subscription", h.fhir(v)),
            &body,
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v} {endpoint}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert!(
            oo.to_string().contains(mentions),
            "the outcome names the address: {oo}"
        );
        let all = get(&c, &format!("{}/Subscription", h.fhir(v))).await;
        assert_eq!(all["total"], 0, "nothing stored: {all}");
    }
}

/// `Subscription.end`: a subscription is notified until its end, then Herald turns it `off`
/// (R5: "the time for the server to turn the subscription off"; R4 says delete, and the server
/// may deviate: `off` keeps its `$status` readable) and a later change notifies nothing. One
/// whose end has already passed is refused at creation, and `end` must be an instant.
#[tokio::test]
async fn a_subscription_is_turned_off_when_its_end_passes_and_then_notifies_nothing() {
    let rx = Receiver::start().await;
    let h = herald(3, &[]);
    let c = client();
    let base = h.fhir("r4");
    let instant = |d: Duration| {
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + d).to_string()
    };
    let past =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - Duration::from_secs(60))
            .to_string();
    let mut ended = r4_sub(&rx.url("/ended"), "id-only", FHIR, &[], "ended");
    ended["end"] = json!(past);
    let refused = [StatusCode::UNPROCESSABLE_ENTITY];
    let url = format!("{base}/Subscription");
    post_refused(&c, &url, &ended, &refused, "end").await;
    let mut garbled = r4_sub(&rx.url("/garbled"), "id-only", FHIR, &[], "garbled");
    garbled["end"] = json!("soon");
    // Not a FHIR instant: refused by the core definitions (400) before any business rule.
    post_refused(
        &c,
        &url,
        &garbled,
        &[StatusCode::BAD_REQUEST],
        "not a valid instant",
    )
    .await;

    let mut sub = r4_sub(&rx.url("/ending"), "id-only", FHIR, &[], "ending");
    sub["end"] = json!(instant(Duration::from_secs(3)));
    let id = subscribe(&c, &base, &sub).await;
    wait_status(&c, &base, &id, "active").await;
    create(&c, &base, "Task", &task("Organization/a")).await;
    rx.wait_until("/ending", "one event", WAIT, |l| {
        delivered_events(l) == vec![1]
    })
    .await;
    let off = wait_status(&c, &base, &id, "off").await;
    assert_eq!(off["end"], sub["end"], "the end is kept");
    let (status, _) = status_op(&c, &base, &id).await;
    assert_eq!(status, "off");
    // A change after the end records no event and sends nothing.
    create(&c, &base, "Task", &task("Organization/a")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = rx.on("/ending");
    assert_eq!(delivered_events(&got), vec![1], "{}", summary(&got));
    let (_, events) = status_op(&c, &base, &id).await;
    assert_eq!(events, 1, "no event is counted after the end");
}

/// An end that passes while Herald is down is honoured at start-up: the subscription comes back
/// `off`, and changes after the restart notify nothing.
#[tokio::test]
async fn an_end_passed_while_herald_was_down_turns_the_subscription_off_at_start_up() {
    let rx = Receiver::start().await;
    let mut h = herald(3, &[]);
    let c = client();
    let end =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(2))
            .to_string();
    let mut sub = r4_sub(&rx.url("/down"), "id-only", FHIR, &[], "down");
    sub["end"] = json!(end);
    let id = subscribe(&c, &h.fhir("r4"), &sub).await;
    wait_status(&c, &h.fhir("r4"), &id, "active").await;
    assert!(h.terminate(), "graceful stop");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    h.restart();
    let base = h.fhir("r4");
    wait_status(&c, &base, &id, "off").await;
    create(&c, &base, "Task", &task("Organization/a")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = rx.on("/down");
    assert!(delivered_events(&got).is_empty(), "{}", summary(&got));
    let (_, events) = status_op(&c, &base, &id).await;
    assert_eq!(events, 0);
}

#[tokio::test]
async fn channel_types_that_are_not_delivered_are_refused_and_nothing_is_stored() {
    let h = herald(5, &[]);
    let c = client();
    // `message` is delivered (tests/messaging.rs); `email` is not.
    for (tenant, kind, endpoint) in [
        ("r4", "email", "mailto:lab@example.org"),
        ("r5", "email", "mailto:lab@example.org"),
    ] {
        let base = h.fhir(tenant);
        let mut sub = if tenant == "r4" {
            r4_subscription("cow-task-changed", &[], endpoint, "id-only")
        } else {
            r5_subscription("cow-task-changed", &[], endpoint, "id-only")
        };
        if tenant == "r4" {
            sub["channel"]["type"] = json!(kind);
        } else {
            sub["channelType"]["code"] = json!(kind);
        }
        post_refused(
            &c,
            &format!("{base}/Subscription"),
            &sub,
            &[StatusCode::UNPROCESSABLE_ENTITY],
            &format!("channel type '{kind}' is not delivered"),
        )
        .await;
        let all = get(&c, &format!("{base}/Subscription")).await;
        assert_eq!(all["total"], 0, "{tenant} {kind}: {all}");
    }
}
