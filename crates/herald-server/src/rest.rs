//! The FHIR RESTful interactions on resources: create (plain and conditional), read, vread,
//! update (with update-as-create and `If-Match`), delete, and instance/type history.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_store::{StoreError, StoredVersion, WriteKind};
use serde_json::{Value, json};

use crate::access;
use crate::auth::Caller;
use crate::context::{Ctx, check_type};
use crate::error::{ApiError, ApiResult};
use crate::http::{
    PreferReturn, fhir_json, if_match, prefer_return, read_json_body, version_response,
};
use crate::search::{Page, find_matches};
use crate::write::{WriteCommand, write};
use crate::{AppState, Tenant};

fn check_id(id: &str) -> ApiResult<()> {
    if herald_fhir::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{id}' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - ., and not '.' or '..')"
        )))
    }
}

/// Validates a body for `rtype`: the core definitions of the tenant's FHIR version (400, the
/// element named in the issue's `expression`; this covers the elements matching relies on,
/// such as Task.status and Task.intent) and type agreement (400).
pub(crate) fn check_body(tenant: &Tenant, rtype: &str, body: &Value) -> ApiResult<()> {
    // Keyed by the fhirVersion string: an R4B tenant ("4.3.0") is validated by this same line.
    herald_fhir::validate::check_resource_for(tenant.version.fhir_version(), body)?;
    let body_type = body
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    if body_type != rtype {
        return Err(ApiError::bad_request(format!(
            "resourceType '{body_type}' does not match the URL's resource type '{rtype}'"
        )));
    }
    Ok(())
}

/// `POST [base]/[type]`: create with a server-assigned id; `If-None-Exist` makes it conditional.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype)): Path<(String, String)>,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    let mut body = read_json_body(&headers, body, state.config.max_body_bytes).await?;
    check_body(&tenant, &rtype, &body)?;
    authorize_write(&state, &tenant, &caller, &rtype, None, &mut body)?;
    let prefer = prefer_return(&headers);
    if let Some(cond) = headers.get("if-none-exist") {
        let query = cond.to_str().map_err(|_| {
            ApiError::bad_request("If-None-Exist must be a visible-ASCII search query")
        })?;
        let query = query.split_once('?').map_or(query, |(_, q)| q);
        // Off the async workers: a query the index cannot answer scans the type.
        let found: Vec<StoredVersion> = {
            let (state, tenant, caller) = (state.clone(), tenant.clone(), caller.clone());
            let (rtype, query) = (rtype.clone(), query.to_owned());
            tokio::task::spawn_blocking(move || -> ApiResult<Vec<StoredVersion>> {
                Ok(find_matches(&state, &tenant, &rtype, &query, true)?
                    .into_iter()
                    .filter(|v| visible(&state, &tenant, &caller, v))
                    .collect())
            })
            .await
            .map_err(|e| ApiError::internal("the conditional create's search failed", e))??
        };
        match found.len() {
            0 => {}
            1 => {
                return Ok(version_response(
                    StatusCode::OK,
                    &shown(&caller, &found[0]),
                    Some(&base),
                    prefer,
                    "a matching resource already exists; nothing created",
                ));
            }
            n => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "multiple-matches",
                    format!("If-None-Exist '{query}' matches {n} resources"),
                ));
            }
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let outcome = write(
        &state,
        &tenant,
        WriteCommand {
            kind: WriteKind::Create,
            resource_type: &rtype,
            id: &id,
            body: Some(body),
            if_match: None,
        },
    )
    .await?;
    Ok(version_response(
        StatusCode::CREATED,
        &shown(&caller, &outcome.stored),
        Some(&base),
        prefer,
        &format!("created {rtype}/{id}"),
    ))
}

/// `GET [base]/[type]/[id]`.
/// (`GET [base]/[type]/$op` is a type-level operation and is handed to `operations`.)
pub async fn read(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, id)): Path<(String, String, String)>,
    method: axum::http::Method,
    query: RawQuery,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    if id.starts_with('$') {
        return crate::operations::type_operation(
            State(state),
            Path((_tenant, rtype, id)),
            method,
            query,
            headers,
            ctx,
            body,
        )
        .await;
    }
    let Ctx {
        tenant,
        base: _,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    let stored = state.store.resources.read(&tenant.name, &rtype, &id)?;
    check_visible(&state, &tenant, &caller, &stored)?;
    Ok(version_response(
        StatusCode::OK,
        &shown(&caller, &stored),
        None,
        PreferReturn::Representation,
        "",
    ))
}

/// `GET [base]/[type]/[id]/_history/[vid]`.
pub async fn vread(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, id, vid)): Path<(String, String, String, String)>,
    ctx: Ctx,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base: _,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    let version: u64 = vid
        .parse()
        .map_err(|_| ApiError::not_found(format!("'{vid}' is not a version id of {rtype}/{id}")))?;
    let stored = state
        .store
        .resources
        .read_version(&tenant.name, &rtype, &id, version)?;
    if stored.is_deleted() {
        return Err(StoreError::Gone {
            resource_type: rtype,
            id,
            version,
        }
        .into());
    }
    check_visible(&state, &tenant, &caller, &stored)?;
    Ok(version_response(
        StatusCode::OK,
        &shown(&caller, &stored),
        None,
        PreferReturn::Representation,
        "",
    ))
}

