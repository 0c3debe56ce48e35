//! Clinical Order Workflows over transactions and FHIR messaging, with two Herald processes:
//!
//! - pattern 1 through one transaction: the placer POSTs its ServiceRequest and the
//!   Coordination Task (`urn:uuid:` references, conditional on the shared identifiers) to the
//!   fulfiller's Herald, and hears the create with the order as additional context, then every
//!   status change; the same transaction again creates nothing;
//! - pattern 3 (messaging): each side's Subscription uses the `message` channel with the
//!   counterpart's `$process-message` as endpoint, so a change to the Coordination Task on one
//!   side arrives as a COW `order-update` message Bundle that the other side applies by the
//!   Task's identifier. Played clean, then with a duplicate, a reordered pair and a counterpart
//!   outage (its process stopped and restarted on the same port): the final Task on both sides
//!   is the clean run's, nothing lost, nothing applied twice.
//!
//! Pattern 3 is written against the interface the lead is landing on `main` ("Messaging:"
//! commits) and ignored until then, with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use herald_tests::Herald;
use herald_tests::cow::{
    COW_ENV, COW_TEMP, CowPair, LAB_1, PLACER, PLACER_ORDERS, PLACER_TASKS, Party, WAIT,
    assert_notes, coordination_task, local, service_request, subscription, wait_notes, with_status,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The transaction a COW placer sends: its order and the Coordination Task, linked by
/// `urn:uuid:`, each created only if its shared identifier is new.
fn order_transaction(order: &str, task: &str) -> Value {
    let mut sr = service_request(order, PLACER, LAB_1);
    sr.as_object_mut().unwrap().remove("id");
    let sr_uuid = "urn:uuid:6f1c2d2e-6a55-4a4e-9a43-2d7c0e1f0a01";
    let mut t = coordination_task(task, sr_uuid, PLACER, Some(LAB_1));
    t.as_object_mut().unwrap().remove("id");
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": sr_uuid, "resource": sr,
             "request": {"method": "POST", "url": "ServiceRequest",
                         "ifNoneExist": format!("identifier={PLACER_ORDERS}|{order}")}},
            {"fullUrl": "urn:uuid:6f1c2d2e-6a55-4a4e-9a43-2d7c0e1f0a02", "resource": t,
             "request": {"method": "POST", "url": "Task",
                         "ifNoneExist": format!("identifier={PLACER_TASKS}|{task}")}}
        ]
    })
}

#[tokio::test]
async fn pattern1_through_one_transaction_the_placer_hears_the_create_with_its_order_and_every_change()
 {
    let pair = CowPair::start().await;
    let fb = pair.fulfiller_base();
    let (placer, lab) = (Party::anonymous(), Party::anonymous());
    placer
        .subscribe(
            &fb,
            &subscription(
                "cow-task-status-changed",
                &["Task?requester=Organization/placer"],
                &pair.rx.url("/placer"),
                "placer-orders",
            ),
        )
        .await;
    let (s, resp) = placer
        .call(Method::POST, &fb, Some(&order_transaction("sr-1", "ct-1")))
        .await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    assert_eq!(resp["type"], "transaction-response");
    let locations: Vec<String> = resp["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(
                e["response"]["status"].as_str().unwrap().starts_with("201"),
                "{e}"
            );
            local(e["response"]["location"].as_str().unwrap())
        })
        .collect();
    let sr_ref = locations[0].split("/_history").next().unwrap().to_owned();
    let task_ref = locations[1].split("/_history").next().unwrap().to_owned();
    assert!(sr_ref.starts_with("ServiceRequest/") && task_ref.starts_with("Task/"));
    let mut t = placer.read(&format!("{fb}/{task_ref}")).await;
    assert_eq!(t["focus"]["reference"], sr_ref, "urn:uuid: resolved");
    assert_eq!(t["basedOn"][0]["reference"], sr_ref);
    // the same transaction again (a retry): nothing new is created, nothing notified
    let (s, again) = placer
        .call(Method::POST, &fb, Some(&order_transaction("sr-1", "ct-1")))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    for e in again["entry"].as_array().unwrap() {
        assert!(
            e["response"]["status"].as_str().unwrap().starts_with("200"),
            "conditional create found the existing resource: {e}"
        );
    }
    for status in ["accepted", "in-progress", "completed"] {
        t = lab.put(&fb, &with_status(&t, status, None)).await;
    }

    let task_id = task_ref.trim_start_matches("Task/");
    let v = |n: u32| format!("Task/{task_id}/_history/{n}");
    let (v1, v2, v3, v4) = (v(1), v(2), v(3), v(4));
    let notes = wait_notes(&pair.rx, "/placer", 4).await;
    assert_notes(
        &notes,
        "placer-orders",
        1,
        &[
            (&v1, "requested", None),
            (&v2, "accepted", None),
            (&v3, "in-progress", None),
            (&v4, "completed", None),
        ],
    );
    for n in &notes {
        assert!(
            n.context.iter().any(|c| c.starts_with(&sr_ref)),
            "the order is additional context: {:?}",
            n.context
        );
    }
    assert_eq!(placer.events_since_start(&fb, "placer-orders").await, 4);
}

