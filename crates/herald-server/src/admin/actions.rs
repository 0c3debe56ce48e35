//! Operator actions on a subscription: `POST /admin/subscriptions/{tenant}/{id}/{action}` with
//! action `retry` (try now), `redrive` (try now and forget the failure streak), `pause`, `resume`, `resend` (`from`/`to` in the query or
//! a JSON body), `activate` (`error` → `active`) and `off`; and `GET /admin/audit`, the record
//! of who did which. Each action is carried out by the dispatcher or the write path, then
//! written to the audit log and made durable before the answer.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_delivery::live::Action;
use herald_store::AuditRecord;
use herald_subscriptions::{SubscriptionStatus, parse_subscription};
use serde::Serialize;
use serde_json::{Value, json};

use super::{query_pairs, u64_param, usize_param};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// The actions, as the API names them.
pub const ACTIONS: [&str; 7] = [
    "retry", "redrive", "pause", "resume", "resend", "activate", "off",
];

/// What an action did, as answered and audited.
#[derive(Debug, Clone, Serialize)]
pub struct Performed {
    /// The action.
    pub action: String,
    /// Who asked.
    pub by: String,
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub subscription: String,
    /// Details (the range resent).
    pub detail: Option<String>,
}

/// Carries out `action` on a subscription for `caller`, and audits it.
pub async fn perform(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    id: &str,
    action: &str,
    range: Option<(u64, u64)>,
) -> ApiResult<Performed> {
    let t = crate::context::tenant(state, tenant)?;
    let stored = state.store.resources.read(&t.name, "Subscription", id)?;
    let status = stored
        .resource
        .as_ref()
        .and_then(|b| parse_subscription(t.version, b).ok())
        .map(|s| s.status);
    let mut detail = None;
    match action {
        "retry" => state.dispatcher.act(&t.name, id, Action::Retry).await?,
        "redrive" => state.dispatcher.act(&t.name, id, Action::Redrive).await?,
        "pause" => state.dispatcher.act(&t.name, id, Action::Pause).await?,
        "resume" => state.dispatcher.act(&t.name, id, Action::Resume).await?,
        "resend" => {
            let Some((from, to)) = range else {
                return Err(ApiError::bad_request(
                    "resend needs the event numbers: from and to (query parameters or a JSON body {\"from\": n, \"to\": m})",
                ));
            };
            state
                .dispatcher
                .act(&t.name, id, Action::Resend(from, to))
                .await?;
            detail = Some(format!("events {from}-{to}"));
        }
        "activate" => {
            if status != Some(SubscriptionStatus::Error) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "activate moves a Subscription from error to active; Subscription/{id} is {}",
                        status.map_or("unreadable", |s| s.code())
                    ),
                ));
            }
            crate::status::set_by_operator(state, &t.name, id, SubscriptionStatus::Active).await?;
            // A fresh start: the streak that led to `error` is forgotten, and it tries now.
            state.dispatcher.act(&t.name, id, Action::Redrive).await?;
        }
        "off" => {
            crate::status::set_by_operator(state, &t.name, id, SubscriptionStatus::Off).await?;
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no action '{other}' (actions: {})",
                ACTIONS.join(", ")
            )));
        }
    }
    let done = Performed {
        action: action.to_owned(),
        by: caller.client_id.clone(),
        tenant: t.name.clone(),
        subscription: id.to_owned(),
        detail,
    };
    let now = herald_delivery::timers::unix_ms();
    state.store.audit.record_audit(&AuditRecord {
        at_ms: now,
        at: crate::ws::instant(now),
        actor: done.by.clone(),
        action: done.action.clone(),
        tenant: done.tenant.clone(),
        subscription: done.subscription.clone(),
        detail: done.detail.clone(),
    })?;
    state.store.audit.flush().await?;
    tracing::info!(
        tenant = %done.tenant,
        subscription = %done.subscription,
        action = %done.action,
        by = %done.by,
        "admin action"
    );
    Ok(done)
}

/// `POST /admin/subscriptions/{tenant}/{id}/{action}`.
pub async fn act(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id, action)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (mut from, mut to) = (None, None);
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "from" => from = Some(u64_param("from", &v)?),
            "to" => to = Some(u64_param("to", &v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}' (known: from, to)"
                )));
            }
        }
    }
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body must be JSON: {e}")))?;
        let num = |name: &str| -> ApiResult<Option<u64>> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(n) => n.as_u64().map(Some).ok_or_else(|| {
                    ApiError::bad_request(format!("{name} must be a non-negative integer"))
                }),
            }
        };
        from = num("from")?.or(from);
        to = num("to")?.or(to);
    }
    let range = match (from, to) {
        (Some(f), Some(t)) => Some((f, t)),
        (Some(f), None) => Some((f, f)),
        (None, Some(_)) => return Err(ApiError::bad_request("to needs from")),
        (None, None) => None,
    };
    let done = perform(&state, &caller, &tenant, &id, &action, range).await?;
    let live = super::rows::rows(
        &state,
        &super::rows::RowFilter {
            tenant: Some(done.tenant.clone()),
            id: Some(done.subscription.clone()),
            ..Default::default()
        },
    )
    .await?
    .pop();
    Ok((
        StatusCode::OK,
        axum::Json(json!({"performed": done, "subscription": live})),
    )
        .into_response())
}

/// `GET /admin/audit?tenant=&subscription=&_count=`: operator actions, newest first.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (mut tenant, mut sub, mut count) = (None, None, 100usize);
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "tenant" => tenant = Some(v),
            "subscription" => sub = Some(v),
            "_count" => count = usize_param("_count", &v)?.clamp(1, 1000),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}' (known: tenant, subscription, _count)"
                )));
            }
        }
    }
    let entries = state
        .store
        .audit
        .audit(tenant.as_deref(), sub.as_deref(), count)?;
    Ok(axum::Json(json!({"count": entries.len(), "entries": entries})).into_response())
}
