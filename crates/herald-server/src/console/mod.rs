//! The admin console: server-rendered HTML at `/admin` over the same rows, attempts and actions
//! as the JSON API (`crate::admin`), with tinytemplate templates (`templates/*.html`, compiled
//! into the binary; values HTML-escaped by default) and no script or build step. Pages: the
//! subscriptions table (failing first) with health cards and a sparkline per subscription, a
//! subscription's detail with its actions, attempt timeline and audit trail, the attempt log,
//! and one attempt in full. Actions are plain form POSTs answered with a redirect.

mod spark;
mod views;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tinytemplate::TinyTemplate;

use crate::AppState;
use crate::admin::rows::{RowFilter, rows};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

const LAYOUT: &str = include_str!("templates/layout.html");
const INDEX: &str = include_str!("templates/index.html");
const SUBSCRIPTION: &str = include_str!("templates/subscription.html");
const ATTEMPT: &str = include_str!("templates/attempt.html");
const ATTEMPTS: &str = include_str!("templates/attempts.html");
const STYLE: &str = include_str!("style.css");

/// The console's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/ui/attempts", get(attempts))
        .route("/admin/ui/attempts/{id}", get(attempt))
        .route("/admin/ui/subscriptions/{tenant}/{id}", get(subscription))
        .route(
            "/admin/ui/subscriptions/{tenant}/{id}/{action}",
            post(action),
        )
}

#[derive(Serialize)]
struct Layout<'a> {
    title: &'a str,
    style: &'a str,
    /// What the last action did (named `flash`: tinytemplate reads `if notice` as `if not ice`).
    flash: Option<String>,
    body: String,
}

/// Renders `template` with `ctx` inside the layout.
fn page<C: Serialize>(
    title: &str,
    template: &'static str,
    ctx: &C,
    notice: Option<String>,
) -> ApiResult<Response> {
    let mut tt = TinyTemplate::new();
    tt.add_template("layout", LAYOUT)
        .and_then(|()| tt.add_template("body", template))
        .map_err(|e| ApiError::internal("parsing a console template", e))?;
    let body = tt
        .render("body", ctx)
        .map_err(|e| ApiError::internal("rendering a console page", e))?;
    let html = tt
        .render(
            "layout",
            &Layout {
                title,
                style: STYLE,
                flash: notice,
                body,
            },
        )
        .map_err(|e| ApiError::internal("rendering the console layout", e))?;
    let mut resp = Html(html).into_response();
    // The page shows live state: never from a cache. And it is never framed elsewhere.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp.headers_mut().insert(
        header::HeaderName::from_static("x-frame-options"),
        header::HeaderValue::from_static("DENY"),
    );
    Ok(resp)
}

async fn index(State(state): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let view = crate::admin::query_pairs(q.as_deref())
        .into_iter()
        .find(|(k, _)| k == "view")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let filter = RowFilter {
        failing_first: view != "id",
        failing_only: view == "failing",
        ..RowFilter::default()
    };
    let all = rows(&state, &filter).await?;
    let health = crate::admin::summary(&state, &rows(&state, &RowFilter::default()).await?);
    crate::admin::fresh_attempts(&state).await?;
    let activity = spark::activity(&*state.store.attempts, None)?;
    let ctx = views::index(&all, &health, &activity, &view);
    page("Subscriptions", INDEX, &ctx, None)
}

async fn subscription(
    State(state): State<Arc<AppState>>,
    Path((tenant, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let t = crate::context::tenant(&state, &tenant)?;
    let f = RowFilter {
        tenant: Some(t.name.clone()),
        id: Some(id.clone()),
        ..RowFilter::default()
    };
    let Some(row) = rows(&state, &f).await?.pop() else {
        return Err(ApiError::not_found(format!(
            "no live Subscription/{id} in tenant '{tenant}'"
        )));
    };
    let filter = herald_store::AttemptFilter {
        tenant: Some(t.name.clone()),
        subscription: Some(id.clone()),
        ..Default::default()
    };
    let page_of = state
        .store
        .attempts
        .attempt_page(&filter, None, 50)?
        .unwrap_or_default();
    let audit = state.store.audit.audit(Some(&t.name), Some(&id), 20)?;
    let pruned = state.store.events.pruned_through(&t.name, &id)?;
    crate::admin::fresh_attempts(&state).await?;
    let activity = spark::activity(&*state.store.attempts, Some((&t.name, &id)))?;
    let ctx = views::subscription(&row, &page_of.entries, &audit, pruned, &activity);
    let notice = crate::admin::query_pairs(q.as_deref())
        .into_iter()
        .find(|(k, _)| k == "done")
        .map(|(_, v)| format!("Done: {v}."));
    page(&format!("{tenant}/{id}"), SUBSCRIPTION, &ctx, notice)
}

async fn attempts(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    // The filter form sends empty fields for "any". (Built in a block: the serializer is not
    // Send and must not live across an await.)
    let kept = {
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (k, v) in crate::admin::query_pairs(q.as_deref()) {
            if !v.trim().is_empty() {
                kept.append_pair(&k, v.trim());
            }
        }
        kept.finish()
    };
    let (filter, cursor, count) = crate::admin::attempts_query(Some(&kept))?;
    crate::admin::fresh_attempts(&state).await?;
    let Some(p) = state
        .store
        .attempts
        .attempt_page(&filter, cursor.as_deref(), count)?
    else {
        return Err(ApiError::bad_request("not a cursor of this log"));
    };
    let ctx = views::attempts(&filter, &p);
    page("Attempts", ATTEMPTS, &ctx, None)
}

async fn attempt(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    crate::admin::fresh_attempts(&state).await?;
    let Some(a) = state.store.attempts.attempt(&id)? else {
        return Err(ApiError::not_found(format!(
            "no attempt '{id}' (it may have been removed by retention)"
        )));
    };
    let ctx = views::attempt(&id, &a);
    page("Attempt", ATTEMPT, &ctx, None)
}

/// A form POST from the console: the action, then back to the subscription's page.
async fn action(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    same_origin(&headers)?;
    let form: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let num = |name: &str| -> ApiResult<Option<u64>> {
        match form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => crate::admin::u64_param(name, v).map(Some),
        }
    };
    let range = match (num("from")?, num("to")?) {
        (Some(f), Some(t)) => Some((f, t)),
        (Some(f), None) => Some((f, f)),
        _ => None,
    };
    let done = crate::admin::perform(&state, &caller, &tenant, &id, &action, range).await?;
    let what = match &done.detail {
        Some(d) => format!("{} {d}", done.action),
        None => done.action.clone(),
    };
    let to = format!(
        "/admin/ui/subscriptions/{}/{}?done={}",
        views::path_segment(&tenant),
        views::path_segment(&id),
        form_urlencoded::byte_serialize(what.as_bytes()).collect::<String>()
    );
    Ok(Redirect::to(&to).into_response())
}

/// Refuses a form POST sent from another site (a browser attaches credentials a proxy injects
/// or a session holds; the Origin header says who made the page that sent it).
fn same_origin(headers: &HeaderMap) -> ApiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(()); // not a browser's cross-site form: curl, or a same-origin GET-made form
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    if origin == "null" || origin_host != host {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "security",
            "console actions are accepted only from the console's own pages (Origin differs from Host)",
        ));
    }
    Ok(())
}
