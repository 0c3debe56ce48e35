//! FHIR search over a tenant's resources (GET and POST `_search`), with search-parameter
//! semantics from `herald-fhir`, `_count`/`_offset` paging and `self`/`next`/`previous` links.
//!
//! Search scans the live resources of the type and evaluates the criteria; it is not indexed
//! (the workflow volumes Herald hosts are small next to its notification traffic). Unknown
//! parameters are ignored and reported in an OperationOutcome entry, or refused with
//! `Prefer: handling=strict`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use herald_fhir::FhirError;
use herald_fhir::outcome::{Severity, operation_outcome};
use herald_fhir::search::{Criterion, is_result_parameter, matches, parse_criterion};
use herald_store::StoredVersion;
use serde_json::{Value, json};

use crate::context::{Ctx, check_type};
use crate::error::{ApiError, ApiResult};
use crate::http::{fhir_json, prefer_strict, read_limited};
use crate::{AppState, Tenant};

/// A page request: `_count` and `_offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Entries per page.
    pub count: usize,
    /// Index of the first entry.
    pub offset: usize,
}

impl Page {
    /// Reads `_count`/`_offset` from a query string (400 on non-numbers; `_count` capped).
    pub fn from_query(state: &AppState, query: &str) -> ApiResult<Page> {
        let mut page = Page {
            count: state.config.default_page_size,
            offset: 0,
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let n = || {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("{k} must be a non-negative integer, got '{v}'"))
                })
            };
            match k.as_ref() {
                "_count" => page.count = n()?.min(state.config.max_page_size),
                "_offset" => page.offset = n()?,
                _ => {}
            }
        }
        Ok(page)
    }

    /// The entries of this page.
    pub fn slice<'a, T>(&self, all: &'a [T]) -> &'a [T] {
        let start = self.offset.min(all.len());
        let end = start.saturating_add(self.count).min(all.len());
        &all[start..end]
    }

    /// Bundle links for this page; `query` holds the criteria to repeat (already encoded).
    pub fn links(&self, base: &str, query: &str, total: usize) -> Vec<Value> {
        let url = |offset: usize| {
            let sep = if query.is_empty() { "" } else { "&" };
            format!("{base}?{query}{sep}_count={}&_offset={offset}", self.count)
        };
        let mut links = vec![json!({"relation": "self", "url": url(self.offset)})];
        if self.offset > 0 {
            links.push(json!({"relation": "first", "url": url(0)}));
            links.push(
                json!({"relation": "previous", "url": url(self.offset.saturating_sub(self.count))}),
            );
        }
        if self.count > 0 && self.offset + self.count < total {
            links.push(json!({"relation": "next", "url": url(self.offset + self.count)}));
        }
        links
    }
}

/// Parsed criteria, plus parameters ignored (lenient handling).
struct Query {
    criteria: Vec<Criterion>,
    /// Criteria text to repeat in links (encoded).
    echo: String,
    ignored: Vec<String>,
}

fn parse_search(tenant: &Tenant, rtype: &str, query: &str, strict: bool) -> ApiResult<Query> {
    let mut q = Query {
        criteria: Vec::new(),
        echo: String::new(),
        ignored: Vec::new(),
    };
    let mut echo = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if is_result_parameter(&name) {
            continue;
        }
        match parse_criterion(tenant.version, rtype, &name, &value) {
            Ok(c) => {
                q.criteria.push(c);
                echo.append_pair(&name, &value);
            }
            Err(FhirError::UnknownSearchParameter { .. }) if !strict => {
                q.ignored.push(name.into_owned());
            }
            Err(e) => return Err(e.into()),
        }
    }
    q.echo = echo.finish();
    Ok(q)
}

/// Every live resource of `rtype` matching `query` (used by search and conditional create).
pub fn find_matches(
    state: &AppState,
    tenant: &Tenant,
    rtype: &str,
    query: &str,
    strict: bool,
) -> ApiResult<Vec<StoredVersion>> {
    let q = parse_search(tenant, rtype, query, strict)?;
    run(state, tenant, rtype, &q.criteria)
}

fn run(
    state: &AppState,
    tenant: &Tenant,
    rtype: &str,
    criteria: &[Criterion],
) -> ApiResult<Vec<StoredVersion>> {
    let mut out = Vec::new();
    for item in state.store.live_of_type(&tenant.name, rtype) {
        let stored = item?;
        let Some(resource) = &stored.resource else {
            continue;
        };
        let mut all = true;
        for c in criteria {
            if !matches(c, resource)? {
                all = false;
                break;
            }
        }
        if all {
            out.push(stored);
        }
    }
    Ok(out)
}

async fn search(
    state: &AppState,
    ctx: &Ctx,
    rtype: &str,
    query: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base,
        caller,
    } = ctx;
    let tenant: &Tenant = tenant;
    check_type(tenant, rtype)?;
    let q = parse_search(tenant, rtype, query, prefer_strict(headers))?;
    let page = Page::from_query(state, query)?;
    // Only what the caller may read is found at all (so `total` and paging are its own).
    let found = crate::rest::visible_versions(
        state,
        tenant,
        caller,
        run(state, tenant, rtype, &q.criteria)?,
    );
    let mut entries: Vec<Value> = page
        .slice(&found)
        .iter()
        .filter_map(|v| {
            v.resource.as_ref().map(|r| {
                json!({
                    "fullUrl": format!("{base}/{}/{}", v.resource_type, v.id),
                    "resource": r,
                    "search": {"mode": "match"},
                })
            })
        })
        .collect();
    if !q.ignored.is_empty() {
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": operation_outcome(
                Severity::Warning,
                "not-supported",
                &format!("ignored unknown search parameter(s): {}", q.ignored.join(", ")),
            ),
            "search": {"mode": "outcome"},
        }));
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": herald_store::now_instant()},
        "type": "searchset",
        "total": found.len(),
        "link": page.links(&format!("{base}/{rtype}"), &q.echo, found.len()),
        "entry": entries,
    });
    Ok(fhir_json(StatusCode::OK, &bundle))
}

/// `GET [base]/[type]?params`.
pub async fn search_get(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ctx: Ctx,
) -> ApiResult<Response> {
    search(
        &state,
        &ctx,
        &rtype,
        query.as_deref().unwrap_or(""),
        &headers,
    )
    .await
}

/// `POST [base]/[type]/_search` with an `application/x-www-form-urlencoded` body (parameters in
/// the URL query are combined with the body's).
pub async fn search_post(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bytes = read_limited(body, state.config.max_body_bytes).await?;
    if !bytes.is_empty() && !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!("_search takes application/x-www-form-urlencoded, not '{ct}'"),
        ));
    }
    let form =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::bad_request("form body is not UTF-8"))?;
    let mut all = query.unwrap_or_default();
    if !form.is_empty() {
        if !all.is_empty() {
            all.push('&');
        }
        all.push_str(form);
    }
    search(&state, &ctx, &rtype, &all, &headers).await
}
