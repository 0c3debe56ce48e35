//! The rest of the Clinical Order Workflows request lifecycle end to end, each flow over
//! Herald's built-in topics with a placer-side and a fulfiller-side Herald process:
//! order grouping (a group Coordination Task and child Tasks `partOf` it), fulfiller
//! determination by a central triage office (with credentials: no other fulfiller ever hears),
//! a fulfiller asking for more information and getting the answer, a fulfiller's more specific
//! ServiceRequest on the placer's authority, and outputs shared through the placer's copy.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use herald_tests::cow::{
    CowPair, LAB_1, PLACER, PLACER_ORDERS, PLACER_TASKS, Party, assert_notes, auth_config,
    coordination_task, event_requests, output, service_request, side, subscription, wait_notes,
    with_reason, with_status,
};
use herald_tests::receiver::Receiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The placer's subscription on the fulfiller's Herald to every status change of the Tasks it
/// requested (`/placer`, `placer-orders`).
async fn placer_follows_its_tasks(pair: &CowPair, placer: &Party) {
    placer
        .subscribe(
            &pair.fulfiller_base(),
            &subscription(
                "cow-task-status-changed",
                &["Task?requester=Organization/placer"],
                &pair.rx.url("/placer"),
                "placer-orders",
            ),
        )
        .await;
}

/// Order grouping: a group Coordination Task (focus: the placer's RequestGroup) and two child
/// Tasks `partOf` it. The placer follows all of them on one subscription and the children on
/// another (`part-of=Task/grp-1`); both keep the order in which the fulfiller wrote them.
#[tokio::test]
async fn order_grouping_the_placer_follows_the_group_and_each_child_in_order() {
    let pair = CowPair::start().await;
    let (pb, fb) = (pair.placer_base(), pair.fulfiller_base());
    let (placer, lab) = (Party::anonymous(), Party::anonymous());
    placer_follows_its_tasks(&pair, &placer).await;
    placer
        .subscribe(
            &fb,
            &subscription(
                "cow-task-changed",
                &["Task?part-of=Task/grp-1"],
                &pair.rx.url("/placer-group"),
                "placer-group-1",
            ),
        )
        .await;
    for sr in ["sr-a", "sr-b"] {
        placer.put(&pb, &service_request(sr, PLACER, LAB_1)).await;
    }
    placer
        .put(
            &pb,
            &json!({"resourceType": "RequestGroup", "id": "rg-1", "status": "active",
                    "intent": "order", "subject": {"reference": "Patient/pat-1"},
                    "groupIdentifier": {"system": PLACER_ORDERS, "value": "grp-1"},
                    "action": [{"resource": {"reference": "ServiceRequest/sr-a"}},
                               {"resource": {"reference": "ServiceRequest/sr-b"}}]}),
        )
        .await;
    let group_id = json!({"system": PLACER_TASKS, "value": "grp-1"});
    let mut g = coordination_task(
        "grp-1",
        &format!("{pb}/RequestGroup/rg-1"),
        PLACER,
        Some(LAB_1),
    );
    g["groupIdentifier"] = group_id.clone();
    let mut g = placer.put(&fb, &g).await;
    let child = |id: &str, sr: &str| {
        let mut c = coordination_task(
            id,
            &format!("{pb}/ServiceRequest/{sr}"),
            PLACER,
            Some(LAB_1),
        );
        c["partOf"] = json!([{"reference": "Task/grp-1"}]);
        c["groupIdentifier"] = group_id.clone();
        c
    };
    let mut a = placer.put(&fb, &child("ct-a", "sr-a")).await;
    let mut b = placer.put(&fb, &child("ct-b", "sr-b")).await;
    // the fulfiller works through the group, interleaving the children
    a = lab.put(&fb, &with_status(&a, "accepted", None)).await;
    g = lab.put(&fb, &with_status(&g, "accepted", None)).await;
    b = lab.put(&fb, &with_status(&b, "accepted", None)).await;
    a = lab.put(&fb, &with_status(&a, "in-progress", None)).await;
    b = lab.put(&fb, &with_status(&b, "in-progress", None)).await;
    lab.put(&fb, &with_status(&a, "completed", None)).await;
    lab.put(&fb, &with_status(&b, "completed", None)).await;
    lab.put(&fb, &with_status(&g, "completed", None)).await;

    assert_notes(
        &wait_notes(&pair.rx, "/placer", 11).await,
        "placer-orders",
        1,
        &[
            ("Task/grp-1/_history/1", "requested", None),
            ("Task/ct-a/_history/1", "requested", None),
            ("Task/ct-b/_history/1", "requested", None),
            ("Task/ct-a/_history/2", "accepted", None),
            ("Task/grp-1/_history/2", "accepted", None),
            ("Task/ct-b/_history/2", "accepted", None),
            ("Task/ct-a/_history/3", "in-progress", None),
            ("Task/ct-b/_history/3", "in-progress", None),
            ("Task/ct-a/_history/4", "completed", None),
            ("Task/ct-b/_history/4", "completed", None),
            ("Task/grp-1/_history/3", "completed", None),
        ],
    );
    let children = wait_notes(&pair.rx, "/placer-group", 8).await;
    assert_notes(
        &children,
        "placer-group-1",
        1,
        &[
            ("Task/ct-a/_history/1", "requested", None),
            ("Task/ct-b/_history/1", "requested", None),
            ("Task/ct-a/_history/2", "accepted", None),
            ("Task/ct-b/_history/2", "accepted", None),
            ("Task/ct-a/_history/3", "in-progress", None),
            ("Task/ct-b/_history/3", "in-progress", None),
            ("Task/ct-a/_history/4", "completed", None),
            ("Task/ct-b/_history/4", "completed", None),
        ],
    );
    assert!(
        children
            .iter()
            .all(|n| { n.resource.as_ref().unwrap()["partOf"][0]["reference"] == "Task/grp-1" })
    );
}

