//! FHIR operations on Subscription: `$status` (instance and type level), `$events` and
//! `$signing-secret` (instance level), `$get-ws-binding-token` (both). Parameters come from the
//! URL query or a `Parameters` body (POST). An operation asked for where it does not run (no id,
//! another type, the system level) or not known at all is answered by [`misplaced`], which says
//! where it lives instead of "unknown resource" or "no such id".

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use herald_delivery::payload::{error_concepts, materialize, subscription_ref};
use herald_delivery::signing;
use herald_subscriptions::notification::{
    NotificationInput, NotificationType, PayloadContent, build_notification, build_status_bundle,
};
use herald_subscriptions::{Subscription, parse_subscription};
use serde_json::{Value, json};

use crate::context::{Ctx, base_url, check_type};
use crate::error::{ApiError, ApiResult};
use crate::http::{fhir_json, read_limited};
use crate::ws::instant;
use crate::{AppState, Tenant};
use herald_delivery::timers::unix_ms as now_ms;

/// Operation parameters as (name, value) strings.
type Params = Vec<(String, String)>;

async fn params(
    state: &AppState,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Params> {
    let mut out: Params = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if method == Method::POST {
        let bytes = read_limited(body, state.config.max_body_bytes).await?;
        if !bytes.is_empty() {
            let v = crate::http::read_json_value(headers, &bytes)?;
            if v.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
                return Err(ApiError::bad_request(
                    "an operation body must be a Parameters resource",
                ));
            }
            for p in v
                .get("parameter")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(name) = p.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let value = p.as_object().and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.starts_with("value"))
                        .map(|(_, v)| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                });
                if let Some(value) = value {
                    out.push((name.to_owned(), value));
                }
            }
        }
    }
    Ok(out)
}

fn load_subscription(state: &AppState, tenant: &Tenant, id: &str) -> ApiResult<Subscription> {
    let stored = state
        .store
        .resources
        .read(&tenant.name, "Subscription", id)?;
    let body = stored
        .resource
        .ok_or_else(|| ApiError::not_found(format!("Subscription/{id} has no content")))?;
    let mut sub = parse_subscription(tenant.version, &body)
        .map_err(|e| ApiError::internal("reading a stored Subscription", e))?;
    sub.id = id.to_owned();
    Ok(sub)
}

/// Where an operation was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `[base]/$op`
    System,
    /// `[base]/[type]/$op`
    Type,
    /// `[base]/[type]/[id]/$op`
    Instance,
}

/// Herald's operations, all on Subscription: (name, type level, instance level).
const OPERATIONS: [(&str, bool, bool); 4] = [
    ("$status", true, true),
    ("$events", false, true),
    ("$get-ws-binding-token", true, true),
    ("$signing-secret", false, true),
];

/// Where each operation can be called, for messages: `Subscription/$status`, ….
fn forms(op: &str, type_level: bool, instance_level: bool) -> String {
    let mut f = Vec::new();
    if type_level {
        f.push(format!("[base]/Subscription/{op}"));
    }
    if instance_level {
        f.push(format!("[base]/Subscription/{{id}}/{op}"));
    }
    f.join(" or ")
}

/// The 4xx for an operation Herald does not run where (or on what) it was asked: an operation
/// that needs a Subscription id asked without one, one asked on another type or at the system
/// level, or one Herald does not know (which lists those it knows).
pub fn misplaced(level: Level, rtype: &str, op: &str) -> ApiError {
    let Some(&(name, type_level, instance_level)) = OPERATIONS.iter().find(|(n, _, _)| *n == op)
    else {
        let known: Vec<String> = OPERATIONS
            .iter()
            .map(|(n, t, i)| forms(n, *t, *i))
            .collect();
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!(
                "unknown operation {op}{}; Herald's operations are {}",
                if level == Level::System {
                    String::new()
                } else {
                    format!(" on {rtype}")
                },
                known.join(", ")
            ),
        );
    };
    let how = forms(name, type_level, instance_level);
    let message = match level {
        Level::System => format!("{name} is an operation on Subscription: use {how}"),
        _ if rtype != "Subscription" => {
            format!("{name} is an operation on Subscription, not {rtype}: use {how}")
        }
        Level::Type => format!("{name} needs a Subscription id: use {how}"),
        Level::Instance => format!("{name} is not an instance operation: use {how}"),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "not-supported", message)
}

