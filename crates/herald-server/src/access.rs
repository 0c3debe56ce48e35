//! What a caller may see and change: the Clinical Order Workflows roles applied to resources.
//! Pure decisions over a [`Caller`] and resource bodies; the handlers ask them (reads, searches,
//! writes, Subscription operations) and never decide themselves.
//!
//! - **admin**: everything.
//! - **fulfiller** (its identity, e.g. `Organization/lab-1`): Tasks whose `owner` is it,
//!   ServiceRequests whose `performer` names it, and what those reference.
//! - **placer**: Tasks and ServiceRequests whose `requester` is it, and what those reference.
//! - Any other resource (Patient, a Subscription, …): its creator, recorded by Herald as a
//!   `meta.tag` ([`CREATED_BY`]) that clients cannot set, and — for readers — the callers whose
//!   Tasks or ServiceRequests reference it.
//! - Topics: anyone reads them; only admins write them (their criteria run on every write).
//! - A Subscription is accepted from a placer or fulfiller only when one of its filters restricts
//!   it to resources that caller may read: `owner` / `task-owner` = its identity (fulfiller),
//!   `requester` = its identity (placer).

use std::collections::HashSet;

use axum::http::StatusCode;
use herald_fhir::FhirVersion;
use serde_json::{Value, json};

use crate::auth::{Caller, Role};
use crate::error::ApiError;

/// The `meta.tag` system that records which client created a resource.
pub const CREATED_BY: &str = "http://herald.example.org/fhir/CodeSystem/created-by";

/// `Type/id` of a reference (object with `reference`, or a string), when it has both.
fn target(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("reference")?.as_str()?,
        _ => return None,
    };
    let r = herald_fhir::reference::parse(s);
    Some(format!("{}/{}", r.resource_type?, r.id?))
}

fn normal(identity: &str) -> String {
    target(&Value::String(identity.to_owned())).unwrap_or_else(|| identity.to_owned())
}

/// Whether element `name` of `body` (one Reference or an array of them) points at `identity`.
fn names(body: &Value, name: &str, identity: &str) -> bool {
    let want = normal(identity);
    match body.get(name) {
        Some(Value::Array(items)) => items.iter().any(|i| target(i).as_deref() == Some(&want)),
        Some(v) => target(v).as_deref() == Some(&want),
        None => false,
    }
}

/// The client that created `body`, as Herald recorded it.
pub fn creator(body: &Value) -> Option<&str> {
    body.pointer("/meta/tag")?
        .as_array()?
        .iter()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(CREATED_BY))?
        .get("code")?
        .as_str()
}

fn is_topic(rtype: &str, body: &Value) -> bool {
    rtype == "SubscriptionTopic"
        || (rtype == "Basic" && crate::engine::is_topic(FhirVersion::R4, rtype, Some(body)))
}

/// A Task or ServiceRequest the caller's role reaches directly.
fn by_role(caller: &Caller, rtype: &str, body: &Value) -> bool {
    let Some(me) = caller.identity.as_deref() else {
        return false;
    };
    let fulfiller = caller.has(Role::Fulfiller);
    let placer = caller.has(Role::Placer);
    match rtype {
        "Task" => {
            (fulfiller && names(body, "owner", me)) || (placer && names(body, "requester", me))
        }
        "ServiceRequest" => {
            (fulfiller && names(body, "performer", me)) || (placer && names(body, "requester", me))
        }
        _ => false,
    }
}

/// Whether the caller may read `body` (of `rtype`, id `id`). `reach` gives the references of the
/// Tasks and ServiceRequests the caller's role reaches (computed once per request by the caller
/// of this function, only when needed).
pub fn may_read(
    caller: &Caller,
    rtype: &str,
    id: &str,
    body: &Value,
    reach: &mut dyn FnMut() -> HashSet<String>,
) -> bool {
    if caller.is_admin() || is_topic(rtype, body) || by_role(caller, rtype, body) {
        return true;
    }
    if creator(body) == Some(caller.client_id.as_str())
        && !matches!(rtype, "Task" | "ServiceRequest")
    {
        return true;
    }
    rtype != "Subscription" && reach().contains(&format!("{rtype}/{id}"))
}