// ---------------------------------------------------------------------------------------------
// Pattern 3: messaging between two Heralds
// ---------------------------------------------------------------------------------------------

/// A free loopback port (bound, then released), so that a Herald restarts where its
/// counterpart's Subscription points.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Herald listening on `port` (kept across restarts).
fn side_on(port: u16) -> Herald {
    let listen = format!("127.0.0.1:{port}");
    let mut env: Vec<(&str, &str)> = COW_ENV.to_vec();
    env.push(("HERALD_LISTEN", listen.as_str()));
    Herald::start_with(&env)
}

/// A `message` channel Subscription on `cow-task-changed` with `filter`, delivering to the
/// counterpart's `$process-message`.
fn message_subscription(filter: &str, counterpart: &str, ident: &str) -> Value {
    let mut s = subscription(
        "cow-task-changed",
        &[filter],
        &format!("{counterpart}/$process-message"),
        ident,
    );
    s["channel"]["type"] = json!("message");
    s
}

/// The Coordination Task carrying identifier `ct` on `base` (wherever its id is there).
async fn task_by_identifier(p: &Party, base: &str, ct: &str) -> Option<Value> {
    let b = p
        .read(&format!("{base}/Task?identifier={PLACER_TASKS}|{ct}"))
        .await;
    assert!(
        b["total"].as_u64().unwrap() <= 1,
        "one Task per identifier: {b}"
    );
    b["entry"][0].get("resource").cloned()
}

/// What two copies of a Task must agree on: everything but the local id and `meta`.
fn business(t: &Value) -> Value {
    let mut t = t.clone();
    let o = t.as_object_mut().unwrap();
    o.remove("id");
    o.remove("meta");
    o.remove("text");
    t
}

