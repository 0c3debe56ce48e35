//! The admin API: the delivery log (`GET /admin/deliveries`), the state of every subscription's
//! delivery (`GET /admin/subscriptions`), and redriving a parked or failing subscription
//! (`POST /admin/subscriptions/{tenant}/{id}/redrive`). Plain JSON, not FHIR.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_store::AttemptFilter;
use herald_subscriptions::parse_subscription;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn instant_ms(name: &str, v: &str) -> ApiResult<u64> {
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be an RFC 3339 instant, got '{v}'"))
        })
}

fn usize_param(name: &str, v: &str) -> ApiResult<usize> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!("{name} must be a non-negative integer, got '{v}'"))
    })
}

/// `GET /admin/deliveries?tenant=&subscription=&outcome=delivered|failed&since=&until=&_count=&_offset=`
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut filter = AttemptFilter::default();
    let (mut count, mut offset) = (100usize, 0usize);
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "tenant" => filter.tenant = Some(v),
            "subscription" => filter.subscription = Some(v),
            "outcome" => {
                if v != "delivered" && v != "failed" {
                    return Err(ApiError::bad_request(
                        "outcome must be 'delivered' or 'failed'",
                    ));
                }
                filter.outcome = Some(v)
            }
            "since" => filter.since_ms = Some(instant_ms("since", &v)?),
            "until" => filter.until_ms = Some(instant_ms("until", &v)?),
            "_count" => count = usize_param("_count", &v)?.min(1000),
            "_offset" => offset = usize_param("_offset", &v)?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}'"
                )));
            }
        }
    }
    let (total, page) = state.store.attempts(&filter, offset, count)?;
    Ok(
        axum::Json(json!({"total": total, "offset": offset, "count": page.len(), "entries": page}))
            .into_response(),
    )
}

/// `GET /admin/subscriptions`: every subscription with its delivery state.
pub async fn subscriptions(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let now = std::time::SystemTime::now();
    let mut rows: Vec<Value> = Vec::new();
    let mut names: Vec<&String> = state.tenants.keys().collect();
    names.sort();
    for name in names {
        let tenant = &state.tenants[name];
        for item in state.store.live_of_type(&tenant.name, "Subscription") {
            let stored = item?;
            let Some(body) = &stored.resource else {
                continue;
            };
            let Ok(sub) = parse_subscription(tenant.version, body) else {
                continue;
            };
            let ds = state.store.delivery_state(&tenant.name, &stored.id)?;
            let total = state.store.event_count(&tenant.name, &stored.id)?;
            let oldest_pending_age = if total > ds.acked {
                state
                    .store
                    .events(
                        &tenant.name,
                        &stored.id,
                        Some(ds.acked + 1),
                        Some(ds.acked + 1),
                    )?
                    .first()
                    .and_then(|e| humantime::parse_rfc3339_weak(&e.timestamp).ok())
                    .and_then(|t| now.duration_since(t).ok())
                    .map(|d| d.as_secs_f64())
            } else {
                None
            };
            rows.push(json!({
                "tenant": tenant.name,
                "id": stored.id,
                "status": sub.status.code(),
                "topic": sub.topic,
                "channel": sub.channel.kind,
                "endpoint": sub.channel.endpoint,
                "events_since_start": total,
                "last_delivered_event": ds.acked,
                "queue_depth": total.saturating_sub(ds.acked),
                "oldest_pending_age_secs": oldest_pending_age,
                "consecutive_failures": ds.consecutive_failures,
                "last_error": ds.last_error,
                "next_attempt_at_ms": ds.next_attempt_at_ms,
                "parked": ds.parked,
                "handshake_accepted": ds.verified,
            }));
        }
    }
    Ok(axum::Json(json!({"total": rows.len(), "subscriptions": rows})).into_response())
}

/// `POST /admin/subscriptions/{tenant}/{id}/redrive`.
pub async fn redrive(
    State(state): State<Arc<AppState>>,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let t = crate::context::tenant(&state, &tenant)?;
    state.store.read(&t.name, "Subscription", &id)?;
    state.dispatcher.redrive(&t.name, &id);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"redriven": format!("{tenant}/Subscription/{id}")})),
    )
        .into_response())
}
