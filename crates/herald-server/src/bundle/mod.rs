//! Transaction and batch Bundles at `POST [base]`.
//!
//! A **transaction** is all or nothing: every entry is parsed, resolved (conditional creates,
//! updates and deletes searched, ids assigned), its references to other entries rewritten and
//! its body checked like a REST write, and only then are all the writes applied as one durable
//! log record ([`commit::commit_atomic`]): resources, the events they trigger and the counters
//! together, or nothing. Entries are applied in Bundle order, so their notifications follow it;
//! since no two entries may touch the same resource, that order gives the same result as the
//! specification's DELETE, POST, PUT, GET processing order. GET entries run after the writes.
//!
//! A **batch** runs entry by entry through the ordinary write path, each succeeding or failing
//! alone; its entries may not refer to each other.

pub mod commit;
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use herald_fhir::outcome::{Severity, operation_outcome};
use herald_store::{Interaction, StoredVersion, WriteKind, WriteOutcome};
use serde_json::{Value, json};

use crate::auth::{Caller, Perm};
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::http::{PreferReturn, fhir_json, prefer_return, read_json_body};
use crate::rest::{authorize_write, check_body, shown, visible};
use crate::write::{WriteCommand, write};
use crate::{AppState, Tenant};
use commit::{AtomicWrite, Committed, commit_atomic};
use plan::{Action, Method, Planned, at, local_references, parse_entries, resolve};

/// `POST [base]` with a `transaction` or `batch` Bundle.
pub async fn system_post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Response> {
    let bundle = read_json_body(&headers, body, state.config.max_body_bytes).await?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::bad_request(
            "POST to the base URL takes a Bundle of type transaction or batch",
        ));
    }
    // The envelope here; each entry's resource where the entry is handled, so that a batch
    // entry fails alone and a transaction's refusal names its entry.
    let mut envelope = bundle.clone();
    if let Some(entries) = envelope.get_mut("entry").and_then(Value::as_array_mut) {
        for e in entries.iter_mut().filter_map(Value::as_object_mut) {
            e.remove("resource");
        }
    }
    herald_fhir::validate::check_resource_for(ctx.tenant.version.fhir_version(), &envelope)?;
    let prefer = prefer_return(&headers);
    match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => {
            let entries = transaction(&state, &ctx, &bundle).await?;
            Ok(respond(&ctx, "transaction-response", entries, prefer))
        }
        Some("batch") => {
            let entries = batch(&state, &ctx, &bundle).await;
            Ok(respond(&ctx, "batch-response", entries, prefer))
        }
        Some("message") => Err(ApiError::bad_request(
            "a message Bundle is processed by POST [base]/$process-message",
        )),
        Some(t) => Err(ApiError::bad_request(format!(
            "POST to the base URL takes a transaction or batch Bundle, not type '{t}'"
        ))),
        None => Err(ApiError::bad_request("Bundle.type is required")),
    }
}

/// The result of one entry, for the response Bundle.
pub enum Done {
    /// A write (or a conditional create that found its resource: `created` false).
    Version {
        /// HTTP status.
        status: StatusCode,
        /// The version now current.
        stored: Box<StoredVersion>,
    },
    /// A conditional delete with nothing to delete, or a delete of nothing.
    NoContent,
    /// A read or search result.
    Resource(StatusCode, Value),
    /// A failed entry (batch only).
    Failed(ApiError),
}

