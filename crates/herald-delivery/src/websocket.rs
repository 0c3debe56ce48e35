//! The websocket channel: binding tokens, the sockets bound to each subscription, and carrying a
//! notification to them. The HTTP side (upgrade, reading bind messages, writing frames) is the
//! server's; here a socket is only a bounded queue of outgoing text frames, so fanning out one
//! notification to many sockets is one `try_send` per socket — no task per event per socket,
//! and nothing of this is on the write path.
//!
//! What "delivered" means on a socket: the notification was put into the send buffer of at
//! least one socket bound to the subscription (its writer then writes it out). A socket that dies
//! with notifications still buffered loses them from the server's view; the client sees the gap
//! in the event numbers and resumes by binding with `last-event-number` (which rewinds the
//! subscription's cursor) or reads them with `$events`. Nothing is dropped while no socket is
//! bound: the channel is then not ready, and events wait in the subscription's durable queue.
//!
//! A slow consumer (its buffer full) is evicted: told why, and disconnected by its writer; memory
//! never grows with an unread socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_subscriptions::{ChannelType, Subscription};
use tokio::sync::{Notify, mpsc};

use crate::channel::{Channel, Key, Notification, SendFuture, Sent};
use crate::policy::Failure;

/// One connected socket, as the channel sees it.
#[derive(Debug)]
pub struct Socket {
    id: u64,
    peer: String,
    tx: mpsc::Sender<Bytes>,
    evicted: AtomicBool,
    eviction: Mutex<Option<String>>,
    evict_notify: Notify,
}

impl Socket {
    /// A number unique for the life of the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a text frame; `false` when the buffer is full (the socket is then evicted) or the
    /// socket is gone.
    pub fn push(&self, text: Bytes) -> bool {
        if self.evicted.load(Ordering::Relaxed) {
            return false;
        }
        match self.tx.try_send(text) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.evict("slow consumer: the send buffer is full; reconnect and resume with last-event-number");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Marks the socket for disconnection with a reason (its writer closes it).
    pub fn evict(&self, reason: &str) {
        if !self.evicted.swap(true, Ordering::Relaxed) {
            if let Ok(mut r) = self.eviction.lock() {
                *r = Some(reason.to_owned());
            }
            self.evict_notify.notify_one();
        }
    }

    /// Resolves once the socket has been evicted; gives the reason.
    pub async fn evicted(&self) -> String {
        loop {
            if self.evicted.load(Ordering::Relaxed) {
                return self
                    .eviction
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_else(|| "evicted".to_owned());
            }
            self.evict_notify.notified().await;
        }
    }
}

/// What a binding token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Tenant of the subscriptions.
    pub tenant: String,
    /// Subscription ids.
    pub ids: Vec<String>,
    /// When the binding ends unless renewed (Unix ms).
    pub expires_ms: u64,
}

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Never issued, or already used.
    #[error(
        "unknown binding token (tokens are single-use; get a new one with $get-ws-binding-token)"
    )]
    Unknown,
    /// Issued, but past its expiration.
    #[error("the binding token has expired; get a new one with $get-ws-binding-token")]
    Expired,
}

/// The websocket channel: tokens and bound sockets.
pub struct WsHub {
    bindings: RwLock<HashMap<Key, Vec<Arc<Socket>>>>,
    tokens: Mutex<HashMap<String, Grant>>,
    next_socket: AtomicU64,
    buffer: usize,
    token_ttl: Duration,
}

impl WsHub {
    /// A hub whose sockets buffer at most `buffer` frames and whose tokens last `token_ttl`.
    pub fn new(buffer: usize, token_ttl: Duration) -> Self {
        WsHub {
            bindings: RwLock::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(1),
            buffer: buffer.max(1),
            token_ttl,
        }
    }

    /// How long a token (and a binding made with it) lasts.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    /// Registers a new connection; returns it and the receiving end of its frame queue.
    pub fn open(&self, peer: &str) -> (Arc<Socket>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(self.buffer);
        let socket = Arc::new(Socket {
            id: self.next_socket.fetch_add(1, Ordering::Relaxed),
            peer: peer.to_owned(),
            tx,
            evicted: AtomicBool::new(false),
            eviction: Mutex::new(None),
            evict_notify: Notify::new(),
        });
        (socket, rx)
    }

