//! Delivery bookkeeping: each subscription's delivery cursor and retry state (`delivery` tree),
//! and the delivery-attempt log (`attempts` tree) with its retention. The cursor model makes the
//! event log the queue: the pending notifications of a subscription are its events numbered
//! above `acked`. Retries are data (design invariant 6): the next attempt time is stored here
//! and the scheduler is rebuilt from it at start-up.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use std::sync::atomic::Ordering;

use crate::wal::{Op, TreeId};
use crate::{Store, keys};

/// Delivery state of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Highest event number acknowledged by the endpoint (events are delivered in order).
    pub acked: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// When the next attempt is due (Unix ms); `None` when not waiting for a retry.
    pub next_attempt_at_ms: Option<u64>,
    /// The last failure, for operators and `$status`.
    pub last_error: Option<String>,
    /// When anything (handshake, heartbeat, events) was last delivered successfully (Unix ms).
    pub last_sent_at_ms: Option<u64>,
    /// When the last attempt of any kind finished (Unix ms).
    pub last_attempt_at_ms: Option<u64>,
    /// Set when the retry schedule is exhausted: attempts stop until an operator redrives the
    /// subscription or the client re-requests it.
    pub parked: bool,
    /// The endpoint accepted a handshake for the current request of this subscription.
    #[serde(default)]
    pub verified: bool,
    /// When the current failure streak began (Unix ms), for the retry horizon.
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    /// An operator paused delivery: nothing is sent (events keep being recorded) until resumed.
    #[serde(default)]
    pub paused: bool,
}

/// One delivery attempt, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When the attempt finished (Unix ms).
    pub at_ms: u64,
    /// Same, as a FHIR instant.
    pub at: String,
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub subscription: String,
    /// `handshake`, `heartbeat` or `event-notification`.
    pub notification_type: String,
    /// Event numbers carried (empty for handshake/heartbeat).
    pub events: Vec<u64>,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// HTTP status, when a response came back.
    pub http_status: Option<u16>,
    /// Failure class when no acceptable response came back (`timeout`, `connect`,
    /// `http-status`, `egress-refused`, …).
    pub error: Option<String>,
    /// Time from sending to the response (ms).
    pub latency_ms: f64,
    /// The first bytes of the response body.
    pub response_body: Option<String>,
    /// Request headers as sent, with secrets redacted.
    pub request_headers: Vec<(String, String)>,
    /// Endpoint URL.
    pub endpoint: String,
}

/// Which attempts to list.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this subscription.
    pub subscription: Option<String>,
    /// Only this outcome (`delivered` / `failed`).
    pub outcome: Option<String>,
    /// Only attempts at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Only attempts before (Unix ms).
    pub until_ms: Option<u64>,
    /// Only attempts answered with this HTTP status.
    pub http_status: Option<u16>,
}

impl AttemptFilter {
    fn keeps(&self, a: &AttemptRecord) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == a.tenant)
            && self
                .subscription
                .as_ref()
                .is_none_or(|s| *s == a.subscription)
            && self.outcome.as_ref().is_none_or(|o| *o == a.outcome)
            && self.http_status.is_none_or(|h| a.http_status == Some(h))
    }
}

/// A page of the attempt log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AttemptPage {
    /// `(attempt id, attempt)`.
    pub entries: Vec<(String, AttemptRecord)>,
    /// The cursor of the next (older) page, when there is one.
    pub next: Option<String>,
}

