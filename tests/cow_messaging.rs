//! Clinical Order Workflows over transactions and FHIR messaging, with two Herald processes:
//!
//! - pattern 1 through one transaction: the placer POSTs its ServiceRequest and the
//!   Coordination Task (`urn:uuid:` references, conditional on the shared identifiers) to the
//!   fulfiller's Herald, and hears the create with the order as additional context, then every
//!   status change; the same transaction again creates nothing;
//! - pattern 3 (messaging): each side's Subscription uses the `message` channel with the
//!   counterpart's `$process-message` as endpoint, so a change to the Coordination Task on one
//!   side arrives as a COW `order-update` message Bundle that the other side applies by the
//!   Task's identifier. Played clean, then with a counterpart outage (its process stopped and
//!   restarted on the same port) and a duplicate: the final Task on both sides is the clean
//!   run's, nothing lost, nothing applied twice; a late, older message (reordering) changes
//!   nothing; a client's read-modify-write of its copy still reaches the counterpart; each copy
//!   of the Task names the order as stored on its own side.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use herald_tests::Herald;
use herald_tests::cow::{
    COW_ENV, CowPair, LAB_1, PLACER, PLACER_ORDERS, PLACER_TASKS, Party, WAIT, assert_notes,
    coordination_task, local, service_request, subscription, wait_notes, with_status,
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

/// What two copies of a Task must agree on: its business content. Local ids differ (each side
/// stores the order under its own id, so `focus`/`basedOn` name different ids; see
/// [`order_of`]), and so does `meta`.
fn business(t: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "identifier",
        "status",
        "statusReason",
        "businessStatus",
        "intent",
        "priority",
        "code",
        "for",
        "requester",
        "owner",
        "input",
        "output",
    ] {
        if let Some(v) = t.get(k) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// The identifier of the order a Task on `base` is about (its `focus`, read there).
async fn order_of(p: &Party, base: &str, task: &Value) -> Value {
    let focus = task["focus"]["reference"].as_str().expect("focus");
    p.read(&format!("{base}/{}", local(focus))).await["identifier"].clone()
}

/// Whether every Subscription of the Herald at `root` has delivered everything it recorded.
async fn drained(p: &Party, root: &str) -> bool {
    let a = p.read(&format!("{root}/admin/subscriptions")).await;
    a["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["queue_depth"] == 0)
}

/// Waits until both sides hold the Task `ct` with status `status` and the same business
/// content, and neither has a message still to send (twice in a row: applying a message may
/// record an event on the other side); returns (placer's copy, fulfiller's copy).
async fn converged(p: &Party, sides: [&Herald; 2], ct: &str, status: &str) -> (Value, Value) {
    let (pb, fb) = (sides[0].fhir("r4"), sides[1].fhir("r4"));
    let deadline = Instant::now() + WAIT;
    let mut quiet = 0;
    loop {
        let a = task_by_identifier(p, &pb, ct).await;
        let b = task_by_identifier(p, &fb, ct).await;
        let same = matches!((&a, &b), (Some(a), Some(b))
            if a["status"] == status && business(a) == business(b));
        quiet = if same && drained(p, &sides[0].root).await && drained(p, &sides[1].root).await {
            quiet + 1
        } else {
            0
        };
        if quiet == 2 {
            return (a.unwrap(), b.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "{ct} did not converge on '{status}': placer {a:?}, fulfiller {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Number of versions of `Type/id` on `base`.
async fn versions(p: &Party, base: &str, r: &str) -> usize {
    let h = p.read(&format!("{base}/{r}/_history")).await;
    h["entry"].as_array().map_or(0, Vec::len)
}

/// Event `n` of Subscription `sub` on `base` as the message channel sends it: the stored event
/// (`$events`, full-resource) as the event notification it was, wrapped by the channel's own
/// builder into a COW `order-update` message with id `id` for `destination`. Replaying it is
/// what a resend or a late duplicate looks like to the counterpart.
async fn replay(p: &Party, base: &str, sub: &str, n: u64, id: &str, destination: &str) -> Value {
    let mut b = p
        .read(&format!(
            "{base}/Subscription/{sub}/$events?eventsSinceNumber={n}&eventsUntilNumber={n}&content=full-resource"
        ))
        .await;
    for param in b["entry"][0]["resource"]["parameter"]
        .as_array_mut()
        .unwrap()
    {
        if param["name"] == "type" {
            param["valueCode"] = json!("event-notification");
        }
    }
    let m = herald_delivery::message::build_message(&b, id, destination).unwrap();
    assert_eq!(
        m["entry"][0]["resource"]["eventCoding"]["code"], "order-update",
        "{m}"
    );
    m
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
/// twice; with `late`, an older state arrives after a newer one; with `keep_source`, the lab
/// writes its changes back with the `meta.source` it read (a plain read-modify-write); with
/// `check_orders`, both final copies must name the order as stored on their own side. Returns the final copies (placer,
/// fulfiller) and how many versions each side made of the Task.
async fn play(
    faults: bool,
    late: bool,
    keep_source: bool,
    check_orders: bool,
) -> (Value, Value, usize, usize) {
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
    converged(&placer, [&placer_h, &fulfiller_h], "ct-1", "requested").await;

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
    let (_, mut copy2) = converged(&placer, [&placer_h, &fulfiller_h], "ct-1", "requested").await;
    assert_eq!(copy2["priority"], "urgent");

    for status in ["accepted", "in-progress", "completed"] {
        let mut next = with_status(&copy2, status, None);
        if !keep_source && let Some(m) = next["meta"].as_object_mut() {
            // the lab's own change is not the placer's content: it drops the provenance Herald
            // put there when it applied the placer's message
            m.remove("source");
        }
        copy2 = lab.put(&fb, &next).await;
        converged(&placer, [&placer_h, &fulfiller_h], "ct-1", status).await;
    }

    if faults {
        // a duplicate: the fulfiller's last message (completed) twice more is answered the
        // same way as the first and applied never again
        let target = format!("{pb}/$process-message");
        let last = lab.events_since_start(&fb, "to-placer").await;
        let id = herald_delivery::message::message_id("a replayed order-update");
        let msg = replay(&lab, &fb, "to-placer", last, &id, &target).await;
        let before = versions(&placer, &pb, "Task/ct-1").await;
        let (s1, r1) = lab.call(Method::POST, &target, Some(&msg)).await;
        let (s2, r2) = lab.call(Method::POST, &target, Some(&msg)).await;
        assert_eq!(s1, StatusCode::OK, "{r1}");
        assert_eq!((s1, response_of(&r1)), (s2, response_of(&r2)));
        assert_eq!(response_of(&r1), ("ok".to_owned(), id.clone()));
        assert_eq!(versions(&placer, &pb, "Task/ct-1").await, before);
    }
    if late {
        let target = format!("{pb}/$process-message");
        let last = lab.events_since_start(&fb, "to-placer").await;
        // reordering: the fulfiller's earlier message (in-progress) arriving after the newer
        // one does not win
        let id = herald_delivery::message::message_id("a late order-update");
        let old = replay(&lab, &fb, "to-placer", last - 1, &id, &target).await;
        let (s, r) = lab.call(Method::POST, &target, Some(&old)).await;
        assert!(s.is_success() || s.is_client_error(), "{s} {r}");
    }
    let (a, b) = converged(&placer, [&placer_h, &fulfiller_h], "ct-1", "completed").await;
    if check_orders {
        // both copies are about the same order, by its shared identifier
        assert_eq!(
            order_of(&placer, &pb, &a).await,
            order_of(&placer, &fb, &b).await
        );
    }
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
async fn pattern3_messaging_survives_duplicates_and_an_outage_with_the_clean_state() {
    let (clean_p, clean_f, clean_pv, clean_fv) = play(false, false, false, false).await;
    let (p, f, pv, fv) = play(true, false, false, false).await;
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

#[tokio::test]
async fn pattern3_a_late_older_order_update_does_not_undo_a_newer_one() {
    let (clean_p, clean_f, clean_pv, clean_fv) = play(false, false, false, false).await;
    let (p, f, pv, fv) = play(false, true, false, false).await;
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
    assert_eq!((pv, fv), (clean_pv, clean_fv));
}

/// A client's plain read-modify-write of its copy keeps the `meta.source` Herald stored when it
/// applied the counterpart's message; the change must still reach the counterpart.
#[tokio::test]
async fn pattern3_a_read_modify_write_of_the_copy_still_reaches_the_counterpart() {
    let (clean_p, clean_f, _, _) = play(false, false, false, false).await;
    let (p, f, _, _) = play(false, false, true, false).await;
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
}

/// Each side's copy of the Task names the order as that side stores it (the order travels
/// with the Task and is applied by its identifier, under a local id).
#[tokio::test]

async fn pattern3_each_copy_of_the_task_names_the_order_stored_on_its_side() {
    play(false, false, false, true).await;
}
