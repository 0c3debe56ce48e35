//! The admin API (plain JSON, not FHIR, under `/admin`; the gate lets only the admin role in):
//! subscriptions with their live delivery state (`subscriptions`), the attempt log (`attempts`,
//! and the older `deliveries`), operator actions with their audit trail (`actions`), and a
//! health summary (`health`). The rows every view shares are built in `rows`. The HTML console
//! over the same data is `crate::console`. Documented in `docs/operations.md`.

mod actions;
mod attempts;
mod deliveries;
mod health;
pub mod rows;
mod subscriptions;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub use actions::{Performed, perform};
pub(crate) use attempts::parse as attempts_query;
pub use health::{Health, summary};

/// The admin JSON routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/health", get(health::health))
        .route("/admin/deliveries", get(deliveries::deliveries))
        .route("/admin/attempts", get(attempts::list))
        .route("/admin/attempts/{id}", get(attempts::one))
        .route("/admin/audit", get(actions::audit))
        .route("/admin/subscriptions", get(subscriptions::list))
        .route(
            "/admin/subscriptions/{tenant}/{id}",
            get(subscriptions::one),
        )
        .route(
            "/admin/subscriptions/{tenant}/{id}/{action}",
            post(actions::act),
        )
}

/// Makes every attempt recorded so far readable before a view of the attempt log: the
/// dispatcher appends attempts without waiting for a log sync (they ride along with the next
/// one), so without this the newest attempt could be missing for a moment. One sync per admin
/// read, shared with whatever writes are syncing.
pub(crate) async fn fresh_attempts(state: &AppState) -> ApiResult<()> {
    state.store.attempts.flush().await.map_err(ApiError::from)
}

pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn instant_ms(name: &str, v: &str) -> ApiResult<u64> {
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be an RFC 3339 instant, got '{v}'"))
        })
}

pub(crate) fn usize_param(name: &str, v: &str) -> ApiResult<usize> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!("{name} must be a non-negative integer, got '{v}'"))
    })
}

pub(crate) fn u64_param(name: &str, v: &str) -> ApiResult<u64> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!("{name} must be a non-negative integer, got '{v}'"))
    })
}
