//! Clinical Order Workflows patterns 1 and 2 end to end, with a placer-side and a fulfiller-side
//! Herald process on loopback (`herald_tests::cow`): every notification's type, event number,
//! focus (at the version that triggered it), subscription identifier, status and order.
//!
//! - Pattern 1 (Coordination Task at the fulfiller): the placer's order stays on the placer's
//!   Herald, its Coordination Task goes to the fulfiller's; the placer follows
//!   `cow-task-status-changed` with `requester=<itself>` there.
//! - Pattern 2 (Coordination Task at the placer), with credentials per party: a fulfiller
//!   follows `cow-task-changed` with `owner=<itself>`; a competing fulfiller learns nothing; an
//!   owner reassignment tells the old owner that the Task left it (the Task withheld) and
//!   nothing after; `cow-servicerequest-for-owner` when the linking Task arrives after the order.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use herald_subscriptions::notification::NotificationType;
use herald_tests::cow::{
    CowPair, LAB_1, LAB_2, PLACER, Party, assert_notes, auth_config, coordination_task,
    event_requests, output, service_request, side, subscription, wait_notes, with_reason,
    with_status,
};
use herald_tests::receiver::Receiver;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Pattern 1: the placer POSTs (here: PUTs, with its own ids) the Coordination Task to the
/// fulfiller's Herald and hears every status and business-status change, in order, with the
/// outputs on completion; the fulfiller reads the order from the placer's Herald.
#[tokio::test]
async fn pattern1_the_placer_hears_every_status_change_of_its_task_at_the_fulfiller_in_order() {
    let pair = CowPair::start().await;
    let (pb, fb) = (pair.placer_base(), pair.fulfiller_base());
    let placer = Party::anonymous();
    let lab = Party::anonymous();
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

    // the order on the placer's side, its Coordination Task on the fulfiller's
    placer
        .put(&pb, &service_request("sr-1", PLACER, LAB_1))
        .await;
    let order = format!("{pb}/ServiceRequest/sr-1");
    let mut t = placer
        .put(&fb, &coordination_task("ct-1", &order, PLACER, Some(LAB_1)))
        .await;
    // the fulfiller reads the order where it lives
    let sr = lab.read(t["focus"]["reference"].as_str().unwrap()).await;
    assert_eq!(sr["code"]["coding"][0]["code"], "2345-7");

    for (status, business) in [
        ("received", None),
        ("accepted", None),
        ("in-progress", Some("specimen-collected")),
        ("in-progress", Some("awaiting-interpretation")),
    ] {
        t = lab.put(&fb, &with_status(&t, status, business)).await;
    }
    // the result, then completion with it as output
    lab.put(
        &fb,
        &json!({"resourceType": "DiagnosticReport", "id": "dr-1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                "basedOn": [{"reference": order}]}),
    )
    .await;
    let mut done = with_status(&t, "completed", None);
    done["output"] = json!([output("DiagnosticReport/dr-1")]);
    lab.put(&fb, &done).await;

    let notes = wait_notes(&pair.rx, "/placer", 6).await;
    assert_eq!(
        pair.rx.on("/placer")[0].kind(),
        Some(NotificationType::Handshake),
        "the handshake comes first"
    );
    assert_notes(
        &notes,
        "placer-orders",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            ("Task/ct-1/_history/2", "received", None),
            ("Task/ct-1/_history/3", "accepted", None),
            (
                "Task/ct-1/_history/4",
                "in-progress",
                Some("specimen-collected"),
            ),
            (
                "Task/ct-1/_history/5",
                "in-progress",
                Some("awaiting-interpretation"),
            ),
            ("Task/ct-1/_history/6", "completed", None),
        ],
    );
    let last = notes[5].resource.as_ref().unwrap();
    assert_eq!(
        last["output"][0]["valueReference"]["reference"],
        "DiagnosticReport/dr-1"
    );
    assert_eq!(
        last["identifier"][0]["value"], "ct-1",
        "the shared identifier"
    );
    // the sender is the fulfiller's Herald
    assert!(
        pair.rx.on("/placer")[1]
            .sender()
            .is_some_and(|s| pair.fulfiller.root.ends_with(&s)),
        "sent by the fulfiller's Herald"
    );
    // the placer completes its order where it lives
    let mut sr_done = sr.clone();
    sr_done["status"] = json!("completed");
    let stored = placer.put(&pb, &sr_done).await;
    assert_eq!(stored["meta"]["versionId"], "2");
}

/// The parties of pattern 2 on the placer's Herald, each with its own API key.
fn pattern2_config() -> String {
    auth_config(&[
        ("placer", "placer"),
        ("lab-1", "fulfiller"),
        ("lab-2", "fulfiller"),
    ])
}

/// Pattern 2: the Coordination Task lives at the placer; lab-1 follows the Tasks it owns and
/// hears the create (with the order as additional context) and its own updates; lab-2, with
/// its own credentials, may not subscribe to lab-1's Tasks, reads none of them, and receives
/// nothing.
#[tokio::test]
async fn pattern2_the_owner_hears_its_task_and_a_competing_fulfiller_nothing() {
    let h = side(&pattern2_config());
    let rx = Receiver::start().await;
    let base = h.fhir("r4");
    let (placer, lab1, lab2) = (
        Party::with_key("placer"),
        Party::with_key("lab-1"),
        Party::with_key("lab-2"),
    );
    lab1.subscribe(
        &base,
        &subscription(
            "cow-task-changed",
            &["Task?owner=Organization/lab-1"],
            &rx.url("/lab-1"),
            "lab-1-tasks",
        ),
    )
    .await;
    lab2.subscribe(
        &base,
        &subscription(
            "cow-task-changed",
            &["Task?owner=Organization/lab-2"],
            &rx.url("/lab-2"),
            "lab-2-tasks",
        ),
    )
    .await;
    // a competitor may not follow lab-1's Tasks
    let spy = subscription(
        "cow-task-changed",
        &["Task?owner=Organization/lab-1"],
        &rx.url("/spy"),
        "spy",
    );
    let (s, _) = lab2
        .call(Method::PUT, &format!("{base}/Subscription/spy"), Some(&spy))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    placer
        .put(&base, &service_request("sr-1", PLACER, LAB_1))
        .await;
    let mut t = placer
        .put(
            &base,
            &coordination_task("ct-1", "ServiceRequest/sr-1", PLACER, Some(LAB_1)),
        )
        .await;
    // the owner reads the order; the competitor reads neither
    lab1.read(&format!("{base}/ServiceRequest/sr-1")).await;
    for url in ["Task/ct-1", "ServiceRequest/sr-1"] {
        let (s, _) = lab2.call(Method::GET, &format!("{base}/{url}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{url}");
    }
    for (status, business) in [
        ("accepted", None),
        ("in-progress", Some("specimen-collected")),
        ("completed", None),
    ] {
        t = lab1.put(&base, &with_status(&t, status, business)).await;
    }

    let notes = wait_notes(&rx, "/lab-1", 4).await;
    assert_notes(
        &notes,
        "lab-1-tasks",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            ("Task/ct-1/_history/2", "accepted", None),
            (
                "Task/ct-1/_history/3",
                "in-progress",
                Some("specimen-collected"),
            ),
            ("Task/ct-1/_history/4", "completed", None),
        ],
    );
    assert!(
        notes[0]
            .context
            .iter()
            .any(|c| c.starts_with("ServiceRequest/sr-1")),
        "the order is additional context: {:?}",
        notes[0].context
    );
    // lab-2: a handshake, no event, no count, no Task in its searches
    assert_eq!(lab2.events_since_start(&base, "lab-2-tasks").await, 0);
    assert!(event_requests(&rx, "/lab-2").is_empty());
    assert!(rx.on("/spy").is_empty());
    let found = lab2.read(&format!("{base}/Task")).await;
    assert_eq!(found["total"], 0, "{found}");
}

/// Pattern 2, owner reassignment A→B (the placer re-routes the order): A hears that its Task
/// changed (the previous version matched its filter) but no longer gets the Task itself (the
/// send-time check), and nothing after; B hears the Task from the moment it enters B's filter.
#[tokio::test]
async fn pattern2_reassignment_tells_the_old_owner_the_task_left_and_nothing_after() {
    let h = side(&pattern2_config());
    let rx = Receiver::start().await;
    let base = h.fhir("r4");
    let (placer, lab1, lab2) = (
        Party::with_key("placer"),
        Party::with_key("lab-1"),
        Party::with_key("lab-2"),
    );
    for (lab, who) in [(&lab1, "lab-1"), (&lab2, "lab-2")] {
        lab.subscribe(
            &base,
            &subscription(
                "cow-task-changed",
                &[&format!("Task?owner=Organization/{who}")],
                &rx.url(&format!("/{who}")),
                &format!("{who}-tasks"),
            ),
        )
        .await;
    }
    placer
        .put(&base, &service_request("sr-1", PLACER, LAB_1))
        .await;
    let t = placer
        .put(
            &base,
            &coordination_task("ct-1", "ServiceRequest/sr-1", PLACER, Some(LAB_1)),
        )
        .await;
    lab1.put(&base, &with_status(&t, "accepted", None)).await;
    // the placer re-routes: owner lab-2, back to requested
    let mut moved = with_reason(
        &with_status(&t, "requested", None),
        "re-routed to another performer",
    );
    moved["owner"] = json!({"reference": LAB_2});
    let mut t = placer.put(&base, &moved).await;
    for status in ["accepted", "in-progress", "completed"] {
        t = lab2.put(&base, &with_status(&t, status, None)).await;
    }

    let b = wait_notes(&rx, "/lab-2", 4).await;
    assert_notes(
        &b,
        "lab-2-tasks",
        1,
        &[
            ("Task/ct-1/_history/3", "requested", None),
            ("Task/ct-1/_history/4", "accepted", None),
            ("Task/ct-1/_history/5", "in-progress", None),
            ("Task/ct-1/_history/6", "completed", None),
        ],
    );
    let a = wait_notes(&rx, "/lab-1", 3).await;
    assert_eq!(
        a.iter()
            .map(|n| (n.number, n.focus.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "Task/ct-1/_history/1"),
            (2, "Task/ct-1/_history/2"),
            (3, "Task/ct-1/_history/3"),
        ]
    );
    assert_eq!(a[1].task_status(), Some("accepted"));
    assert!(
        a[2].resource.is_none(),
        "the Task that left lab-1 is not shown to it: {:?}",
        a[2].resource
    );
    assert_eq!(a[2].subscription.as_deref(), Some("lab-1-tasks"));
    // nothing after: every write is committed, and lab-1's count stopped at the reassignment
    assert_eq!(lab1.events_since_start(&base, "lab-1-tasks").await, 3);
    let (s, _) = lab1
        .call(Method::GET, &format!("{base}/Task/ct-1"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "lab-1 no longer reads the Task");
}

/// `cow-servicerequest-for-owner` when the order exists before the Task that names its owner
/// (the normal order in COW): the Task's arrival makes the order enter the owner's filter, so
/// the owner hears the order (at its current version) then, and every change after; a
/// competing fulfiller hears nothing.
#[tokio::test]
async fn servicerequest_for_owner_fires_when_the_linking_task_arrives_after_the_order() {
    let h = side(&pattern2_config());
    let rx = Receiver::start().await;
    let base = h.fhir("r4");
    let (placer, lab1, lab2) = (
        Party::with_key("placer"),
        Party::with_key("lab-1"),
        Party::with_key("lab-2"),
    );
    for (lab, who) in [(&lab1, "lab-1"), (&lab2, "lab-2")] {
        lab.subscribe(
            &base,
            &subscription(
                "cow-servicerequest-for-owner",
                &[&format!("ServiceRequest?task-owner=Organization/{who}")],
                &rx.url(&format!("/{who}")),
                &format!("{who}-orders"),
            ),
        )
        .await;
    }
    let sr = placer
        .put(&base, &service_request("sr-1", PLACER, LAB_1))
        .await;
    assert_eq!(lab1.events_since_start(&base, "lab-1-orders").await, 0);
    placer
        .put(
            &base,
            &coordination_task("ct-1", "ServiceRequest/sr-1", PLACER, Some(LAB_1)),
        )
        .await;
    // more information for the fulfiller: the placer adds supporting information
    let mut more = sr.clone();
    more["note"] = json!([{"text": "patient is fasting since 22:00"}]);
    placer.put(&base, &more).await;

    let notes = wait_notes(&rx, "/lab-1", 2).await;
    assert_notes(
        &notes,
        "lab-1-orders",
        1,
        &[
            ("ServiceRequest/sr-1/_history/1", "active", None),
            ("ServiceRequest/sr-1/_history/2", "active", None),
        ],
    );
    assert_eq!(
        notes[1].resource.as_ref().unwrap()["note"][0]["text"],
        "patient is fasting since 22:00"
    );
    assert_eq!(lab2.events_since_start(&base, "lab-2-orders").await, 0);
    assert!(event_requests(&rx, "/lab-2").is_empty());
}

/// A party that starts to rely on its subscription at once (the first Task follows the
/// Subscription immediately) must read `active` in every event notification: the handshake was
/// accepted before any event was sent.
#[tokio::test]
async fn the_first_event_after_an_accepted_handshake_says_active() {
    let h = side("");
    let rx = Receiver::start().await;
    let base = h.fhir("r4");
    let p = Party::anonymous();
    for i in 0..10 {
        p.put(
            &base,
            &subscription(
                "cow-task-changed",
                &[&format!("Task?owner=Organization/lab-{i}")],
                &rx.url(&format!("/lab-{i}")),
                &format!("lab-{i}-tasks"),
            ),
        )
        .await;
        p.put(
            &base,
            &coordination_task(
                &format!("ct-{i}"),
                "ServiceRequest/sr-1",
                PLACER,
                Some(&format!("Organization/lab-{i}")),
            ),
        )
        .await;
    }
    let mut said = Vec::new();
    for i in 0..10 {
        let n = wait_notes(&rx, &format!("/lab-{i}"), 1).await;
        said.push(n[0].status.clone().unwrap_or_default());
    }
    assert!(said.iter().all(|s| s == "active"), "{said:?}");
}
