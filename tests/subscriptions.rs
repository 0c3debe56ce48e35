//! Topics, Subscriptions and the matching engine end to end: built-in topics per version,
//! Subscription acceptance and every refusal, events recorded for matching writes (numbered,
//! versioned, gap-free across restarts), `$status` and `$events`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_tests::{
    Herald, client, create, get, post_refused, r4_subscription, r5_subscription, send, task, topic,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const HOOK: &str = "https://placer.example.org/notify";

/// (event numbers, focus references) of `$events` on an R4 tenant.
async fn r4_events(c: &reqwest::Client, base: &str, sub: &str, query: &str) -> Vec<(u64, String)> {
    let (s, b) = get(c, &format!("{base}/Subscription/{sub}/$events?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["type"], "history");
    let status = &b["entry"][0]["resource"];
    assert_eq!(status["resourceType"], "Parameters");
    status["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "notification-event")
        .map(|p| {
            let parts = p["part"].as_array().unwrap();
            let n = parts.iter().find(|x| x["name"] == "event-number").unwrap()["valueString"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let focus = parts
                .iter()
                .find(|x| x["name"] == "focus")
                .map(|x| {
                    x["valueReference"]["reference"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .unwrap_or_default();
            (n, focus)
        })
        .collect()
}

fn param<'a>(params: &'a Value, name: &str) -> &'a Value {
    params["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn r4_tenant_exposes_builtin_topics_as_basic_and_in_the_capability_statement() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    for id in [
        "cow-task-changed",
        "cow-task-status-changed",
        "cow-cancellation-requested",
        "cow-servicerequest-for-owner",
        "cow-task-output-added",
    ] {
        let (s, b) = get(&c, &format!("{base}/Basic/{id}")).await;
        assert_eq!(s, StatusCode::OK, "Basic/{id}");
        assert_eq!(b["code"]["coding"][0]["code"], "SubscriptionTopic");
    }
    let (_, cs) = get(&c, &format!("{base}/metadata")).await;
    let sub = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Subscription")
        .unwrap();
    let canonicals: Vec<&str> = sub["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["url"]
                .as_str()
                .unwrap()
                .ends_with("capabilitystatement-subscriptiontopic-canonical")
        })
        .map(|e| e["valueCanonical"].as_str().unwrap())
        .collect();
    assert!(
        canonicals.contains(&topic("cow-task-changed").as_str()),
        "{canonicals:?}"
    );
    assert_eq!(
        canonicals.len(),
        herald_subscriptions::builtin::BUILTIN_IDS.len()
    );
    assert_eq!(
        sub["supportedProfile"][0],
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
    );
    let ops: Vec<&str> = sub["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["status", "events", "get-ws-binding-token", "signing-secret"]
    );
}

#[tokio::test]
async fn r5_topics_can_be_searched_created_and_builtins_are_protected() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    let (_, b) = get(
        &c,
        &format!(
            "{base}/SubscriptionTopic?url={}",
            topic("cow-task-status-changed")
        ),
    )
    .await;
    assert_eq!(b["total"], 1);
    assert_eq!(b["entry"][0]["resource"]["id"], "cow-task-status-changed");
    let (_, b) = get(&c, &format!("{base}/SubscriptionTopic?resource=http://hl7.org/fhir/StructureDefinition/ServiceRequest")).await;
    // cow-servicerequest-for-owner and cow-servicerequest-changed
    assert_eq!(b["total"], 2, "{b}");
    let (_, b) = get(&c, &format!("{base}/SubscriptionTopic?status=active")).await;
    assert_eq!(b["total"], herald_subscriptions::builtin::BUILTIN_IDS.len());
    // a custom topic: Tasks that became completed
    let custom = json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topics/task-completed",
        "title": "Task completed",
        "status": "active",
        "resourceTrigger": [{
            "resource": "Task",
            "supportedInteraction": ["create", "update"],
            "queryCriteria": {"previous": "status:not=completed", "resultForCreate": "test-passes", "current": "status=completed", "requireBoth": true}
        }],
        "canFilterBy": [{"resource": "Task", "filterParameter": "owner"}]
    });
    create(&c, &base, "SubscriptionTopic", &custom).await;
    let (_, b) = get(&c, &format!("{base}/SubscriptionTopic?title=task%20compl")).await;
    assert_eq!(b["total"], 1);
    // built-in topics belong to Herald
    let (_, builtin) = get(&c, &format!("{base}/SubscriptionTopic/cow-task-changed")).await;
    let (s, oo) = send(
        &c,
        reqwest::Method::PUT,
        &format!("{base}/SubscriptionTopic/cow-task-changed"),
        &builtin,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{oo}");
    let r = c
        .delete(format!("{base}/SubscriptionTopic/cow-task-changed"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // a topic whose FHIRPath is outside the supported subset is refused
    let mut bad = custom.clone();
    bad["url"] = json!("http://example.org/topics/bad");
    bad["resourceTrigger"][0]["fhirPathCriteria"] = json!("%current.status.memberOf('http://x')");
    post_refused(
        &c,
        &format!("{base}/SubscriptionTopic"),
        &bad,
        &[StatusCode::UNPROCESSABLE_ENTITY],
        "memberOf",
    )
    .await;
}

#[tokio::test]
async fn r4_subscription_is_stored_requested_with_identifier_and_filters() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let mut s = r4_subscription(
        "cow-task-changed",
        &["Task?owner=Organization/lab"],
        HOOK,
        "id-only",
    );
    s["extension"] = json!([{"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.identifier", "valueIdentifier": {"system": "urn:placer", "value": "sub-1"}}]);
    let created = create(&c, &base, "Subscription", &s).await;
    assert_eq!(created["status"], "requested");
    assert_eq!(
        created["_criteria"]["extension"][0]["valueString"],
        "Task?owner=Organization/lab"
    );
    assert!(
        created.to_string().contains("sub-1"),
        "identifier kept: {created}"
    );
}

#[tokio::test]
async fn invalid_subscriptions_are_refused_and_nothing_is_stored() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let good = r4_subscription(
        "cow-task-changed",
        &["Task?owner=Organization/lab"],
        HOOK,
        "id-only",
    );
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut v = good.clone();
    v["criteria"] = json!("http://example.org/no-such-topic");
    cases.push(("unknown topic", v, "no-such-topic"));
    cases.push((
        "filter not allowed",
        r4_subscription(
            "cow-task-changed",
            &["Task?priority=urgent"],
            HOOK,
            "id-only",
        ),
        "priority",
    ));
    cases.push((
        "modifier not allowed",
        r4_subscription(
            "cow-task-changed",
            &["Task?owner:contains=lab"],
            HOOK,
            "id-only",
        ),
        "contains",
    ));
    let mut v = good.clone();
    v["channel"]["type"] = json!("carrier-pigeon");
    cases.push(("unknown channel type", v, "carrier-pigeon"));
    let mut v = good.clone();
    v["channel"]["endpoint"] = json!("mailto:someone@example.org");
    cases.push(("endpoint does not fit rest-hook", v, "mailto"));
    let mut v = good.clone();
    v["channel"]["payload"] = json!("application/fhir+xml");
    cases.push(("unknown MIME type", v, "xml"));
    cases.push((
        "unknown content level",
        r4_subscription("cow-task-changed", &[], HOOK, "everything"),
        "everything",
    ));
    let mut v = good.clone();
    v["channel"]["extension"] = json!([{"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.heartbeatPeriod", "valueUnsignedInt": 60}]);
    cases.push((
        "cross-version extension where the backport has its own",
        v,
        "heartbeat",
    ));
    let mut v = good.clone();
    v["status"] = json!("active");
    cases.push(("client cannot set active", v, "active"));
    for (what, body, needle) in cases {
        let refused = [StatusCode::UNPROCESSABLE_ENTITY, StatusCode::BAD_REQUEST];
        eprintln!("case: {what}");
        post_refused(&c, &format!("{base}/Subscription"), &body, &refused, needle).await;
    }
    let (_, all) = get(&c, &format!("{base}/Subscription")).await;
    assert_eq!(all["total"], 0, "nothing stored");
    // R5: unknown filter parameter and scr-1 (comparator and modifier together)
    let base5 = h.fhir("r5");
    let (s, _) = send(
        &c,
        reqwest::Method::POST,
        &format!("{base5}/Subscription"),
        &r5_subscription("cow-task-changed", &[("nonsense", "x")], HOOK, "id-only"),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let mut v = r5_subscription(
        "cow-task-changed",
        &[("owner", "Organization/lab")],
        HOOK,
        "id-only",
    );
    v["filterBy"][0]["comparator"] = json!("eq");
    v["filterBy"][0]["modifier"] = json!("not");
    let (s, _) = send(
        &c,
        reqwest::Method::POST,
        &format!("{base5}/Subscription"),
        &v,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn matching_writes_become_numbered_versioned_events() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let sub = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription(
            "cow-task-changed",
            &["Task?owner=Organization/lab"],
            HOOK,
            "id-only",
        ),
    )
    .await;
    let sid = sub["id"].as_str().unwrap();
    let mine = create(&c, &base, "Task", &task("Organization/lab")).await;
    create(&c, &base, "Task", &task("Organization/other")).await;
    let tid = mine["id"].as_str().unwrap();
    let mut t = mine.clone();
    t["status"] = json!("accepted");
    send(&c, reqwest::Method::PUT, &format!("{base}/Task/{tid}"), &t).await;
    // the same content again is a no-op and triggers nothing
    send(&c, reqwest::Method::PUT, &format!("{base}/Task/{tid}"), &t).await;
    let events = r4_events(&c, &base, sid, "").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, 1);
    assert!(
        events[0].1.ends_with(&format!("Task/{tid}/_history/1")),
        "{events:?}"
    );
    assert_eq!(events[1].0, 2);
    assert!(events[1].1.ends_with(&format!("Task/{tid}/_history/2")));
    // $status counts them
    let (s, b) = get(&c, &format!("{base}/Subscription/{sid}/$status")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["type"], "searchset");
    let st = &b["entry"][0]["resource"];
    assert_eq!(
        param(st, "events-since-subscription-start")["valueString"],
        "2"
    );
    assert_eq!(param(st, "type")["valueCode"], "query-status");
    // requested until a handshake succeeds; this endpoint does not exist, so delivery may
    // already have marked it error (the delivery tests pin that down)
    let status = param(st, "status")["valueCode"].as_str().unwrap();
    assert!(status == "requested" || status == "error", "{status}");
    // ranges are inclusive
    assert_eq!(
        r4_events(&c, &base, sid, "eventsSinceNumber=2&eventsUntilNumber=2")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn owner_reassignment_notifies_old_and_new_owner() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let a = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription(
            "cow-task-changed",
            &["Task?owner=Organization/a"],
            HOOK,
            "id-only",
        ),
    )
    .await;
    let b = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription(
            "cow-task-changed",
            &["Task?owner=Organization/b"],
            HOOK,
            "id-only",
        ),
    )
    .await;
    let t = create(&c, &base, "Task", &task("Organization/a")).await;
    let mut t2 = t.clone();
    t2["owner"] = json!({"reference": "Organization/b"});
    send(
        &c,
        reqwest::Method::PUT,
        &format!("{base}/Task/{}", t["id"].as_str().unwrap()),
        &t2,
    )
    .await;
    assert_eq!(
        r4_events(&c, &base, a["id"].as_str().unwrap(), "")
            .await
            .len(),
        2
    );
    assert_eq!(
        r4_events(&c, &base, b["id"].as_str().unwrap(), "")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn status_topic_ignores_changes_that_keep_the_status() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let s = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription("cow-task-status-changed", &[], HOOK, "id-only"),
    )
    .await;
    let t = create(&c, &base, "Task", &task("Organization/a")).await;
    let url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
    let mut t2 = t.clone();
    t2["description"] = json!("only the description changed");
    send(&c, reqwest::Method::PUT, &url, &t2).await;
    t2["status"] = json!("in-progress");
    send(&c, reqwest::Method::PUT, &url, &t2).await;
    let ev = r4_events(&c, &base, s["id"].as_str().unwrap(), "").await;
    assert_eq!(
        ev.iter().map(|e| e.0).collect::<Vec<_>>(),
        [1, 2],
        "create and the status change: {ev:?}"
    );
    assert!(ev[1].1.ends_with("/_history/3"));
}

#[tokio::test]
async fn subscriptions_created_later_off_or_deleted_get_nothing() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    create(&c, &base, "Task", &task("Organization/lab")).await;
    let late = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription("cow-task-changed", &[], HOOK, "id-only"),
    )
    .await;
    let off = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription("cow-task-changed", &[], HOOK, "id-only"),
    )
    .await;
    let gone = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription("cow-task-changed", &[], HOOK, "id-only"),
    )
    .await;
    let mut o = off.clone();
    o["status"] = json!("off");
    let (s, v) = send(
        &c,
        reqwest::Method::PUT,
        &format!("{base}/Subscription/{}", off["id"].as_str().unwrap()),
        &o,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    c.delete(format!(
        "{base}/Subscription/{}",
        gone["id"].as_str().unwrap()
    ))
    .send()
    .await
    .unwrap();
    create(&c, &base, "Task", &task("Organization/lab")).await;
    assert_eq!(
        r4_events(&c, &base, late["id"].as_str().unwrap(), "")
            .await
            .len(),
        1,
        "only the later change"
    );
    assert_eq!(
        r4_events(&c, &base, off["id"].as_str().unwrap(), "")
            .await
            .len(),
        0
    );
    let (s, _) = get(
        &c,
        &format!(
            "{base}/Subscription/{}/$events",
            gone["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(s, StatusCode::GONE);
}

#[tokio::test]
async fn event_numbers_continue_across_a_crash_restart() {
    let mut h = Herald::start();
    let c = client();
    let sub = create(
        &c,
        &h.fhir("r4"),
        "Subscription",
        &r4_subscription("cow-task-changed", &[], HOOK, "id-only"),
    )
    .await;
    let sid = sub["id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        create(&c, &h.fhir("r4"), "Task", &task("Organization/lab")).await;
    }
    h.kill9();
    h.restart();
    for _ in 0..2 {
        create(&c, &h.fhir("r4"), "Task", &task("Organization/lab")).await;
    }
    let nums: Vec<u64> = r4_events(&c, &h.fhir("r4"), &sid, "")
        .await
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(nums, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn r5_events_carry_the_triggering_version_at_full_resource() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    let sub = create(
        &c,
        &base,
        "Subscription",
        &r5_subscription(
            "cow-task-changed",
            &[("owner", "Organization/lab")],
            HOOK,
            "full-resource",
        ),
    )
    .await;
    assert_eq!(sub["status"], "requested");
    let sid = sub["id"].as_str().unwrap();
    let t = create(&c, &base, "Task", &task("Organization/lab")).await;
    let mut t2 = t.clone();
    t2["status"] = json!("accepted");
    send(
        &c,
        reqwest::Method::PUT,
        &format!("{base}/Task/{}", t["id"].as_str().unwrap()),
        &t2,
    )
    .await;
    let (s, b) = get(
        &c,
        &format!("{base}/Subscription/{sid}/$events?eventsSinceNumber=1&eventsUntilNumber=1"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["type"], "subscription-notification");
    let st = &b["entry"][0]["resource"];
    assert_eq!(st["resourceType"], "SubscriptionStatus");
    assert_eq!(st["type"], "query-event");
    assert_eq!(st["eventsSinceSubscriptionStart"], "2");
    assert_eq!(st["notificationEvent"].as_array().unwrap().len(), 1);
    assert_eq!(st["notificationEvent"][0]["eventNumber"], "1");
    let payload = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Task")
        .expect("focus entry");
    assert_eq!(
        payload["resource"]["meta"]["versionId"], "1",
        "the version that triggered event 1"
    );
    assert_eq!(payload["resource"]["status"], "requested");
    for e in b["entry"].as_array().unwrap() {
        assert!(e.get("fullUrl").is_some());
        assert!(
            e.get("response").is_none(),
            "R5 notification entries carry no response"
        );
    }
    // content=empty on request
    let (_, b) = get(
        &c,
        &format!("{base}/Subscription/{sid}/$events?content=empty"),
    )
    .await;
    assert_eq!(b["entry"].as_array().unwrap().len(), 1);
    // type-level $status on R5
    let (_, b) = get(
        &c,
        &format!("{base}/Subscription/$status?status=requested,error"),
    )
    .await;
    assert_eq!(b["type"], "searchset");
    assert_eq!(b["entry"][0]["resource"]["type"], "query-status");
    let (_, b) = get(&c, &format!("{base}/Subscription/$status?status=active")).await;
    assert_eq!(
        b["entry"].as_array().map_or(0, Vec::len),
        0,
        "never handshaken, never active"
    );
}

#[tokio::test]
async fn custom_r5_topic_with_query_criteria_fires_only_on_completion() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topics/task-completed",
        "status": "active",
        "resourceTrigger": [{
            "resource": "Task",
            "supportedInteraction": ["create", "update"],
            "queryCriteria": {"previous": "status:not=completed", "resultForCreate": "test-passes", "current": "status=completed", "requireBoth": true}
        }],
        "canFilterBy": [{"resource": "Task", "filterParameter": "owner"}]
    });
    create(&c, &base, "SubscriptionTopic", &topic).await;
    let mut s = r5_subscription("x", &[], HOOK, "id-only");
    s["topic"] = json!("http://example.org/topics/task-completed");
    let sub = create(&c, &base, "Subscription", &s).await;
    let t = create(&c, &base, "Task", &task("Organization/lab")).await;
    let url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
    let mut t2 = t.clone();
    t2["status"] = json!("completed");
    send(&c, reqwest::Method::PUT, &url, &t2).await;
    t2["description"] = json!("still completed");
    send(&c, reqwest::Method::PUT, &url, &t2).await;
    let (_, st) = get(
        &c,
        &format!(
            "{base}/Subscription/{}/$status",
            sub["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        st["entry"][0]["resource"]["eventsSinceSubscriptionStart"],
        "1"
    );
    // the topic is in use: deleting it is refused
    let (_, found) = get(
        &c,
        &format!("{base}/SubscriptionTopic?url=http://example.org/topics/task-completed"),
    )
    .await;
    let tid = found["entry"][0]["resource"]["id"].as_str().unwrap();
    let r = c
        .delete(format!("{base}/SubscriptionTopic/{tid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn servicerequest_topic_notifies_the_owner_of_its_task() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let sub = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription(
            "cow-servicerequest-for-owner",
            &["ServiceRequest?task-owner=Organization/lab"],
            HOOK,
            "id-only",
        ),
    )
    .await;
    let sr = create(&c, &base, "ServiceRequest", &json!({"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"Patient/p"}})).await;
    let srid = sr["id"].as_str().unwrap();
    let mut t = task("Organization/lab");
    t["focus"] = json!({"reference": format!("ServiceRequest/{srid}")});
    create(&c, &base, "Task", &t).await;
    let mut sr2 = sr.clone();
    sr2["note"] = json!([{"text": "supporting info changed"}]);
    let (s, v) = send(
        &c,
        reqwest::Method::PUT,
        &format!("{base}/ServiceRequest/{srid}"),
        &sr2,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Event 1: the Task naming the lab arrived after the ServiceRequest (news about version 1);
    // event 2: the ServiceRequest changed.
    let ev = r4_events(&c, &base, sub["id"].as_str().unwrap(), "").await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(
        ev[0]
            .1
            .contains(&format!("ServiceRequest/{srid}/_history/1"))
    );
    assert!(
        ev[1]
            .1
            .contains(&format!("ServiceRequest/{srid}/_history/2"))
    );
}