/// Waits until both sides hold the Task `ct` with status `status` and the same business
/// content; returns (placer's copy, fulfiller's copy).
async fn converged(p: &Party, pb: &str, fb: &str, ct: &str, status: &str) -> (Value, Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = task_by_identifier(p, pb, ct).await;
        let b = task_by_identifier(p, fb, ct).await;
        if let (Some(a), Some(b)) = (&a, &b)
            && a["status"] == status
            && business(a) == business(b)
        {
            return (a.clone(), b.clone());
        }
        assert!(
            Instant::now() < deadline,
            "{ct} did not converge on '{status}': placer {a:?}, fulfiller {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Number of versions of `Type/id` on `base`.
async fn versions(p: &Party, base: &str, r: &str) -> usize {
    let h = p.read(&format!("{base}/{r}/_history")).await;
    h["entry"].as_array().map_or(0, Vec::len)
}

/// A COW `order-update` message about `task` (as stored at the sender, `meta` included), as a
/// counterpart sends it (R4: the message is identified by `MessageHeader.id`; the Bundle's
/// timestamp is the Task version's `lastUpdated`).
fn order_update(header_id: &str, source: &str, task: &Value) -> Value {
    json!({
        "resourceType": "Bundle",
        "id": format!("bundle-{header_id}"),
        "type": "message",
        "timestamp": task["meta"]["lastUpdated"].clone(),
        "entry": [
            {"fullUrl": format!("urn:uuid:{header_id}"),
             "resource": {
                "resourceType": "MessageHeader",
                "id": header_id,
                "meta": {"profile": ["http://hl7.org/fhir/uv/cow/StructureDefinition/cow-message-header"]},
                "eventCoding": {"system": COW_TEMP, "code": "order-update"},
                "source": {"endpoint": source},
                "focus": [{"reference": "urn:uuid:0a6b9c1e-2f3d-4e5f-8a9b-0c1d2e3f4a5b"}]
             }},
            {"fullUrl": "urn:uuid:0a6b9c1e-2f3d-4e5f-8a9b-0c1d2e3f4a5b", "resource": task}
        ]
    })
}

/// The response message's code (`ok`, `transient-error`, `fatal-error`) and the MessageHeader
/// id it answers.
fn response_of(b: &Value) -> (String, String) {
    let h = &b["entry"][0]["resource"];
    assert_eq!(h["resourceType"], "MessageHeader", "{b}");
    (
        h["response"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        h["response"]["identifier"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Plays one order over messaging: the placer creates ct on its Herald; the fulfiller works on
/// its copy (accepted, in-progress, completed). With `faults`, the fulfiller's Herald is
/// stopped while the placer writes and restarted on the same port, one message is delivered
/// twice, and an older state arrives after a newer one. Returns the final copies (placer,
/// fulfiller) and how many versions each side made of the Task.
async fn play(faults: bool) -> (Value, Value, usize, usize) {
    let (pp, fp) = (free_port(), free_port());
    let placer_h = side_on(pp);
    let mut fulfiller_h = side_on(fp);
    let (pb, fb) = (placer_h.fhir("r4"), fulfiller_h.fhir("r4"));
    let (placer, lab) = (Party::anonymous(), Party::anonymous());
    placer
        .subscribe(
            &pb,
            &message_subscription("Task?owner=Organization/lab-1", &fb, "to-fulfiller"),
        )
        .await;
    lab.subscribe(
        &fb,
        &message_subscription("Task?requester=Organization/placer", &pb, "to-placer"),
    )
    .await;

    placer
        .put(&pb, &service_request("sr-1", PLACER, LAB_1))
        .await;
    let created = placer
        .put(
            &pb,
            &coordination_task("ct-1", "ServiceRequest/sr-1", PLACER, Some(LAB_1)),
        )
        .await;
    converged(&placer, &pb, &fb, "ct-1", "requested").await;

    if faults {
        // an outage of the fulfiller's side while the placer changes the order's priority
        assert!(fulfiller_h.terminate(), "graceful stop");
        let mut urgent = created.clone();
        urgent["priority"] = json!("urgent");
        placer.put(&pb, &urgent).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        fulfiller_h.restart();
        assert!(fulfiller_h.root.ends_with(&format!(":{fp}")), "same port");
    } else {
        let mut urgent = created.clone();
        urgent["priority"] = json!("urgent");
        placer.put(&pb, &urgent).await;
    }
    let (_, mut copy2) = converged(&placer, &pb, &fb, "ct-1", "requested").await;
    assert_eq!(copy2["priority"], "urgent");

    for status in ["accepted", "in-progress", "completed"] {
        copy2 = lab.put(&fb, &with_status(&copy2, status, None)).await;
        converged(&placer, &pb, &fb, "ct-1", status).await;
    }

    if faults {
        // a duplicate: the same message twice is answered the same way and applied once
        let task = task_by_identifier(&placer, &fb, "ct-1").await.unwrap();
        let source = format!("{fb}/$process-message");
        let msg = order_update("b7f5f0a4-2b7e-4a53-9a5e-1d0c7a6f0001", &source, &task);
        let target = format!("{pb}/$process-message");
        let before = versions(&placer, &pb, "Task/ct-1").await;
        let (s1, r1) = placer.call(Method::POST, &target, Some(&msg)).await;
        let (s2, r2) = placer.call(Method::POST, &target, Some(&msg)).await;
        assert_eq!(s1, StatusCode::OK, "{r1}");
        assert_eq!((s1, response_of(&r1)), (s2, response_of(&r2)));
        assert_eq!(
            response_of(&r1),
            (
                "ok".to_owned(),
                "b7f5f0a4-2b7e-4a53-9a5e-1d0c7a6f0001".to_owned()
            )
        );
        assert_eq!(versions(&placer, &pb, "Task/ct-1").await, before);
        // reordering: the fulfiller's earlier version (in-progress) arriving after the newer
        // one does not win
        let fid = task["id"].as_str().unwrap();
        let history = placer.read(&format!("{fb}/Task/{fid}/_history")).await;
        let stale = history["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .find(|t| t["status"] == "in-progress")
            .expect("the in-progress version");
        let old = order_update("b7f5f0a4-2b7e-4a53-9a5e-1d0c7a6f0000", &source, &stale);
        let (s, r) = placer.call(Method::POST, &target, Some(&old)).await;
        assert!(s.is_success() || s.is_client_error(), "{s} {r}");
    }
    let (a, b) = converged(&placer, &pb, &fb, "ct-1", "completed").await;
    let fid = b["id"].as_str().unwrap().to_owned();
    let count = || async {
        (
            versions(&placer, &pb, "Task/ct-1").await,
            versions(&placer, &fb, &format!("Task/{fid}")).await,
        )
    };
    let (pv, fv) = count().await;
    // settled: applying the counterpart's copy makes no new version, so nothing ping-pongs
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count().await, (pv, fv), "the two sides stopped exchanging");
    (a, b, pv, fv)
}

#[tokio::test]
#[ignore = "needs Messaging: $process-message and the message channel (lead, on main)"]
async fn pattern3_messaging_survives_duplicates_reordering_and_an_outage_with_the_clean_state() {
    let (clean_p, clean_f, clean_pv, clean_fv) = play(false).await;
    let (p, f, pv, fv) = play(true).await;
    assert_eq!(business(&clean_p), business(&clean_f), "clean run in step");
    assert_eq!(
        business(&p),
        business(&clean_p),
        "placer side as in the clean run"
    );
    assert_eq!(
        business(&f),
        business(&clean_f),
        "fulfiller side as in the clean run"
    );
    // nothing applied twice: as many versions as in the clean run
    assert_eq!((pv, fv), (clean_pv, clean_fv));
}