/// An attempt's id: its log key in hex (time, then a sequence number), so ids sort like the
/// log and a cursor is just the last id seen.
fn attempt_id(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn attempt_key(id: &str) -> Option<Vec<u8>> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..16)
        .map(|i| u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

impl Store {
    /// The delivery state of a subscription (default when none was stored yet).
    pub fn delivery_state(&self, tenant: &str, subscription: &str) -> Result<DeliveryState> {
        match self
            .delivery
            .get(keys::subscription(tenant, subscription))?
        {
            Some(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())),
            None => Ok(DeliveryState::default()),
        }
    }

    /// Stores a subscription's delivery state. Not fsynced on its own: the dispatcher awaits
    /// [`Store::make_durable`] after moving the cursor and before sending the next batch, so a
    /// crash redelivers at most the batch in flight.
    pub fn put_delivery_state(
        &self,
        tenant: &str,
        subscription: &str,
        state: &DeliveryState,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.wal.put(vec![Op::Put(
            TreeId::Delivery,
            keys::subscription(tenant, subscription),
            bytes,
        )])
    }

    /// Forgets a subscription's delivery state (when it is deleted).
    pub fn remove_delivery_state(&self, tenant: &str, subscription: &str) -> Result<()> {
        self.wal.put(vec![Op::Remove(
            TreeId::Delivery,
            keys::subscription(tenant, subscription),
        )])
    }

    /// Appends an attempt to the delivery log.
    pub fn record_attempt(&self, attempt: &AttemptRecord) -> Result<()> {
        let mut key = attempt.at_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        let bytes = serde_json::to_vec(attempt).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.wal.put(vec![Op::Put(TreeId::Attempts, key, bytes)])?;
        self.attempts_len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Attempts matching `filter`, newest first: (total matching, the page).
    pub fn attempts(
        &self,
        filter: &AttemptFilter,
        offset: usize,
        count: usize,
    ) -> Result<(usize, Vec<AttemptRecord>)> {
        let lo = filter.since_ms.unwrap_or(0).to_be_bytes().to_vec();
        let hi = filter.until_ms.unwrap_or(u64::MAX).to_be_bytes().to_vec();
        let mut total = 0;
        let mut page = Vec::new();
        for kv in self.attempts.range(lo..hi).rev() {
            let (_, v) = kv?;
            let a: AttemptRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if filter.keeps(&a) {
                if total >= offset && page.len() < count {
                    page.push(a);
                }
                total += 1;
            }
        }
        Ok((total, page))
    }

    /// A page of attempts matching `filter`, newest first, starting below the cursor `after`
    /// (an attempt id from an earlier page). `Ok(None)` when the cursor is not an attempt id.
    pub fn attempt_page(
        &self,
        filter: &AttemptFilter,
        after: Option<&str>,
        count: usize,
    ) -> Result<Option<AttemptPage>> {
        let lo = filter.since_ms.unwrap_or(0).to_be_bytes().to_vec();
        let mut hi = filter.until_ms.unwrap_or(u64::MAX).to_be_bytes().to_vec();
        if let Some(c) = after {
            let Some(k) = attempt_key(c) else {
                return Ok(None);
            };
            hi = hi.min(k);
        }
        let mut page = AttemptPage::default();
        for kv in self.attempts.range(lo..hi).rev() {
            let (k, v) = kv?;
            let a: AttemptRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if !filter.keeps(&a) {
                continue;
            }
            if page.entries.len() == count {
                page.next = page.entries.last().map(|(id, _)| id.clone());
                break;
            }
            page.entries.push((attempt_id(&k), a));
        }
        Ok(Some(page))
    }

    /// One attempt by id (`None` when unknown, pruned, or not an id).
    pub fn attempt(&self, id: &str) -> Result<Option<AttemptRecord>> {
        let Some(k) = attempt_key(id) else {
            return Ok(None);
        };
        match self.attempts.get(k)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    pub(crate) fn forget_attempts(&self, n: usize) {
        let _ = self
            .attempts_len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_sub(n))
            });
    }

    /// Drops the oldest attempts beyond `keep`; returns how many were dropped.
    pub fn prune_attempts(&self, keep: usize) -> Result<usize> {
        let len = self.attempts_len.load(Ordering::Relaxed);
        if len <= keep {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(len - keep);
        for kv in self.attempts.iter().take(len - keep) {
            let (k, _) = kv?;
            ops.push(Op::Remove(TreeId::Attempts, k.to_vec()));
        }
        let dropped = ops.len();
        self.wal.put(ops)?;
        self.attempts_len.fetch_sub(dropped, Ordering::Relaxed);
        Ok(dropped)
    }
}
