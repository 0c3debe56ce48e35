//! Transaction and batch Bundles at `POST [base]`, end to end against the real binary: a
//! placer's ServiceRequest and Coordination Task created together with `urn:uuid:` references
//! resolved; all or nothing when one entry fails (nothing stored, no event recorded, nothing
//! delivered); conditional create and update by identifier; notifications in entry order; batch
//! entries failing alone; a ServiceRequest written before the Task naming its owner reaching the
//! owner's `cow-servicerequest-for-owner` subscription; and, under `kill -9` mid-load, no partial
//! transaction ever visible or delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_subscriptions::notification::NotificationType;
use herald_tests::receiver::{Receiver, delivered_events, of_kind};
use herald_tests::{Herald, client, create, get, r4_subscription, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn herald() -> Herald {
    Herald::start_with(&[
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
    ])
}

fn service_request(identifier: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "identifier": [{"system": "https://placer.example/sr", "value": identifier}],
    })
}

fn coordination_task(identifier: &str, focus: &str, owner: &str) -> Value {
    json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "identifier": [{"system": "https://placer.example/task", "value": identifier}],
        "focus": {"reference": focus},
        "requester": {"reference": "Organization/placer"},
        "owner": {"reference": owner},
    })
}

fn entry(full_url: &str, resource: Value, method: &str, url: &str) -> Value {
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}})
}

/// The order placed as one transaction: ServiceRequest + Task pointing at it by `urn:uuid:`.
fn order(n: u32, owner: &str) -> Value {
    let sr = format!("urn:uuid:00000000-0000-4000-8000-{n:012}");
    let task = format!("urn:uuid:00000000-0000-4000-9000-{n:012}");
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry(&sr, service_request(&format!("SR-{n}")), "POST", "ServiceRequest"),
            entry(&task, coordination_task(&format!("T-{n}"), &sr, owner), "POST", "Task"),
        ],
    })
}

async fn post_bundle(c: &reqwest::Client, base: &str, bundle: &Value) -> (StatusCode, Value) {
    send(c, Method::POST, base, bundle).await
}