/// Runs a transaction and returns each entry's result, in Bundle order.
pub async fn transaction(state: &AppState, ctx: &Ctx, bundle: &Value) -> ApiResult<Vec<Done>> {
    let requests = parse_entries(&ctx.tenant, &ctx.base, bundle)?
        .into_iter()
        .collect::<ApiResult<Vec<_>>>()?;
    let mut planned = Vec::with_capacity(requests.len());
    for r in requests {
        let i = r.index;
        check_scope(&ctx.caller, &r.resource_type, r.method).map_err(|e| at(i, e))?;
        planned.push(resolve(state, &ctx.tenant, &ctx.caller, r).map_err(|e| at(i, e))?);
    }
    check_distinct(&planned)?;
    let references = local_references(&planned);
    let written = write_plan(
        state,
        &ctx.tenant,
        &ctx.caller,
        &mut planned,
        Some(&references),
    )?;
    let outcomes = match commit_atomic(state, &ctx.tenant, &written.writes, None).await {
        Ok(Committed::Applied(o)) => o,
        Ok(Committed::Duplicate(_)) => {
            return Err(ApiError::internal(
                "committing a transaction",
                "a transaction was taken for a repeated message",
            ));
        }
        Err(r) => {
            return Err(match r.index {
                Some(w) => at(written.entry_of[w], r.error),
                None => r.error,
            });
        }
    };
    Ok(results(state, ctx, &planned, &written.entry_of, outcomes))
}

/// A transaction writes each resource once (the specification: overlapping entries fail it).
fn check_distinct(planned: &[Planned]) -> ApiResult<()> {
    let mut seen = HashSet::new();
    for p in planned {
        if matches!(p.action, Action::Write { .. }) {
            let key = format!("{}/{}", p.request.resource_type, p.id);
            if !seen.insert(key.clone()) {
                return Err(at(
                    p.request.index,
                    ApiError::bad_request(format!(
                        "{key} is written by more than one entry; a transaction writes each resource once"
                    )),
                ));
            }
        }
    }
    Ok(())
}

/// The writes of a resolved plan, and for each the entry it came from.
pub struct PlannedWrites {
    /// The writes, in entry order.
    pub writes: Vec<AtomicWrite>,
    /// `entry_of[w]`: index (in the plan) of write `w`'s entry.
    pub entry_of: Vec<usize>,
}

/// Checks a resolved plan as one unit (references to other entries rewritten and resolvable) and each write as a REST write would be (body, access rules,
/// creator tag), and returns the writes. `references`: for a transaction or message, whose
/// entries may refer to each other, what each entry reference becomes; `None` for a batch.
pub fn write_plan(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    planned: &mut [Planned],
    references: Option<&HashMap<String, String>>,
) -> ApiResult<PlannedWrites> {
    let atomic = references.is_some();
    let none = HashMap::new();
    let map = references.unwrap_or(&none);
    let mut out = PlannedWrites {
        writes: Vec::new(),
        entry_of: Vec::new(),
    };
    for (pos, p) in planned.iter_mut().enumerate() {
        let i = p.request.index;
        let Action::Write {
            kind,
            body,
            if_match,
        } = &mut p.action
        else {
            continue;
        };
        if let Some(b) = body.as_mut() {
            let unresolved = plan::rewrite_references(b, map);
            if let Some(u) = unresolved.first() {
                return Err(at(
                    i,
                    ApiError::bad_request(if atomic {
                        format!("reference '{u}' names no entry of this Bundle")
                    } else {
                        format!(
                            "reference '{u}' names another entry; entries of a batch are independent (use a transaction)"
                        )
                    }),
                ));
            }
        }
        prepare(
            state,
            tenant,
            caller,
            &p.request.resource_type,
            &p.id,
            p.request.method,
            body,
        )
        .map_err(|e| at(i, e))?;
        out.writes.push(AtomicWrite {
            resource_type: p.request.resource_type.clone(),
            id: p.id.clone(),
            kind: *kind,
            body: body.clone(),
            if_match: *if_match,
        });
        out.entry_of.push(pos);
    }
    Ok(out)
}

/// The scope an entry needs.
pub fn check_scope(caller: &Caller, resource_type: &str, method: Method) -> ApiResult<()> {
    let perm = match method {
        Method::Get => Perm::Read,
        Method::Post => Perm::Create,
        Method::Put => Perm::Update,
        Method::Delete => Perm::Delete,
    };
    crate::auth::gate::require_scope(caller, resource_type, perm)
}

