//! Reading a transaction or batch Bundle into what to do: each entry's `request` parsed,
//! conditional creates, updates and deletes resolved against the store (as the caller sees it),
//! ids assigned to creates, and references to other entries (`urn:uuid:…` or any entry's
//! `fullUrl`) rewritten to the local `Type/id`.

use std::collections::HashMap;

use herald_store::{StoredVersion, WriteKind};
use serde_json::Value;

use crate::auth::Caller;
use crate::context::check_type;
use crate::error::{ApiError, ApiResult};
use crate::rest::visible;
use crate::search::find_matches;
use crate::{AppState, Tenant};

/// An entry's HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read or search.
    Get,
    /// Create.
    Post,
    /// Update (or create with the given id).
    Put,
    /// Delete.
    Delete,
}

impl Method {
    /// As written in `Bundle.entry.request.method`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// What one entry asks for, as parsed from its `request` (nothing resolved yet).
#[derive(Debug, Clone)]
pub struct Request {
    /// Position in the Bundle.
    pub index: usize,
    /// Method.
    pub method: Method,
    /// Resource type the URL names.
    pub resource_type: String,
    /// `Type/id` URLs: the id.
    pub id: Option<String>,
    /// `Type?query` URLs (conditional update/delete, search): the query.
    pub query: Option<String>,
    /// The entry's resource.
    pub resource: Option<Value>,
    /// `request.ifNoneExist`.
    pub if_none_exist: Option<String>,
    /// `request.ifMatch`, as a version.
    pub if_match: Option<u64>,
    /// The entry's `fullUrl`.
    pub full_url: Option<String>,
}

/// What to do for one entry, once resolved.
#[derive(Debug, Clone)]
pub enum Action {
    /// A write.
    Write {
        /// Create, upsert or delete.
        kind: WriteKind,
        /// The body (references rewritten, id set).
        body: Option<Value>,
        /// `If-Match`.
        if_match: Option<u64>,
    },
    /// A conditional create that found its resource: nothing is written.
    Exists(Box<StoredVersion>),
    /// A conditional delete that found nothing.
    Nothing,
    /// A read or search, run after the writes.
    Read,
}

/// One resolved entry.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The request as parsed.
    pub request: Request,
    /// Its resolved id (empty for a search).
    pub id: String,
    /// What to do.
    pub action: Action,
}

/// Prefixes an error with the entry it concerns.
pub fn at(index: usize, mut e: ApiError) -> ApiError {
    e.diagnostics = format!("Bundle.entry[{index}]: {}", e.diagnostics);
    e
}

/// Parses every entry of `bundle` (a `transaction` or `batch`). In a batch an entry that does
/// not parse fails alone, so each result is kept apart.
pub fn parse_entries(
    tenant: &Tenant,
    base: &str,
    bundle: &Value,
) -> ApiResult<Vec<ApiResult<Request>>> {
    let entries = match bundle.get("entry") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::bad_request("Bundle.entry must be an array")),
    };
    Ok(entries
        .iter()
        .enumerate()
        .map(|(i, e)| parse_entry(tenant, base, i, e).map_err(|err| at(i, err)))
        .collect())
}

