//! What delivery counts for `/metrics`: attempts by channel and outcome, and how long a
//! committed event took to reach its subscriber (commit → 2xx). The families live here, where
//! attempts finish; the server registers them with everything else. Labels are bounded: channel
//! types and two outcomes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels of the attempt counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Channel type code.
    pub channel: String,
    /// `delivered` or `failed`.
    pub outcome: String,
}

/// Delivery's metric families (cheap to clone: shared atomics).
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// Attempts (handshakes, heartbeats, event notifications) by channel and outcome.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Seconds from an event's commit to the notification carrying it being accepted.
    pub latency: Histogram,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        DeliveryMetrics {
            attempts: Family::default(),
            // 1 ms … ~4.6 h: a delivery after a long outage is still counted in a bucket.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 24)),
        }
    }
}

impl DeliveryMetrics {
    pub(crate) fn attempt(&self, channel: &str, delivered: bool) {
        self.attempts
            .get_or_create(&AttemptLabels {
                channel: channel.to_owned(),
                outcome: if delivered { "delivered" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// Observes commit → delivery for events `first..=last` of a subscription, delivered at
    /// `now_ms`.
    pub(crate) fn delivered(
        &self,
        store: &dyn herald_store::EventLog,
        key: &crate::Key,
        first: u64,
        last: u64,
        now_ms: u64,
    ) {
        let Ok(events) = store.events(&key.0, &key.1, Some(first), Some(last)) else {
            return;
        };
        for e in events {
            if let Some(at) = humantime::parse_rfc3339_weak(&e.timestamp)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            {
                let at_ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
                self.latency
                    .observe(now_ms.saturating_sub(at_ms) as f64 / 1000.0);
            }
        }
    }
}
