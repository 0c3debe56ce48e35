//! Applying a message: what each carried resource becomes here. Every resource except the
//! envelope's own is upserted by its business identifier; references between the message's
//! entries are made local, references to entries that are not applied keep pointing at the
//! sender; and a late message cannot go back in time ([`Origin`]).

use std::collections::HashMap;

use herald_fhir::outcome::Severity;
use herald_store::{StoredVersion, WriteKind};
use serde_json::Value;

use super::response::Issue;
use crate::AppState;
use crate::bundle::commit::AtomicWrite;
use crate::bundle::plan::{self, Action, Method, Planned, at, local_references, resolve};
use crate::bundle::{check_scope, write_plan};
use crate::context::Ctx;
use crate::error::ApiResult;

/// Resource types that belong to the envelope, never applied.
const ENVELOPE: [&str; 5] = [
    "MessageHeader",
    "Bundle",
    "Parameters",
    "SubscriptionStatus",
    "OperationOutcome",
];

/// The writes a message asks for (and for each, the Bundle entry it came from): each carried
/// resource upserted by its identifier, with references between the message's entries made
/// local (and references to entries that are not applied made absolute, so they still point at
/// the sender's copy).
pub(super) fn plan_message(
    state: &AppState,
    ctx: &Ctx,
    bundle: &Value,
) -> ApiResult<(Vec<AtomicWrite>, Vec<usize>, Vec<Issue>)> {
    let entries: &[Value] = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut issues = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut held_refs: Vec<(String, String)> = Vec::new();
    // Each (type, identifier) is resolved once: a message may carry several versions of one
    // resource (a backlog of its changes), applied in order to the resource the first resolved
    // to, each judged against what was held before the message.
    let mut targets: HashMap<(String, String), Target> = HashMap::new();
    for (i, e) in entries.iter().enumerate().skip(1) {
        let Some(resource) = e.get("resource") else {
            continue;
        };
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if ENVELOPE.contains(&rt.as_str()) {
            continue;
        }
        let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
        let Some(query) = identifier_query(resource) else {
            issues.push(Issue {
                severity: Severity::Warning,
                code: "business-rule",
                text: format!(
                    "Bundle.entry[{i}]: {rt} has no identifier with system and value; not applied (message content is applied by business identifier)"
                ),
            });
            if let Some(u) = full_url {
                skipped.push(u);
            }
            continue;
        };
        crate::context::check_type(&ctx.tenant, &rt).map_err(|e| at(i, e))?;
        check_scope(&ctx.caller, &rt, Method::Put).map_err(|e| at(i, e))?;
        let origin = Origin::of(resource, full_url.as_deref());
        let request = plan::Request {
            index: i,
            method: Method::Put,
            resource_type: rt.clone(),
            id: None,
            query: Some(query.clone()),
            resource: Some(as_received(resource, origin.sent.as_deref())),
            if_none_exist: None,
            if_match: None,
            full_url,
        };
        let target = match targets.entry((rt, query)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let p = resolve(state, &ctx.tenant, &ctx.caller, request.clone())
                    .map_err(|e| at(i, e))?;
                let held = state
                    .store
                    .resources
                    .current(&ctx.tenant.name, &p.request.resource_type, &p.id)?
                    .filter(|h| !h.is_deleted());
                v.insert(Target { id: p.id, held })
            }
        };
        if let Some(held) = &target.held
            && let Some(why) = origin.stale(&ctx.tenant.name, held)
        {
            issues.push(Issue {
                severity: Severity::Information,
                code: "informational",
                text: format!(
                    "Bundle.entry[{i}]: {}/{} not changed: {why}",
                    held.resource_type, held.id
                ),
            });
            // References to it still name what we hold.
            if let Some(u) = &request.full_url {
                held_refs.push((u.clone(), format!("{}/{}", held.resource_type, held.id)));
            }
            continue;
        }
        issues.push(Issue {
            severity: Severity::Information,
            code: "informational",
            text: format!(
                "Bundle.entry[{i}]: {} {}/{} (matched by identifier {})",
                if target.held.is_some() {
                    "updates"
                } else {
                    "creates"
                },
                request.resource_type,
                target.id,
                form_urlencoded::parse(request.query.as_deref().unwrap_or("").as_bytes())
                    .map(|(_, v)| v.into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
        planned.push(Planned {
            action: Action::Write {
                kind: WriteKind::Upsert,
                body: request.resource.clone(),
                if_match: None,
            },
            id: target.id.clone(),
            request,
        });
    }
    let references = message_references(&planned, &held_refs, &skipped);
    let writes = write_plan(
        state,
        &ctx.tenant,
        &ctx.caller,
        &mut planned,
        Some(&references),
    )?;
    let entries = writes
        .entry_of
        .iter()
        .map(|&p| planned[p].request.index)
        .collect();
    Ok((writes.writes, entries, issues))
}

/// Where a carried resource's content comes from, to tell a late message from a new one:
/// `sent` is the sender's versioned URL of it (`fullUrl/_history/versionId`), `echo` the version
/// it copies when the sender got it from us (its `meta.source`).
struct Origin {
    sent: Option<String>,
    from: Option<(String, u64)>,
    echo: Option<(String, u64)>,
}

impl Origin {
    fn of(resource: &Value, full_url: Option<&str>) -> Origin {
        let version = resource
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok());
        let from = match (full_url, version) {
            (Some(u), Some(v)) if u.starts_with("http://") || u.starts_with("https://") => {
                Some((u.to_owned(), v))
            }
            _ => None,
        };
        Origin {
            sent: from.as_ref().map(|(u, v)| format!("{u}/_history/{v}")),
            from,
            echo: resource
                .pointer("/meta/source")
                .and_then(Value::as_str)
                .and_then(versioned),
        }
    }

    /// Why applying it over `held` would go back in time, if it would: it is an older (or the
    /// same) version from the same sender than the one held, or it is our own older version
    /// coming back (an echo that crossed a newer change of ours).
    fn stale(&self, tenant: &str, held: &herald_store::StoredVersion) -> Option<String> {
        if let Some((url, v)) = &self.echo
            && url.ends_with(&format!(
                "/fhir/{tenant}/{}/{}",
                held.resource_type, held.id
            ))
            && *v < held.version
        {
            return Some(format!(
                "it copies our version {v}, and version {} is newer",
                held.version
            ));
        }
        let held_from = held
            .resource
            .as_ref()
            .and_then(|r| r.pointer("/meta/source"))
            .and_then(Value::as_str)
            .and_then(versioned);
        match (&self.from, held_from) {
            (Some((url, v)), Some((held_url, w))) if *url == held_url && *v <= w => Some(format!(
                "version {v} from {url} is not newer than version {w} already applied"
            )),
            _ => None,
        }
    }
}

/// `…/Type/id/_history/n` → (`…/Type/id`, n).
fn versioned(url: &str) -> Option<(String, u64)> {
    let (base, v) = url.rsplit_once("/_history/")?;
    Some((base.to_owned(), v.parse().ok()?))
}

/// `identifier=system|value` for the first identifier with both, URL-encoded.
fn identifier_query(resource: &Value) -> Option<String> {
    let first = resource.get("identifier").and_then(|i| match i {
        Value::Array(a) => a.iter().find(|x| has_system_and_value(x)).cloned(),
        Value::Object(_) if has_system_and_value(i) => Some(i.clone()),
        _ => None,
    })?;
    let system = first.get("system")?.as_str()?;
    let value = first.get("value")?.as_str()?;
    Some(
        form_urlencoded::Serializer::new(String::new())
            .append_pair("identifier", &format!("{system}|{value}"))
            .finish(),
    )
}

fn has_system_and_value(i: &Value) -> bool {
    i.get("system").and_then(Value::as_str).is_some()
        && i.get("value").and_then(Value::as_str).is_some()
}

/// What references in a message become: each applied (or already held) entry's `fullUrl` (and, for an absolute
/// `fullUrl`, the relative `Type/id` the sender's resources use among themselves) → the local
/// `Type/id`; an entry not applied → its absolute `fullUrl`.
fn message_references(
    planned: &[Planned],
    held: &[(String, String)],
    skipped: &[String],
) -> HashMap<String, String> {
    let mut map = local_references(planned);
    for (url, local) in held {
        map.entry(url.clone()).or_insert_with(|| local.clone());
    }
    let relative = |url: &str| -> Option<String> {
        let mut parts = url.rsplit('/');
        let id = parts.next()?;
        let rt = parts.next()?;
        (url.starts_with("http://") || url.starts_with("https://")).then(|| format!("{rt}/{id}"))
    };
    let extra: Vec<(String, String)> = map
        .iter()
        .filter_map(|(url, local)| relative(url).map(|r| (r, local.clone())))
        .collect();
    map.extend(extra);
    for url in skipped {
        if let Some(r) = relative(url) {
            map.entry(r).or_insert_with(|| url.clone());
        }
    }
    map
}

/// Where an identifier of a message resolved: the local id, and what was held there before.
struct Target {
    id: String,
    held: Option<StoredVersion>,
}

/// A carried resource as it is written here: the sender's id and version bookkeeping dropped,
/// where the content came from kept as `meta.source` (the sender's versioned URL), to tell late
/// messages apart.
fn as_received(resource: &Value, sent: Option<&str>) -> Value {
    let mut body = resource.clone();
    let Some(o) = body.as_object_mut() else {
        return body;
    };
    o.remove("id");
    let mut meta = match o.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    meta.remove("versionId");
    meta.remove("lastUpdated");
    if let Some(src) = sent {
        meta.insert("source".into(), Value::String(src.to_owned()));
    }
    if !meta.is_empty() {
        o.insert("meta".into(), Value::Object(meta));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_identifier_becomes_an_encoded_conditional_query() {
        let q = identifier_query(&json!({"identifier": [
            {"value": "no-system"},
            {"system": "https://placer.example/ids", "value": "T 1|x"}
        ]}))
        .expect("query");
        let back: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            back,
            vec![(
                "identifier".to_owned(),
                "https://placer.example/ids|T 1|x".to_owned()
            )]
        );
        assert!(identifier_query(&json!({"identifier": [{"value": "x"}]})).is_none());
    }

    fn held(id: &str, version: u64, source: Option<&str>) -> herald_store::StoredVersion {
        let mut r = json!({"resourceType": "Task", "id": id});
        if let Some(s) = source {
            r["meta"] = json!({"source": s});
        }
        herald_store::StoredVersion {
            resource_type: "Task".into(),
            id: id.into(),
            version,
            last_updated: String::new(),
            interaction: herald_store::Interaction::Update,
            resource: Some(r),
        }
    }

    #[test]
    fn an_older_version_from_the_same_sender_is_stale_and_a_newer_one_is_not() {
        let from = |v: &str| {
            Origin::of(
                &json!({"resourceType": "Task", "meta": {"versionId": v}}),
                Some("http://f.example/fhir/r4/Task/t1"),
            )
        };
        let h = held(
            "local",
            5,
            Some("http://f.example/fhir/r4/Task/t1/_history/3"),
        );
        assert!(from("2").stale("r4", &h).is_some());
        assert!(from("3").stale("r4", &h).is_some());
        assert!(from("4").stale("r4", &h).is_none());
        // From another sender, or onto a resource that was never copied: not comparable.
        let other = Origin::of(
            &json!({"resourceType": "Task", "meta": {"versionId": "1"}}),
            Some("http://g.example/fhir/r4/Task/t1"),
        );
        assert!(other.stale("r4", &h).is_none());
        assert!(from("1").stale("r4", &held("local", 2, None)).is_none());
    }

    #[test]
    fn our_own_older_version_coming_back_is_stale() {
        let echo = |v: u64| {
            Origin::of(
                &json!({"resourceType": "Task", "meta": {"versionId": "7",
                    "source": format!("http://p.example/fhir/r4/Task/ct-1/_history/{v}")}}),
                Some("http://f.example/fhir/r4/Task/copy"),
            )
        };
        assert!(echo(1).stale("r4", &held("ct-1", 2, None)).is_some());
        assert!(echo(2).stale("r4", &held("ct-1", 2, None)).is_none());
        assert!(echo(1).stale("r5", &held("ct-1", 2, None)).is_none());
    }
}
