//! Serving while starting: Herald accepts connections before its start-up work (replaying the
//! write-ahead log into sled, loading topics and subscriptions) is done, so that an orchestrator
//! can tell "alive but not ready" from "dead". Until the full router is installed, `/healthz`
//! answers 200 (liveness), `/readyz` 503, and everything else 503 with `Retry-After`; then every
//! request goes to the full router, whose `/readyz` answers 200.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use crate::error::ApiError;

/// Where the full router goes once start-up is done.
#[derive(Clone, Default)]
pub struct Boot {
    app: Arc<OnceLock<Router>>,
}

impl Boot {
    /// Nothing installed yet.
    pub fn new() -> Boot {
        Boot::default()
    }

    /// Installs the full router: from now on Herald is ready.
    pub fn ready(&self, app: Router) {
        let _ = self.app.set(app);
    }

    /// Whether the full router is installed.
    pub fn is_ready(&self) -> bool {
        self.app.get().is_some()
    }

    /// The router to serve from the first connection on.
    pub fn router(&self) -> Router {
        let app = Arc::clone(&self.app);
        Router::new().fallback_service(tower::service_fn(move |req: Request| {
            let app = app.get().cloned();
            async move {
                match app {
                    Some(app) => app.oneshot(req).await,
                    None => Ok::<Response, Infallible>(starting(&req)),
                }
            }
        }))
    }
}

fn starting(req: &Request) -> Response {
    match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok").into_response(),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: start-up replay (write-ahead log, topics, subscriptions) is running",
        )
            .into_response(),
        _ => {
            let mut resp = ApiError::for_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "Herald is starting (replaying its log); retry in a moment",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    async fn call(r: &Router, path: &str) -> (StatusCode, String) {
        let resp = r
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_is_503_while_starting_and_200_once_the_router_is_installed() {
        let boot = Boot::new();
        let served = boot.router();
        assert_eq!(call(&served, "/healthz").await.0, StatusCode::OK);
        let (status, text) = call(&served, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("replay"), "{text}");
        assert_eq!(
            call(&served, "/fhir/r4/Task").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        boot.ready(Router::new().route("/readyz", get(|| async { "ready" })));
        assert!(boot.is_ready());
        assert_eq!(
            call(&served, "/readyz").await,
            (StatusCode::OK, "ready".to_owned())
        );
    }
}
