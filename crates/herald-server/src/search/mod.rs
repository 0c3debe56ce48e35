//! FHIR search over a tenant's resources (GET and POST `_search`): criteria with search-parameter
//! semantics from `herald-fhir`, the result parameters (`_sort`, `_include`/`_revinclude` in
//! [`include`], `_summary`, `_elements`, `_total`, `_pretty`), and paging ([`page`]).
//!
//! The store's search index narrows the resources read to those filed under the query's
//! indexable criteria ([`candidates`]); every candidate is then judged by the whole query with
//! the matcher, so the index changes how much is read, never what is found. Without an
//! indexable criterion (or with the index switched off) every live resource of the type is read.
//! The reading runs on the blocking pool, never on the async workers. What Herald
//! does not support (an unknown parameter, `_include:iterate`, `_contained`, a `_sort` on an
//! unknown parameter, …) is never dropped silently: it is ignored and reported in an
//! OperationOutcome entry (`search.mode = outcome`), or refused with 400 under
//! `Prefer: handling=strict`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_fhir::FhirError;
use herald_fhir::search::result::{
    Ignored, ResultParams, SortKey, SortValue, SummaryMode, TotalMode, compare_sort_values,
    parse_result_params, sort_value,
};
use herald_fhir::search::{Criterion, is_result_parameter, matches, parse_criterion};
use herald_fhir::summary::{self, Subset};
use herald_store::StoredVersion;
use serde_json::{Value, json};

use crate::context::{Ctx, check_type};
use crate::error::{ApiError, ApiResult};
use crate::http::{fhir_json, prefer_strict, read_limited};
use crate::{AppState, Tenant};

mod candidates;
mod include;
pub mod indexer;
mod page;

pub use page::Page;

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

/// The live resources of `rtype` matching every criterion, in id order.
fn run(
    state: &AppState,
    tenant: &Tenant,
    rtype: &str,
    criteria: &[Criterion],
) -> ApiResult<Vec<StoredVersion>> {
    let mut out = Vec::new();
    match candidates::candidates(
        state.store.resources.as_ref(),
        &tenant.name,
        rtype,
        criteria,
    )? {
        candidates::Candidates::All => {
            for item in state.store.resources.live_of_type(&tenant.name, rtype) {
                let stored = item?;
                if matches_all(criteria, &stored)? {
                    out.push(stored);
                }
            }
        }
        candidates::Candidates::Ids(ids) => {
            for id in ids {
                let Some(stored) = state.store.resources.current(&tenant.name, rtype, &id)? else {
                    continue;
                };
                if matches_all(criteria, &stored)? {
                    out.push(stored);
                }
            }
        }
    }
    Ok(out)
}

fn matches_all(criteria: &[Criterion], stored: &StoredVersion) -> ApiResult<bool> {
    let Some(resource) = &stored.resource else {
        return Ok(false);
    };
    for c in criteria {
        if !matches(c, resource)? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn search(
    state: &Arc<AppState>,
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
    if rtype.starts_with('$') {
        return Err(crate::operations::misplaced(
            crate::operations::Level::System,
            "",
            rtype,
        ));
    }
    check_type(tenant, rtype)?;
    let strict = prefer_strict(headers);
    let q = parse_search(tenant, rtype, query, strict)?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let mut rp = parse_result_params(
        tenant.version,
        rtype,
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    if matches!(rp.summary, Some(SummaryMode::True | SummaryMode::Text))
        && !summary::knows(tenant.version, rtype)
    {
        rp.ignored.push(Ignored {
            parameter: format!("_summary={}", summary_code(rp.summary)),
            reason: format!(
                "Herald has no summary definition for {rtype} in FHIR {}",
                tenant.version.fhir_version()
            ),
        });
        rp.summary = None;
    }
    if strict && !rp.ignored.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            format!("not supported: {}", describe(&rp.ignored)),
        ));
    }
    let page = Page::from_query(state, query)?;
    // Only what the caller may read is found at all (so `total` and paging are its own).
    // Reading may take long (a scan, a broad criterion, the reach of a caller): off the async
    // workers.
    let found = {
        let (state, tenant, caller) = (Arc::clone(state), Arc::clone(&ctx.tenant), caller.clone());
        let (rtype, criteria, keys) = (rtype.to_owned(), q.criteria.clone(), rp.sort.clone());
        tokio::task::spawn_blocking(move || -> ApiResult<Vec<StoredVersion>> {
            let matched = run(&state, &tenant, &rtype, &criteria)?;
            let mut found = crate::rest::visible_versions(&state, &tenant, &caller, matched);
            sort(&keys, &mut found);
            Ok(found)
        })
        .await
        .map_err(|e| ApiError::internal("the search task failed", e))??
    };
    let count_only = rp.summary == Some(SummaryMode::Count);
    let matches: &[StoredVersion] = if count_only { &[] } else { page.slice(&found) };
    let included = include::included(state, tenant, caller, matches, &rp)?;
    let mut whole = Vec::new();
    let mut entries: Vec<Value> = Vec::with_capacity(matches.len() + included.len() + 1);
    for (v, mode) in matches
        .iter()
        .map(|v| (v, "match"))
        .chain(included.iter().map(|v| (v, "include")))
    {
        let Some(resource) = shaped(tenant, rtype, v, &rp, &mut whole) else {
            continue;
        };
        entries.push(json!({
            "fullUrl": format!("{base}/{}/{}", v.resource_type, v.id),
            "resource": resource,
            "search": {"mode": mode},
        }));
    }
    let mut issues = Vec::new();
    if !q.ignored.is_empty() {
        issues.push(format!(
            "ignored unknown search parameter(s): {}",
            q.ignored.join(", ")
        ));
    }
    if !rp.ignored.is_empty() {
        issues.push(format!(
            "ignored result parameter(s): {}",
            describe(&rp.ignored)
        ));
    }
    whole.sort_unstable();
    whole.dedup();
    if !whole.is_empty() {
        issues.push(format!(
            "returned whole: Herald has no summary definition for {}",
            whole.join(", ")
        ));
    }
    if !issues.is_empty() {
        let issue: Vec<Value> = issues
            .iter()
            .map(|d| json!({"severity": "warning", "code": "not-supported", "diagnostics": d}))
            .collect();
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": {"resourceType": "OperationOutcome", "issue": issue},
            "search": {"mode": "outcome"},
        }));
    }
    let mut echo = form_urlencoded::Serializer::new(q.echo.clone());
    for (k, v) in &rp.echo {
        echo.append_pair(k, v);
    }
    let echo = echo.finish();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": herald_store::now_instant()},
        "type": "searchset",
        "total": found.len(),
        "link": page.links(&format!("{base}/{rtype}"), &echo, found.len()),
        "entry": entries,
    });
    if rp.total == Some(TotalMode::None)
        && !count_only
        && let Some(b) = bundle.as_object_mut()
    {
        b.remove("total");
    }
    Ok(respond(&bundle, rp.pretty))
}

