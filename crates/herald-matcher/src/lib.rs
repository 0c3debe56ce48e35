//! Which subscriptions does a resource change notify? A pure function of (topics, subscriptions,
//! change): the topic index, trigger evaluation (interaction, `queryCriteria` previous/current,
//! FHIRPath with `%previous`/`%current`) and filter evaluation (search-parameter semantics from
//! `herald_fhir::search`). No I/O, no async; the server rebuilds a [`Matcher`] per tenant at
//! start-up from its stored topics and subscriptions.
//!
//! # Rules
//!
//! * **Statuses.** Subscriptions in `requested` (a rest-hook awaiting its handshake), `active` and
//!   `error` (which keeps counting events) are matched; `off` and `entered-in-error` get nothing.
//! * **No-op updates.** An update whose previous and current versions are equal once `meta` is
//!   ignored triggers nothing.
//! * **Triggers** ([`trigger`]): `supportedInteraction` (empty = all); `queryCriteria`; and
//!   `fhirPathCriteria`. A topic fires when any of its resource triggers for the changed type
//!   fires.
//! * **Filter timing.** A subscription's filters (ANDed, only those that apply to the changed
//!   resource type) are evaluated against the **current** version on create, the **previous**
//!   version on delete, and on update against the current version **or** the previous one: the
//!   subscription matches when all its filters pass on either version. So when a Task's owner is
//!   reassigned from A to B, both A's and B's subscriptions are notified (spec §5.7), and after
//!   it only B's. Why: a subscriber must hear the change that takes a resource out of its filter,
//!   or it keeps a stale copy for ever. Clients are told in each built-in topic's description
//!   (`herald_subscriptions::builtin::FILTER_TIMING`) and in the CapabilityStatement; the
//!   implementation is `index::filter_versions`.
//! * **Index** (design invariant 5): topics by (resource type, interaction); subscriptions by
//!   topic and, per resource type, by the keys of one indexable equality filter (a reference or
//!   token filter with no modifier or comparator, e.g. `owner=Organization/x`). A change only
//!   evaluates the subscriptions whose key is among `index_keys` of its previous **or** current
//!   version, plus the non-indexable remainder. [`Matcher::matches_linear`] scans every
//!   subscription instead and gives the same results.
#![forbid(unsafe_code)]

mod error;
mod index;
pub mod trigger;

pub use error::MatchError;
pub use herald_subscriptions::{NoRelated, RelatedLookup};
pub use index::Matcher;

use herald_subscriptions::Interaction;
use serde_json::Value;

/// One resource change, as the store sees it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Resource type (`Task`).
    pub resource_type: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// What happened.
    pub interaction: Interaction,
    /// The version before the change (`None` on create).
    pub previous: Option<&'a Value>,
    /// The version after the change (`None` on delete).
    pub current: Option<&'a Value>,
    /// When the change was committed (ms since the Unix epoch): a subscription whose `end` is
    /// not after it is not notified. `None` skips that check.
    pub at_ms: Option<i64>,
}

impl Change<'_> {
    /// The version filters and notification shapes look at first: current, or previous on a
    /// delete.
    pub fn focus(&self) -> Option<&Value> {
        self.current.or(self.previous)
    }

    /// `Type/id` of the changed resource.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }
}

/// One subscription to notify about a change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    /// The subscription's id.
    pub subscription_id: String,
    /// Canonical of the topic that fired.
    pub topic_url: String,
    /// References (`ServiceRequest/sr-1`) to add as additional context: the topic's
    /// notificationShape includes resolved on the focus version (e.g. `Task.focus`,
    /// `Task.basedOn`), plus, for `task-owner` filters, the Tasks that satisfied the filter.
    pub additional_context: Vec<String>,
}

#[cfg(test)]
mod tests;