/// `POST [base]/[type]`: a create, unless the "type" is an operation name (`POST [base]/$events`),
/// which is answered with where that operation lives rather than "unknown resource type".
pub async fn create_or_misplaced(
    state: State<Arc<AppState>>,
    Path((tenant, rtype)): Path<(String, String)>,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    if rtype.starts_with('$') {
        return Err(misplaced(Level::System, "", &rtype));
    }
    crate::rest::create(state, Path((tenant, rtype)), headers, ctx, body).await
}

/// `GET|POST [base]/[type]/$op` (type level).
pub async fn type_operation(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, op)): Path<(String, String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    if !op.starts_with('$') {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!("POST is not allowed on {rtype}/{op}; use PUT to update"),
        ));
    }
    let Ctx {
        tenant,
        base: _,
        caller,
    } = ctx.clone();
    check_type(&tenant, &rtype)?;
    match (rtype.as_str(), op.as_str()) {
        ("Subscription", "$status") => {
            let p = params(&state, &method, query.as_deref(), &headers, body).await?;
            let ids: Vec<&str> = p
                .iter()
                .filter(|(k, _)| k == "id")
                .flat_map(|(_, v)| v.split(','))
                .collect();
            let statuses: Vec<&str> = p
                .iter()
                .filter(|(k, _)| k == "status")
                .flat_map(|(_, v)| v.split(','))
                .collect();
            let mut subs = Vec::new();
            for item in state
                .store
                .resources
                .live_of_type(&tenant.name, "Subscription")
            {
                let stored = item?;
                if !ids.is_empty() && !ids.contains(&stored.id.as_str()) {
                    continue;
                }
                let Some(b) = &stored.resource else { continue };
                let Ok(mut sub) = parse_subscription(tenant.version, b) else {
                    continue;
                };
                sub.id = stored.id.clone();
                if !statuses.is_empty() && !statuses.contains(&sub.status.code()) {
                    continue;
                }
                if !crate::rest::visible(&state, &tenant, &caller, &stored) {
                    continue;
                }
                subs.push(sub);
            }
            status_response(&state, &tenant, &headers, &subs)
        }
        ("Subscription", "$get-ws-binding-token") => {
            check_token_method(&tenant, &method)?;
            let p = params(&state, &method, query.as_deref(), &headers, body).await?;
            let ids: Vec<String> = p
                .iter()
                .filter(|(k, _)| k == "id")
                .flat_map(|(_, v)| v.split(','))
                .map(|v| v.trim().rsplit('/').next().unwrap_or_default().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            if ids.is_empty() {
                return Err(ApiError::bad_request(
                    "name the subscriptions to bind with one or more 'id' parameters",
                ));
            }
            for id in &ids {
                let stored = state
                    .store
                    .resources
                    .read(&tenant.name, "Subscription", id)?;
                if !crate::rest::visible(&state, &tenant, &caller, &stored) {
                    return Err(ApiError::not_found(format!(
                        "Subscription/{id} is not known (or not visible to client '{}')",
                        caller.client_id
                    )));
                }
            }
            ws_token(&state, &tenant, &headers, ids)
        }
        _ => Err(misplaced(Level::Type, &rtype, &op)),
    }
}