/// `PUT [base]/[type]/[id]`: update, or create with the client's id; `If-Match` for
/// optimistic locking.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    check_id(&id)?;
    let mut body = read_json_body(&headers, body, state.config.max_body_bytes).await?;
    check_body(&tenant, &rtype, &body)?;
    let old = state
        .store
        .resources
        .current(&tenant.name, &rtype, &id)?
        .and_then(|s| s.resource);
    authorize_write(&state, &tenant, &caller, &rtype, old.as_ref(), &mut body)?;
    match body.get("id").and_then(Value::as_str) {
        Some(bid) if bid == id => {}
        Some(bid) => {
            return Err(ApiError::bad_request(format!(
                "resource id '{bid}' does not match the URL id '{id}'"
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "an update must carry the resource id in the body (Resource.id)",
            ));
        }
    }
    let prefer = prefer_return(&headers);
    let outcome = write(
        &state,
        &tenant,
        WriteCommand {
            kind: WriteKind::Upsert,
            resource_type: &rtype,
            id: &id,
            body: Some(body),
            if_match: if_match(&headers)?,
        },
    )
    .await?;
    let created =
        outcome.changed && outcome.stored.interaction == herald_store::Interaction::Create;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let message = if outcome.changed {
        format!("{rtype}/{id} is now version {}", outcome.stored.version)
    } else {
        format!(
            "{rtype}/{id} unchanged (identical content); still version {}",
            outcome.stored.version
        )
    };
    Ok(version_response(
        status,
        &shown(&caller, &outcome.stored),
        created.then_some(base.as_str()),
        prefer,
        &message,
    ))
}

/// `DELETE [base]/[type]/[id]`: 204 (also when already deleted or absent: delete is idempotent).
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    ctx: Ctx,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base: _,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    if let Some(old) = state
        .store
        .resources
        .current(&tenant.name, &rtype, &id)?
        .and_then(|s| s.resource)
    {
        crate::access::check_write(&caller, &rtype, Some(&old), None)?;
    }
    let result = write(
        &state,
        &tenant,
        WriteCommand {
            kind: WriteKind::Delete,
            resource_type: &rtype,
            id: &id,
            body: None,
            if_match: if_match(&headers)?,
        },
    )
    .await;
    match result {
        Ok(outcome) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = format!("W/\"{}\"", outcome.stored.version).parse() {
                resp.headers_mut().insert(header::ETAG, v);
            }
            Ok(resp)
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(e),
    }
}

/// `GET [base]/[type]/[id]/_history`.
pub async fn instance_history(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    _headers: HeaderMap,
    ctx: Ctx,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    let versions = visible_versions(
        &state,
        &tenant,
        &caller,
        state.store.resources.history(&tenant.name, &rtype, &id)?,
    );
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("{rtype}/{id} is not known")));
    }
    let page = Page::from_query(&state, query.as_deref().unwrap_or(""))?;
    let self_url = format!("{base}/{rtype}/{id}/_history");
    Ok(fhir_json(
        StatusCode::OK,
        &history_bundle(&base, &self_url, &versions, &page),
    ))
}

/// `GET [base]/[type]/_history`.
pub async fn type_history(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    _headers: HeaderMap,
    ctx: Ctx,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    let versions = visible_versions(
        &state,
        &tenant,
        &caller,
        state.store.resources.type_history(&tenant.name, &rtype)?,
    );
    let page = Page::from_query(&state, query.as_deref().unwrap_or(""))?;
    let self_url = format!("{base}/{rtype}/_history");
    Ok(fhir_json(
        StatusCode::OK,
        &history_bundle(&base, &self_url, &versions, &page),
    ))
}

/// The references reachable through the Tasks and ServiceRequests `caller`'s role reaches.
pub fn reach(state: &AppState, tenant: &Tenant, caller: &Caller) -> HashSet<String> {
    let mut bodies = Vec::new();
    for rt in ["Task", "ServiceRequest"] {
        for item in state.store.resources.live_of_type(&tenant.name, rt) {
            if let Ok(Some(b)) = item.map(|s| s.resource) {
                bodies.push((rt, b));
            }
        }
    }
    access::reach_of(caller, bodies.iter().map(|(r, b)| (*r, b)))
}

/// Whether `caller` may see a stored version (deleted versions: whoever could see what they
/// replaced; here, anyone who may read the type).
pub fn visible(state: &AppState, tenant: &Tenant, caller: &Caller, v: &StoredVersion) -> bool {
    let Some(body) = &v.resource else {
        return true;
    };
    let mut lazy = || reach(state, tenant, caller);
    access::may_read(caller, &v.resource_type, &v.id, body, &mut lazy)
}

