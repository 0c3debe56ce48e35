//! Owns the subsetting of resources for `_summary` and `_elements`: which elements are kept,
//! and the `SUBSETTED` tag that marks the result as incomplete (so nobody writes it back as if it
//! were whole).
//!
//! The summary and mandatory elements come from the core StructureDefinitions (`isSummary`,
//! `min >= 1`), as a generated table per version (`data/{r5,r4b}/summary-elements.json`, made
//! by `scripts/gen-summary-elements`), per resource type and per backbone element path. R4
//! tenants use the R4B (4.3.0) table: R4B is R4's technical correction, and the resource types
//! R4 has and R4B dropped (the `MedicinalProduct*` family, `EffectEvidenceSynthesis`, …) have
//! no entry, so a summary of them is refused as not supported rather than guessed.

use crate::FhirVersion;
use crate::search::result::SummaryMode;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The `meta.tag` that marks a subsetted resource.
pub const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

static R5_TABLE: &str = include_str!("../data/r5/summary-elements.json");
static R4B_TABLE: &str = include_str!("../data/r4b/summary-elements.json");

/// The elements of one type or backbone path.
#[derive(Debug, Default)]
struct Elements {
    summary: Vec<String>,
    required: Vec<String>,
}

type Table = HashMap<String, Elements>;

fn parse_table(text: &str) -> Table {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let list = |e: &Value, k: &str| -> Vec<String> {
        e.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(path, e)| {
            (
                path.clone(),
                Elements {
                    summary: list(e, "s"),
                    required: list(e, "r"),
                },
            )
        })
        .collect()
}

fn table(version: FhirVersion) -> &'static Table {
    static R5: OnceLock<Table> = OnceLock::new();
    static R4B: OnceLock<Table> = OnceLock::new();
    // Every version before R5 uses the R4B flags (see the module docs).
    if version == FhirVersion::R5 {
        R5.get_or_init(|| parse_table(R5_TABLE))
    } else {
        R4B.get_or_init(|| parse_table(R4B_TABLE))
    }
}

/// Whether Herald knows the summary elements of `resource_type` in `version`.
pub fn knows(version: FhirVersion, resource_type: &str) -> bool {
    table(version).contains_key(resource_type)
}

/// What to keep of a resource.
#[derive(Clone, Copy, Debug)]
pub enum Subset<'a> {
    /// A `_summary` mode (`true`, `text` or `data`; others keep everything).
    Summary(SummaryMode),
    /// `_elements`: these names (plain, or `Type.name` for one type), plus the mandatory ones.
    Elements(&'a [String]),
}

/// Always kept: what makes it a resource and says what it is.
const ALWAYS: [&str; 3] = ["resourceType", "id", "meta"];

/// Keeps the elements (and their `_name` extension siblings) for which `keep` says yes.
fn retain(obj: &mut Map<String, Value>, keep: impl Fn(&str) -> bool) {
    obj.retain(|k, _| keep(k.strip_prefix('_').unwrap_or(k)));
}

/// Prunes the backbone elements under `path` to their summary (and mandatory) elements.
fn prune_backbones(t: &Table, path: &str, obj: &mut Map<String, Value>) {
    for (name, v) in obj.iter_mut() {
        let sub = format!("{path}.{name}");
        let Some(e) = t.get(&sub) else { continue };
        let items: Vec<&mut Value> = match v {
            Value::Array(a) => a.iter_mut().collect(),
            other => vec![other],
        };
        for item in items {
            if let Value::Object(o) = item {
                retain(o, |k| {
                    k == "id"
                        || e.summary.iter().any(|s| s == k)
                        || e.required.iter().any(|s| s == k)
                });
                prune_backbones(t, &sub, o);
            }
        }
    }
}

/// Adds the `SUBSETTED` tag to `meta.tag`.
pub fn tag_subsetted(resource: &mut Value) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    if let Value::Array(tags) = tags
        && !tags.iter().any(|t| {
            t.get("system").and_then(Value::as_str) == Some(SUBSETTED_SYSTEM)
                && t.get("code").and_then(Value::as_str) == Some("SUBSETTED")
        })
    {
        tags.push(json!({"system": SUBSETTED_SYSTEM, "code": "SUBSETTED", "display": "Resource encoded in summary mode"}));
    }
}