fn parse_entry(tenant: &Tenant, base: &str, index: usize, entry: &Value) -> ApiResult<Request> {
    let req = entry.get("request").ok_or_else(|| {
        ApiError::bad_request("an entry of a transaction or batch needs a request")
    })?;
    let text = |name: &str| -> ApiResult<Option<String>> {
        match req.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "request.{name} must be a string"
            ))),
        }
    };
    let method = match text("method")?.as_deref() {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        Some(m @ ("PATCH" | "HEAD")) => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "not-supported",
                format!(
                    "request.method {m} is not supported in a Bundle; use PUT with the whole resource"
                ),
            ));
        }
        Some(m) => {
            return Err(ApiError::bad_request(format!(
                "request.method '{m}' is not an HTTP verb FHIR defines"
            )));
        }
        None => return Err(ApiError::bad_request("request.method is required")),
    };
    let url = text("url")?.ok_or_else(|| ApiError::bad_request("request.url is required"))?;
    let relative = relative_url(base, &url)?;
    let (path, query) = match relative.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (relative, None),
    };
    let mut segments = path.split('/');
    let resource_type = segments.next().unwrap_or_default().to_owned();
    let id = segments.next().map(str::to_owned);
    if segments.next().is_some() || resource_type.is_empty() || resource_type.starts_with('$') {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "not-supported",
            format!(
                "request.url '{url}' is not supported in a Bundle (use Type, Type/id or Type?query)"
            ),
        ));
    }
    check_type(tenant, &resource_type)?;
    if let Some(id) = &id
        && !herald_fhir::is_valid_id(id)
    {
        return Err(ApiError::bad_request(format!(
            "'{id}' in request.url is not a valid FHIR id"
        )));
    }
    let resource = entry.get("resource").cloned();
    match (method, &id, &query, &resource) {
        (Method::Post, Some(_), _, _) => {
            return Err(ApiError::bad_request(
                "a POST entry's request.url names the type only (the server assigns the id)",
            ));
        }
        (Method::Post | Method::Put, _, _, None) => {
            return Err(ApiError::bad_request(format!(
                "a {} entry needs a resource",
                method.as_str()
            )));
        }
        (Method::Put | Method::Delete, None, None, _) => {
            return Err(ApiError::bad_request(format!(
                "a {} entry's request.url needs an id (Type/id) or a condition (Type?query)",
                method.as_str()
            )));
        }
        _ => {}
    }
    if let Some(r) = &resource {
        let rt = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
        if rt != resource_type {
            return Err(ApiError::bad_request(format!(
                "the entry's resource is a '{rt}' but request.url names '{resource_type}'"
            )));
        }
    }
    let if_match = text("ifMatch")?
        .map(|s| {
            let inner = s.trim();
            let inner = inner.strip_prefix("W/").unwrap_or(inner).trim_matches('"');
            inner.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("request.ifMatch '{s}' is not a version ETag"))
            })
        })
        .transpose()?;
    Ok(Request {
        index,
        method,
        resource_type,
        id,
        query,
        resource,
        if_none_exist: text("ifNoneExist")?,
        if_match,
        full_url: entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// `request.url` relative to this server (an absolute URL must be under its base).
fn relative_url<'u>(base: &str, url: &'u str) -> ApiResult<&'u str> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return url
            .strip_prefix(base)
            .map(|r| r.trim_start_matches('/'))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "request.url '{url}' is not on this server (its base is {base})"
                ))
            });
    }
    Ok(url.trim_start_matches('/'))
}

/// The live resources matching `query` that `caller` may see.
fn search_visible(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    resource_type: &str,
    query: &str,
) -> ApiResult<Vec<StoredVersion>> {
    Ok(find_matches(state, tenant, resource_type, query, true)?
        .into_iter()
        .filter(|v| visible(state, tenant, caller, v))
        .collect())
}

/// Resolves one request: the id it writes (conditional ones searched), or that nothing is to be
/// written.
pub fn resolve(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    req: Request,
) -> ApiResult<Planned> {
    let one = |query: &str, what: &str| -> ApiResult<Option<StoredVersion>> {
        let mut found = search_visible(state, tenant, caller, &req.resource_type, query)?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(ApiError::new(
                axum::http::StatusCode::PRECONDITION_FAILED,
                "multiple-matches",
                format!("{what} '{query}' matches {n} resources"),
            )),
        }
    };
    let new_id = || uuid::Uuid::new_v4().to_string();
    let (id, action) = match req.method {
        Method::Get => (req.id.clone().unwrap_or_default(), Action::Read),
        Method::Post => match req.if_none_exist.as_deref() {
            Some(cond) => {
                let cond = cond.split_once('?').map_or(cond, |(_, q)| q);
                match one(cond, "ifNoneExist")? {
                    Some(found) => (found.id.clone(), Action::Exists(Box::new(found))),
                    None => (new_id(), write(WriteKind::Create, &req)),
                }
            }
            None => (new_id(), write(WriteKind::Create, &req)),
        },
        Method::Put => match (&req.id, &req.query) {
            (Some(id), _) => (id.clone(), write(WriteKind::Upsert, &req)),
            (None, Some(q)) => match one(q, "the conditional update")? {
                Some(found) => (found.id, write(WriteKind::Upsert, &req)),
                None => (new_id(), write(WriteKind::Upsert, &req)),
            },
            (None, None) => unreachable_request()?,
        },
        Method::Delete => match (&req.id, &req.query) {
            (Some(id), _) => (id.clone(), write(WriteKind::Delete, &req)),
            (None, Some(q)) => match one(q, "the conditional delete")? {
                Some(found) => (found.id, write(WriteKind::Delete, &req)),
                None => (String::new(), Action::Nothing),
            },
            (None, None) => unreachable_request()?,
        },
    };
    Ok(Planned {
        request: req,
        id,
        action,
    })
}

