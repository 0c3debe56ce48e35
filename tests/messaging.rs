//! FHIR messaging end to end: `$process-message` applies a COW `new-order` and `order-update` by
//! the Task's business identifier, once per message id (a resend, also after `kill -9` and a
//! restart, gets the first answer and changes nothing); what is not a message gets a 400
//! OperationOutcome; a message whose content is refused gets `fatal-error` and changes nothing;
//! and two Herald processes kept in step by the `message` channel through an outage of the
//! counterpart: every change arrives once, in order, and both copies end the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use herald_tests::{Herald, client, create, get, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const COW: &str = "http://hl7.org/fhir/uv/cow/CodeSystem/temp";
const TASK_IDS: &str = "https://placer.example/task";

fn herald() -> Herald {
    Herald::start_with(&[
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
    ])
}

fn task(identifier: &str, status: &str) -> Value {
    json!({
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "identifier": [{"system": TASK_IDS, "value": identifier}],
        "focus": {"reference": "urn:uuid:0c1d2e3f-0000-4000-8000-000000000002"},
        "owner": {"reference": "Organization/lab"},
    })
}

fn message(id: &str, event: &str, task: Value) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {"fullUrl": "urn:uuid:0c1d2e3f-0000-4000-8000-000000000000", "resource": {
                "resourceType": "MessageHeader", "id": id,
                "eventCoding": {"system": COW, "code": event},
                "source": {"endpoint": "http://placer.example/fhir"},
                "focus": [{"reference": "urn:uuid:0c1d2e3f-0000-4000-8000-000000000001"}]}},
            {"fullUrl": "urn:uuid:0c1d2e3f-0000-4000-8000-000000000001", "resource": task},
            {"fullUrl": "urn:uuid:0c1d2e3f-0000-4000-8000-000000000002", "resource": {
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "subject": {"reference": "Patient/p1"},
                "identifier": [{"system": "https://placer.example/sr", "value": "SR-M"}]}},
        ],
    })
}

async fn process(c: &reqwest::Client, base: &str, m: &Value) -> (StatusCode, Value) {
    send(c, Method::POST, &format!("{base}/$process-message"), m).await
}

fn code(response: &Value) -> &str {
    response["entry"][0]["resource"]["response"]["code"]
        .as_str()
        .unwrap_or("")
}

