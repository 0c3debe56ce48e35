//! A rest-hook receiver for the delivery tests: a real HTTP server on `127.0.0.1:0` that records
//! every request it gets (path, headers, JSON and raw body, arrival time, the parsed notification
//! and what it answered) and whose behaviour the test controls while Herald delivers to it:
//!
//! * [`Behaviour::Accept`] answers 200;
//! * [`Behaviour::Status`] answers a status, with an optional `Retry-After` (seconds);
//! * [`Receiver::refuse`] stops listening (connections are refused) and [`Receiver::recover`]
//!   listens again **on the same port** and accepts.
//!
//! Waits are bounded polls ([`Receiver::wait_until`]) that panic with what was received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_subscriptions::notification::{
    NotificationType, ParsedNotification, parse_notification,
};
use serde_json::Value;
use tokio::sync::oneshot;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 OK.
    Accept,
    /// This status, with `Retry-After: n` when given.
    Status(u16, Option<u64>),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the request (with its whole body) arrived.
    pub at: Instant,
    /// Request path, e.g. `/r4-id-only`.
    pub path: String,
    /// Headers in arrival order, names lower-cased, repeated names kept.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
    /// The body exactly as received (what a signature covers).
    pub raw: Vec<u8>,
    /// The status the receiver answered.
    pub answered: u16,
    /// The body read as a notification, when it is one.
    pub notification: Option<ParsedNotification>,
}

impl Received {
    /// Every value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Answered 2xx (the sender counts it as delivered).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }

    /// The notification type, when the body is a notification.
    pub fn kind(&self) -> Option<NotificationType> {
        self.notification.as_ref().map(|n| n.kind)
    }

    /// Event numbers carried, in bundle order.
    pub fn event_numbers(&self) -> Vec<u64> {
        self.notification
            .as_ref()
            .map(|n| n.events.iter().map(|e| e.number).collect())
            .unwrap_or_default()
    }

    /// `scheme://host:port` of the subscription reference: which Herald process sent it.
    pub fn sender(&self) -> Option<String> {
        let r = self
            .notification
            .as_ref()?
            .subscription_reference
            .as_deref()?;
        let rest = r.split_once("://")?.1;
        let host = rest.split('/').next()?;
        Some(host.to_owned())
    }
}

/// Event numbers of the accepted event notifications in `list`, in arrival order (repeats kept).
pub fn delivered_events(list: &[Received]) -> Vec<u64> {
    list.iter()
        .filter(|r| r.accepted() && r.kind() == Some(NotificationType::EventNotification))
        .flat_map(Received::event_numbers)
        .collect()
}

/// Requests of `list` of kind `kind`.
pub fn of_kind(list: &[Received], kind: NotificationType) -> Vec<&Received> {
    list.iter().filter(|r| r.kind() == Some(kind)).collect()
}

/// Does `list` hold accepted event notifications for every number in `1..=n`?
pub fn has_all_events(list: &[Received], n: u64) -> bool {
    let got: std::collections::BTreeSet<u64> = delivered_events(list).into_iter().collect();
    (1..=n).all(|i| got.contains(&i))
}

struct Shared {
    log: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
}

type Server = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

/// The receiver. Dropping it stops the server.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<Server>>,
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = *shared.behaviour.lock().unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let notification = parse_notification(&json).ok();
    let (status, retry_after) = match behaviour {
        Behaviour::Accept => (200, None),
        Behaviour::Status(s, ra) => (s, ra),
    };
    shared.log.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: json,
        raw: body.to_vec(),
        answered: status,
        notification,
    });
    let mut resp = StatusCode::from_u16(status)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        .into_response();
    if let Some(ra) = retry_after {
        resp.headers_mut().insert(
            "retry-after",
            HeaderValue::from_str(&ra.to_string()).unwrap(),
        );
    }
    resp
}

impl Receiver {
    /// Starts a receiver on an ephemeral loopback port, accepting.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver {
            shared: Arc::new(Shared {
                log: Mutex::new(Vec::new()),
                behaviour: Mutex::new(Behaviour::Accept),
            }),
            addr,
            server: Mutex::new(None),
        };
        r.serve(listener);
        r
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .fallback(hook)
            .with_state(self.shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        *self.server.lock().unwrap() = Some((tx, task));
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets how the receiver answers from now on.
    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Stops listening: open (idle keep-alive) connections are closed and new ones refused.
    pub async fn refuse(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some((tx, mut task)) = server {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Listens again on the same port and accepts.
    pub async fn recover(&self) {
        self.set(Behaviour::Accept);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Everything received on `path`.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Polls (every 50 ms, up to `limit`) until `pred` holds over the requests received on
    /// `path`, and returns them; panics with `what` and a summary of them otherwise.
    pub async fn wait_until(
        &self,
        path: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.on(path);
            if pred(&got) {
                return got;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what} on {path}; received: {}",
                    summary(&got)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One line per request: answer, kind, event numbers.
pub fn summary(list: &[Received]) -> String {
    list.iter()
        .map(|r| {
            format!(
                "[{} {} {:?}]",
                r.answered,
                r.kind().map_or("?", NotificationType::code),
                r.event_numbers()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.server.lock().unwrap().take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}
