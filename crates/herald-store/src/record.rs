//! What the store keeps per resource version and per subscription event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The interaction that produced a version (or triggered an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interaction {
    /// The resource came into existence (POST, or PUT of a new id).
    Create,
    /// A new version of an existing resource.
    Update,
    /// The resource was deleted (the version is a tombstone).
    Delete,
}

impl Interaction {
    /// The FHIR code (`create`, `update`, `delete`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Interaction::Create => "create",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
        }
    }
}

/// One version of a resource, as stored in both `resources` (the current one) and `history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// `meta.versionId`, 1-based, contiguous per resource.
    pub version: u64,
    /// `meta.lastUpdated` (FHIR instant).
    pub last_updated: String,
    /// What produced this version.
    pub interaction: Interaction,
    /// The resource body with `id` and `meta` set; `None` for a deletion.
    pub resource: Option<Value>,
}

impl StoredVersion {
    /// Is this version a deletion tombstone?
    pub fn is_deleted(&self) -> bool {
        self.interaction == Interaction::Delete
    }
}

/// A matched subscription's request to record an event, produced by the write hook.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventDraft {
    /// The subscription that matched.
    pub subscription_id: String,
    /// Canonical URL of the topic that matched.
    pub topic: String,
    /// Additional-context references (`Type/id`, resolved at their current version).
    pub additional_context: Vec<String>,
    /// The event's focus when it is not the resource written: a change to one resource can be
    /// news about another (a Task naming a new owner is news about the ServiceRequest it
    /// fulfils, for a subscription on ServiceRequests "with a Task owned by X"). `None`: the
    /// written resource at the version just written.
    pub focus: Option<EventFocus>,
}

/// The focus of an event about a resource other than the one written (see
/// [`EventDraft::focus`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFocus {
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// The version the notification shows.
    pub version: u64,
}

/// A numbered event in a subscription's log. The focus is recorded with the version that
/// triggered it, so notifications and `$events` can show that version (design invariant 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Per-subscription event number (1-based, gap-free, never reused).
    pub number: u64,
    /// When the triggering change was committed (FHIR instant).
    pub timestamp: String,
    /// Canonical URL of the topic.
    pub topic: String,
    /// Focus resource type.
    pub focus_type: String,
    /// Focus logical id.
    pub focus_id: String,
    /// Focus version that triggered the event.
    pub focus_version: u64,
    /// The triggering interaction.
    pub interaction: Interaction,
    /// Additional-context references.
    pub additional_context: Vec<String>,
}

impl EventRecord {
    /// `Type/id/_history/version`.
    pub fn focus_reference(&self) -> String {
        format!(
            "{}/{}/_history/{}",
            self.focus_type, self.focus_id, self.focus_version
        )
    }
}