/// The subset of `resource` that `subset` asks for, tagged `SUBSETTED`; `None` when the
/// resource's type has no entry in the version's table and the mode needs one (`_summary=true`
/// or `text`). `_summary=false`/`count` return the resource unchanged.
pub fn apply(version: FhirVersion, resource: &Value, subset: Subset<'_>) -> Option<Value> {
    let rt = resource.get("resourceType").and_then(Value::as_str)?;
    let t = table(version);
    let entry = t.get(rt);
    let mut out = resource.clone();
    let obj = out.as_object_mut()?;
    match subset {
        Subset::Summary(SummaryMode::False | SummaryMode::Count) => return Some(out),
        Subset::Summary(SummaryMode::Data) => {
            obj.remove("text");
            obj.remove("_text");
        }
        Subset::Summary(SummaryMode::Text) => {
            let e = entry?;
            retain(obj, |k| {
                ALWAYS.contains(&k) || k == "text" || e.required.iter().any(|r| r == k)
            });
        }
        Subset::Summary(SummaryMode::True) => {
            let e = entry?;
            retain(obj, |k| {
                ALWAYS.contains(&k)
                    || e.summary.iter().any(|s| s == k)
                    || e.required.iter().any(|r| r == k)
            });
            prune_backbones(t, rt, obj);
        }
        Subset::Elements(names) => {
            let wanted = |k: &str| {
                names.iter().any(|n| match n.split_once('.') {
                    Some((ty, el)) => ty == rt && el == k,
                    None => n == k,
                })
            };
            retain(obj, |k| {
                ALWAYS.contains(&k)
                    || wanted(k)
                    || entry.is_some_and(|e| e.required.iter().any(|r| r == k))
            });
        }
    }
    tag_subsetted(&mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Value {
        json!({
            "resourceType": "Task", "id": "t1", "meta": {"versionId": "2"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "status": "requested", "_status": {"extension": [{"url": "u", "valueString": "v"}]},
            "intent": "order", "owner": {"reference": "Organization/lab"},
            "note": [{"text": "not a summary element"}],
            "input": [{"type": {"text": "t"}, "valueString": "v"}],
            "restriction": {"repetitions": 1}
        })
    }

    fn has_subsetted_tag(v: &Value) -> bool {
        v["meta"]["tag"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["code"] == "SUBSETTED"))
    }

    #[test]
    fn summary_true_keeps_summary_and_mandatory_elements_and_tags_the_result() {
        for v in [FhirVersion::R4, FhirVersion::R5] {
            let s = apply(v, &task(), Subset::Summary(SummaryMode::True)).unwrap_or_default();
            assert_eq!(s["status"], "requested", "{v}");
            assert!(
                s.get("_status").is_some(),
                "primitive extensions follow: {s}"
            );
            assert_eq!(s["owner"]["reference"], "Organization/lab");
            assert!(s.get("note").is_none() && s.get("input").is_none(), "{s}");
            assert!(
                s.get("text").is_none() && s.get("restriction").is_none(),
                "{s}"
            );
            assert_eq!(s["meta"]["versionId"], "2");
            assert!(has_subsetted_tag(&s), "{s}");
        }
    }

    #[test]
    fn summary_text_keeps_text_id_meta_and_mandatory_elements_only() {
        let s =
            apply(FhirVersion::R5, &task(), Subset::Summary(SummaryMode::Text)).unwrap_or_default();
        let mut keys: Vec<&str> = s
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "_status",
                "id",
                "intent",
                "meta",
                "resourceType",
                "status",
                "text"
            ]
        );
    }

    #[test]
    fn summary_data_drops_only_the_narrative() {
        let s =
            apply(FhirVersion::R4, &task(), Subset::Summary(SummaryMode::Data)).unwrap_or_default();
        assert!(s.get("text").is_none());
        assert_eq!(s["note"][0]["text"], "not a summary element");
        assert!(has_subsetted_tag(&s));
    }

    #[test]
    fn elements_keeps_the_named_and_mandatory_elements() {
        let names = vec!["note".to_owned(), "Patient.name".to_owned()];
        let s = apply(FhirVersion::R4, &task(), Subset::Elements(&names)).unwrap_or_default();
        let mut keys: Vec<&str> = s
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "_status",
                "id",
                "intent",
                "meta",
                "note",
                "resourceType",
                "status"
            ]
        );
        assert!(has_subsetted_tag(&s));
    }

    #[test]
    fn summary_of_a_type_without_a_table_entry_is_refused_not_guessed() {
        let r = json!({"resourceType": "MedicinalProduct", "id": "m"});
        assert!(apply(FhirVersion::R4, &r, Subset::Summary(SummaryMode::True)).is_none());
        assert!(!knows(FhirVersion::R4, "MedicinalProduct"));
        assert!(knows(FhirVersion::R4, "Task") && knows(FhirVersion::R5, "SubscriptionTopic"));
    }

    #[test]
    fn backbone_elements_are_pruned_to_their_summary_elements() {
        let sub = json!({
            "resourceType": "Subscription", "status": "active", "reason": "r", "criteria": "c",
            "channel": {"type": "rest-hook", "endpoint": "https://x", "header": ["a: b"], "payload": "application/fhir+json"}
        });
        let s =
            apply(FhirVersion::R4, &sub, Subset::Summary(SummaryMode::True)).unwrap_or_default();
        assert_eq!(s["channel"]["type"], "rest-hook");
        assert_eq!(s["criteria"], "c");
    }
}