fn unreachable_request() -> ApiResult<(String, Action)> {
    Err(ApiError::bad_request(
        "the entry's request.url needs an id or a condition",
    ))
}

fn write(kind: WriteKind, req: &Request) -> Action {
    Action::Write {
        kind,
        body: req.resource.clone(),
        if_match: req.if_match,
    }
}

/// The local reference (`Type/id`) of every entry that has a `fullUrl` and writes or finds a
/// resource.
pub fn local_references(planned: &[Planned]) -> HashMap<String, String> {
    planned
        .iter()
        .filter(|p| !p.id.is_empty() && p.request.method != Method::Get)
        .filter_map(|p| {
            p.request
                .full_url
                .as_ref()
                .map(|u| (u.clone(), format!("{}/{}", p.request.resource_type, p.id)))
        })
        .collect()
}

/// Rewrites every `reference` in `v` that names another entry to that entry's local `Type/id`.
/// Returns the `urn:` references that name no entry (which a transaction must refuse: they
/// could never be resolved).
pub fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) -> Vec<String> {
    let mut unresolved = Vec::new();
    rewrite(v, map, &mut unresolved);
    unresolved
}

fn rewrite(v: &mut Value, map: &HashMap<String, String>, unresolved: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(r) = child
                {
                    if let Some(local) = map.get(r.as_str()) {
                        *r = local.clone();
                    } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
                        unresolved.push(r.clone());
                    }
                    continue;
                }
                rewrite(child, map, unresolved);
            }
        }
        Value::Array(a) => {
            for child in a {
                rewrite(child, map, unresolved);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_to_entries_become_local_and_unknown_urns_are_reported() {
        let map: HashMap<String, String> = [(
            "urn:uuid:11111111-1111-1111-1111-111111111111".to_owned(),
            "ServiceRequest/abc".to_owned(),
        )]
        .into_iter()
        .collect();
        let mut task = json!({
            "resourceType": "Task",
            "focus": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
            "basedOn": [{"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                        {"reference": "urn:uuid:22222222-2222-2222-2222-222222222222"}],
            "owner": {"reference": "Organization/lab"}
        });
        let unresolved = rewrite_references(&mut task, &map);
        assert_eq!(task["focus"]["reference"], "ServiceRequest/abc");
        assert_eq!(task["basedOn"][0]["reference"], "ServiceRequest/abc");
        assert_eq!(task["owner"]["reference"], "Organization/lab");
        assert_eq!(
            unresolved,
            vec!["urn:uuid:22222222-2222-2222-2222-222222222222".to_owned()]
        );
    }

    #[test]
    fn an_absolute_request_url_must_be_on_this_server() {
        let base = "http://h.example/fhir/r4";
        assert_eq!(
            relative_url(base, "http://h.example/fhir/r4/Task/1").expect("ours"),
            "Task/1"
        );
        assert!(relative_url(base, "http://elsewhere.example/fhir/Task/1").is_err());
        assert_eq!(
            relative_url(base, "Task?identifier=a|b").expect("rel"),
            "Task?identifier=a|b"
        );
    }
}
