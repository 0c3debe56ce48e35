//! Retention: removing what the limits say is no longer kept, without stalling writers.
//!
//! * Event log, per subscription: only events the subscriber has acknowledged (at or below the
//!   delivery cursor) are ever removed, the oldest first, beyond a count or past an age. The
//!   highest number removed is kept (`pruned` tree), so `$events` can say "pruned" instead of
//!   returning nothing, and event numbers are never reused (the counter is untouched).
//! * Attempt log: entries older than an age (the count limit is `prune_attempts`).
//!
//! Removal goes in log records of at most [`CHUNK`] keys: each takes the log lock once, briefly,
//! so a write waits for at most one small chunk, never for a whole pass.

use crate::error::{Result, StoreError};
use crate::wal::{Op, TreeId};
use crate::{EventRecord, Store, keys};

/// Keys removed per log record.
const CHUNK: usize = 512;

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events removed.
    pub events: usize,
    /// Attempt-log entries removed.
    pub attempts: usize,
}

impl Store {
    /// The highest event number retention removed for a subscription (0 when none was).
    pub fn pruned_through(&self, tenant: &str, subscription: &str) -> Result<u64> {
        Ok(keys::decode_u64(
            self.pruned
                .get(keys::subscription(tenant, subscription))?
                .as_deref(),
        ))
    }

    /// Removes a subscription's acknowledged events (numbers `<= acked`) beyond the newest
    /// `keep_count` acknowledged ones, and those recorded before `cutoff_ms` (Unix ms). Returns
    /// how many were removed.
    pub fn prune_events(
        &self,
        tenant: &str,
        subscription: &str,
        acked: u64,
        keep_count: Option<u64>,
        cutoff_ms: Option<u64>,
    ) -> Result<usize> {
        let floor = self.pruned_through(tenant, subscription)?;
        if acked <= floor {
            return Ok(0);
        }
        // Everything at or below `by_count` goes regardless of age.
        let by_count = keep_count.map_or(0, |k| acked.saturating_sub(k));
        let lo = keys::event(tenant, subscription, floor + 1);
        let hi = keys::event(tenant, subscription, acked);
        let mut removed = 0;
        let mut ops = Vec::with_capacity(CHUNK + 1);
        let mut through = floor;
        for kv in self.events.range(lo..=hi) {
            let (k, v) = kv?;
            let e: EventRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let old = cutoff_ms.is_some_and(|cut| event_ms(&e).is_some_and(|at| at < cut));
            if e.number > by_count && !old {
                // Numbers grow with time: nothing later is older.
                break;
            }
            ops.push(Op::Remove(TreeId::Events, k.to_vec()));
            through = e.number;
            if ops.len() >= CHUNK {
                removed += self.commit_prune(tenant, subscription, &mut ops, through)?;
            }
        }
        if !ops.is_empty() {
            removed += self.commit_prune(tenant, subscription, &mut ops, through)?;
        }
        Ok(removed)
    }

    fn commit_prune(
        &self,
        tenant: &str,
        subscription: &str,
        ops: &mut Vec<Op>,
        through: u64,
    ) -> Result<usize> {
        let n = ops.len();
        ops.push(Op::Put(
            TreeId::Pruned,
            keys::subscription(tenant, subscription),
            keys::encode_u64(through).to_vec(),
        ));
        self.wal.put(std::mem::take(ops))?;
        Ok(n)
    }

    /// Removes attempt-log entries recorded before `cutoff_ms` (Unix ms).
    pub fn prune_attempts_before(&self, cutoff_ms: u64) -> Result<usize> {
        let hi = cutoff_ms.to_be_bytes().to_vec();
        let mut removed = 0;
        let mut ops = Vec::with_capacity(CHUNK);
        for kv in self.attempts.range(..hi) {
            let (k, _) = kv?;
            ops.push(Op::Remove(TreeId::Attempts, k.to_vec()));
            if ops.len() >= CHUNK {
                removed += ops.len();
                self.wal.put(std::mem::take(&mut ops))?;
            }
        }
        removed += ops.len();
        if !ops.is_empty() {
            self.wal.put(ops)?;
        }
        self.forget_attempts(removed);
        Ok(removed)
    }
}

fn event_ms(e: &EventRecord) -> Option<u64> {
    humantime::parse_rfc3339_weak(&e.timestamp)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}
