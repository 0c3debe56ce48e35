//! `_include` and `_revinclude` for one page of matches: which stored resources they bring in,
//! under the same access rules as the matches. An included resource the caller may not read
//! (its role does not reach it, or its scopes do not grant reading its type) is left out as if
//! it did not exist: an include must not reveal what a read would answer 404 to.

use std::collections::HashSet;

use herald_fhir::search::result::{ResultParams, include_targets, refers_to_any};
use herald_store::{StoreError, StoredVersion};

use crate::auth::{Caller, Perm};
use crate::error::ApiResult;
use crate::{AppState, Tenant};

/// The resources the page's includes and revincludes reach, each once, none of them a match
/// of the page, only those `caller` may see (redacted as a read would be).
pub fn included(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    page: &[StoredVersion],
    rp: &ResultParams,
) -> ApiResult<Vec<StoredVersion>> {
    if rp.include.is_empty() && rp.revinclude.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<String> = page
        .iter()
        .map(|v| format!("{}/{}", v.resource_type, v.id))
        .collect();
    let matched = seen.clone();
    let mut out = Vec::new();
    for inc in &rp.include {
        for m in page {
            let Some(body) = &m.resource else { continue };
            for (rtype, id) in include_targets(inc, body) {
                if !herald_fhir::is_resource_type(tenant.version, &rtype)
                    || !seen.insert(format!("{rtype}/{id}"))
                {
                    continue;
                }
                match state.store.resources.read(&tenant.name, &rtype, &id) {
                    Ok(v) => out.push(v),
                    Err(StoreError::NotFound { .. } | StoreError::Gone { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    for inc in &rp.revinclude {
        for item in state
            .store
            .resources
            .live_of_type(&tenant.name, &inc.source_type)
        {
            let v = item?;
            let Some(body) = &v.resource else { continue };
            if refers_to_any(inc, body, &matched)
                && seen.insert(format!("{}/{}", v.resource_type, v.id))
            {
                out.push(v);
            }
        }
    }
    out.retain(|v| v.resource.is_some() && caller.scopes.allows(&v.resource_type, Perm::Read));
    Ok(crate::rest::visible_versions(state, tenant, caller, out))
}