fn summary_code(mode: Option<SummaryMode>) -> &'static str {
    match mode {
        Some(SummaryMode::True) => "true",
        Some(SummaryMode::Text) => "text",
        Some(SummaryMode::Data) => "data",
        Some(SummaryMode::Count) => "count",
        Some(SummaryMode::False) | None => "false",
    }
}

fn describe(ignored: &[Ignored]) -> String {
    ignored
        .iter()
        .map(|i| format!("{} ({})", i.parameter, i.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `_sort`: a stable sort, so resources equal on every key keep the store's order.
fn sort(keys: &[SortKey], found: &mut Vec<StoredVersion>) {
    if keys.is_empty() {
        return;
    }
    let mut keyed: Vec<(Vec<Option<SortValue>>, StoredVersion)> = std::mem::take(found)
        .into_iter()
        .map(|v| {
            let values = keys
                .iter()
                .map(|k| v.resource.as_ref().and_then(|r| sort_value(k, r)))
                .collect();
            (values, v)
        })
        .collect();
    keyed.sort_by(|a, b| compare_sort_values(keys, &a.0, &b.0));
    *found = keyed.into_iter().map(|(_, v)| v).collect();
}

/// The resource as `_summary`/`_elements` shape it. `_summary` applies to every entry;
/// `_elements` names apply to the matches, and `Type.name` entries to that type wherever it
/// appears. A type Herald has no summary definition for is returned whole and named in `whole`.
fn shaped(
    tenant: &Tenant,
    searched: &str,
    v: &StoredVersion,
    rp: &ResultParams,
    whole: &mut Vec<String>,
) -> Option<Value> {
    let resource = v.resource.as_ref()?;
    let subset = match (&rp.elements, rp.summary) {
        (Some(names), _) => {
            let applies = v.resource_type == searched
                || names
                    .iter()
                    .any(|n| n.split_once('.').is_some_and(|(t, _)| t == v.resource_type));
            applies.then_some(Subset::Elements(names))
        }
        (None, Some(m @ (SummaryMode::True | SummaryMode::Text | SummaryMode::Data))) => {
            Some(Subset::Summary(m))
        }
        _ => None,
    };
    let Some(subset) = subset else {
        return Some(resource.clone());
    };
    match summary::apply(tenant.version, resource, subset) {
        Some(s) => Some(s),
        None => {
            whole.push(v.resource_type.clone());
            Some(resource.clone())
        }
    }
}

/// The Bundle as FHIR JSON (indented for `_pretty=true`).
fn respond(bundle: &Value, pretty: bool) -> Response {
    if !pretty {
        return fhir_json(StatusCode::OK, bundle);
    }
    let text = serde_json::to_string_pretty(bundle).unwrap_or_else(|_| bundle.to_string());
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::FHIR_JSON),
    );
    resp
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
