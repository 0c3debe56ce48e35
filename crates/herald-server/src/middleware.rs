//! Cross-cutting request handling: request ids and one tracing span per request, the health
//! endpoints, the OperationOutcome answers for unknown routes and methods, and the safety net
//! that turns any other bare error response (axum's extractor rejections) into one.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::ApiError;

/// Header carrying the request id (taken from the client when present, else generated).
pub const REQUEST_ID: &str = "x-request-id";

/// Assigns a request id, runs the request inside a span that carries it, and echoes it.
pub async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    let start = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.record("status", resp.status().as_u16());
    span.in_scope(|| {
        tracing::info!(
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Liveness: the process answers.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

/// Readiness: the store is open and the server accepts requests.
pub async fn readyz() -> impl IntoResponse {
    (StatusCode::OK, "ready")
}

/// 404 for unknown routes.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", req.uri().path()))
}

/// 405 for a known route with the wrong method.
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Largest error body read back when an error response is rewritten as an OperationOutcome.
const BARE_ERROR_BODY_MAX: usize = 8 * 1024;

/// Rewrites error responses that are not FHIR (an axum extractor's plain-text rejection, say)
/// as an OperationOutcome through [`ApiError`], keeping their status, headers and text.
pub async fn outcome_for_bare_errors(req: Request, next: Next) -> Response {
    // The OAuth token endpoint answers errors as OAuth does (RFC 6749 §5.2), for OAuth clients.
    let oauth = req.uri().path() == "/auth/token";
    let resp = next.run(req).await;
    if oauth {
        return resp;
    }
    let status = resp.status();
    let is_fhir = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(crate::FHIR_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_fhir {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, BARE_ERROR_BODY_MAX)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let mut fixed = ApiError::for_status(status, text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().append(name, value.clone());
        }
    }
    fixed
}
