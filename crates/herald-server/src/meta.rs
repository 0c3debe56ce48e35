//! FHIR's version stamp: what a stored version's body says about itself (`id`,
//! `meta.versionId`, `meta.lastUpdated`) and which differences make no new version. The store
//! knows no FHIR; it calls this back under its log lock, where the version number and commit
//! instant are decided, so every write path (REST, bundles, messages, status changes, the
//! built-in topics) stamps the same way. Installed when the store is opened ([`stamp`]).

use std::sync::Arc;

use herald_store::VersionStamp;
use serde_json::{Map, Value};

/// The stamp Herald's store is opened with.
pub fn stamp() -> Arc<dyn VersionStamp> {
    Arc::new(FhirMeta)
}

/// Stamps FHIR resources.
#[derive(Debug, Clone, Copy, Default)]
pub struct FhirMeta;

impl VersionStamp for FhirMeta {
    /// Sets `id`, `meta.versionId` and `meta.lastUpdated`, keeping the rest of `meta`.
    fn stamp(&self, body: &Value, id: &str, version: u64, last_updated: &str) -> Value {
        let mut out = body.clone();
        if let Value::Object(map) = &mut out {
            map.insert("id".into(), Value::String(id.into()));
            let meta = map
                .entry("meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if !meta.is_object() {
                *meta = Value::Object(Map::new());
            }
            if let Value::Object(m) = meta {
                m.insert("versionId".into(), Value::String(version.to_string()));
                m.insert("lastUpdated".into(), Value::String(last_updated.into()));
            }
        }
        out
    }

    /// Same resource content, ignoring what the stamp sets: a PUT of identical content creates
    /// no version and triggers nothing.
    fn same_content(&self, stored: &Value, body: &Value) -> bool {
        strip(stored) == strip(body)
    }
}

fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(map) = &mut v {
        map.remove("id");
        if let Some(Value::Object(meta)) = map.get_mut("meta") {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            // Where identical content was copied from does not make a new version: two
            // servers exchanging a resource would otherwise never settle.
            meta.remove("source");
            if meta.is_empty() {
                map.remove("meta");
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_sets_id_version_and_last_updated_and_keeps_the_rest_of_meta() {
        let body = json!({"resourceType":"Task","id":"other","meta":{"tag":[{"code":"x"}],"versionId":"9"}});
        let out = FhirMeta.stamp(&body, "t1", 2, "2026-01-01T00:00:00.000001Z");
        assert_eq!(out["id"], "t1");
        assert_eq!(out["meta"]["versionId"], "2");
        assert_eq!(out["meta"]["lastUpdated"], "2026-01-01T00:00:00.000001Z");
        assert_eq!(out["meta"]["tag"], json!([{"code":"x"}]));
    }

    #[test]
    fn stamp_replaces_a_meta_that_is_not_an_object() {
        let out = FhirMeta.stamp(&json!({"resourceType":"Task","meta":3}), "t1", 1, "i");
        assert_eq!(out["meta"], json!({"versionId":"1","lastUpdated":"i"}));
    }

    #[test]
    fn same_content_ignores_the_stamp_and_meta_source_but_not_other_meta() {
        let stored = FhirMeta.stamp(&json!({"resourceType":"Task","status":"a"}), "t1", 1, "i");
        let resent = json!({"resourceType":"Task","status":"a","meta":{"source":"http://x"}});
        assert!(FhirMeta.same_content(&stored, &resent));
        let retagged = json!({"resourceType":"Task","status":"a","meta":{"tag":[{"code":"x"}]}});
        assert!(!FhirMeta.same_content(&stored, &retagged));
        let changed = json!({"resourceType":"Task","status":"b"});
        assert!(!FhirMeta.same_content(&stored, &changed));
    }
}
