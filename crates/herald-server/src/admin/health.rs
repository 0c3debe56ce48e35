//! `GET /admin/health`: one summary an operator (or a monitor) reads first — backlog, failing
//! subscriptions, the oldest waiting event, disk use.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::rows::{Row, RowFilter, rows};
use crate::AppState;
use crate::error::ApiResult;

/// The summary.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok` when nothing fails and nothing is parked, else `degraded`.
    pub status: String,
    /// Subscriptions known.
    pub subscriptions: usize,
    /// Events waiting over all subscriptions.
    pub backlog: u64,
    /// Subscriptions with a failure streak or in `error`.
    pub failing: usize,
    /// Subscriptions whose retries stopped (retry horizon passed).
    pub parked: usize,
    /// Subscriptions paused by an operator.
    pub paused: usize,
    /// Age in seconds of the oldest waiting event anywhere.
    pub oldest_pending_age_secs: Option<f64>,
    /// Bytes the data directory holds.
    pub disk_bytes: u64,
}

/// Summarises `rows`.
pub fn summary(state: &AppState, rows: &[Row]) -> Health {
    let count = |h: &str| rows.iter().filter(|r| r.health == h).count();
    let failing = count("failing");
    let parked = count("parked");
    Health {
        status: if failing + parked == 0 {
            "ok"
        } else {
            "degraded"
        }
        .to_owned(),
        subscriptions: rows.len(),
        backlog: rows.iter().map(|r| r.queue_depth).sum(),
        failing,
        parked,
        paused: count("paused"),
        oldest_pending_age_secs: rows
            .iter()
            .filter_map(|r| r.oldest_pending_age_secs)
            .reduce(f64::max),
        disk_bytes: state.store.measures.disk_bytes(),
    }
}

/// The handler.
pub async fn health(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let rows = rows(&state, &RowFilter::default()).await?;
    Ok(axum::Json(summary(&state, &rows)).into_response())
}
