//! The event log: per subscription, a counter and the numbered events it counts, and their
//! retention. Together with a delivery cursor it is the subscription's queue.

use crate::{EventRecord, Result, Store};

/// Per-subscription counters and events.
pub trait EventLog: Send + Sync {
    /// Events recorded and durable so far (`eventsSinceSubscriptionStart`).
    fn event_count(&self, tenant: &str, subscription: &str) -> Result<u64>;

    /// Events recorded so far, including those of writes not yet durable (durable in a moment,
    /// or lost with their write): for deciding whether more events are coming, never for
    /// reporting.
    fn recorded_event_count(&self, tenant: &str, subscription: &str) -> Result<u64>;

    /// Events `since..=until` (either end optional), in order.
    fn events(
        &self,
        tenant: &str,
        subscription: &str,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<Vec<EventRecord>>;

    /// The highest event number retention removed (0 when none).
    fn pruned_through(&self, tenant: &str, subscription: &str) -> Result<u64>;

    /// Removes acknowledged events beyond what `keep_count` and `cutoff_ms` keep; returns how
    /// many went.
    fn prune_events(
        &self,
        tenant: &str,
        subscription: &str,
        acked: u64,
        keep_count: Option<u64>,
        cutoff_ms: Option<u64>,
    ) -> Result<usize>;
}

impl EventLog for Store {
    fn event_count(&self, tenant: &str, subscription: &str) -> Result<u64> {
        Store::event_count(self, tenant, subscription)
    }

    fn recorded_event_count(&self, tenant: &str, subscription: &str) -> Result<u64> {
        Store::recorded_event_count(self, tenant, subscription)
    }

    fn events(
        &self,
        tenant: &str,
        subscription: &str,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<Vec<EventRecord>> {
        Store::events(self, tenant, subscription, since, until)
    }

    fn pruned_through(&self, tenant: &str, subscription: &str) -> Result<u64> {
        Store::pruned_through(self, tenant, subscription)
    }

    fn prune_events(
        &self,
        tenant: &str,
        subscription: &str,
        acked: u64,
        keep_count: Option<u64>,
        cutoff_ms: Option<u64>,
    ) -> Result<usize> {
        Store::prune_events(self, tenant, subscription, acked, keep_count, cutoff_ms)
    }
}
