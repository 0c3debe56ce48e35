//! The websocket channel end to end, with a real tokio-tungstenite client against the real
//! binary: binding tokens, every bind form, one handshake per subscription, live notifications
//! in order, heartbeats, expiry and re-binding, unbinding, bad tokens, no loss across
//! disconnects (queued while unbound, resume by event number), slow consumers cut off.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_subscriptions::notification::{NotificationType, parse_notification};
use herald_tests::{Herald, client, create, get, r4_subscription, r5_subscription, send, task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

fn r5_ws_subscription(heartbeat: Option<u32>) -> Value {
    let mut s = r5_subscription("cow-task-changed", &[], "", "id-only");
    s["channelType"]["code"] = json!("websocket");
    s.as_object_mut().unwrap().remove("endpoint");
    if let Some(h) = heartbeat {
        s["heartbeatPeriod"] = json!(h);
    }
    s
}

fn r4_ws_subscription() -> Value {
    let mut s = r4_subscription("cow-task-changed", &[], "", "id-only");
    s["channel"]["type"] = json!("websocket");
    s["channel"].as_object_mut().unwrap().remove("endpoint");
    s
}

async fn subscribe(c: &reqwest::Client, base: &str, body: &Value) -> String {
    create(c, base, "Subscription", body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `$get-ws-binding-token` (POST); returns (token, websocket-url).
async fn token(c: &reqwest::Client, base: &str, id: &str) -> (String, String) {
    let (s, p) = send(
        c,
        Method::POST,
        &format!("{base}/Subscription/{id}/$get-ws-binding-token"),
        &json!({"resourceType": "Parameters"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    parameters(&p)
}

fn parameters(p: &Value) -> (String, String) {
    let find = |name: &str, key: &str| {
        p["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .and_then(|x| x[key].as_str())
            .unwrap_or_else(|| panic!("{name} in {p}"))
            .to_owned()
    };
    (
        find("token", "valueString"),
        find("websocket-url", "valueUrl"),
    )
}

async fn connect(url: &str) -> Ws {
    connect_async(url).await.expect("websocket connect").0
}

/// The next text frame as JSON (panics after WAIT).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
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

/// The next notification, skipping heartbeats.
async fn next_notification(ws: &mut Ws) -> (NotificationType, Vec<u64>, Value) {
    loop {
        let v = next(ws).await;
        assert_eq!(v["resourceType"], "Bundle", "not a notification: {v}");
        let n = parse_notification(&v).expect("a notification");
        if n.kind == NotificationType::Heartbeat {
            continue;
        }
        return (n.kind, n.events.iter().map(|e| e.number).collect(), v);
    }
}

/// Collects event numbers until `n` arrived.
async fn events(ws: &mut Ws, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n {
        let (kind, numbers, v) = next_notification(ws).await;
        assert_eq!(kind, NotificationType::EventNotification, "{v}");
        got.extend(numbers);
    }
    got
}

/// Asserts that nothing but heartbeats arrives for a moment.
async fn quiet(ws: &mut Ws) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        let n = parse_notification(&v).expect("notification");
        assert_eq!(n.kind, NotificationType::Heartbeat, "unexpected {v}");
    }
}

async fn say(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

#[tokio::test]
async fn every_bind_form_gets_a_handshake_then_live_notifications_in_order() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    for form in [
        "bind-with-token {t}",
        "bind-with-token: {t}",
        r#"{"type":"bind-with-token","payload":{"token":"{t}"}}"#,
    ] {
        let id = subscribe(&c, &base, &r5_ws_subscription(None)).await;
        let (t, url) = token(&c, &base, &id).await;
        assert!(url.starts_with("ws://") && url.ends_with("/ws"), "{url}");
        let mut ws = connect(&url).await;
        say(&mut ws, &form.replace("{t}", &t)).await;
        let (kind, numbers, hs) = next_notification(&mut ws).await;
        assert_eq!(kind, NotificationType::Handshake, "{form}: {hs}");
        assert!(numbers.is_empty());
        for _ in 0..10 {
            create(&c, &base, "Task", &task("Organization/lab")).await;
        }
        assert_eq!(
            events(&mut ws, 10).await,
            (1..=10).collect::<Vec<_>>(),
            "{form}"
        );
        // the subscription became active with its first bind
        let (_, sub) = get(&c, &format!("{base}/Subscription/{id}")).await;
        assert_eq!(sub["status"], "active", "{sub}");
        // other subscriptions of this loop are not bound to this socket
        drop(ws);
    }
}

#[tokio::test]
async fn one_socket_carries_several_subscriptions_each_with_its_handshake() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let a = subscribe(&c, &base, &r4_ws_subscription()).await;
    let b = subscribe(&c, &base, &r4_ws_subscription()).await;
    // R4 backport: GET is allowed; type level with several ids
    let (s, p) = get(
        &c,
        &format!("{base}/Subscription/$get-ws-binding-token?id={a}&id={b}"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let subs: Vec<&str> = p["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "subscription")
        .map(|x| x["valueString"].as_str().unwrap())
        .collect();
    assert_eq!(subs.len(), 2, "{p}");
    assert!(subs[0].ends_with(&format!("/Subscription/{a}")), "{p}");
    let (t, url) = parameters(&p);
    let mut ws = connect(&url).await;
    say(&mut ws, &format!("bind-with-token {t}")).await;
    let mut handshakes = Vec::new();
    for _ in 0..2 {
        let (kind, _, v) = next_notification(&mut ws).await;
        assert_eq!(kind, NotificationType::Handshake);
        handshakes.push(
            parse_notification(&v)
                .unwrap()
                .subscription_reference
                .unwrap(),
        );
    }
    handshakes.sort();
    let mut want = vec![
        format!("{base}/Subscription/{a}"),
        format!("{base}/Subscription/{b}"),
    ];
    want.sort();
    assert_eq!(handshakes, want);
    create(&c, &base, "Task", &task("Organization/lab")).await;
    // one notification per subscription, each its own event 1
    let mut refs = Vec::new();
    for _ in 0..2 {
        let (kind, numbers, v) = next_notification(&mut ws).await;
        assert_eq!(
            (kind, numbers),
            (NotificationType::EventNotification, vec![1])
        );
        refs.push(
            parse_notification(&v)
                .unwrap()
                .subscription_reference
                .unwrap(),
        );
    }
    refs.sort();
    assert_eq!(refs, want);
}

#[tokio::test]
async fn r5_asks_for_post_and_tokens_are_only_for_websocket_subscriptions() {
    let h = Herald::start_with(&[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    let base = h.fhir("r5");
    let id = subscribe(&c, &base, &r5_ws_subscription(None)).await;
    let (s, oo) = get(
        &c,
        &format!("{base}/Subscription/{id}/$get-ws-binding-token"),
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let hook = subscribe(
        &c,
        &base,
        &r5_subscription(
            "cow-task-changed",
            &[],
            "http://127.0.0.1:9/hook",
            "id-only",
        ),
    )
    .await;
    let (s, oo) = send(
        &c,
        Method::POST,
        &format!("{base}/Subscription/{hook}/$get-ws-binding-token"),
        &json!({"resourceType": "Parameters"}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    let (s, _) = send(
        &c,
        Method::POST,
        &format!("{base}/Subscription/nope/$get-ws-binding-token"),
        &json!({"resourceType": "Parameters"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bad_or_used_token_gets_an_error_and_nothing_else() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    let id = subscribe(&c, &base, &r5_ws_subscription(None)).await;
    let (t, url) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(&mut ws, "bind-with-token not-a-token").await;
    let e = next(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert!(
        e["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown binding token"),
        "{e}"
    );
    say(&mut ws, "subscribe please").await;
    assert_eq!(next(&mut ws).await["type"], "error");
    create(&c, &base, "Task", &task("Organization/lab")).await;
    quiet(&mut ws).await;
    // a token is single-use
    say(&mut ws, &format!("bind-with-token {t}")).await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    assert_eq!(events(&mut ws, 1).await, vec![1]);
    let mut other = connect(&url).await;
    say(&mut other, &format!("bind-with-token {t}")).await;
    assert_eq!(next(&mut other).await["type"], "error");
    // ping
    say(&mut ws, "ping").await;
    assert_eq!(next(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn heartbeats_arrive_on_an_idle_bound_socket() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    let id = subscribe(&c, &base, &r5_ws_subscription(Some(1))).await;
    let (t, url) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(&mut ws, &format!("bind-with-token {t}")).await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    let v = next(&mut ws).await;
    assert_eq!(
        parse_notification(&v).unwrap().kind,
        NotificationType::Heartbeat,
        "{v}"
    );
}

#[tokio::test]
async fn an_expired_binding_is_unbound_and_a_fresh_token_keeps_the_socket() {
    let h = Herald::start_with(&[("HERALD__DELIVERY__WS_TOKEN_TTL_SECS", "2")]);
    let c = client();
    let base = h.fhir("r5");
    let id = subscribe(&c, &base, &r5_ws_subscription(None)).await;
    let (t, url) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(&mut ws, &format!("bind-with-token {t}")).await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    // re-bind on the same socket with a fresh token before expiry
    let (t2, _) = token(&c, &base, &id).await;
    say(&mut ws, &format!("bind-with-token {t2}")).await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    create(&c, &base, "Task", &task("Organization/lab")).await;
    assert_eq!(events(&mut ws, 1).await, vec![1]);
    // then let it expire
    let u = next(&mut ws).await;
    assert_eq!(u["type"], "unbound", "{u}");
    assert!(
        u["payload"]["reason"].as_str().unwrap().contains("expired"),
        "{u}"
    );
    create(&c, &base, "Task", &task("Organization/lab")).await;
    quiet(&mut ws).await;
    // an expired token cannot bind
    let (t3, _) = token(&c, &base, &id).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    say(&mut ws, &format!("bind-with-token {t3}")).await;
    let e = next(&mut ws).await;
    assert!(
        e["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{e}"
    );
}

#[tokio::test]
async fn unbinding_stops_notifications_and_they_wait_for_the_next_bind() {
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r5");
    let id = subscribe(&c, &base, &r5_ws_subscription(None)).await;
    let (t, url) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(
        &mut ws,
        &format!(r#"{{"type":"bind-with-token","payload":{{"token":"{t}"}}}}"#),
    )
    .await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    say(&mut ws, &format!("unbind-from-token: {t}")).await;
    assert_eq!(next(&mut ws).await["type"], "unbound");
    for _ in 0..3 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    quiet(&mut ws).await;
    let (t, _) = token(&c, &base, &id).await;
    say(&mut ws, &format!("bind-with-token {t}")).await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    assert_eq!(events(&mut ws, 3).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn events_made_while_disconnected_arrive_on_the_next_bind_and_a_resume_resends_from_a_number()
{
    let h = Herald::start();
    let c = client();
    let base = h.fhir("r4");
    let id = subscribe(&c, &base, &r4_ws_subscription()).await;
    let (t, url) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(&mut ws, &format!("bind-with-token {t}")).await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    for _ in 0..3 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    assert_eq!(events(&mut ws, 3).await, vec![1, 2, 3]);
    ws.close(None).await.expect("close");
    drop(ws);
    // written while nobody listens: queued, not lost
    for _ in 0..3 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    let (t, _) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(&mut ws, &format!("bind-with-token {t}")).await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    assert_eq!(
        events(&mut ws, 3).await,
        vec![4, 5, 6],
        "in order, no gap, no repeat"
    );
    drop(ws);
    // the client says it processed up to 2: 3..6 again, then live ones
    let (t, _) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(
        &mut ws,
        &format!(
            r#"{{"type":"bind-with-token","payload":{{"token":"{t}","last-event-number":2}}}}"#
        ),
    )
    .await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    assert_eq!(events(&mut ws, 4).await, vec![3, 4, 5, 6]);
    create(&c, &base, "Task", &task("Organization/lab")).await;
    assert_eq!(events(&mut ws, 1).await, vec![7]);
    // $events serves any gap too
    let (s, b) = get(
        &c,
        &format!("{base}/Subscription/{id}/$events?eventsSinceNumber=2&eventsUntilNumber=3"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        parse_notification(&b)
            .unwrap()
            .events
            .iter()
            .map(|e| e.number)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_with_a_reason() {
    // (an hour between retries: a new socket must not wait for what its predecessor earned)
    let h = Herald::start_with(&[
        ("HERALD__DELIVERY__WS_SEND_BUFFER", "2"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[3600]"),
    ]);
    let c = client();
    let base = h.fhir("r5");
    let mut sub = r5_ws_subscription(None);
    sub["content"] = json!("full-resource");
    sub["maxCount"] = json!(1);
    let id = subscribe(&c, &base, &sub).await;
    let (t, url) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(&mut ws, &format!("bind-with-token {t}")).await;
    // large notifications, never read, until the kernel buffers and then Herald's fill
    let mut big = task("Organization/lab");
    big["note"] = json!([{"text": "x".repeat(200_000)}]);
    for _ in 0..120 {
        create(&c, &base, "Task", &big).await;
    }
    // now read: frames that made it, then the reason, then the close
    let mut reason = None;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("frames") {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    reason = v["payload"]["message"].as_str().map(str::to_owned);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    let reason = reason.expect("a reason before the close");
    assert!(reason.contains("slow consumer"), "{reason}");
    // Herald is fine, and the subscription's queue is intact: a new socket resumes from the
    // start and gets all 120, in order, without waiting for a retry
    let (t, _) = token(&c, &base, &id).await;
    let mut ws = connect(&url).await;
    say(
        &mut ws,
        &format!(
            r#"{{"type":"bind-with-token","payload":{{"token":"{t}","last-event-number":0}}}}"#
        ),
    )
    .await;
    assert_eq!(
        next_notification(&mut ws).await.0,
        NotificationType::Handshake
    );
    assert_eq!(events(&mut ws, 120).await, (1..=120).collect::<Vec<_>>());
}