async fn tasks(c: &reqwest::Client, base: &str, identifier: &str) -> Vec<Value> {
    let (s, b) = get(
        c,
        &format!("{base}/Task?identifier={TASK_IDS}|{identifier}"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["entry"]
        .as_array()
        .map(|a| a.iter().map(|e| e["resource"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_message_is_applied_once_even_when_resent_after_a_crash() {
    let mut h = herald();
    let c = client();
    let base = h.fhir("r4");
    let m = message("msg-1", "new-order", task("M-1", "requested"));
    let (s, first) = process(&c, &base, &m).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(code(&first), "ok", "{first}");
    assert_eq!(
        first["entry"][0]["resource"]["response"]["identifier"],
        "msg-1"
    );
    let (s, again) = process(&c, &base, &m).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again, first, "a resend is answered with the first response");
    let stored = tasks(&c, &base, "M-1").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["meta"]["versionId"], "1");
    // The Task's focus now points at the ServiceRequest the message carried, applied here.
    let sr = stored[0]["focus"]["reference"].as_str().unwrap();
    let (s, _) = get(&c, &format!("{base}/{sr}")).await;
    assert_eq!(s, StatusCode::OK);
    h.kill9();
    h.restart();
    let base = h.fhir("r4");
    let (_, after) = process(&c, &base, &m).await;
    assert_eq!(after, first, "the answer survives the crash");
    assert_eq!(tasks(&c, &base, "M-1").await[0]["meta"]["versionId"], "1");
    // An order-update with a new id updates the same Task (matched by identifier).
    let (_, upd) = process(
        &c,
        &base,
        &message("msg-2", "order-update", task("M-1", "accepted")),
    )
    .await;
    assert_eq!(code(&upd), "ok", "{upd}");
    let stored = tasks(&c, &base, "M-1").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "accepted");
    assert_eq!(stored[0]["meta"]["versionId"], "2");
}

#[tokio::test]
async fn what_is_not_a_message_is_refused_and_refused_content_changes_nothing() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let not_messages = [
        (
            json!({"resourceType": "Bundle", "type": "transaction"}),
            "type 'message'",
        ),
        (
            json!({"resourceType": "Bundle", "type": "message", "entry": [{"resource": task("X", "requested")}]}),
            "MessageHeader",
        ),
        (
            {
                let mut m = message("x", "new-order", task("X", "requested"));
                m["entry"][0]["resource"]
                    .as_object_mut()
                    .unwrap()
                    .remove("id");
                m
            },
            "MessageHeader.id",
        ),
    ];
    for (m, needle) in not_messages {
        let (s, oo) = process(&c, &base, &m).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{oo}"
        );
    }
    let (s, oo) = send(
        &c,
        Method::POST,
        &format!("{base}/$process-message?async=true"),
        &message("y", "new-order", task("Y", "requested")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    // Not valid FHIR inside: 400 naming the element, nothing applied.
    let mut invalid = message("msg-invalid", "new-order", task("Z", "requested"));
    invalid["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    let (s, oo) = process(&c, &base, &invalid).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    assert!(oo.to_string().contains("resource.status"), "{oo}");
    assert!(tasks(&c, &base, "Z").await.is_empty());
    // Understood as a message, refused for its content (its identifier is ambiguous here):
    // fatal-error, kept, nothing applied.
    for _ in 0..2 {
        create(&c, &base, "Task", &task("Z", "requested")).await;
    }
    let bad = message("msg-bad", "new-order", task("Z", "accepted"));
    let (s, fatal) = process(&c, &base, &bad).await;
    assert_eq!(s, StatusCode::OK, "{fatal}");
    assert_eq!(code(&fatal), "fatal-error");
    let details = fatal["entry"][1]["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap();
    assert!(details.contains("matches 2 resources"), "{details}");
    assert!(
        tasks(&c, &base, "Z")
            .await
            .iter()
            .all(|t| t["status"] == "requested")
    );
    let (s, n) = get(&c, &format!("{base}/ServiceRequest")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        n["total"], 0,
        "the ServiceRequest of the refused message was not applied"
    );
    let (_, again) = process(&c, &base, &bad).await;
    assert_eq!(again, fatal);
    let unknown = message("msg-u", "discharge", task("U", "requested"));
    let (_, u) = process(&c, &base, &unknown).await;
    assert_eq!(code(&u), "fatal-error", "{u}");
    assert!(tasks(&c, &base, "U").await.is_empty());
}

/// Polls `pred` on the Tasks with `identifier` at `base` until it holds.
async fn wait_tasks(
    c: &reqwest::Client,
    base: &str,
    identifier: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = tasks(c, base, identifier).await;
        if pred(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; Tasks {identifier} at {base}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_message_channel_keeps_a_counterparts_copy_in_step_through_an_outage() {
    let fulfiller = herald();
    // The placer comes back on the same address: the Subscription's endpoint names it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut placer = Herald::start_with(&[
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD_LISTEN", listen.as_str()),
    ]);
    let c = client();
    let f = fulfiller.fhir("r4");
    let p = placer.fhir("r4");
    // The fulfiller's Herald sends every Task change to the placer's Herald as messages.
    let sub = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "placer copy",
        "criteria": "http://herald.example.org/fhir/SubscriptionTopic/cow-task-changed",
        "channel": {"type": "message", "endpoint": format!("{p}/$process-message"),
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content", "valueCode": "full-resource"}]}},
    });
    let sub = create(&c, &f, "Subscription", &sub).await;
    let sub_id = sub["id"].as_str().unwrap();
    let mut t = task("CH-1", "requested");
    t["id"] = json!("ch-1");
    t["focus"] = json!({"reference": "ServiceRequest/sr-at-placer"});
    let put = |t: Value| {
        let c = c.clone();
        let f = f.clone();
        async move {
            let (s, v) = send(&c, Method::PUT, &format!("{f}/Task/ch-1"), &t).await;
            assert!(s.is_success(), "{v}");
        }
    };
    put(t.clone()).await;
    let copy = wait_tasks(&c, &p, "CH-1", |t| t.len() == 1).await;
    assert_eq!(copy[0]["status"], "requested");
    // The placer's Herald goes down; the fulfiller keeps working.
    placer.kill9();
    for status in ["accepted", "in-progress"] {
        t["status"] = json!(status);
        put(t.clone()).await;
    }
    t["status"] = json!("completed");
    t["output"] = json!([{"type": {"text": "report"}, "valueReference": {"reference": "DiagnosticReport/r1"}}]);
    put(t.clone()).await;
    placer.restart();
    let p = placer.fhir("r4");
    let copy = wait_tasks(&c, &p, "CH-1", |t| {
        t.len() == 1 && t[0]["status"] == "completed"
    })
    .await;
    // Every change applied once, in order: versions 1..4 at the placer, in that order.
    let (_, history) = get(
        &c,
        &format!("{p}/Task/{}/_history", copy[0]["id"].as_str().unwrap()),
    )
    .await;
    let statuses: Vec<&str> = history["entry"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["resource"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["requested", "accepted", "in-progress", "completed"]
    );
    assert_eq!(copy[0]["output"], t["output"]);
    assert_eq!(
        copy[0]["focus"], t["focus"],
        "a reference to what the message did not carry is kept"
    );
    // The fulfiller's log shows each event delivered (acknowledged by an `ok` response
    // message), none twice after success.
    let (_, log) = get(
        &c,
        &format!(
            "{}/admin/deliveries?subscription={sub_id}&outcome=delivered",
            fulfiller.root
        ),
    )
    .await;
    let mut events: Vec<u64> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["notification_type"] == "event-notification")
        .flat_map(|e| e["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_u64())
        .collect();
    events.sort_unstable();
    assert_eq!(events, [1, 2, 3, 4], "{log}");
}