/// Fulfiller determination by a central triage office: the placer posts Tasks without an
/// owner; they reach the triage office's subscription (`owner:missing=true`). When the office
/// sets the owner, the Task leaves its pool (it hears that change, and nothing after) and enters
/// the chosen fulfiller's filter (lab-1 hears it from that version on). lab-2, with its own
/// credentials, never hears of it and cannot read it.
#[tokio::test]
async fn triage_the_chosen_fulfiller_hears_the_task_as_it_enters_its_filter_and_no_other() {
    let h = side(&auth_config(&[
        ("placer", "placer"),
        ("triage", "admin"),
        ("lab-1", "fulfiller"),
        ("lab-2", "fulfiller"),
    ]));
    let rx = Receiver::start().await;
    let base = h.fhir("r4");
    let (placer, triage, lab1, lab2) = (
        Party::with_key("placer"),
        Party::with_key("triage"),
        Party::with_key("lab-1"),
        Party::with_key("lab-2"),
    );
    triage
        .subscribe(
            &base,
            &subscription(
                "cow-task-changed",
                &["Task?owner:missing=true"],
                &rx.url("/triage"),
                "triage-pool",
            ),
        )
        .await;
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
    placer
        .put(&base, &service_request("sr-2", PLACER, LAB_1))
        .await;
    let t1 = placer
        .put(
            &base,
            &coordination_task("ct-1", "ServiceRequest/sr-1", PLACER, None),
        )
        .await;
    placer
        .put(
            &base,
            &coordination_task("ct-2", "ServiceRequest/sr-2", PLACER, None),
        )
        .await;
    // the office chooses lab-1 for ct-1 (ct-2 stays in the pool); lab-1 accepts
    let mut assigned = t1.clone();
    assigned["owner"] = json!({"reference": LAB_1});
    let assigned = triage.put(&base, &assigned).await;
    lab1.put(&base, &with_status(&assigned, "accepted", None))
        .await;

    assert_notes(
        &wait_notes(&rx, "/lab-1", 2).await,
        "lab-1-tasks",
        1,
        &[
            ("Task/ct-1/_history/2", "requested", None),
            ("Task/ct-1/_history/3", "accepted", None),
        ],
    );
    assert_notes(
        &wait_notes(&rx, "/triage", 3).await,
        "triage-pool",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            ("Task/ct-2/_history/1", "requested", None),
            // the change that took ct-1 out of the pool (its previous version matched)
            ("Task/ct-1/_history/2", "requested", None),
        ],
    );
    assert_eq!(triage.events_since_start(&base, "triage-pool").await, 3);
    assert_eq!(lab2.events_since_start(&base, "lab-2-tasks").await, 0);
    assert!(event_requests(&rx, "/lab-2").is_empty());
    for t in ["ct-1", "ct-2"] {
        let (s, _) = lab2
            .call(Method::GET, &format!("{base}/Task/{t}"), None)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{t}");
    }
}