async fn count(c: &reqwest::Client, base: &str, query: &str) -> u64 {
    let (s, b) = get(c, &format!("{base}/{query}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["total"].as_u64().unwrap()
}

#[tokio::test]
async fn a_transaction_creates_the_order_with_references_resolved() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let (s, resp) = post_bundle(&c, &base, &order(1, "Organization/lab")).await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    assert_eq!(resp["type"], "transaction-response");
    let entries = resp["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(e["response"]["status"], "201 Created", "{e}");
        assert!(
            e["response"]["location"]
                .as_str()
                .unwrap()
                .contains("/_history/1")
        );
    }
    let sr_url = entries[0]["fullUrl"].as_str().unwrap();
    let sr_id = sr_url.rsplit('/').next().unwrap();
    let task = &entries[1]["resource"];
    assert_eq!(
        task["focus"]["reference"],
        format!("ServiceRequest/{sr_id}")
    );
    // The stored Task says the same.
    let task_url = entries[1]["fullUrl"].as_str().unwrap();
    let (_, stored) = get(&c, task_url).await;
    assert_eq!(
        stored["focus"]["reference"],
        format!("ServiceRequest/{sr_id}")
    );
}

#[tokio::test]
async fn one_failing_entry_leaves_nothing_of_the_transaction_and_notifies_nobody() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let rx = Receiver::start().await;
    let sub = r4_subscription("cow-task-changed", &[], &rx.url("/tasks"), "id-only");
    create(&c, &base, "Subscription", &sub).await;
    rx.wait_until("/tasks", "a handshake", WAIT, |l| {
        !of_kind(l, NotificationType::Handshake).is_empty()
    })
    .await;
    // Entry 1 is fine, entry 2 is not valid FHIR (no status): nothing may be written.
    let mut bad = order(2, "Organization/lab");
    bad["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    let (s, oo) = post_bundle(&c, &base, &bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    let diag = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(diag.contains("Bundle.entry[1]"), "{diag}");
    // An id conflict found only while applying (the store refuses the second write) is the
    // same: a PUT with If-Match on a Task that does not exist.
    let mut conflict = order(3, "Organization/lab");
    conflict["entry"][1]["request"] =
        json!({"method": "PUT", "url": "Task/t-3", "ifMatch": "W/\"4\""});
    conflict["entry"][1]["resource"]["id"] = json!("t-3");
    let (s, oo) = post_bundle(&c, &base, &conflict).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{oo}");
    assert_eq!(count(&c, &base, "ServiceRequest").await, 0);
    assert_eq!(count(&c, &base, "Task").await, 0);
    // A good transaction afterwards is event 1: the refused ones recorded nothing.
    let (s, _) = post_bundle(&c, &base, &order(4, "Organization/lab")).await;
    assert_eq!(s, StatusCode::OK);
    let got = rx
        .wait_until("/tasks", "event 1", WAIT, |l| {
            !delivered_events(l).is_empty()
        })
        .await;
    assert_eq!(delivered_events(&got), vec![1]);
}

#[tokio::test]
async fn conditional_create_and_update_by_identifier_find_the_existing_resources() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let (s, first) = post_bundle(&c, &base, &order(5, "Organization/lab")).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let task_id = first["entry"][1]["fullUrl"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    // The placer sends it again: the ServiceRequest is created only if none has the
    // identifier, the Task is updated in place by identifier.
    let sr = "urn:uuid:00000000-0000-4000-8000-000000000055";
    let mut task = coordination_task("T-5", sr, "Organization/lab");
    task["status"] = json!("cancelled");
    let again = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": sr, "resource": service_request("SR-5"),
             "request": {"method": "POST", "url": "ServiceRequest", "ifNoneExist": "identifier=https://placer.example/sr|SR-5"}},
            entry("urn:uuid:00000000-0000-4000-9000-000000000055", task, "PUT",
                  "Task?identifier=https://placer.example/task|T-5"),
        ],
    });
    let (s, resp) = post_bundle(&c, &base, &again).await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    assert_eq!(resp["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(resp["entry"][1]["response"]["status"], "200 OK");
    assert!(
        resp["entry"][1]["fullUrl"]
            .as_str()
            .unwrap()
            .ends_with(&task_id)
    );
    assert_eq!(count(&c, &base, "ServiceRequest").await, 1);
    assert_eq!(count(&c, &base, "Task").await, 1);
    let (_, stored) = get(&c, &format!("{base}/Task/{task_id}")).await;
    assert_eq!(stored["status"], "cancelled");
    assert_eq!(stored["meta"]["versionId"], "2");
    // The reference to the entry that matched an existing resource points at it.
    let sr_id = first["entry"][0]["fullUrl"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(
        stored["focus"]["reference"],
        format!("ServiceRequest/{sr_id}")
    );
}

#[tokio::test]
async fn notifications_of_a_transaction_follow_its_entry_order() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let rx = Receiver::start().await;
    let sub = r4_subscription("cow-task-changed", &[], &rx.url("/tasks"), "full-resource");
    create(&c, &base, "Subscription", &sub).await;
    let entries: Vec<Value> = (0..5)
        .map(|i| {
            let mut t =
                coordination_task(&format!("TO-{i}"), "ServiceRequest/x", "Organization/lab");
            t["id"] = json!(format!("order-{i}"));
            entry(
                &format!("urn:uuid:00000000-0000-4000-a000-00000000000{i}"),
                t,
                "PUT",
                &format!("Task/order-{i}"),
            )
        })
        .collect();
    let (s, resp) = post_bundle(
        &c,
        &base,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    let got = rx
        .wait_until("/tasks", "five events", WAIT, |l| {
            delivered_events(l).len() >= 5
        })
        .await;
    let foci: Vec<String> = got
        .iter()
        .filter_map(|r| r.notification.as_ref())
        .flat_map(|n| n.events.iter())
        .filter_map(|e| e.focus.clone())
        .collect();
    let ids: Vec<&str> = foci
        .iter()
        .map(|f| f.split("/Task/").nth(1).unwrap().split('/').next().unwrap())
        .collect();
    assert_eq!(ids, ["order-0", "order-1", "order-2", "order-3", "order-4"]);
    assert_eq!(delivered_events(&got), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_alone() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let mut good = coordination_task("B-1", "ServiceRequest/x", "Organization/lab");
    good["id"] = json!("b-1");
    let bad = json!({"resourceType": "Task", "intent": "order"});
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            entry("urn:uuid:00000000-0000-4000-b000-000000000001", good, "PUT", "Task/b-1"),
            entry("urn:uuid:00000000-0000-4000-b000-000000000002", bad, "POST", "Task"),
            {"request": {"method": "GET", "url": "Task/b-1"}},
            {"request": {"method": "GET", "url": "Task?identifier=https://placer.example/task|B-1"}},
        ],
    });
    let (s, resp) = post_bundle(&c, &base, &batch).await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    assert_eq!(resp["type"], "batch-response");
    let e = resp["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert!(
        e[1]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("400"),
        "{}",
        e[1]
    );
    assert_eq!(
        e[1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(e[2]["resource"]["id"], "b-1");
    assert_eq!(e[3]["resource"]["total"], 1);
    assert_eq!(count(&c, &base, "Task").await, 1);
}

#[tokio::test]
async fn malformed_bundles_are_refused_with_the_entry_named() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let cases = [
        (
            json!({"resourceType": "Bundle", "type": "collection"}),
            "transaction or batch",
        ),
        (json!({"resourceType": "Task"}), "Bundle"),
        (
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": service_request("x"), "request": {"method": "POST", "url": "ServiceRequest/abc"}}]}),
            "Bundle.entry[0]",
        ),
        (
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                entry("urn:uuid:00000000-0000-4000-c000-000000000001",
                      coordination_task("X", "urn:uuid:00000000-0000-4000-c000-000000000099", "Organization/lab"),
                      "POST", "Task")]}),
            "names no entry",
        ),
        (
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                entry("urn:uuid:00000000-0000-4000-c000-000000000002", service_request("Y"), "PATCH", "ServiceRequest/y")]}),
            "not supported",
        ),
        (
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                entry("urn:uuid:00000000-0000-4000-c000-000000000003",
                      r4_subscription("cow-task-changed", &[], "http://127.0.0.1:9/x", "id-only"),
                      "POST", "Subscription")]}),
            "cannot be written in a transaction",
        ),
    ];
    for (bundle, needle) in cases {
        let (s, oo) = post_bundle(&c, &base, &bundle).await;
        assert!(s.is_client_error(), "{bundle}: {s} {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
        let diag = oo["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diag.contains(needle), "'{diag}' should say '{needle}'");
    }
    assert_eq!(count(&c, &base, "ServiceRequest").await, 0);
    assert_eq!(count(&c, &base, "Task").await, 0);
}

/// COW's usual order: the ServiceRequest exists first, then the Task naming the owner.
#[tokio::test]
async fn the_owner_hears_of_a_service_request_when_the_task_naming_it_arrives_later() {
    let h = herald();
    let c = client();
    let base = h.fhir("r4");
    let lab = Receiver::start().await;
    let other = Receiver::start().await;
    for (rx, owner) in [
        (&lab, "Organization/lab"),
        (&other, "Organization/other-lab"),
    ] {
        let sub = r4_subscription(
            "cow-servicerequest-for-owner",
            &[&format!("ServiceRequest?task-owner={owner}")],
            &rx.url("/sr"),
            "full-resource",
        );
        create(&c, &base, "Subscription", &sub).await;
    }
    let mut sr = service_request("SR-L");
    sr["id"] = json!("sr-late");
    let (s, _) = send(
        &c,
        Method::PUT,
        &format!("{base}/ServiceRequest/sr-late"),
        &sr,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut task = coordination_task("T-L", "ServiceRequest/sr-late", "Organization/lab");
    task["id"] = json!("t-late");
    let (s, _) = send(&c, Method::PUT, &format!("{base}/Task/t-late"), &task).await;
    assert_eq!(s, StatusCode::CREATED);
    let got = lab
        .wait_until("/sr", "news of the ServiceRequest", WAIT, |l| {
            !delivered_events(l).is_empty()
        })
        .await;
    let n = got
        .iter()
        .filter_map(|r| r.notification.as_ref())
        .find(|n| n.kind == NotificationType::EventNotification)
        .unwrap();
    let e = &n.events[0];
    assert!(
        e.focus
            .as_deref()
            .unwrap()
            .contains("ServiceRequest/sr-late"),
        "{e:?}"
    );
    assert!(
        e.additional_context
            .iter()
            .any(|a| a.contains("Task/t-late")),
        "{e:?}"
    );
    // Reassigned to the other lab: the other lab hears now; the first lab hears nothing more
    // about later changes of the ServiceRequest.
    task["owner"] = json!({"reference": "Organization/other-lab"});
    let (s, _) = send(&c, Method::PUT, &format!("{base}/Task/t-late"), &task).await;
    assert_eq!(s, StatusCode::OK);
    other
        .wait_until("/sr", "news after reassignment", WAIT, |l| {
            !delivered_events(l).is_empty()
        })
        .await;
    sr["note"] = json!([{"text": "fasting required"}]);
    let (s, _) = send(
        &c,
        Method::PUT,
        &format!("{base}/ServiceRequest/sr-late"),
        &sr,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    other
        .wait_until("/sr", "the ServiceRequest update", WAIT, |l| {
            delivered_events(l).len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(delivered_events(&lab.received()), vec![1]);
}

/// `kill -9` while transactions are being written: after the restart, every transaction is
/// either whole or absent, and every acknowledged one is whole.
#[tokio::test]
async fn no_partial_transaction_survives_a_crash() {
    let mut h = herald();
    let c = client();
    let base = h.fhir("r4");
    let writer = {
        let c = c.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 100..400u32 {
                match c
                    .post(&base)
                    .header("content-type", "application/fhir+json")
                    .body(order(n, "Organization/lab").to_string())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::OK => acked.push(n),
                    _ => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.kill9();
    let acked = writer.await.unwrap();
    assert!(
        !acked.is_empty(),
        "no transaction was acknowledged before the kill"
    );
    h.restart();
    let base = h.fhir("r4");
    let ids = |b: &Value, system: &str| -> Vec<String> {
        b["entry"]
            .as_array()
            .map(|a| {
                a.iter()
                    .flat_map(|e| {
                        e["resource"]["identifier"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .filter(|i| i["system"] == system)
                    .filter_map(|i| i["value"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, srs) = get(&c, &format!("{base}/ServiceRequest?_count=1000")).await;
    let (_, tasks) = get(&c, &format!("{base}/Task?_count=1000")).await;
    let mut sr_ns: Vec<String> = ids(&srs, "https://placer.example/sr")
        .into_iter()
        .map(|v| v.trim_start_matches("SR-").to_owned())
        .collect();
    let mut task_ns: Vec<String> = ids(&tasks, "https://placer.example/task")
        .into_iter()
        .map(|v| v.trim_start_matches("T-").to_owned())
        .collect();
    sr_ns.sort();
    task_ns.sort();
    assert_eq!(sr_ns, task_ns, "a transaction was stored in part");
    for n in &acked {
        assert!(
            sr_ns.contains(&n.to_string()),
            "acknowledged order {n} lost"
        );
    }
}

/// With credentials, a transaction is held to the access rules entry by entry: a fulfiller
/// cannot create another lab's order through one, a placer's conditional update cannot find
/// what it may not see, and a message is held to the same rules.
#[tokio::test]
async fn transactions_and_messages_obey_the_access_rules_entry_by_entry() {
    use herald_tests::cow::{Party, auth_config, side};
    let h = side(&auth_config(&[
        ("placer", "placer"),
        ("lab-1", "fulfiller"),
        ("lab-2", "fulfiller"),
    ]));
    let base = h.fhir("r4");
    let placer = Party::with_key("placer");
    let lab2 = Party::with_key("lab-2");
    let mut mine = order(900, "Organization/lab-1");
    mine["entry"][0]["resource"]["requester"] = json!({"reference": "Organization/placer"});
    mine["entry"][1]["resource"]["requester"] = json!({"reference": "Organization/placer"});
    let (s, resp) = placer.call(Method::POST, &base, Some(&mine)).await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    // A fulfiller may not place an order as the placer.
    let mut forged = order(901, "Organization/lab-2");
    forged["entry"][1]["resource"]["requester"] = json!({"reference": "Organization/placer"});
    let (s, oo) = lab2.call(Method::POST, &base, Some(&forged)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{oo}");
    assert!(oo.to_string().contains("Bundle.entry[0]"), "{oo}");
    // The other lab's conditional update and message by the Task's identifier find nothing it
    // may see: whatever they write, lab-1's Task is untouched. (What they may write is a Task
    // of lab-2's own: conditional matching only sees what the caller may see, see security.md.)
    let lab1_task = resp["entry"][1]["fullUrl"].as_str().unwrap().to_owned();
    let mut takeover = coordination_task("T-900", "ServiceRequest/x", "Organization/lab-2");
    takeover["requester"] = json!({"reference": "Organization/placer"});
    takeover["status"] = json!("cancelled");
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("urn:uuid:00000000-0000-4000-d000-000000000001", takeover.clone(), "PUT",
              "Task?identifier=https://placer.example/task|T-900")]});
    let (s, r) = lab2.call(Method::POST, &base, Some(&tx)).await;
    if s == StatusCode::OK {
        assert_ne!(r["entry"][0]["fullUrl"], json!(lab1_task), "{r}");
    }
    let msg = json!({"resourceType": "Bundle", "type": "message", "entry": [
        {"fullUrl": "urn:uuid:00000000-0000-4000-d000-000000000010", "resource": {
            "resourceType": "MessageHeader", "id": "lab-2-takeover",
            "eventCoding": {"system": "http://hl7.org/fhir/uv/cow/CodeSystem/temp", "code": "order-update"},
            "source": {"endpoint": "http://lab-2.example/fhir"}}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-d000-000000000011", "resource": takeover}]});
    let (s, r) = lab2
        .call(
            Method::POST,
            &format!("{base}/$process-message"),
            Some(&msg),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let still = placer.read(&lab1_task).await;
    assert_eq!(still["owner"]["reference"], "Organization/lab-1", "{still}");
    assert_eq!(still["status"], "requested", "{still}");
    assert_eq!(still["meta"]["versionId"], "1", "{still}");
    // Without credentials, nothing at all.
    let (s, _) = Party::anonymous()
        .call(Method::POST, &base, Some(&mine))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = Party::anonymous()
        .call(
            Method::POST,
            &format!("{base}/$process-message"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
