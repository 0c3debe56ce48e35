//! Herald nodes on a NATS JetStream cluster (docs/cluster.md), end to end: three `nats-server`
//! processes on loopback (streams replicated 3 times) and three Herald nodes. Fails, never
//! skips, when nats-server is missing (`scripts/install-test-tools` installs it).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_subscriptions::notification::{NotificationType, parse_notification};
use herald_tests::cluster::{NatsCluster, node};
use herald_tests::receiver::{Receiver, delivered_events};
use herald_tests::{Herald, client, create, get, r4_subscription, send, task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Generous: the machine is shared and loaded.
const WAIT: Duration = Duration::from_secs(60);

async fn three_nodes() -> (NatsCluster, Vec<Herald>) {
    let nats = NatsCluster::start(3).await;
    let nodes = ["a", "b", "c"]
        .iter()
        .map(|id| node(&nats, id, 3))
        .collect();
    (nats, nodes)
}

/// Polls `url` on a node until it answers 200 with `pred` true; returns the body.
async fn eventually(c: &reqwest::Client, url: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, v) = get(c, url).await;
        if s == StatusCode::OK && pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never got there: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn writes_spread_over_the_nodes_are_readable_on_every_node() {
    let (_nats, nodes) = three_nodes().await;
    let c = client();
    let mut written = Vec::new();
    for i in 0..30 {
        let n = &nodes[i % 3];
        let t = create(
            &c,
            &n.fhir("r4"),
            "Task",
            &task(&format!("Organization/o{i}")),
        )
        .await;
        written.push((
            t["id"].as_str().unwrap().to_owned(),
            format!("Organization/o{i}"),
        ));
    }
    for n in &nodes {
        for (id, owner) in &written {
            let v = eventually(&c, &format!("{}/Task/{id}", n.fhir("r4")), |_| true).await;
            assert_eq!(v["owner"]["reference"], owner.as_str());
        }
        // Search runs on each node's own index, which holds every node's writes.
        let b = eventually(&c, &format!("{}/Task?_summary=count", n.fhir("r4")), |v| {
            v["total"] == 30
        })
        .await;
        assert_eq!(b["total"], 30);
    }
}

#[tokio::test]
async fn concurrent_if_match_updates_of_one_task_on_two_nodes_let_exactly_one_win() {
    let (_nats, nodes) = three_nodes().await;
    let c = client();
    for round in 0..5 {
        let t = create(&c, &nodes[0].fhir("r4"), "Task", &task("Organization/lab")).await;
        let id = t["id"].as_str().unwrap().to_owned();
        for n in &nodes[1..] {
            eventually(&c, &format!("{}/Task/{id}", n.fhir("r4")), |_| true).await;
        }
        let update = |n: &Herald, status: &str| {
            let (c, url) = (c.clone(), format!("{}/Task/{id}", n.fhir("r4")));
            let mut body = task("Organization/lab");
            body["id"] = json!(id);
            body["status"] = json!(status);
            async move {
                let r = c
                    .put(&url)
                    .header("content-type", "application/fhir+json")
                    .header("if-match", "W/\"1\"")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("put");
                r.status()
            }
        };
        let (x, y) = tokio::join!(update(&nodes[1], "accepted"), update(&nodes[2], "rejected"));
        let mut got = [x, y];
        got.sort();
        assert_eq!(
            got,
            [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
            "round {round}"
        );
        let winner = if x == StatusCode::OK {
            "accepted"
        } else {
            "rejected"
        };
        for n in &nodes {
            let v = eventually(&c, &format!("{}/Task/{id}", n.fhir("r4")), |v| {
                v["meta"]["versionId"] == "2"
            })
            .await;
            assert_eq!(v["status"], winner, "round {round}");
        }
    }
}

/// An R4 websocket Subscription on every Task change.
fn ws_subscription() -> Value {
    let mut body = r4_subscription("cow-task-changed", &[], "", "id-only");
    body["channel"]["type"] = json!("websocket");
    body["channel"].as_object_mut().unwrap().remove("endpoint");
    body
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Binds a socket on the node at `base` to subscription `id`.
async fn bind(c: &reqwest::Client, base: &str, id: &str) -> Ws {
    let (s, p) = send(
        c,
        Method::POST,
        &format!("{base}/Subscription/{id}/$get-ws-binding-token"),
        &json!({"resourceType": "Parameters"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let param = |name: &str, key: &str| {
        p["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()[key]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (token, url) = (
        param("token", "valueString"),
        param("websocket-url", "valueUrl"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    ws.send(Message::Text(format!("bind-with-token {token}").into()))
        .await
        .expect("bind");
    ws
}

/// Event numbers from the socket until `upto` arrived (in arrival order, repeats kept).
async fn ws_events_until(ws: &mut Ws, upto: u64) -> Vec<u64> {
    let mut numbers: Vec<u64> = Vec::new();
    while numbers.iter().max().is_none_or(|m| *m < upto) {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("frame");
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).expect("json");
        let n = parse_notification(&v).expect("notification");
        if n.kind == NotificationType::EventNotification {
            numbers.extend(n.events.iter().map(|e| e.number));
        }
    }
    numbers
}

/// `eventsSinceSubscriptionStart` from `$status` (any FHIR version's shape).
fn events_since_start(v: &Value) -> Option<u64> {
    match v {
        Value::Object(m) => {
            if m.get("name").and_then(Value::as_str) == Some("events-since-subscription-start") {
                return m
                    .iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .and_then(|(_, x)| {
                        x.as_u64()
                            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                    });
            }
            if let Some(n) = m.get("eventsSinceSubscriptionStart") {
                return n
                    .as_u64()
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()));
            }
            m.values().find_map(events_since_start)
        }
        Value::Array(a) => a.iter().find_map(events_since_start),
        _ => None,
    }
}

/// Delivered event numbers are 1..=n in order, gap-free; a number may come again only right
/// after it was first sent (the batch in flight when its node died).
fn assert_in_order_without_gaps(events: &[u64], n: u64) {
    let mut next = 1;
    for e in events {
        assert!(*e <= next, "gap before {e}: {events:?}");
        if *e == next {
            next += 1;
        }
    }
    assert_eq!(next, n + 1, "not every event arrived: {events:?}");
    let repeats = events.len() as u64 - n;
    assert!(
        repeats <= 10,
        "more than the batch in flight was repeated: {events:?}"
    );
}

#[tokio::test]
async fn a_rest_hook_subscription_is_delivered_by_one_node_in_order_without_gaps_across_a_kill9_mid_load()
 {
    let (_nats, mut nodes) = three_nodes().await;
    let c = client();
    let rx = Receiver::start().await;
    let sub = create(
        &c,
        &nodes[0].fhir("r4"),
        "Subscription",
        &r4_subscription("cow-task-changed", &[], &rx.url("/hook"), "id-only"),
    )
    .await;
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    let ws_id = create(&c, &nodes[0].fhir("r4"), "Subscription", &ws_subscription()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..20 {
        create(
            &c,
            &nodes[i % 3].fhir("r4"),
            "Task",
            &task("Organization/lab"),
        )
        .await;
    }
    let got = rx
        .wait_until("/hook", "events 1..=20", WAIT, |l| {
            delivered_events(l).iter().max() == Some(&20)
        })
        .await;
    // Exactly one node delivers: every notification names the same sender.
    let senders: std::collections::BTreeSet<String> =
        got.iter().filter_map(|r| r.sender()).collect();
    assert_eq!(senders.len(), 1, "{senders:?}");
    let sender = senders.into_iter().next().unwrap();
    let owner = nodes
        .iter()
        .position(|n| n.root.ends_with(&sender))
        .expect("a node sent it");
    // Writers on every node; the delivering node is killed in the middle of it.
    // A websocket client on a node that survives.
    let survivor = (owner + 1) % 3;
    eventually(
        &c,
        &format!("{}/Subscription/{ws_id}", nodes[survivor].fhir("r4")),
        |_| true,
    )
    .await;
    let mut ws = bind(&c, &nodes[survivor].fhir("r4"), &ws_id).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.fhir("r4")).collect();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&progress);
    let writer = tokio::spawn(async move {
        let c = client();
        let mut acked = Vec::new();
        for i in 0..60 {
            // A write to the killed node fails: it is simply not acknowledged.
            let r = c
                .post(format!("{}/Task", bases[i % 3]))
                .header("content-type", "application/fhir+json")
                .body(task("Organization/lab").to_string())
                .send()
                .await;
            if let Ok(r) = r
                && r.status() == StatusCode::CREATED
                && let Ok(v) = r.json::<Value>().await
            {
                acked.push(v["id"].as_str().unwrap().to_owned());
            }
            seen.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[owner].kill9();
    let acked = writer.await.expect("writer");
    assert!(
        acked.len() >= 40,
        "only {} writes acknowledged",
        acked.len()
    );
    nodes[owner].restart();
    // Every acknowledged write is on every node, the restarted one included.
    for n in &nodes {
        for id in &acked {
            eventually(&c, &format!("{}/Task/{id}", n.fhir("r4")), |_| true).await;
        }
    }
    let status = eventually(
        &c,
        &format!(
            "{}/Subscription/{sub_id}/$status",
            nodes[survivor].fhir("r4")
        ),
        |v| events_since_start(v).is_some_and(|n| n >= 20 + acked.len() as u64),
    )
    .await;
    let n = events_since_start(&status).unwrap();
    let got = rx
        .wait_until("/hook", "every event after the owner died", WAIT, |l| {
            delivered_events(l).iter().max() == Some(&n)
        })
        .await;
    assert_in_order_without_gaps(&delivered_events(&got), n);
    // The websocket client on the surviving node got every event too, in order.
    let ws_status = eventually(
        &c,
        &format!(
            "{}/Subscription/{ws_id}/$status",
            nodes[survivor].fhir("r4")
        ),
        |v| events_since_start(v).is_some_and(|m| m == n),
    )
    .await;
    let m = events_since_start(&ws_status).unwrap();
    assert_in_order_without_gaps(&ws_events_until(&mut ws, m).await, m);
}

#[tokio::test]
async fn a_websocket_client_on_one_node_gets_the_events_of_writes_on_the_others() {
    let (_nats, nodes) = three_nodes().await;
    let c = client();
    let base_b = nodes[1].fhir("r4");
    let id = create(&c, &nodes[0].fhir("r4"), "Subscription", &ws_subscription()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(&c, &format!("{base_b}/Subscription/{id}"), |_| true).await;
    let mut ws = bind(&c, &base_b, &id).await;
    for i in 0..10 {
        let n = if i % 2 == 0 { &nodes[0] } else { &nodes[2] };
        create(&c, &n.fhir("r4"), "Task", &task("Organization/lab")).await;
    }
    assert_eq!(
        ws_events_until(&mut ws, 10).await,
        (1..=10).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn a_nats_server_killed_and_restarted_mid_load_loses_no_acknowledged_write() {
    let (mut nats, nodes) = three_nodes().await;
    let c = client();
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..90 {
        if i == 30 {
            nats.kill9(1);
        }
        if i == 60 {
            nats.restart(1).await;
        }
        let (s, v) = send(
            &c,
            Method::POST,
            &format!("{}/Task", nodes[i % 3].fhir("r4")),
            &task(&format!("Organization/o{i}")),
        )
        .await;
        if s == StatusCode::CREATED {
            acked.push(v["id"].as_str().unwrap().to_owned());
        } else {
            refused += 1;
        }
    }
    assert!(
        acked.len() >= 60,
        "{refused} writes refused with one of three servers down"
    );
    for n in &nodes {
        for id in &acked {
            eventually(&c, &format!("{}/Task/{id}", n.fhir("r4")), |_| true).await;
        }
    }
}
