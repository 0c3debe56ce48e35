//! The attempt log: `GET /admin/attempts` (filters `tenant`, `subscription`, `outcome`,
//! `http_status`, `since`, `until`; newest first; `_count` and the `next` cursor page it) and
//! `GET /admin/attempts/{id}` (one attempt in full: redacted request headers, response status,
//! truncated body, latency).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use herald_store::AttemptFilter;
use serde_json::{Value, json};

use super::{instant_ms, query_pairs, usize_param};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Largest page.
const MAX_COUNT: usize = 1000;

/// Parses the filter and paging of `/admin/attempts` (the console uses it too).
pub(crate) fn parse(q: Option<&str>) -> ApiResult<(AttemptFilter, Option<String>, usize)> {
    let mut filter = AttemptFilter::default();
    let (mut cursor, mut count) = (None, 50usize);
    for (k, v) in query_pairs(q) {
        match k.as_str() {
            "tenant" => filter.tenant = Some(v),
            "subscription" => filter.subscription = Some(v),
            "outcome" => {
                if v != "delivered" && v != "failed" {
                    return Err(ApiError::bad_request(format!(
                        "outcome must be 'delivered' or 'failed', got '{v}'"
                    )));
                }
                filter.outcome = Some(v);
            }
            "http_status" => {
                let code: u16 = v
                    .parse()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "http_status must be an HTTP status code (100-599), got '{v}'"
                        ))
                    })?;
                filter.http_status = Some(code);
            }
            "since" => filter.since_ms = Some(instant_ms("since", &v)?),
            "until" => filter.until_ms = Some(instant_ms("until", &v)?),
            "cursor" => cursor = Some(v),
            "_count" => count = usize_param("_count", &v)?.clamp(1, MAX_COUNT),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}' (known: tenant, subscription, outcome, http_status, since, until, cursor, _count)"
                )));
            }
        }
    }
    Ok((filter, cursor, count))
}

/// The list.
pub async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (filter, cursor, count) = parse(q.as_deref())?;
    super::fresh_attempts(&state).await?;
    let Some(page) = state
        .store
        .attempts
        .attempt_page(&filter, cursor.as_deref(), count)?
    else {
        return Err(ApiError::bad_request(
            "cursor must be the 'next' value of an earlier page",
        ));
    };
    let entries: Vec<Value> = page
        .entries
        .into_iter()
        .map(|(id, a)| summary(&id, &a))
        .collect();
    Ok(axum::Json(json!({
        "count": entries.len(),
        "next": page.next,
        "entries": entries,
    }))
    .into_response())
}

/// One attempt in full.
pub async fn one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    super::fresh_attempts(&state).await?;
    let Some(a) = state.store.attempts.attempt(&id)? else {
        return Err(ApiError::not_found(format!(
            "no attempt '{id}' (ids come from /admin/attempts; old attempts are removed by retention)"
        )));
    };
    let mut full = serde_json::to_value(&a).map_err(|e| ApiError::internal("encoding", e))?;
    if let Value::Object(m) = &mut full {
        m.insert("id".into(), Value::String(id));
        // Headers as name/value objects (the log stores pairs); values already redacted.
        let headers: Vec<Value> = a
            .request_headers
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        m.insert("request_headers".into(), Value::Array(headers));
    }
    Ok(axum::Json(full).into_response())
}

/// An attempt as a list shows it (no headers or body).
pub(crate) fn summary(id: &str, a: &herald_store::AttemptRecord) -> Value {
    json!({
        "id": id,
        "at": a.at,
        "at_ms": a.at_ms,
        "tenant": a.tenant,
        "subscription": a.subscription,
        "notification_type": a.notification_type,
        "events": a.events,
        "outcome": a.outcome,
        "http_status": a.http_status,
        "error": a.error,
        "latency_ms": a.latency_ms,
        "endpoint": a.endpoint,
    })
}
