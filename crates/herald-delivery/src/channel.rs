//! The channel seam: what the dispatcher needs from a way of getting notifications to a
//! subscriber. The dispatcher owns the queue (event log + cursor), the order, the retries and
//! the status rules for every channel alike; a channel only says whether it can take a
//! notification now, whether it verifies an endpoint with a handshake first, and carries one
//! notification out. Rest-hook is one (`resthook`); the websocket channel another.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use herald_subscriptions::{ChannelType, Subscription};
use serde_json::Value;

use crate::policy::Failure;
use crate::signing::Signing;
use crate::transition::Job;

/// `(tenant, subscription id)`.
pub type Key = (String, String);

/// A future a channel returns (boxed: channels are trait objects).
pub type SendFuture = Pin<Box<dyn Future<Output = Sent> + Send + 'static>>;

/// One notification to carry.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Whose.
    pub key: Key,
    /// What it is (handshake, heartbeat, events `first..=last`).
    pub job: Job,
    /// The Bundle.
    pub bundle: Value,
    /// How long the channel may take.
    pub timeout: Duration,
    /// Its id and signing keys, for a channel that [`Channel::signs`] (`None` otherwise).
    pub signing: Option<Signing>,
}

/// How one attempt went, as the delivery log records it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `None` on success, else why it failed.
    pub failure: Option<Failure>,
    /// HTTP status when a response came back.
    pub status: Option<u16>,
    /// Failure class and cause for the log (`timeout`, `connect`, `http-status`, …).
    pub error: Option<String>,
    /// `Retry-After` from the response.
    pub retry_after: Option<Duration>,
    /// Time from send to response.
    pub latency: Duration,
    /// The first bytes of the response body.
    pub body: Option<String>,
    /// Headers as sent, values redacted (see `resthook::SHOWN_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Where it went, for the log (the endpoint URL; for a socket, its peers).
    pub endpoint: String,
}

impl Sent {
    /// A failure before anything was sent.
    pub fn failed(failure: Failure, error: String) -> Sent {
        Sent {
            failure: Some(failure),
            status: None,
            error: Some(error),
            retry_after: None,
            latency: Duration::ZERO,
            body: None,
            headers: Vec::new(),
            endpoint: String::new(),
        }
    }
}

/// A way of delivering notifications.
pub trait Channel: Send + Sync + 'static {
    /// The channel type it serves.
    fn kind(&self) -> ChannelType;
    /// Whether an endpoint must accept a handshake before events go (rest-hook). A channel that
    /// handshakes on each connection (websocket) says no.
    fn verifies_endpoint(&self) -> bool;
    /// Whether each notification is signed (rest-hook: Standard Webhooks headers). The attempt
    /// then fetches (or makes) the subscription's signing keys and hands them over in
    /// [`Notification::signing`].
    fn signs(&self) -> bool;
    /// Whether a notification for `key` can be carried now (a websocket needs a bound socket).
    /// When not, the dispatcher waits without counting a failure.
    fn ready(&self, key: &Key) -> bool;
    /// Carries one notification for `sub`.
    fn send(&self, sub: &Subscription, notification: Notification) -> SendFuture;
}
