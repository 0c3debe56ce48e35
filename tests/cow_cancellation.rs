//! Cancellation and modification of a Clinical Order Workflows order end to end (pattern 1:
//! the order on the placer's Herald, the Coordination Task on the fulfiller's): the placer
//! cancels before work starts; a Cancellation Request Task after work started, accepted or
//! rejected, with the outcome reaching the placer; the fulfiller rejects, fails, or proposes an
//! alternative that the placer takes up; and a cancellation never overtakes the create it
//! cancels, even when the fulfiller's endpoint was down while both were written.
//!
//! Topics: the placer follows `cow-task-status-changed` with `requester=<itself>` (which covers
//! its Coordination Tasks and its Cancellation Request Tasks on one subscription, so their order
//! is kept); the fulfiller follows `cow-task-changed` with `owner=<itself>`, and may follow
//! `cow-cancellation-requested` with `owner=<itself>` to single out cancellation requests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use herald_subscriptions::notification::NotificationType;
use herald_tests::cow::{
    CowPair, LAB_1, PLACER, Party, assert_notes, cancellation_task, coordination_task, notes,
    output, service_request, subscription, wait_notes, with_reason, with_status,
};
use herald_tests::receiver::Behaviour;
use serde_json::{Value, json};

/// The pattern 1 set-up: the placer's subscription (`/placer`, `placer-orders`) and the
/// fulfiller's (`/lab-1`, `lab-1-tasks`) on the fulfiller's Herald.
async fn setup() -> (CowPair, Party, Party) {
    let pair = CowPair::start().await;
    let (placer, lab) = (Party::anonymous(), Party::anonymous());
    let fb = pair.fulfiller_base();
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
    lab.subscribe(
        &fb,
        &subscription(
            "cow-task-changed",
            &["Task?owner=Organization/lab-1"],
            &pair.rx.url("/lab-1"),
            "lab-1-tasks",
        ),
    )
    .await;
    (pair, placer, lab)
}

/// Places order `n` (`sr-n` at the placer, `ct-n` at the fulfiller); returns the stored Task.
async fn place(pair: &CowPair, placer: &Party, n: u32) -> Value {
    let sr = format!("sr-{n}");
    placer
        .put(&pair.placer_base(), &service_request(&sr, PLACER, LAB_1))
        .await;
    let order = format!("{}/ServiceRequest/{sr}", pair.placer_base());
    placer
        .put(
            &pair.fulfiller_base(),
            &coordination_task(&format!("ct-{n}"), &order, PLACER, Some(LAB_1)),
        )
        .await
}

#[tokio::test]
async fn the_placer_cancels_before_work_starts_and_both_sides_hear_it() {
    let (pair, placer, lab) = setup().await;
    let (pb, fb) = (pair.placer_base(), pair.fulfiller_base());
    let t = place(&pair, &placer, 1).await;
    let t = lab.put(&fb, &with_status(&t, "received", None)).await;
    // the placer cancels: the Coordination Task (COW MUST) and its own order
    placer
        .put(
            &fb,
            &with_reason(&with_status(&t, "cancelled", None), "no longer needed"),
        )
        .await;
    let mut sr = placer.read(&format!("{pb}/ServiceRequest/sr-1")).await;
    sr["status"] = json!("revoked");
    placer.put(&pb, &sr).await;

    let expected = [
        ("Task/ct-1/_history/1", "requested", None),
        ("Task/ct-1/_history/2", "received", None),
        ("Task/ct-1/_history/3", "cancelled", None),
    ];
    assert_notes(
        &wait_notes(&pair.rx, "/placer", 3).await,
        "placer-orders",
        1,
        &expected,
    );
    let lab_notes = wait_notes(&pair.rx, "/lab-1", 3).await;
    assert_notes(&lab_notes, "lab-1-tasks", 1, &expected);
    assert_eq!(
        lab_notes[2].resource.as_ref().unwrap()["statusReason"]["text"],
        "no longer needed"
    );
}