    /// Issues a single-use token for `ids` of `tenant`, valid for the configured time from
    /// `now_ms`. The token is 128 random bits (UUID v4, from the OS's generator).
    pub fn issue(&self, tenant: &str, ids: Vec<String>, now_ms: u64) -> (String, Grant) {
        let ttl = u64::try_from(self.token_ttl.as_millis()).unwrap_or(u64::MAX);
        let grant = Grant {
            tenant: tenant.to_owned(),
            ids,
            expires_ms: now_ms.saturating_add(ttl),
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, g| g.expires_ms > now_ms);
            tokens.insert(token.clone(), grant.clone());
        }
        (token, grant)
    }

    /// Uses a token (once).
    pub fn redeem(&self, token: &str, now_ms: u64) -> Result<Grant, TokenError> {
        let grant = self
            .tokens
            .lock()
            .ok()
            .and_then(|mut t| t.remove(token))
            .ok_or(TokenError::Unknown)?;
        if grant.expires_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }

    /// Binds `socket` to `key` (the dispatcher does this, after the handshake went into the
    /// socket's queue, so that nothing overtakes the handshake).
    pub fn attach(&self, key: &Key, socket: &Arc<Socket>) {
        if let Ok(mut b) = self.bindings.write() {
            let list = b.entry(key.clone()).or_default();
            if !list.iter().any(|s| s.id == socket.id) {
                list.push(Arc::clone(socket));
            }
        }
    }

    /// Unbinds `socket` from `key`.
    pub fn detach(&self, key: &Key, socket_id: u64) {
        if let Ok(mut b) = self.bindings.write()
            && let Some(list) = b.get_mut(key)
        {
            list.retain(|s| s.id != socket_id);
            if list.is_empty() {
                b.remove(key);
            }
        }
    }

    /// Unbinds `socket` from everything (it closed).
    pub fn close(&self, socket_id: u64, keys: &[Key]) {
        for k in keys {
            self.detach(k, socket_id);
        }
    }

    /// Sockets bound to `key`.
    pub fn bound(&self, key: &Key) -> usize {
        self.bindings
            .read()
            .map(|b| b.get(key).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    fn sockets(&self, key: &Key) -> Vec<Arc<Socket>> {
        self.bindings
            .read()
            .map(|b| b.get(key).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Channel for WsHub {
    fn kind(&self) -> ChannelType {
        ChannelType::Websocket
    }

    fn verifies_endpoint(&self) -> bool {
        // The handshake goes to each socket as it binds.
        false
    }

    fn signs(&self) -> bool {
        // The client authenticated with a binding token on a connection it opened to Herald.
        false
    }

    fn ready(&self, key: &Key) -> bool {
        self.bound(key) > 0
    }

    fn send(&self, _sub: &Subscription, n: Notification) -> SendFuture {
        let start = Instant::now();
        let sockets = self.sockets(&n.key);
        // Serialised once; every socket's queue holds the same buffer.
        let text = Bytes::from(n.bundle.to_string());
        let mut taken = 0usize;
        let mut peers = Vec::new();
        for s in &sockets {
            if s.push(text.clone()) {
                taken += 1;
                peers.push(s.peer.clone());
            } else {
                self.detach(&n.key, s.id);
            }
        }
        let sent = if taken > 0 {
            Sent {
                failure: None,
                status: None,
                error: None,
                retry_after: None,
                latency: start.elapsed(),
                body: None,
                headers: Vec::new(),
                endpoint: format!("websocket: {}", peers.join(", ")),
            }
        } else {
            Sent {
                latency: start.elapsed(),
                endpoint: "websocket".to_owned(),
                ..Sent::failed(
                    Failure::Transport,
                    format!(
                        "websocket: none of the {} bound socket(s) took the notification",
                        sockets.len()
                    ),
                )
            }
        };
        Box::pin(async move { sent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transition::Job;

    fn key(id: &str) -> Key {
        ("r4".to_owned(), id.to_owned())
    }

    fn note(id: &str) -> Notification {
        Notification {
            key: key(id),
            job: Job::Events(1, 1),
            bundle: serde_json::json!({"resourceType": "Bundle"}),
            timeout: Duration::from_secs(1),
            signing: None,
        }
    }

    fn sub() -> Subscription {
        herald_subscriptions::r5::parse_subscription(&serde_json::json!({
            "resourceType": "Subscription", "status": "active", "topic": "http://t",
            "channelType": {"code": "websocket"}, "content": "id-only"
        }))
        .expect("subscription")
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let hub = WsHub::new(4, Duration::from_secs(60));
        let (t, g) = hub.issue("r4", vec!["a".into()], 1_000);
        assert_eq!(g.expires_ms, 61_000);
        assert_eq!(hub.redeem(&t, 2_000), Ok(g));
        assert_eq!(hub.redeem(&t, 2_000), Err(TokenError::Unknown));
        let (t, _) = hub.issue("r4", vec!["a".into()], 1_000);
        assert_eq!(hub.redeem(&t, 61_000), Err(TokenError::Expired));
        assert_eq!(hub.redeem("made-up", 0), Err(TokenError::Unknown));
    }

    #[tokio::test]
    async fn a_subscription_is_ready_only_while_a_socket_is_bound() {
        let hub = WsHub::new(4, Duration::from_secs(60));
        let (s, mut rx) = hub.open("peer");
        assert!(!hub.ready(&key("a")));
        hub.attach(&key("a"), &s);
        assert!(hub.ready(&key("a")));
        let sent = hub.send(&sub(), note("a")).await;
        assert!(sent.failure.is_none());
        assert_eq!(
            &rx.recv().await.expect("frame")[..],
            br#"{"resourceType":"Bundle"}"#
        );
        hub.detach(&key("a"), s.id());
        assert!(!hub.ready(&key("a")));
    }

    #[tokio::test]
    async fn one_notification_reaches_every_socket_bound_to_the_subscription() {
        let hub = WsHub::new(4, Duration::from_secs(60));
        let (a, mut ra) = hub.open("a");
        let (b, mut rb) = hub.open("b");
        hub.attach(&key("s"), &a);
        hub.attach(&key("s"), &b);
        let sent = hub.send(&sub(), note("s")).await;
        assert!(sent.failure.is_none(), "{sent:?}");
        assert!(ra.recv().await.is_some());
        assert!(rb.recv().await.is_some());
    }

    #[tokio::test]
    async fn a_socket_whose_buffer_is_full_is_evicted_with_a_reason_and_unbound() {
        let hub = WsHub::new(2, Duration::from_secs(60));
        let (s, _rx) = hub.open("slow");
        hub.attach(&key("s"), &s);
        assert!(hub.send(&sub(), note("s")).await.failure.is_none());
        assert!(hub.send(&sub(), note("s")).await.failure.is_none());
        let third = hub.send(&sub(), note("s")).await;
        assert!(third.failure.is_some(), "the third does not fit");
        assert!(s.evicted().await.contains("slow consumer"));
        assert!(!hub.ready(&key("s")), "unbound");
    }
}