/// A fulfiller asks for more information (Task `received`, businessStatus
/// `awaiting-information`, statusReason says what): the request reaches the placer. The placer
/// answers in `Task.input`; the answer reaches the fulfiller (on `cow-task-changed`, since the
/// status did not change), which then accepts.
#[tokio::test]
async fn more_information_the_request_reaches_the_placer_and_the_answer_the_fulfiller() {
    let pair = CowPair::start().await;
    let (pb, fb) = (pair.placer_base(), pair.fulfiller_base());
    let (placer, lab) = (Party::anonymous(), Party::anonymous());
    placer_follows_its_tasks(&pair, &placer).await;
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
    placer
        .put(&pb, &service_request("sr-1", PLACER, LAB_1))
        .await;
    let t = placer
        .put(
            &fb,
            &coordination_task(
                "ct-1",
                &format!("{pb}/ServiceRequest/sr-1"),
                PLACER,
                Some(LAB_1),
            ),
        )
        .await;
    let asked = lab
        .put(
            &fb,
            &with_reason(
                &with_status(&t, "received", Some("awaiting-information")),
                "fasting status needed",
            ),
        )
        .await;
    // the placer reads the question from its notification and answers on the Task
    let to_placer = wait_notes(&pair.rx, "/placer", 2).await;
    let question = to_placer[1].resource.as_ref().unwrap();
    assert_eq!(question["statusReason"]["text"], "fasting status needed");
    let mut answer = asked.clone();
    answer["input"] = json!([{"type": {"text": "fasting status"},
                              "valueString": "fasting since 22:00"}]);
    let answered = placer.put(&fb, &answer).await;
    lab.put(&fb, &with_status(&answered, "accepted", None))
        .await;

    assert_notes(
        &wait_notes(&pair.rx, "/placer", 3).await,
        "placer-orders",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            (
                "Task/ct-1/_history/2",
                "received",
                Some("awaiting-information"),
            ),
            // the answer changed no status: the placer's status topic stays quiet
            ("Task/ct-1/_history/4", "accepted", None),
        ],
    );
    let to_lab = wait_notes(&pair.rx, "/lab-1", 4).await;
    assert_notes(
        &to_lab,
        "lab-1-tasks",
        1,
        &[
            ("Task/ct-1/_history/1", "requested", None),
            (
                "Task/ct-1/_history/2",
                "received",
                Some("awaiting-information"),
            ),
            (
                "Task/ct-1/_history/3",
                "received",
                Some("awaiting-information"),
            ),
            ("Task/ct-1/_history/4", "accepted", None),
        ],
    );
    assert_eq!(
        to_lab[2].resource.as_ref().unwrap()["input"][0]["valueString"],
        "fasting since 22:00"
    );
}