/// After work started the Task cannot go to `cancelled` (FHIR Task state machine): the placer
/// creates a Cancellation Request Task at the fulfiller; the fulfiller hears it on its
/// cancellation subscription, pauses, accepts; the Coordination Task ends `failed` with the
/// reason. The placer hears both Tasks on its one subscription, in the order written.
#[tokio::test]
async fn a_cancellation_request_after_work_started_is_accepted_and_the_placer_hears_it() {
    let (pair, placer, lab) = setup().await;
    let fb = pair.fulfiller_base();
    lab.subscribe(
        &fb,
        &subscription(
            "cow-cancellation-requested",
            &["Task?owner=Organization/lab-1"],
            &pair.rx.url("/lab-1-cancel"),
            "lab-1-cancellations",
        ),
    )
    .await;
    let mut t = place(&pair, &placer, 1).await;
    for s in ["accepted", "in-progress"] {
        t = lab.put(&fb, &with_status(&t, s, None)).await;
    }
    let c = placer
        .put(
            &fb,
            &cancellation_task("cancel-1", "Task/ct-1", PLACER, LAB_1),
        )
        .await;
    // the fulfiller pauses the work, accepts the request, and aborts
    let t = lab.put(&fb, &with_status(&t, "on-hold", None)).await;
    lab.put(&fb, &with_status(&c, "accepted", None)).await;
    lab.put(
        &fb,
        &with_reason(
            &with_status(&t, "failed", None),
            "aborted: cancellation Task/cancel-1 accepted",
        ),
    )
    .await;

    assert_notes(
        &wait_notes(&pair.rx, "/placer", 7).await,
        "placer-orders",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            ("Task/ct-1/_history/2", "accepted", None),
            ("Task/ct-1/_history/3", "in-progress", None),
            ("Task/cancel-1/_history/1", "requested", None),
            ("Task/ct-1/_history/4", "on-hold", None),
            ("Task/cancel-1/_history/2", "accepted", None),
            ("Task/ct-1/_history/5", "failed", None),
        ],
    );
    let cancels = wait_notes(&pair.rx, "/lab-1-cancel", 1).await;
    assert_notes(
        &cancels,
        "lab-1-cancellations",
        1,
        &[("Task/cancel-1/_history/1", "requested", None)],
    );
    let focus = &cancels[0].resource.as_ref().unwrap()["focus"]["reference"];
    assert_eq!(focus, "Task/ct-1", "the request names the Task it cancels");
    // the fulfiller's own subscription holds both Tasks too, the create first
    let lab_notes = wait_notes(&pair.rx, "/lab-1", 7).await;
    let order: Vec<&str> = lab_notes.iter().map(|n| n.focus.as_str()).collect();
    assert_eq!(
        order,
        [
            "Task/ct-1/_history/1",
            "Task/ct-1/_history/2",
            "Task/ct-1/_history/3",
            "Task/cancel-1/_history/1",
            "Task/ct-1/_history/4",
            "Task/cancel-1/_history/2",
            "Task/ct-1/_history/5",
        ]
    );
}

#[tokio::test]
async fn a_rejected_cancellation_request_reaches_the_placer_and_the_work_completes() {
    let (pair, placer, lab) = setup().await;
    let fb = pair.fulfiller_base();
    let mut t = place(&pair, &placer, 1).await;
    for s in ["accepted", "in-progress"] {
        t = lab.put(&fb, &with_status(&t, s, None)).await;
    }
    let c = placer
        .put(
            &fb,
            &cancellation_task("cancel-1", "Task/ct-1", PLACER, LAB_1),
        )
        .await;
    lab.put(
        &fb,
        &with_reason(
            &with_status(&c, "rejected", None),
            "specimen already processed",
        ),
    )
    .await;
    lab.put(&fb, &with_status(&t, "completed", None)).await;

    let notes = wait_notes(&pair.rx, "/placer", 6).await;
    assert_notes(
        &notes,
        "placer-orders",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            ("Task/ct-1/_history/2", "accepted", None),
            ("Task/ct-1/_history/3", "in-progress", None),
            ("Task/cancel-1/_history/1", "requested", None),
            ("Task/cancel-1/_history/2", "rejected", None),
            ("Task/ct-1/_history/4", "completed", None),
        ],
    );
    assert_eq!(
        notes[4].resource.as_ref().unwrap()["statusReason"]["text"],
        "specimen already processed"
    );
}

