//! The subscriber endpoint of the scale scenarios: counts events and notifications, notes the
//! first and last arrival, and checks per subscription that event numbers arrive in order with
//! none missing. It can be taken "down" (`hold`): requests are then accepted and never answered
//! until it comes back up, when they are answered 503 and not counted — a receiver that vanished
//! without refusing connections, so Herald's attempts stay in flight instead of failing into
//! its retry schedule (whose waits would dominate every restart figure).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::watch;

use crate::server_thread::ServerThread;

/// What a notification carried, as the receiver reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Notification {
    /// Subscription id (from the status's `subscription` reference).
    pub subscription: String,
    /// `handshake`, `event-notification`, `heartbeat`, …
    pub kind: String,
    /// Event numbers carried, in the order they appear.
    pub events: Vec<u64>,
}

/// Reads an R4 backport notification Bundle (its `SubscriptionStatus` Parameters).
pub fn parse(body: &[u8]) -> Option<Notification> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let params = v.pointer("/entry/0/resource/parameter")?.as_array()?;
    let named = |p: &&Value, n: &str| p.get("name").and_then(Value::as_str) == Some(n);
    let kind = params
        .iter()
        .find(|p| named(p, "type"))?
        .get("valueCode")?
        .as_str()?
        .to_owned();
    let reference = params
        .iter()
        .find(|p| named(p, "subscription"))?
        .pointer("/valueReference/reference")?
        .as_str()?;
    let mut segments = reference.split('/');
    segments.find(|s| *s == "Subscription")?;
    let subscription = segments.next()?.to_owned();
    let events = params
        .iter()
        .filter(|p| named(p, "notification-event"))
        .filter_map(|p| p.get("part").and_then(Value::as_array))
        .filter_map(|parts| {
            parts
                .iter()
                .find(|q| named(q, "event-number"))
                .and_then(|q| q.get("valueString"))
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
        })
        .collect();
    Some(Notification {
        subscription,
        kind,
        events,
    })
}

/// Counters since the last `reset`.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Events received.
    pub events: u64,
    /// Event notifications received.
    pub notifications: u64,
    /// Handshakes received.
    pub handshakes: u64,
    /// When the first event arrived.
    pub first_event: Option<Instant>,
    /// When the last event arrived.
    pub last_event: Option<Instant>,
}

/// Per subscription, over the whole run (never reset).
#[derive(Debug, Default, Clone)]
struct Order {
    last: u64,
}

#[derive(Default)]
struct Seen {
    counts: Counts,
    order: HashMap<String, Order>,
    /// Arrivals out of order (a gap, a repeat or a step back), with the first few described.
    violations: u64,
    described: Vec<String>,
    held: u64,
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    up: watch::Receiver<bool>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    server: ServerThread,
    seen: Arc<Mutex<Seen>>,
    up: watch::Sender<bool>,
}

impl Receiver {
    /// Starts it, up.
    pub fn start() -> anyhow::Result<Receiver> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (up, up_rx) = watch::channel(true);
        let app = axum::Router::new()
            .route("/notify", axum::routing::post(receive))
            .with_state(Shared {
                seen: seen.clone(),
                up: up_rx,
            });
        Ok(Receiver {
            server: ServerThread::start("scale-receiver", app)?,
            seen,
            up,
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/notify", self.server.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Down (`false`: requests are held unanswered) or up (held ones are answered 503).
    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }

    /// Zeroes the counters (not the per-subscription order).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.counts = Counts::default();
        s.held = 0;
    }

    /// The counters.
    pub fn counts(&self) -> Counts {
        self.lock().counts.clone()
    }

    /// Requests being held while down.
    pub fn held(&self) -> u64 {
        self.lock().held
    }

    /// The last event number received per subscription.
    pub fn last_events(&self) -> HashMap<String, u64> {
        self.lock()
            .order
            .iter()
            .map(|(k, o)| (k.clone(), o.last))
            .collect()
    }

    /// Arrivals out of order so far, and a description of the first few.
    pub fn violations(&self) -> (u64, Vec<String>) {
        let s = self.lock();
        (s.violations, s.described.clone())
    }
}

async fn receive(State(shared): State<Shared>, body: Bytes) -> StatusCode {
    let mut up = shared.up.clone();
    if !*up.borrow_and_update() {
        shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held += 1;
        let _ = up.wait_for(|u| *u).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let at = Instant::now();
    let Some(n) = parse(&body) else {
        return StatusCode::OK;
    };
    let mut seen = shared.seen.lock().unwrap_or_else(PoisonError::into_inner);
    match n.kind.as_str() {
        "handshake" => seen.counts.handshakes += 1,
        "event-notification" => {
            let c = &mut seen.counts;
            c.notifications += 1;
            c.events += n.events.len() as u64;
            c.first_event.get_or_insert(at);
            c.last_event = Some(at);
            for number in n.events {
                let order = seen.order.entry(n.subscription.clone()).or_default();
                let expected = order.last + 1;
                order.last = order.last.max(number);
                if number != expected {
                    seen.violations += 1;
                    if seen.described.len() < 5 {
                        seen.described.push(format!(
                            "Subscription/{}: event {number} arrived where {expected} was due",
                            n.subscription
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(kind: &str, sub: &str, numbers: &[u64]) -> String {
        let mut params = vec![
            serde_json::json!({"name": "subscription", "valueReference": {"reference": format!("http://h/fhir/r4/Subscription/{sub}")}}),
            serde_json::json!({"name": "type", "valueCode": kind}),
        ];
        for n in numbers {
            params.push(serde_json::json!({"name": "notification-event", "part": [
                {"name": "event-number", "valueString": n.to_string()},
                {"name": "focus", "valueReference": {"reference": "http://h/fhir/r4/Task/t/_history/1"}}
            ]}));
        }
        serde_json::json!({"resourceType": "Bundle", "type": "history", "entry": [
            {"resource": {"resourceType": "Parameters", "parameter": params}}
        ]})
        .to_string()
    }

    #[test]
    fn notifications_name_their_subscription_and_event_numbers() {
        let n = parse(bundle("event-notification", "s-1", &[4, 5]).as_bytes()).unwrap();
        assert_eq!(
            n,
            Notification {
                subscription: "s-1".into(),
                kind: "event-notification".into(),
                events: vec![4, 5]
            }
        );
        assert_eq!(parse(b"{}"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gaps_and_repeats_are_order_violations_and_held_requests_are_not_counted() {
        let r = Receiver::start().unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let post = |body: String| {
            let req = http.post(r.url()).body(body);
            async move { req.send().await.unwrap().status() }
        };
        assert_eq!(post(bundle("event-notification", "a", &[1, 2])).await, 200);
        assert_eq!(post(bundle("event-notification", "a", &[4])).await, 200);
        assert_eq!(post(bundle("event-notification", "a", &[4])).await, 200);
        assert_eq!(post(bundle("event-notification", "b", &[1])).await, 200);
        let (v, why) = r.violations();
        assert_eq!(v, 2, "{why:?}");
        assert!(
            why[0].contains("event 4 arrived where 3 was due"),
            "{why:?}"
        );
        assert_eq!(r.counts().events, 5);
        r.set_up(false);
        let held = tokio::spawn(post(bundle("event-notification", "b", &[2])));
        while r.held() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        r.set_up(true);
        assert_eq!(held.await.unwrap(), 503);
        assert_eq!(r.counts().events, 5, "a held request is not counted");
        assert_eq!(r.last_events()["b"], 1);
    }
}