/// The versions `caller` may see (the reach is computed at most once).
pub fn visible_versions(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    versions: Vec<StoredVersion>,
) -> Vec<StoredVersion> {
    if caller.is_admin() {
        return versions;
    }
    let mut cache: Option<HashSet<String>> = None;
    versions
        .into_iter()
        .filter(|v| match &v.resource {
            None => true,
            Some(body) => {
                let mut lazy = || {
                    cache
                        .get_or_insert_with(|| reach(state, tenant, caller))
                        .clone()
                };
                access::may_read(caller, &v.resource_type, &v.id, body, &mut lazy)
            }
        })
        .map(|v| redacted(caller, v))
        .collect()
}

/// 404 for what `caller` may not see: its existence is not revealed either.
pub(crate) fn check_visible(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    v: &StoredVersion,
) -> ApiResult<()> {
    if visible(state, tenant, caller, v) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "{}/{} is not known (or not visible to client '{}')",
            v.resource_type, v.id, caller.client_id
        )))
    }
}

/// A stored version as `caller` may see it (channel header values redacted for non-admins).
pub fn shown(caller: &Caller, v: &StoredVersion) -> StoredVersion {
    redacted(caller, v.clone())
}

/// [`shown`] for a version the caller already owns (no copy).
fn redacted(caller: &Caller, mut v: StoredVersion) -> StoredVersion {
    if let Some(body) = v.resource.as_mut() {
        access::redact(caller, &v.resource_type, body);
    }
    v
}

/// The write rules before a create or update: who may write it, a Subscription's scope,
/// redacted headers sent back, the creator tag.
pub(crate) fn authorize_write(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    rtype: &str,
    old: Option<&Value>,
    body: &mut Value,
) -> ApiResult<()> {
    access::check_write(caller, rtype, old, Some(body))?;
    if rtype == "Subscription" {
        if let Some(o) = old {
            access::restore_redacted(o, body);
        }
        if !caller.is_admin() {
            let sub = herald_subscriptions::parse_subscription(tenant.version, body)?;
            access::check_subscription_scope(caller, &sub)?;
            if old.is_none() {
                let limit = state.auth.max_subscriptions_per_client;
                let owned = state
                    .store
                    .resources
                    .live_of_type(&tenant.name, "Subscription")
                    .filter_map(Result::ok)
                    .filter(|s| {
                        s.resource.as_ref().and_then(access::creator)
                            == Some(caller.client_id.as_str())
                    })
                    .count();
                if owned >= limit {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "too-costly",
                        format!(
                            "client '{}' already owns {owned} Subscriptions (auth.max_subscriptions_per_client = {limit})",
                            caller.client_id
                        ),
                    ));
                }
            }
        }
    }
    if state.auth.enabled() {
        access::stamp_creator(caller, old, body);
    }
    drop_copied_source(old, body);
    Ok(())
}

/// A local change of a copy is no longer the copy: the `meta.source` that messaging recorded
/// (where the content came from) is dropped when a client writes the resource back with it,
/// or a counterpart would take the change for its own older version coming back.
fn drop_copied_source(old: Option<&Value>, body: &mut Value) {
    let source = |v: &Value| {
        v.pointer("/meta/source")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let Some(held) = old.and_then(source) else {
        return;
    };
    if source(body).as_deref() == Some(held.as_str())
        && let Some(Value::Object(meta)) = body.get_mut("meta")
    {
        meta.remove("source");
        if meta.is_empty()
            && let Some(o) = body.as_object_mut()
        {
            o.remove("meta");
        }
    }
}

/// A `history` Bundle page: every entry has `request` and `response`; deletions have no resource.
fn history_bundle(base: &str, self_url: &str, versions: &[StoredVersion], page: &Page) -> Value {
    let entries: Vec<Value> = page
        .slice(versions)
        .iter()
        .map(|v| {
            let (method, url, status) = match v.interaction {
                herald_store::Interaction::Create => {
                    ("POST", v.resource_type.clone(), "201 Created")
                }
                herald_store::Interaction::Update => {
                    ("PUT", format!("{}/{}", v.resource_type, v.id), "200 OK")
                }
                herald_store::Interaction::Delete => (
                    "DELETE",
                    format!("{}/{}", v.resource_type, v.id),
                    "204 No Content",
                ),
            };
            let mut e = json!({
                "fullUrl": format!("{base}/{}/{}", v.resource_type, v.id),
            });
            if let Some(r) = &v.resource {
                e["resource"] = r.clone();
            }
            e["request"] = json!({"method": method, "url": url});
            e["response"] = json!({
                "status": status,
                "etag": format!("W/\"{}\"", v.version),
                "lastModified": v.last_updated,
            });
            e
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": herald_store::now_instant()},
        "type": "history",
        "total": versions.len(),
        "link": page.links(self_url, "", versions.len()),
    });
    bundle["entry"] = Value::Array(entries);
    bundle
}