/// The fulfiller declines one order, fails another after accepting it, and proposes an
/// alternative for a third (rejected, statusReason "alternative proposal", output = its
/// proposed ServiceRequest with intent `proposal`); the placer takes the proposal up with a new
/// order that `replaces` the old one and a new Coordination Task. The placer hears it all in
/// the order it happened.
#[tokio::test]
async fn the_fulfiller_rejects_fails_or_proposes_an_alternative_and_the_placer_hears_each() {
    let (pair, placer, lab) = setup().await;
    let (pb, fb) = (pair.placer_base(), pair.fulfiller_base());
    // declined
    let t1 = place(&pair, &placer, 1).await;
    lab.put(
        &fb,
        &with_reason(&with_status(&t1, "rejected", None), "test not offered"),
    )
    .await;
    // accepted, then cannot be performed
    let mut t2 = place(&pair, &placer, 2).await;
    for s in ["accepted", "in-progress"] {
        t2 = lab.put(&fb, &with_status(&t2, s, None)).await;
    }
    lab.put(
        &fb,
        &with_reason(&with_status(&t2, "failed", None), "analyser out of order"),
    )
    .await;
    // an alternative
    let t3 = place(&pair, &placer, 3).await;
    let mut proposal = service_request("alt-3", LAB_1, LAB_1);
    proposal["intent"] = json!("proposal");
    proposal["identifier"] = json!([{"system": herald_tests::cow::FILLER_IDS, "value": "alt-3"}]);
    proposal["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "14749-6"}]});
    proposal["basedOn"] = json!([{"reference": format!("{pb}/ServiceRequest/sr-3")}]);
    lab.put(&fb, &proposal).await;
    let mut rejected = with_reason(&with_status(&t3, "rejected", None), "alternative proposal");
    rejected["output"] = json!([output("ServiceRequest/alt-3")]);
    lab.put(&fb, &rejected).await;
    // the placer accepts the proposal: a new order replacing the old (revoked), a new Task
    let alt = placer.read(&format!("{fb}/ServiceRequest/alt-3")).await;
    assert_eq!(alt["intent"], "proposal");
    let mut old = placer.read(&format!("{pb}/ServiceRequest/sr-3")).await;
    old["status"] = json!("revoked");
    placer.put(&pb, &old).await;
    let mut new = service_request("sr-4", PLACER, LAB_1);
    new["code"] = alt["code"].clone();
    new["replaces"] = json!([{"reference": "ServiceRequest/sr-3"}]);
    placer.put(&pb, &new).await;
    placer
        .put(
            &fb,
            &coordination_task(
                "ct-4",
                &format!("{pb}/ServiceRequest/sr-4"),
                PLACER,
                Some(LAB_1),
            ),
        )
        .await;

    let notes = wait_notes(&pair.rx, "/placer", 9).await;
    assert_notes(
        &notes,
        "placer-orders",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            ("Task/ct-1/_history/2", "rejected", None),
            ("Task/ct-2/_history/1", "requested", None),
            ("Task/ct-2/_history/2", "accepted", None),
            ("Task/ct-2/_history/3", "in-progress", None),
            ("Task/ct-2/_history/4", "failed", None),
            ("Task/ct-3/_history/1", "requested", None),
            ("Task/ct-3/_history/2", "rejected", None),
            ("Task/ct-4/_history/1", "requested", None),
        ],
    );
    let r = |i: usize| notes[i].resource.clone().unwrap();
    assert_eq!(r(1)["statusReason"]["text"], "test not offered");
    assert_eq!(r(5)["statusReason"]["text"], "analyser out of order");
    assert_eq!(r(7)["statusReason"]["text"], "alternative proposal");
    assert_eq!(
        r(7)["output"][0]["valueReference"]["reference"],
        "ServiceRequest/alt-3"
    );
}

/// A cancellation never overtakes the create it cancels: with the fulfiller's endpoint failing
/// while ten orders are placed and each is immediately followed by its Cancellation Request
/// Task, the fulfiller's one subscription delivers, once the endpoint is back, every create
/// before its cancellation, event numbers gap-free and in arrival order.
#[tokio::test]
async fn a_cancellation_never_overtakes_the_create_it_cancels() {
    let (pair, placer, _lab) = setup().await;
    let fb = pair.fulfiller_base();
    // let the handshake through, then fail every delivery
    pair.rx
        .wait_until("/lab-1", "handshake", herald_tests::cow::WAIT, |l| {
            l.iter().any(|r| r.accepted())
        })
        .await;
    pair.rx.set(Behaviour::Status(503, None));
    for n in 1..=10 {
        place(&pair, &placer, n).await;
        placer
            .put(
                &fb,
                &cancellation_task(
                    &format!("cancel-{n}"),
                    &format!("Task/ct-{n}"),
                    PLACER,
                    LAB_1,
                ),
            )
            .await;
    }
    pair.rx
        .wait_until(
            "/lab-1",
            "a refused delivery",
            herald_tests::cow::WAIT,
            |l| l.iter().any(|r| r.answered == 503),
        )
        .await;
    pair.rx.set(Behaviour::Accept);
    let got = pair
        .rx
        .wait_until("/lab-1", "20 events", herald_tests::cow::WAIT, |l| {
            notes(l).len() >= 20
        })
        .await;
    let got = notes(&got);
    assert_eq!(
        got.iter().map(|n| n.number).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<u64>>(),
        "gap-free, in order, once each"
    );
    assert!(
        got.iter()
            .all(|n| n.kind == NotificationType::EventNotification
                && n.subscription.as_deref() == Some("lab-1-tasks")),
        "every event notification names the lab's subscription"
    );
    // a short outage (fewer failures than it takes to set `error`): the status stays active
    assert_eq!(got.last().unwrap().status.as_deref(), Some("active"));
    for n in 1..=10 {
        let pos = |f: &str| got.iter().position(|x| x.focus == f).unwrap();
        let create = pos(&format!("Task/ct-{n}/_history/1"));
        let cancel = pos(&format!("Task/cancel-{n}/_history/1"));
        assert_eq!(cancel, create + 1, "order {n}: {create} then {cancel}");
    }
}