/// Sets the id of a body to be written and checks it as `POST`/`PUT` would: structure, type,
/// business rules, who may write it, and the creator tag.
fn prepare(
    state: &AppState,
    tenant: &Tenant,
    caller: &Caller,
    resource_type: &str,
    id: &str,
    method: Method,
    body: &mut Option<Value>,
) -> ApiResult<()> {
    let old = state
        .store
        .resources
        .current(&tenant.name, resource_type, id)?
        .and_then(|s| s.resource);
    let Some(b) = body.as_mut() else {
        // A delete.
        if let Some(o) = &old {
            crate::access::check_write(caller, resource_type, Some(o), None)?;
        }
        return Ok(());
    };
    match (method, b.get("id").and_then(Value::as_str)) {
        (Method::Put, Some(bid)) if bid != id => {
            return Err(ApiError::bad_request(format!(
                "resource id '{bid}' does not match the id '{id}' the entry updates"
            )));
        }
        // A POST's id is the server's to choose (the specification says to ignore the client's).
        _ => {
            if let Some(o) = b.as_object_mut() {
                o.insert("id".into(), Value::String(id.to_owned()));
            }
        }
    }
    check_body(tenant, resource_type, b)?;
    authorize_write(state, tenant, caller, resource_type, old.as_ref(), b)
}

/// Each entry's result after the writes are durable (GET entries run now).
fn results(
    state: &AppState,
    ctx: &Ctx,
    planned: &[Planned],
    entry_of: &[usize],
    outcomes: Vec<WriteOutcome>,
) -> Vec<Done> {
    let mut by_entry: Vec<Option<WriteOutcome>> = vec![None; planned.len()];
    for (w, o) in outcomes.into_iter().enumerate() {
        if let Some(&e) = entry_of.get(w) {
            by_entry[e] = Some(o);
        }
    }
    planned
        .iter()
        .zip(by_entry)
        .map(|(p, outcome)| match (&p.action, outcome) {
            (Action::Write { .. }, Some(o)) => written(o),
            (Action::Exists(found), _) => Done::Version {
                status: StatusCode::OK,
                stored: found.clone(),
            },
            (Action::Read, _) => read(state, ctx, p),
            _ => Done::NoContent,
        })
        .collect()
}

fn written(o: WriteOutcome) -> Done {
    if o.stored.is_deleted() || o.stored.version == 0 {
        return Done::NoContent;
    }
    let status = if o.changed && o.stored.interaction == Interaction::Create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Done::Version {
        status,
        stored: Box::new(o.stored),
    }
}

/// A GET entry: a read (`Type/id`) or a search (`Type?query`).
fn read(state: &AppState, ctx: &Ctx, p: &Planned) -> Done {
    let tenant = &ctx.tenant;
    let rt = &p.request.resource_type;
    if let Some(id) = &p.request.id {
        return match state.store.resources.read(&tenant.name, rt, id) {
            Ok(v) if visible(state, tenant, &ctx.caller, &v) && v.resource.is_some() => {
                Done::Version {
                    status: StatusCode::OK,
                    stored: Box::new(v),
                }
            }
            Ok(_) => Done::Failed(ApiError::not_found(format!("{rt}/{id} is not known"))),
            Err(e) => Done::Failed(e.into()),
        };
    }
    let query = p.request.query.as_deref().unwrap_or("");
    match crate::search::find_matches(state, tenant, rt, query, false) {
        Ok(found) => {
            let entries: Vec<Value> = found
                .iter()
                .filter(|v| visible(state, tenant, &ctx.caller, v))
                .filter_map(|v| {
                    let v = shown(&ctx.caller, v);
                    v.resource.map(|r| {
                        json!({
                            "fullUrl": format!("{}/{}/{}", ctx.base, v.resource_type, v.id),
                            "resource": r,
                            "search": {"mode": "match"},
                        })
                    })
                })
                .collect();
            Done::Resource(
                StatusCode::OK,
                json!({
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "total": entries.len(),
                    "entry": entries,
                }),
            )
        }
        Err(e) => Done::Failed(e),
    }
}

