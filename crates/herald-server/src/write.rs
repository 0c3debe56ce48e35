//! The one write path. Every create, update and delete — from REST, conditional create, or the
//! server itself (subscription status changes) — goes through [`write`], which runs the store
//! transaction with the write hook. The hook is the seam where subscription matching records
//! events atomically with the resource version (design invariant 1).

use axum::http::StatusCode;
use herald_fhir::FhirVersion;
use herald_store::{Change, EventDraft, WriteKind, WriteOutcome, WriteRequest};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::{AppState, Tenant};

/// A write as the handlers describe it.
#[derive(Debug)]
pub struct WriteCommand<'a> {
    /// Create, upsert or delete.
    pub kind: WriteKind,
    /// Resource type.
    pub resource_type: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// New body (create/upsert).
    pub body: Option<Value>,
    /// `If-Match` version.
    pub if_match: Option<u64>,
}

/// Runs a write (resource + triggered events) and returns once it is durable.
pub async fn write(
    state: &AppState,
    tenant: &Tenant,
    cmd: WriteCommand<'_>,
) -> ApiResult<WriteOutcome> {
    let mut hook = |_change: &Change<'_>| -> Result<Vec<EventDraft>, String> { Ok(Vec::new()) };
    let outcome = state
        .store
        .write(
            WriteRequest {
                tenant: &tenant.name,
                resource_type: cmd.resource_type,
                id: cmd.id,
                kind: cmd.kind,
                body: cmd.body,
                if_match: cmd.if_match,
            },
            &mut hook,
        )
        .await?;
    Ok(outcome)
}

/// Business rules Herald enforces on the workflow resources it coordinates (422 when broken):
/// the elements the base specification makes mandatory and that matching depends on.
pub fn check_business_rules(version: FhirVersion, body: &Value) -> ApiResult<()> {
    let rt = body
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let required: &[&str] = match (rt, version) {
        ("Task", _) => &["status", "intent"],
        ("ServiceRequest", _) => &["status", "intent", "subject"],
        _ => &[],
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|e| body.get(*e).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "required",
            format!(
                "{rt} is missing required element(s): {} (cardinality 1..1 in FHIR {})",
                missing
                    .iter()
                    .map(|e| format!("{rt}.{e}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                version.fhir_version()
            ),
        ))
    }
}
