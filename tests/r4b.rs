//! The R4B tenant (`/fhir/r4b`, FHIR 4.3.0 with the Subscriptions Backport) end to end: the
//! scenarios of `herald_tests::suite` on R4B, plus what only R4B has: native SubscriptionTopics
//! without R5's `name` and `comparator`, R5 topic bodies refused, its own data and resource
//! types, and the websocket channel bound with a backport (GET) token carrying R4B Bundles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_fhir::FhirVersion;
use herald_tests::suite;
use herald_tests::{Herald, client, create, get, post_refused, send, topic};
use reqwest::StatusCode;
use serde_json::json;

const V: FhirVersion = FhirVersion::R4B;

#[tokio::test]
async fn r4b_builtin_topics_are_subscription_topics_and_advertised_in_a_4_3_0_statement() {
    suite::builtin_topics_are_served_and_advertised(V).await;
}

#[tokio::test]
async fn r4b_subscription_is_stored_requested_with_identifier_and_filters() {
    suite::subscription_is_stored_requested_with_identifier_and_filters(V).await;
}

#[tokio::test]
async fn r4b_invalid_subscriptions_are_refused_and_nothing_is_stored() {
    suite::invalid_subscriptions_are_refused_and_nothing_is_stored(V).await;
}

#[tokio::test]
async fn r4b_matching_writes_become_numbered_versioned_events() {
    suite::matching_writes_become_numbered_versioned_events(V).await;
}

#[tokio::test]
async fn r4b_events_carry_the_triggering_version_at_full_resource() {
    suite::events_carry_the_triggering_version_at_full_resource(V).await;
}

#[tokio::test]
async fn r4b_owner_reassignment_notifies_old_and_new_owner() {
    suite::owner_reassignment_notifies_old_and_new_owner(V).await;
}

#[tokio::test]
async fn r4b_status_topic_ignores_changes_that_keep_the_status() {
    suite::status_topic_ignores_changes_that_keep_the_status(V).await;
}

#[tokio::test]
async fn r4b_subscriptions_created_later_off_or_deleted_get_nothing() {
    suite::subscriptions_created_later_off_or_deleted_get_nothing(V).await;
}

#[tokio::test]
async fn r4b_event_numbers_continue_across_a_crash_restart() {
    suite::event_numbers_continue_across_a_crash_restart(V).await;
}

#[tokio::test]
async fn r4b_servicerequest_topic_notifies_the_owner_of_its_task() {
    suite::servicerequest_topic_notifies_the_owner_of_its_task(V).await;
}

#[tokio::test]
async fn r4b_handshake_then_active_then_every_payload_level_has_its_shape() {
    suite::handshake_then_active_then_every_payload_level_has_its_shape(V).await;
}

#[tokio::test]
async fn r4b_heartbeats_arrive_while_idle_only_when_a_period_is_set() {
    suite::heartbeats_arrive_while_idle_only_when_a_period_is_set(V).await;
}

#[tokio::test]
async fn r4b_a_backlog_is_delivered_in_order_in_batches_of_at_most_max_count() {
    suite::a_backlog_is_delivered_in_order_in_batches_of_at_most_max_count(V).await;
}

#[tokio::test]
async fn r4b_an_outage_sets_error_keeps_counting_and_recovery_makes_it_active() {
    suite::an_outage_sets_error_keeps_counting_and_recovery_makes_it_active(V).await;
}

