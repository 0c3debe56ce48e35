//! stub
use std::sync::Arc;
use axum::Router;
use crate::AppState;
/// Routes.
pub fn routes() -> Router<Arc<AppState>> { Router::new() }
