//! `GET /admin/deliveries`: the delivery log with offset paging, as the first admin API had it
//! (kept for scripts written against it; `/admin/attempts` pages by cursor and filters more).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use herald_store::AttemptFilter;
use serde_json::json;

use super::{instant_ms, query_pairs, usize_param};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

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
    super::fresh_attempts(&state).await?;
    let (total, page) = state.store.attempts.attempts(&filter, offset, count)?;
    Ok(
        axum::Json(json!({"total": total, "offset": offset, "count": page.len(), "entries": page}))
            .into_response(),
    )
}