/// `GET|POST [base]/[type]/[id]/$op` (instance level).
pub async fn instance_operation(
    State(state): State<Arc<AppState>>,
    Path((_tenant, rtype, id, op)): Path<(String, String, String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
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
    if rtype != "Subscription" || !OPERATIONS.iter().any(|(n, _, i)| *n == op && *i) {
        return Err(misplaced(Level::Instance, &rtype, &op));
    }
    // Subscription operations are for the Subscription's creator (and admins).
    if rtype == "Subscription" {
        let stored = state.store.resources.read(&tenant.name, &rtype, &id)?;
        if !crate::rest::visible(&state, &tenant, &caller, &stored) {
            return Err(ApiError::not_found(format!(
                "Subscription/{id} is not known (or not visible to client '{}')",
                caller.client_id
            )));
        }
    }
    match (rtype.as_str(), op.as_str()) {
        ("Subscription", "$status") => {
            let sub = load_subscription(&state, &tenant, &id)?;
            status_response(&state, &tenant, &headers, &[sub])
        }
        ("Subscription", "$events") => {
            let p = params(&state, &method, query.as_deref(), &headers, body).await?;
            events(&state, &tenant, &headers, &id, &p)
        }
        ("Subscription", "$get-ws-binding-token") => {
            check_token_method(&tenant, &method)?;
            ws_token(&state, &tenant, &headers, vec![id])
        }
        ("Subscription", "$signing-secret") => {
            let p = params(&state, &method, query.as_deref(), &headers, body).await?;
            let rotate = flag(&p, "rotate")?;
            if rotate && method != Method::POST {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "not-supported",
                    "rotating a signing secret changes state: use POST",
                ));
            }
            signing_secret(&state, &tenant, &id, rotate).await
        }
        _ => Err(misplaced(Level::Instance, &rtype, &op)),
    }
}

/// A boolean parameter (`true`/`false`; absent is false).
fn flag(p: &Params, name: &str) -> ApiResult<bool> {
    match p.iter().rev().find(|(k, _)| k == name) {
        None => Ok(false),
        Some((_, v)) => match v.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(ApiError::bad_request(format!(
                "{name} must be true or false, got '{other}'"
            ))),
        },
    }
}

/// `Subscription/{id}/$signing-secret[?rotate=true]`: the secret with which Herald signs the
/// Subscription's rest-hook notifications (made now if it has none yet), or with `rotate` a new
/// one, the old one signing alongside it for `delivery.signing_rotation_overlap_secs`.
///
/// Who may call this is not checked yet: until Herald knows its callers (the identity work),
/// anyone who can reach the FHIR API can read every secret. The access check goes at the top of
/// this function, which has what it needs to decide (tenant and Subscription).
async fn signing_secret(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
    rotate: bool,
) -> ApiResult<Response> {
    let sub = load_subscription(state, tenant, id)?;
    if sub.channel.kind != herald_subscriptions::ChannelType::RestHook {
        return Err(ApiError::unprocessable(format!(
            "Subscription/{id} uses the {} channel; only rest-hook notifications are signed",
            sub.channel.kind.code()
        )));
    }
    let now = now_ms();
    let keys = if rotate {
        let overlap = state.delivery.signing_rotation_overlap_secs;
        let k = signing::rotate(&*state.store.delivery, &tenant.name, id, now, overlap).await?;
        tracing::info!(tenant = %tenant.name, subscription = %id, overlap_secs = overlap, "signing secret rotated");
        k
    } else {
        signing::keys_for(&*state.store.delivery, &tenant.name, id, now).await?
    };
    let mut parameter = vec![
        json!({"name": "secret", "valueString": keys.current.secret}),
        json!({"name": "created", "valueInstant": instant(keys.current.created_at_ms)}),
    ];
    // During an overlap: when the replaced secret stops signing (the secret itself is not
    // shown again).
    if let Some(p) = keys.signing_at(now).get(1)
        && let Some(t) = p.expires_at_ms
    {
        parameter.push(json!({"name": "previous-expires", "valueInstant": instant(t)}));
    }
    let mut resp = fhir_json(
        StatusCode::OK,
        &json!({"resourceType": "Parameters", "parameter": parameter}),
    );
    // A secret must not linger in a cache on the way.
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// R5 declares `$get-ws-binding-token` as affecting state (POST only); the backport allows GET.
fn check_token_method(tenant: &Tenant, method: &Method) -> ApiResult<()> {
    if tenant.version == herald_fhir::FhirVersion::R5 && method != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "$get-ws-binding-token changes state in FHIR R5: use POST",
        ));
    }
    Ok(())
}

