//! The HTTP face of authentication: the middleware every request passes (it authenticates the
//! caller, checks the SMART scope the interaction needs and that `/admin` is for admins, and
//! hands the [`Caller`] to the handlers as a request extension), the token endpoint and the
//! SMART discovery document.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Caller, Perm};
use crate::AppState;
use crate::error::ApiError;

/// Paths anyone may call: health, discovery, the token endpoint, capabilities, and the
/// websocket endpoint (a socket authenticates with the binding token only its client could get).
fn is_open(path: &str) -> bool {
    if matches!(
        path,
        "/healthz" | "/readyz" | "/auth/token" | "/.well-known/smart-configuration" | "/ws"
    ) {
        return true;
    }
    let mut parts = path.trim_start_matches('/').split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("fhir"), Some(_), Some("metadata"), None)
            | (
                Some("fhir"),
                Some(_),
                Some(".well-known"),
                Some("smart-configuration")
            )
    )
}

/// The resource type and permission a FHIR request needs, from its method and path.
pub fn required(method: &Method, path: &str) -> Option<(String, Perm)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["fhir", _tenant, rest @ ..] = segs.as_slice() else {
        return None;
    };
    let (rtype, rest) = rest.split_first()?;
    // System-level operations (`$process-message`) check each resource they touch themselves,
    // as transactions do.
    if rtype.starts_with('$') || rtype.is_empty() {
        return None;
    }
    let perm = match (method.as_str(), rest) {
        (_, [op, ..]) if op.starts_with('$') => Perm::Read,
        ("GET", []) => Perm::Search,
        ("POST", []) => Perm::Create,
        ("POST", ["_search"]) => Perm::Search,
        (_, ["_history", ..]) => Perm::Read,
        ("GET", [_id, ..]) => Perm::Read,
        ("PUT" | "PATCH", [_id]) => Perm::Update,
        ("DELETE", [_id]) => Perm::Delete,
        (_, [_id, op, ..]) if op.starts_with('$') => Perm::Read,
        _ => Perm::Read,
    };
    Some(((*rtype).to_owned(), perm))
}

/// The middleware.
pub async fn gate(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if is_open(&path) {
        // Open paths still have a caller: nobody in particular (or the anonymous admin when
        // authentication is off), so that a handler asking for one gets no more than that.
        let caller = if state.auth.enabled() {
            Caller::public()
        } else {
            Caller::anonymous()
        };
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    let caller = match state.auth.authenticate(req.headers()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(wait) = state.auth.throttle(&caller.client_id) {
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!(
                "client '{}' is over its request rate (auth.requests_per_minute); retry in {wait} s",
                caller.client_id
            ),
        )
        .into_response();
        if let Ok(v) = wait.to_string().parse() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    // `/metrics` names subscriptions (queue series): operators' business, like `/admin`.
    if (path.starts_with("/admin") || path == "/metrics") && !caller.is_admin() {
        return forbidden(&caller, "the admin API and /metrics are for the admin role")
            .into_response();
    }
    if let Some((rtype, perm)) = required(req.method(), &path)
        && let Err(e) = require_scope(&caller, &rtype, perm)
    {
        return e.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// 403 unless the caller's scopes grant `perm` on `resource_type` (the gate's check, and the
/// per-entry check of transactions and messages, which the gate cannot see into).
pub fn require_scope(caller: &Caller, resource_type: &str, perm: Perm) -> Result<(), ApiError> {
    if caller.scopes.allows(resource_type, perm) {
        return Ok(());
    }
    Err(forbidden(
        caller,
        &format!(
            "this needs the scope system/{resource_type}.{} (granted: {})",
            perm.letter(),
            caller.scopes.render()
        ),
    ))
}

/// 403 with the reason.
pub fn forbidden(caller: &Caller, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("client '{}' may not do this: {why}", caller.client_id),
    )
}

/// The root URL clients reach Herald at (the request context's rule).
pub use crate::context::root_url;

/// `GET /.well-known/smart-configuration` (also under each FHIR base).
pub async fn smart_configuration(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let root = root_url(&state, &headers);
    let body = json!({
        "token_endpoint": format!("{root}/auth/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds", "system/*.read", "system/*.write"],
        "capabilities": ["client-confidential-asymmetric"],
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /auth/token`: `client_credentials` with a `private_key_jwt` assertion. Answers as
/// OAuth 2.0 does (RFC 6749 §5): the token as JSON, or `{"error", "error_description"}` with
/// 400 (401 for `invalid_client`).
pub async fn token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let endpoint = format!("{}/auth/token", root_url(&state, &headers));
    let no_store = [
        (header::CONTENT_TYPE, "application/json"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    match state.auth.issue(&form, &endpoint) {
        Ok(t) => (
            StatusCode::OK,
            no_store,
            json!({
                "access_token": t.access_token,
                "token_type": "bearer",
                "expires_in": t.expires_in,
                "scope": t.scope,
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = e.error, reason = %e.description, "token request refused");
            let status = if e.error == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            (
                status,
                no_store,
                json!({"error": e.error, "error_description": e.description}).to_string(),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_interaction_needs_its_scope_letter() {
        let r = |m: &str, p: &str| required(&Method::from_bytes(m.as_bytes()).expect("method"), p);
        assert_eq!(
            r("GET", "/fhir/r4/Task"),
            Some(("Task".into(), Perm::Search))
        );
        assert_eq!(
            r("POST", "/fhir/r4/Task"),
            Some(("Task".into(), Perm::Create))
        );
        assert_eq!(
            r("POST", "/fhir/r4/Task/_search"),
            Some(("Task".into(), Perm::Search))
        );
        assert_eq!(
            r("GET", "/fhir/r4/Task/1"),
            Some(("Task".into(), Perm::Read))
        );
        assert_eq!(
            r("PUT", "/fhir/r4/Task/1"),
            Some(("Task".into(), Perm::Update))
        );
        assert_eq!(
            r("PATCH", "/fhir/r4/Task/1"),
            Some(("Task".into(), Perm::Update)),
            "a patch is an update, never a read"
        );
        assert_eq!(
            r("DELETE", "/fhir/r4/Task/1"),
            Some(("Task".into(), Perm::Delete))
        );
        assert_eq!(
            r("GET", "/fhir/r4/Task/1/_history/2"),
            Some(("Task".into(), Perm::Read))
        );
        assert_eq!(
            r("POST", "/fhir/r4/Subscription/1/$status"),
            Some(("Subscription".into(), Perm::Read))
        );
        assert_eq!(r("GET", "/admin/deliveries"), None);
    }

    #[test]
    fn only_health_discovery_tokens_capabilities_and_sockets_are_open() {
        for p in [
            "/healthz",
            "/readyz",
            "/auth/token",
            "/.well-known/smart-configuration",
            "/fhir/r4/metadata",
            "/fhir/r5/.well-known/smart-configuration",
            "/ws",
        ] {
            assert!(is_open(p), "{p}");
        }
        for p in [
            "/fhir/r4/Task",
            "/fhir/r4/metadata/x",
            "/admin/deliveries",
            "/",
        ] {
            assert!(!is_open(p), "{p}");
        }
    }
}
