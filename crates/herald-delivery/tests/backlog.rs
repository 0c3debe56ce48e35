//! Start-up with a backlog: the dispatcher starts from the stored cursor and the durable count,
//! and reads one batch (`maxCount` events) per attempt — never the whole queue. Checked by
//! counting the store's event reads, not by timing. Real parts: a sled store on disk, the
//! rest-hook channel, a receiver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use herald_delivery::{DeliveryConfig, Dispatcher};
use herald_fhir::FhirVersion;
use herald_store::{
    DeliveryState, Durability, EventDraft, Store, StoreOptions, Surfaces, WriteKind, WriteRequest,
};
use herald_subscriptions::{
    Channel, ChannelType, PayloadContent, Subscription, SubscriptionStatus,
};
use serde_json::{Value, json};

const SUB: &str = "backlogged";
const BACKLOG: u64 = 5_000;
const MAX_COUNT: u32 = 50;

/// Records every request body and never answers (a receiver that went quiet): the first
/// attempt stays in flight, so whatever the dispatcher reads afterwards is start-up work.
#[derive(Clone, Default)]
struct Quiet {
    bodies: Arc<std::sync::Mutex<Vec<Value>>>,
    count: Arc<AtomicUsize>,
}

async fn hold(State(q): State<Quiet>, body: Bytes) -> &'static str {
    if let Ok(v) = serde_json::from_slice(&body) {
        q.bodies.lock().unwrap().push(v);
    }
    q.count.fetch_add(1, Ordering::SeqCst);
    std::future::pending::<()>().await;
    "never"
}

fn subscription(endpoint: &str) -> Subscription {
    Subscription {
        id: SUB.to_owned(),
        identifier: Vec::new(),
        status: SubscriptionStatus::Active,
        topic: "http://example.org/topic".to_owned(),
        filters: Vec::new(),
        channel: Channel {
            kind: ChannelType::RestHook,
            endpoint: Some(endpoint.to_owned()),
            headers: Vec::new(),
            heartbeat_period: None,
            timeout: Some(3600),
            content_type: "application/fhir+json".to_owned(),
            content: PayloadContent::IdOnly,
            max_count: Some(MAX_COUNT),
        },
        end: None,
        reason: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_large_backlog_reads_one_batch_not_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        cache_capacity_bytes: 16 << 20,
        durability: Durability::Off,
        ..StoreOptions::default()
    };
    // The backlog: BACKLOG events for one subscription, 100 per write, the first 10 delivered.
    {
        let store = Store::open(dir.path(), &options).unwrap();
        // The stored Subscription (its signing secret belongs to it).
        store
            .apply(
                WriteRequest {
                    tenant: "r4",
                    resource_type: "Subscription",
                    id: SUB,
                    kind: WriteKind::Upsert,
                    body: Some(json!({"resourceType": "Subscription", "status": "active"})),
                    if_match: None,
                },
                &mut |_: &herald_store::Change<'_>| Ok(Vec::new()),
            )
            .unwrap();
        for w in 0..BACKLOG / 100 {
            let id = format!("t{w}");
            let mut hook = |_: &herald_store::Change<'_>| -> Result<Vec<EventDraft>, String> {
                Ok((0..100)
                    .map(|_| EventDraft {
                        subscription_id: SUB.into(),
                        topic: "http://example.org/topic".into(),
                        ..Default::default()
                    })
                    .collect())
            };
            store
                .apply(
                    WriteRequest {
                        tenant: "r4",
                        resource_type: "Task",
                        id: &id,
                        kind: WriteKind::Upsert,
                        body: Some(json!({"resourceType": "Task", "status": "requested"})),
                        if_match: None,
                    },
                    &mut hook,
                )
                .unwrap();
        }
        let state = DeliveryState {
            acked: 10,
            verified: true,
            ..DeliveryState::default()
        };
        store.put_delivery_state("r4", SUB, &state).unwrap();
        store.close().unwrap();
    }

    // Start-up, as Herald does it: open, then tell the dispatcher the subscription and the
    // durable count.
    let store = Arc::new(Store::open(dir.path(), &options).unwrap());
    assert_eq!(store.event_count("r4", SUB).unwrap(), BACKLOG);
    assert_eq!(store.events_read(), 0, "opening the store reads no event");
    let quiet = Quiet::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hold))
        .with_state(quiet.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = DeliveryConfig {
        allow_private_endpoints: true,
        ..DeliveryConfig::default()
    };
    let base_urls = HashMap::from([("r4".to_owned(), "http://herald.test/fhir/r4".to_owned())]);
    let (status_tx, _status_rx) = tokio::sync::mpsc::unbounded_channel();
    let (dispatcher, _task) = Dispatcher::start(
        Surfaces::embedded(Arc::clone(&store)),
        config,
        base_urls,
        status_tx,
    )
    .unwrap();
    dispatcher.upsert(
        "r4",
        FhirVersion::R4,
        subscription(&format!("http://{addr}/hook")),
    );
    dispatcher.wake("r4", SUB, store.event_count("r4", SUB).unwrap());

    let deadline = Instant::now() + Duration::from_secs(60);
    while quiet.count.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no notification was sent: {:?}",
            dispatcher.snapshot().await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give a dispatcher that would go on reading (counting, prefetching) time to do so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        quiet.count.load(Ordering::SeqCst),
        1,
        "one attempt in flight"
    );
    assert_eq!(
        store.events_read(),
        u64::from(MAX_COUNT),
        "start-up read the first batch only, not the {BACKLOG} queued"
    );
    let body = quiet.bodies.lock().unwrap()[0].clone();
    let numbers: Vec<u64> = body["entry"][0]["resource"]["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "notification-event")
        .map(|p| {
            p["part"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["name"] == "event-number")
                .unwrap()["valueString"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        numbers,
        (11..=10 + u64::from(MAX_COUNT)).collect::<Vec<_>>(),
        "the batch starts after the stored cursor"
    );
}