/// Checks that every id names a websocket Subscription that can be bound, then issues a token.
fn ws_token(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    ids: Vec<String>,
) -> ApiResult<Response> {
    for id in &ids {
        let sub = load_subscription(state, tenant, id)?;
        if sub.channel.kind != herald_subscriptions::ChannelType::Websocket {
            return Err(ApiError::unprocessable(format!(
                "Subscription/{id} uses the {} channel, not websocket",
                sub.channel.kind.code()
            )));
        }
        if matches!(
            sub.status,
            herald_subscriptions::SubscriptionStatus::Off
                | herald_subscriptions::SubscriptionStatus::EnteredInError
        ) {
            return Err(ApiError::unprocessable(format!(
                "Subscription/{id} is {}; nothing would be delivered",
                sub.status.code()
            )));
        }
    }
    let base = base_url(state, headers, tenant);
    let answer = crate::ws::binding_token(state, tenant, &base, ids)?;
    Ok(fhir_json(StatusCode::OK, &answer))
}

fn status_response(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    subs: &[Subscription],
) -> ApiResult<Response> {
    let base = base_url(state, headers, tenant);
    let mut rows = Vec::with_capacity(subs.len());
    for s in subs {
        let count = state.store.events.event_count(&tenant.name, &s.id)?;
        let delivery = state.store.delivery.delivery_state(&tenant.name, &s.id)?;
        rows.push((
            subscription_ref(&base, s),
            count,
            error_concepts(s.status, &delivery),
        ));
    }
    let bundle = build_status_bundle(
        tenant.version,
        &rows,
        &uuid::Uuid::new_v4().to_string(),
        &herald_store::now_instant(),
    );
    Ok(fhir_json(StatusCode::OK, &bundle))
}

fn number(p: &Params, name: &str) -> ApiResult<Option<u64>> {
    match p.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!("{name} must be a non-negative integer, got '{v}'"))
        }),
    }
}

/// Largest number of events one `$events` call returns.
const MAX_EVENTS_PER_CALL: u64 = 1000;

fn events(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    id: &str,
    p: &Params,
) -> ApiResult<Response> {
    let sub = load_subscription(state, tenant, id)?;
    let since = number(p, "eventsSinceNumber")?;
    let until = number(p, "eventsUntilNumber")?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad_request(format!(
            "eventsSinceNumber ({s}) is greater than eventsUntilNumber ({u})"
        )));
    }
    let content = match p.iter().find(|(k, _)| k == "content") {
        None => sub.channel.content,
        Some((_, v)) => PayloadContent::from_code(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "content '{v}' is not one of empty, id-only, full-resource"
            ))
        })?,
    };
    let total = state.store.events.event_count(&tenant.name, id)?;
    let since = since.unwrap_or(1);
    // Retention removed the oldest delivered events: say so rather than answer without them.
    let pruned = state.store.events.pruned_through(&tenant.name, id)?;
    if since <= pruned {
        return Err(ApiError::new(
            StatusCode::GONE,
            "deleted",
            format!(
                "events 1-{pruned} of Subscription/{id} were removed by retention (they had been delivered); the oldest event kept is {}: ask with eventsSinceNumber={}",
                pruned + 1,
                pruned + 1
            ),
        ));
    }
    let until = until
        .unwrap_or(total)
        .min(since.saturating_add(MAX_EVENTS_PER_CALL - 1));
    let stored = state
        .store
        .events
        .events(&tenant.name, id, Some(since), Some(until))?;
    let records = materialize(&*state.store.resources, &tenant.name, &stored, content)?;
    let base = base_url(state, headers, tenant);
    let sref = subscription_ref(&base, &sub);
    let bundle = build_notification(&NotificationInput {
        version: tenant.version,
        kind: NotificationType::QueryEvent,
        subscription: &sref,
        events_since_start: total,
        events: &records,
        content,
        errors: Vec::new(),
        bundle_id: uuid::Uuid::new_v4().to_string(),
        timestamp: herald_store::now_instant(),
    });
    Ok(fhir_json(StatusCode::OK, &bundle))
}