#[tokio::test]
async fn r4b_topics_can_be_searched_created_and_builtins_are_protected() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4b");
    let (_, b) = get(
        &c,
        &format!(
            "{base}/SubscriptionTopic?url={}",
            topic("cow-task-status-changed")
        ),
    )
    .await;
    assert_eq!(b["total"], 1, "{b}");
    let (_, b) = get(&c, &format!("{base}/SubscriptionTopic?status=active")).await;
    assert_eq!(
        b["total"],
        herald_subscriptions::builtin::BUILTIN_IDS.len(),
        "{b}"
    );
    // an R4B topic: comparators are listed among the modifiers
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
        "canFilterBy": [{"resource": "Task", "filterParameter": "owner", "modifier": ["="]}]
    });
    create(&c, &base, "SubscriptionTopic", &custom).await;
    let (_, b) = get(&c, &format!("{base}/SubscriptionTopic?title=task%20compl")).await;
    assert_eq!(b["total"], 1, "{b}");
    // a subscription on it fires only on completion
    let mut s =
        herald_tests::r4_subscription("x", &[], "https://placer.example.org/notify", "id-only");
    s["criteria"] = json!("http://example.org/topics/task-completed");
    let sub = create(&c, &base, "Subscription", &s).await;
    let t = create(&c, &base, "Task", &herald_tests::task("Organization/lab")).await;
    let url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
    let mut t2 = t.clone();
    t2["status"] = json!("completed");
    send(&c, reqwest::Method::PUT, &url, &t2).await;
    t2["description"] = json!("still completed");
    send(&c, reqwest::Method::PUT, &url, &t2).await;
    let st = herald_tests::versions::status(&c, V, &base, sub["id"].as_str().unwrap()).await;
    assert_eq!(st.events_since_start, Some(1));
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
    // R5-only elements are not R4B
    let refused = [StatusCode::UNPROCESSABLE_ENTITY, StatusCode::BAD_REQUEST];
    let mut named = custom.clone();
    named["url"] = json!("http://example.org/topics/named");
    named["name"] = json!("TaskCompleted");
    post_refused(
        &c,
        &format!("{base}/SubscriptionTopic"),
        &named,
        &refused,
        "SubscriptionTopic.name",
    )
    .await;
    let mut compared = custom.clone();
    compared["url"] = json!("http://example.org/topics/compared");
    compared["canFilterBy"][0]["comparator"] = json!(["eq"]);
    post_refused(
        &c,
        &format!("{base}/SubscriptionTopic"),
        &compared,
        &refused,
        "comparator",
    )
    .await;
    // R4's Basic-wrapped topics are not how R4B carries topics
    let (_, basic) = get(&c, &format!("{}/Basic/cow-task-changed", h.fhir("r4"))).await;
    let (_, search) = get(&c, &format!("{base}/Basic")).await;
    assert_eq!(search["total"], 0, "no Basic topics on R4B: {search}");
    assert_eq!(basic["code"]["coding"][0]["code"], "SubscriptionTopic");
}

#[tokio::test]
async fn r4b_tenant_has_its_own_data() {
    let h = Herald::start();
    let c = client();
    let t = create(
        &c,
        &h.fhir("r4b"),
        "Task",
        &herald_tests::task("Organization/lab"),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let (s, _) = get(&c, &format!("{}/Task/{id}", h.fhir("r4"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&c, &format!("{}/Task/{id}", h.fhir("r5"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // a resource type R4B removed is unknown there
    let (s, _) = get(&c, &format!("{}/MedicinalProduct", h.fhir("r4b"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&c, &format!("{}/MedicinalProduct", h.fhir("r4"))).await;
    assert_eq!(s, StatusCode::OK);
}

/// The next text frame of `ws` as JSON, within the wait.
async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> serde_json::Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(herald_tests::versions::WAIT, ws.next())
            .await
            .expect("a frame within the wait")
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn r4b_websocket_binds_with_a_get_token_and_carries_r4b_bundles() {
    use futures_util::SinkExt;
    use herald_subscriptions::notification::{NotificationType, parse_notification};
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4b");
    let mut s = herald_tests::r4_subscription("cow-task-changed", &[], "", "id-only");
    s["channel"]["type"] = json!("websocket");
    s["channel"].as_object_mut().unwrap().remove("endpoint");
    let sub = create(&c, &base, "Subscription", &s).await;
    let id = sub["id"].as_str().unwrap();
    // the backport allows GET (R5 asks for POST)
    let (status, p) = get(
        &c,
        &format!("{base}/Subscription/{id}/$get-ws-binding-token"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let param = |name: &str, key: &str| {
        p["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .and_then(|x| x[key].as_str())
            .unwrap_or_else(|| panic!("{name} in {p}"))
            .to_owned()
    };
    let (token, url) = (
        param("token", "valueString"),
        param("websocket-url", "valueUrl"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("websocket connect");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        format!("bind-with-token {token}").into(),
    ))
    .await
    .expect("send");
    let hs = next_frame(&mut ws).await;
    herald_tests::versions::assert_notification_shape(V, &hs);
    assert_eq!(
        parse_notification(&hs).unwrap().kind,
        NotificationType::Handshake
    );
    create(&c, &base, "Task", &herald_tests::task("Organization/lab")).await;
    let n = loop {
        let v = next_frame(&mut ws).await;
        let n = parse_notification(&v).unwrap();
        if n.kind == NotificationType::EventNotification {
            herald_tests::versions::assert_notification_shape(V, &v);
            break n;
        }
    };
    assert_eq!(n.events.iter().map(|e| e.number).collect::<Vec<_>>(), [1]);
}