/// A fulfiller performs a more specific service on the placer's authority: its own
/// ServiceRequest (intent `filler-order`) `basedOn` the placer's order, by reference and by the
/// order's identifier. The placer follows `cow-servicerequest-changed` with
/// `based-on:identifier=<its order system>|` on the fulfiller's Herald and hears that request
/// and its completion; a request based on another placer's order is not its business.
#[tokio::test]
async fn a_fulfillers_more_specific_request_based_on_the_order_reaches_the_placer() {
    let pair = CowPair::start().await;
    let (pb, fb) = (pair.placer_base(), pair.fulfiller_base());
    let (placer, lab) = (Party::anonymous(), Party::anonymous());
    placer
        .subscribe(
            &fb,
            &subscription(
                "cow-servicerequest-changed",
                &[&format!(
                    "ServiceRequest?based-on:identifier={PLACER_ORDERS}|"
                )],
                &pair.rx.url("/placer"),
                "placer-derived",
            ),
        )
        .await;
    placer
        .put(&pb, &service_request("sr-1", PLACER, LAB_1))
        .await;
    let derived = |id: &str, system: &str| {
        let mut sr = service_request(id, LAB_1, LAB_1);
        sr["identifier"] = json!([{"system": herald_tests::cow::FILLER_IDS, "value": id}]);
        sr["intent"] = json!("filler-order");
        sr["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "14749-6"}]});
        sr["basedOn"] = json!([{
            "reference": format!("{pb}/ServiceRequest/sr-1"),
            "identifier": {"system": system, "value": "sr-1"}
        }]);
        sr
    };
    let mine = lab.put(&fb, &derived("lab-sr-1", PLACER_ORDERS)).await;
    lab.put(
        &fb,
        &derived("lab-sr-2", "https://other-placer.example.org/ehr"),
    )
    .await;
    let mut done = mine.clone();
    done["status"] = json!("completed");
    lab.put(&fb, &done).await;

    let notes = wait_notes(&pair.rx, "/placer", 2).await;
    assert_notes(
        &notes,
        "placer-derived",
        1,
        &[
            ("ServiceRequest/lab-sr-1/_history/1", "active", None),
            ("ServiceRequest/lab-sr-1/_history/2", "completed", None),
        ],
    );
    let r = notes[0].resource.as_ref().unwrap();
    assert_eq!(r["intent"], "filler-order");
    assert_eq!(r["basedOn"][0]["identifier"]["value"], "sr-1");
    assert_eq!(placer.events_since_start(&fb, "placer-derived").await, 2);
}

/// Outputs: each output the fulfiller adds reaches the placer (`cow-task-output-added`,
/// status changes alone do not fire it); the placer keeps a copy of the Task (marked with its
/// source) and of the results on its own Herald, where an actor who can only reach the placer
/// finds the Task by its shared identifier and reads its outputs.
#[tokio::test]
async fn outputs_reach_the_placer_and_stay_discoverable_through_the_placers_copy() {
    let pair = CowPair::start().await;
    let (pb, fb) = (pair.placer_base(), pair.fulfiller_base());
    let (placer, lab) = (Party::anonymous(), Party::anonymous());
    placer
        .subscribe(
            &fb,
            &subscription(
                "cow-task-output-added",
                &["Task?requester=Organization/placer"],
                &pair.rx.url("/placer"),
                "placer-results",
            ),
        )
        .await;
    placer
        .put(&pb, &service_request("sr-1", PLACER, LAB_1))
        .await;
    let mut t = placer
        .put(
            &fb,
            &coordination_task(
                "ct-1",
                &format!("{pb}/ServiceRequest/sr-1"),
                PLACER,
                Some(LAB_1),
            ),
        )
        .await;
    for s in ["accepted", "in-progress"] {
        t = lab.put(&fb, &with_status(&t, s, None)).await;
    }
    let report = |id: &str, status: &str| {
        json!({"resourceType": "DiagnosticReport", "id": id, "status": status,
               "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
               "subject": {"reference": "Patient/pat-1"}})
    };
    lab.put(&fb, &report("dr-prelim", "preliminary")).await;
    let mut with_one = with_status(&t, "in-progress", Some("preliminary-outcome"));
    with_one["output"] = json!([output("DiagnosticReport/dr-prelim")]);
    t = lab.put(&fb, &with_one).await;
    lab.put(&fb, &report("dr-final", "final")).await;
    let mut with_two = t.clone();
    with_two["output"]
        .as_array_mut()
        .unwrap()
        .push(output("DiagnosticReport/dr-final"));
    t = lab.put(&fb, &with_two).await;
    lab.put(&fb, &with_status(&t, "completed", None)).await;

    let notes = wait_notes(&pair.rx, "/placer", 2).await;
    assert_notes(
        &notes,
        "placer-results",
        1,
        &[
            (
                "Task/ct-1/_history/4",
                "in-progress",
                Some("preliminary-outcome"),
            ),
            (
                "Task/ct-1/_history/5",
                "in-progress",
                Some("preliminary-outcome"),
            ),
        ],
    );
    // the placer copies the Task and its outputs to its own Herald
    let latest = notes[1].resource.clone().unwrap();
    let mut copy = latest.clone();
    copy["meta"] = json!({"source": format!("{fb}/Task/ct-1")});
    placer.put(&pb, &copy).await;
    for o in latest["output"].as_array().unwrap() {
        let r = o["valueReference"]["reference"].as_str().unwrap();
        let mut dr: Value = placer.read(&format!("{fb}/{r}")).await;
        dr["meta"] = json!({"source": format!("{fb}/{r}")});
        placer.put(&pb, &dr).await;
    }
    assert_eq!(placer.events_since_start(&fb, "placer-results").await, 2);

    // someone who only reaches the placer's Herald
    let reader = Party::anonymous();
    let found = reader
        .read(&format!("{pb}/Task?identifier={PLACER_TASKS}|ct-1"))
        .await;
    assert_eq!(found["total"], 1, "{found}");
    let task = &found["entry"][0]["resource"];
    assert_eq!(task["meta"]["source"], format!("{fb}/Task/ct-1"));
    let outputs: Vec<String> = task["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["valueReference"]["reference"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        outputs,
        ["DiagnosticReport/dr-prelim", "DiagnosticReport/dr-final"]
    );
    for r in outputs {
        let dr = reader.read(&format!("{pb}/{r}")).await;
        assert_eq!(dr["code"]["coding"][0]["code"], "2345-7");
    }
}
