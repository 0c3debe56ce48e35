//! The store as its callers see it: one trait per surface (resources and history, the event
//! log, delivery state, the attempt log, the audit log, the store's own measures), each
//! object-safe so that callers hold `Arc<dyn …>` and never name a backend. [`Surfaces`] bundles
//! one backend's handles; the embedded backend (sled + Herald's write-ahead log, [`Store`]) is
//! the one implementation today, and a clustered one implements the same traits.
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
