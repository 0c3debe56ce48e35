//! `PATCH [base]/[type]/[id]`: JSON Patch (`application/json-patch+json`) or FHIRPath Patch (a
//! `Parameters` body, `application/fhir+json`). The patch is applied to the resource as the
//! caller may see it (`access::redact`, so a `test` cannot probe a redacted header), the result
//! must keep its `id` and `resourceType` and pass the same checks as a PUT body, and it is
//! written through the one write path with `If-Match` set to the version it was computed on,
//! so a concurrent write makes it fail (412) rather than be lost, and it is matched like any
//! update.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use herald_store::WriteKind;
use serde_json::Value;

use crate::context::{Ctx, check_type};
use crate::error::{ApiError, ApiResult};
use crate::http::{if_match, prefer_return, read_limited, version_response};
use crate::rest::{authorize_write, check_body, check_visible, shown};
use crate::write::{WriteCommand, write};
use crate::{AppState, access};

/// The patch formats Herald applies.
enum Format {
    JsonPatch,
    FhirPathPatch,
}

fn format_of(headers: &HeaderMap) -> ApiResult<Format> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json-patch+json" => Ok(Format::JsonPatch),
        "application/fhir+json" | "application/json" | "application/json+fhir" => {
            Ok(Format::FhirPathPatch)
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!(
                "Content-Type '{ct}' is not a patch format Herald applies; send \
                 application/json-patch+json (JSON Patch) or application/fhir+json (FHIRPath Patch Parameters)"
            ),
        )),
    }
}

/// `PATCH [base]/[type]/[id]`.
pub async fn patch(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base: _,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    let format = format_of(&headers)?;
    let bytes = read_limited(body, state.config.max_body_bytes).await?;
    let patch_doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
    let current = state.store.resources.read(&tenant.name, &rtype, &id)?;
    check_visible(&state, &tenant, &caller, &current)?;
    let wanted = if_match(&headers)?;
    if let Some(v) = wanted
        && v != current.version
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "conflict",
            format!(
                "If-Match names version {v}, but {rtype}/{id} is at version {}",
                current.version
            ),
        ));
    }
    let Some(old) = current.resource.clone() else {
        return Err(ApiError::new(
            StatusCode::GONE,
            "deleted",
            format!("{rtype}/{id} is deleted"),
        ));
    };
    let mut seen = old.clone();
    access::redact(&caller, &rtype, &mut seen);
    let mut patched = match format {
        Format::JsonPatch => herald_fhir::patch::apply_json_patch(&seen, &patch_doc),
        Format::FhirPathPatch => herald_fhir::patch::apply_fhirpath_patch(
            tenant.version.fhir_version(),
            &seen,
            &patch_doc,
        ),
    }
    .map_err(ApiError::from)?;
    for key in ["resourceType", "id"] {
        if patched.get(key) != old.get(key) {
            return Err(
                ApiError::unprocessable(format!("a patch may not change or remove {key}"))
                    .at(format!("{rtype}.{key}")),
            );
        }
    }
    // The body a PUT would have sent: the same checks, but a result that breaks the
    // definitions is the patch's fault, not the request's syntax (422).
    check_body(&tenant, &rtype, &patched).map_err(|e| {
        if e.status == StatusCode::BAD_REQUEST {
            ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "processing",
                diagnostics: format!("the patched resource is not valid: {}", e.diagnostics),
                expression: e.expression,
            }
        } else {
            e
        }
    })?;
    authorize_write(&state, &tenant, &caller, &rtype, Some(&old), &mut patched)?;
    let prefer = prefer_return(&headers);
    let outcome = write(
        &state,
        &tenant,
        WriteCommand {
            kind: WriteKind::Upsert,
            resource_type: &rtype,
            id: &id,
            body: Some(patched),
            if_match: Some(current.version),
        },
    )
    .await?;
    let message = if outcome.changed {
        format!("{rtype}/{id} is now version {}", outcome.stored.version)
    } else {
        format!(
            "{rtype}/{id} unchanged by the patch; still version {}",
            outcome.stored.version
        )
    };
    Ok(version_response(
        StatusCode::OK,
        &shown(&caller, &outcome.stored),
        None,
        prefer,
        &message,
    ))
}
