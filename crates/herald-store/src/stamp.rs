//! The callback that turns a request body into the body a version stores. The version number
//! and commit instant are only known under the log lock, so the store calls back whoever owns
//! the resource format (the server, which knows FHIR's `id` and `meta`) instead of knowing that
//! format itself; the same owner says when a body brings nothing new (no version is written).

use serde_json::Value;

/// Stamps the bodies of new versions. Called under the log lock, once per write, so it must be
/// quick and must not touch the store.
pub trait VersionStamp: Send + Sync {
    /// The body to store as version `version` of resource `id`, committed at `last_updated`.
    fn stamp(&self, body: &Value, id: &str, version: u64, last_updated: &str) -> Value;

    /// Whether `body` has the content of the version stored as `stored`, so that writing it
    /// would make a version that says nothing new (and would trigger nothing).
    fn same_content(&self, stored: &Value, body: &Value) -> bool;
}

/// Bodies stored exactly as given, and identical only when equal: for a store that serves no
/// resource format (tools and tests that write around the server).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsGiven;

impl VersionStamp for AsGiven {
    fn stamp(&self, body: &Value, _id: &str, _version: u64, _last_updated: &str) -> Value {
        body.clone()
    }

    fn same_content(&self, stored: &Value, body: &Value) -> bool {
        stored == body
    }
}
