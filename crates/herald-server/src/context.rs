//! The request's context, the seam every FHIR handler takes: the tenant (with its FHIR
//! version), the base URL the client sees, and the authenticated [`Caller`] the gate
//! (`auth::gate`) established. Handlers ask it, never the headers; it also owns the tenant,
//! resource-type and base-URL rules that `rest`, `search`, `operations` and `capability` share.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, Tenant};

/// What a FHIR request is about and who makes it.
#[derive(Clone)]
pub struct Ctx {
    /// The tenant named in the path (`/fhir/{tenant}/…`).
    pub tenant: Arc<Tenant>,
    /// The tenant's base URL as the client sees it.
    pub base: String,
    /// Who is calling.
    pub caller: Caller,
}

impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // Inside the nested `/fhir/{tenant}` router the URI has lost its prefix: the original
        // one has it.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.path().to_owned(), |u| u.0.path().to_owned());
        let name = path
            .strip_prefix("/fhir/")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| ApiError::not_found(format!("'{path}' is not under /fhir/")))?
            .to_owned();
        let tenant = tenant(state, &name)?;
        let base = base_url(state, &parts.headers, &tenant);
        // The gate puts the caller there; a route it did not see is served to nobody when
        // credentials are required.
        let caller = match parts.extensions.get::<Caller>() {
            Some(c) => c.clone(),
            None if !state.auth.enabled() => Caller::anonymous(),
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "login",
                    "this request was not authenticated",
                ));
            }
        };
        Ok(Ctx {
            tenant,
            base,
            caller,
        })
    }
}

/// Looks up a tenant (404 when unknown).
pub fn tenant(state: &AppState, name: &str) -> ApiResult<Arc<Tenant>> {
    state.tenants.get(name).cloned().ok_or_else(|| {
        ApiError::not_found(format!(
            "no FHIR endpoint named '{name}' (configured: {})",
            {
                let mut names: Vec<&str> = state.tenants.keys().map(String::as_str).collect();
                names.sort_unstable();
                names.join(", ")
            }
        ))
    })
}

/// Refuses a resource type the tenant's FHIR version does not define (404: no such endpoint).
pub fn check_type(tenant: &Tenant, rtype: &str) -> ApiResult<()> {
    if herald_fhir::is_resource_type(tenant.version, rtype) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!(
                "'{rtype}' is not a resource type of FHIR {}",
                tenant.version.fhir_version()
            ),
        ))
    }
}

/// The root URL clients reach Herald at: the configured public base, else from `Host`.
pub fn root_url(state: &AppState, headers: &HeaderMap) -> String {
    match &state.config.public_base_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| state.config.listen.to_string());
            format!("http://{host}")
        }
    }
}

/// The base URL of a tenant as the client sees it.
pub fn base_url(state: &AppState, headers: &HeaderMap, tenant: &Tenant) -> String {
    format!("{}/fhir/{}", root_url(state, headers), tenant.name)
}