/// Every `Type/id` a body references (its `reference` strings, at any depth).
pub fn references(body: &Value, out: &mut HashSet<String>) {
    match body {
        Value::Object(o) => {
            if let Some(t) = o.get("reference").and_then(|_| target(body)) {
                out.insert(t);
            }
            for v in o.values() {
                references(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The references of the Tasks and ServiceRequests `caller`'s role reaches, from `bodies`.
pub fn reach_of<'a>(
    caller: &Caller,
    bodies: impl Iterator<Item = (&'a str, &'a Value)>,
) -> HashSet<String> {
    let mut out = HashSet::new();
    for (rtype, body) in bodies {
        if by_role(caller, rtype, body) {
            references(body, &mut out);
        }
    }
    out
}

fn forbidden(caller: &Caller, why: String) -> ApiError {
    crate::auth::gate::forbidden(caller, &why)
}

/// Whether the caller may replace `old` by `new` (create: no `old`; delete: no `new`).
pub fn check_write(
    caller: &Caller,
    rtype: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    let topic = old.is_some_and(|b| is_topic(rtype, b)) || new.is_some_and(|b| is_topic(rtype, b));
    if topic {
        return Err(forbidden(
            caller,
            "topics are written by admins (their criteria run on every write)".into(),
        ));
    }
    match rtype {
        "Task" | "ServiceRequest" => {
            for (what, body) in [("the stored", old), ("the new", new)] {
                if let Some(b) = body
                    && !by_role(caller, rtype, b)
                {
                    return Err(forbidden(
                        caller,
                        format!(
                            "{what} {rtype} is not one of {} (a fulfiller writes the {rtype}s it owns or performs, a placer those it requested)",
                            caller.identity.as_deref().unwrap_or("its identity's")
                        ),
                    ));
                }
            }
            Ok(())
        }
        _ => match old {
            Some(b) if creator(b) != Some(caller.client_id.as_str()) => Err(forbidden(
                caller,
                format!("{rtype} resources are changed by the client that created them"),
            )),
            _ => Ok(()),
        },
    }
}

/// A placer's or fulfiller's Subscription must be restricted to what it may read.
pub fn check_subscription_scope(
    caller: &Caller,
    sub: &herald_subscriptions::Subscription,
) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    let me = caller.identity.as_deref().unwrap_or("");
    let restricted = !me.is_empty()
        && sub.filters.iter().any(|f| {
            f.modifier.is_none()
                && f.comparator.is_none()
                && target(&Value::String(f.value.clone())) == Some(normal(me))
                && ((caller.has(Role::Fulfiller)
                    && matches!(f.parameter.as_str(), "owner" | "task-owner" | "performer"))
                    || (caller.has(Role::Placer) && f.parameter == "requester"))
        });
    if restricted {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "client '{}' may only subscribe to what it may read: add a filter {} (its identity)",
                caller.client_id,
                match (caller.has(Role::Fulfiller), caller.has(Role::Placer)) {
                    (true, true) => format!("owner={me} or requester={me}"),
                    (true, false) => format!("owner={me} (or task-owner={me})"),
                    _ => format!("requester={me}"),
                }
            ),
        ))
    }
}

/// Records the creator on a body about to be stored: the stored version's creator when there is
/// one, else `caller`; whatever tag of that system the client sent is dropped.
pub fn stamp_creator(caller: &Caller, old: Option<&Value>, body: &mut Value) {
    let who = old
        .and_then(creator)
        .map(str::to_owned)
        .unwrap_or_else(|| caller.client_id.clone());
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    if let Value::Array(list) = tags {
        list.retain(|t| t.get("system").and_then(Value::as_str) != Some(CREATED_BY));
        list.push(json!({"system": CREATED_BY, "code": who}));
    }
}

/// Channel header values (R4 `channel.header`, R5 `parameter`) are write-only for everyone but
/// admins: shown as `[redacted]`.
pub fn redact(caller: &Caller, rtype: &str, body: &mut Value) {
    if caller.is_admin() || rtype != "Subscription" {
        return;
    }
    if let Some(Value::Array(hs)) = body.pointer_mut("/channel/header") {
        for h in hs.iter_mut() {
            if let Some(s) = h.as_str() {
                let name = s.split(':').next().unwrap_or_default().trim().to_owned();
                *h = Value::String(format!("{name}: [redacted]"));
            }
        }
    }
    if let Some(Value::Array(ps)) = body.get_mut("parameter") {
        for p in ps.iter_mut() {
            if let Some(v) = p.get_mut("value") {
                *v = Value::String("[redacted]".into());
            }
        }
    }
}

/// On an update, a header sent back as `[redacted]` keeps its stored value (a client that read
/// the Subscription and PUTs it back does not overwrite its secrets with the placeholder).
pub fn restore_redacted(old: &Value, body: &mut Value) {
    let stored_r4: Vec<String> = old
        .pointer("/channel/header")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Array(hs)) = body.pointer_mut("/channel/header") {
        for h in hs.iter_mut() {
            let Some(s) = h.as_str() else { continue };
            let Some((name, value)) = s.split_once(':') else {
                continue;
            };
            if value.trim() == "[redacted]"
                && let Some(orig) = stored_r4
                    .iter()
                    .find(|o| o.split(':').next().map(str::trim) == Some(name.trim()))
            {
                *h = Value::String(orig.clone());
            }
        }
    }
    let stored_r5: Vec<(String, Value)> = old
        .get("parameter")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((p.get("name")?.as_str()?.to_owned(), p.get("value")?.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Array(ps)) = body.get_mut("parameter") {
        for p in ps.iter_mut() {
            let name = p.get("name").and_then(Value::as_str).map(str::to_owned);
            if p.get("value").and_then(Value::as_str) == Some("[redacted]")
                && let Some(name) = name
                && let Some((_, v)) = stored_r5.iter().find(|(n, _)| *n == name)
            {
                p["value"] = v.clone();
            }
        }
    }
}

/// The send-time check: may the client that created Subscription `sub` read `body` now? A
/// Subscription created without authentication (no creator recorded) is the administrator's; a
/// creator no longer registered (or revoked) may read nothing.
pub fn subscriber_may_read(
    state: &crate::AppState,
    tenant: &str,
    sub: &str,
    rtype: &str,
    id: &str,
    body: &Value,
) -> bool {
    if !state.auth.enabled() {
        return true;
    }
    let Ok(Some(stored)) = state.store.resources.current(tenant, "Subscription", sub) else {
        return false;
    };
    let Some(sbody) = stored.resource else {
        return false;
    };
    let Some(client) = creator(&sbody) else {
        return true;
    };
    let Some(caller) = state.auth.caller_for(client) else {
        return false;
    };
    let Some(t) = state.tenants.get(tenant) else {
        return false;
    };
    let mut lazy = || crate::rest::reach(state, t, &caller);
    may_read(&caller, rtype, id, body, &mut lazy)
}

#[cfg(test)]
mod tests;
