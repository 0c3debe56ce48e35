//! `GET /admin/subscriptions` (filters: `tenant`, `status`, `failing=true`, `sort=failing-first`)
//! and `GET /admin/subscriptions/{tenant}/{id}`: subscriptions with their live delivery state.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::query_pairs;
use super::rows::{RowFilter, rows};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

const STATUSES: [&str; 5] = ["requested", "active", "error", "off", "entered-in-error"];

/// The list.
pub async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut f = RowFilter::default();
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "tenant" => {
                crate::context::tenant(&state, &v)?;
                f.tenant = Some(v);
            }
            "status" => {
                if !STATUSES.contains(&v.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "status must be one of {}, got '{v}'",
                        STATUSES.join(", ")
                    )));
                }
                f.status = Some(v);
            }
            "failing" => f.failing_only = bool_param("failing", &v)?,
            "sort" => match v.as_str() {
                "failing-first" => f.failing_first = true,
                "id" => f.failing_first = false,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "sort must be 'failing-first' or 'id', got '{v}'"
                    )));
                }
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}' (known: tenant, status, failing, sort)"
                )));
            }
        }
    }
    let rows = rows(&state, &f).await?;
    Ok(axum::Json(json!({"total": rows.len(), "subscriptions": rows})).into_response())
}

/// One subscription, with its recent operator actions.
pub async fn one(
    State(state): State<Arc<AppState>>,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let t = crate::context::tenant(&state, &tenant)?;
    let f = RowFilter {
        tenant: Some(t.name.clone()),
        id: Some(id.clone()),
        ..RowFilter::default()
    };
    let Some(row) = rows(&state, &f).await?.pop() else {
        return Err(ApiError::not_found(format!(
            "no live Subscription/{id} in tenant '{tenant}'"
        )));
    };
    let audit = state.store.audit.audit(Some(&t.name), Some(&id), 20)?;
    let pruned = state.store.events.pruned_through(&t.name, &id)?;
    Ok(axum::Json(json!({
        "subscription": row,
        "events_pruned_through": pruned,
        "actions": audit,
    }))
    .into_response())
}

pub(crate) fn bool_param(name: &str, v: &str) -> ApiResult<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be 'true' or 'false', got '{v}'"
        ))),
    }
}