/// Runs a batch: each entry on its own, through the ordinary write path.
async fn batch(state: &AppState, ctx: &Ctx, bundle: &Value) -> Vec<Done> {
    let requests = match parse_entries(&ctx.tenant, &ctx.base, bundle) {
        Ok(r) => r,
        Err(e) => return vec![Done::Failed(e)],
    };
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        out.push(match r {
            Ok(r) => batch_entry(state, ctx, r)
                .await
                .unwrap_or_else(Done::Failed),
            Err(e) => Done::Failed(e),
        });
    }
    out
}

async fn batch_entry(state: &AppState, ctx: &Ctx, r: plan::Request) -> ApiResult<Done> {
    let i = r.index;
    check_scope(&ctx.caller, &r.resource_type, r.method).map_err(|e| at(i, e))?;
    let mut planned = [resolve(state, &ctx.tenant, &ctx.caller, r).map_err(|e| at(i, e))?];
    let writes = write_plan(state, &ctx.tenant, &ctx.caller, &mut planned, None)?;
    let [p] = &planned;
    let Some(w) = writes.writes.into_iter().next() else {
        return Ok(results(state, ctx, &planned, &[], Vec::new())
            .pop()
            .unwrap_or(Done::NoContent));
    };
    let result = write(
        state,
        &ctx.tenant,
        WriteCommand {
            kind: w.kind,
            resource_type: &w.resource_type,
            id: &w.id,
            body: w.body,
            if_match: w.if_match,
        },
    )
    .await;
    match result {
        Ok(o) => Ok(written(o)),
        // Deleting what does not exist succeeds, as in REST.
        Err(e) if w.kind == WriteKind::Delete && e.status == StatusCode::NOT_FOUND => {
            Ok(Done::NoContent)
        }
        Err(e) => Err(at(p.request.index, e)),
    }
}

/// The response Bundle.
fn respond(ctx: &Ctx, kind: &str, entries: Vec<Done>, prefer: PreferReturn) -> Response {
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|d| response_entry(ctx, d, prefer))
        .collect();
    fhir_json(
        StatusCode::OK,
        &json!({
            "resourceType": "Bundle",
            "id": uuid::Uuid::new_v4().to_string(),
            "type": kind,
            "entry": entries,
        }),
    )
}

fn status_line(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
        .trim_end()
        .to_owned()
}

fn response_entry(ctx: &Ctx, d: Done, prefer: PreferReturn) -> Value {
    match d {
        Done::Version { status, stored } => {
            let v = shown(&ctx.caller, &stored);
            let url = format!("{}/{}/{}", ctx.base, v.resource_type, v.id);
            let mut e = json!({
                "fullUrl": url,
                "response": {
                    "status": status_line(status),
                    "location": format!("{url}/_history/{}", v.version),
                    "etag": format!("W/\"{}\"", v.version),
                    "lastModified": v.last_updated,
                },
            });
            match (prefer, v.resource) {
                (PreferReturn::Representation, Some(r)) => e["resource"] = r,
                (PreferReturn::OperationOutcome, _) => {
                    e["response"]["outcome"] = operation_outcome(
                        Severity::Information,
                        "informational",
                        &format!("{}/{} is version {}", v.resource_type, v.id, v.version),
                    );
                }
                _ => {}
            }
            e
        }
        Done::NoContent => json!({"response": {"status": status_line(StatusCode::NO_CONTENT)}}),
        Done::Resource(status, r) => json!({
            "resource": r,
            "response": {"status": status_line(status)},
        }),
        Done::Failed(err) => json!({
            "response": {
                "status": status_line(err.status),
                "outcome": operation_outcome(Severity::Error, err.code, &err.diagnostics),
            },
        }),
    }
}
