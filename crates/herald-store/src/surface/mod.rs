//! The store as its callers see it: one trait per surface (resources and history, the event
//! log, delivery state, the attempt log, the audit log, the store's own measures), each
//! object-safe so that callers hold `Arc<dyn …>` and never name a backend. [`Surfaces`] bundles
//! one backend's handles; the embedded backend (an LSM or sled engine under Herald's write-ahead
//! log, [`Store`]) is the one implementation today, and a clustered one implements the same
//! traits.
//!
//! Durability is a meaning on each surface ("this write", "this cursor", "these attempts"),
//! not the log's mechanics: the embedded backend answers all of them with its group commit.

mod attempts;
mod audit;
mod delivery;
mod events;
mod measures;
mod resources;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use attempts::AttemptLog;
pub use audit::AuditLog;
pub use delivery::DeliveryStore;
pub use events::EventLog;
pub use measures::Measures;
pub use resources::{DurableTicket, ResourceStore};

use crate::Store;

/// The future an async surface method returns (boxed, so the traits stay object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One backend's surfaces, cheap to clone; each component keeps the ones it uses.
#[derive(Clone)]
pub struct Surfaces {
    /// Resources, their history, and writes.
    pub resources: Arc<dyn ResourceStore>,
    /// Per-subscription counters and numbered events.
    pub events: Arc<dyn EventLog>,
    /// Delivery state (cursors, retries) and signing secrets.
    pub delivery: Arc<dyn DeliveryStore>,
    /// The delivery-attempt log.
    pub attempts: Arc<dyn AttemptLog>,
    /// Operator actions.
    pub audit: Arc<dyn AuditLog>,
    /// Disk use and commit measurements.
    pub measures: Arc<dyn Measures>,
}

impl Surfaces {
    /// The surfaces of the embedded store.
    pub fn embedded(store: Arc<Store>) -> Surfaces {
        Surfaces {
            resources: store.clone(),
            events: store.clone(),
            delivery: store.clone(),
            attempts: store.clone(),
            audit: store.clone(),
            measures: store,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::{DeliveryState, Durability, StoreOptions, WriteKind, WriteRequest};

    fn embedded(dir: &std::path::Path) -> (Arc<Store>, Surfaces) {
        let store = Arc::new(
            Store::open(
                dir,
                &StoreOptions {
                    cache_capacity_bytes: 16 << 20,
                    durability: Durability::GroupCommit,
                    ..StoreOptions::default()
                },
            )
            .expect("open store"),
        );
        (Arc::clone(&store), Surfaces::embedded(store))
    }

    #[tokio::test]
    async fn a_cursor_made_durable_through_the_delivery_surface_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, s) = embedded(dir.path());
            for (sub, acked, patience) in [
                ("now", 3, Duration::ZERO),
                ("lazily", 5, Duration::from_millis(20)),
            ] {
                let state = DeliveryState {
                    acked,
                    ..DeliveryState::default()
                };
                s.delivery
                    .put_delivery_state("r4", sub, &state)
                    .expect("put");
                s.delivery
                    .make_cursor_durable(patience)
                    .await
                    .expect("durable");
                assert_eq!(
                    s.delivery.delivery_state("r4", sub).expect("read").acked,
                    acked
                );
            }
            // No close: what was made durable must not depend on a clean shutdown.
            drop(s);
            drop(store);
        }
        let (_store, s) = embedded(dir.path());
        assert_eq!(
            s.delivery.delivery_state("r4", "now").expect("read").acked,
            3
        );
        assert_eq!(
            s.delivery
                .delivery_state("r4", "lazily")
                .expect("read")
                .acked,
            5
        );
    }

    #[tokio::test]
    async fn a_write_through_the_resource_surface_counts_its_events_in_the_event_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, s) = embedded(dir.path());
        let mut hook = |_: &crate::Change<'_>| {
            Ok(vec![crate::EventDraft {
                subscription_id: "sub".into(),
                topic: "http://example.org/t".into(),
                focus: None,
                additional_context: Vec::new(),
            }])
        };
        let req = WriteRequest {
            tenant: "r4",
            resource_type: "Task",
            id: "t1",
            kind: WriteKind::Create,
            body: Some(json!({"resourceType":"Task"})),
            if_match: None,
        };
        let applied = s.resources.apply(req, &mut hook).expect("apply");
        let ticket = s.resources.request_durable();
        s.resources.wait_durable(ticket).await.expect("durable");
        assert_eq!(applied.events, vec![("sub".to_owned(), 1)]);
        assert_eq!(s.events.event_count("r4", "sub").expect("count"), 1);
        let events = s.events.events("r4", "sub", None, None).expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].focus_id, "t1");
        assert_eq!(
            s.resources.read("r4", "Task", "t1").expect("read").version,
            1
        );
    }
}
