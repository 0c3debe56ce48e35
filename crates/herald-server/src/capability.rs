//! `GET [base]/metadata`: the CapabilityStatement, built from what the code actually supports
//! (every resource type of the tenant's version, the interactions implemented in `rest`, and the
//! search parameters whose types `herald-fhir` evaluates).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use herald_fhir::FhirVersion;
use herald_fhir::search::result::include_params;
use herald_fhir::search::{ParamType, Registry};
use serde_json::{Value, json};

use crate::context::Ctx;
use crate::error::ApiResult;
use crate::http::fhir_json;
use crate::{AppState, Tenant};

fn param_type(kind: &ParamType) -> Option<&'static str> {
    match kind {
        ParamType::Token => Some("token"),
        ParamType::Reference => Some("reference"),
        ParamType::String => Some("string"),
        ParamType::Date => Some("date"),
        ParamType::Uri => Some("uri"),
        _ => None,
    }
}

/// The CapabilityStatement of one tenant.
pub fn capability_statement(tenant: &Tenant, base: &str) -> Value {
    let registry = Registry::for_version(tenant.version);
    let interactions: Vec<Value> = [
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ]
    .iter()
    .map(|c| json!({"code": c}))
    .collect();
    let rev_includes = rev_include_index(tenant);
    let resources: Vec<Value> = herald_fhir::resource_types(tenant.version)
        .iter()
        .map(|rt| {
            let mut params: Vec<Value> = registry
                .for_resource(rt)
                .into_iter()
                .filter(|p| !p.code.starts_with('_'))
                .filter_map(|p| {
                    param_type(&p.kind)
                        .map(|t| json!({"name": p.code, "definition": p.url, "type": t}))
                })
                .collect();
            params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            let mut r = json!({
                "type": rt,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            });
            if !params.is_empty() {
                r["searchParam"] = Value::Array(params);
            }
            let includes = search_includes(tenant, rt);
            if !includes.is_empty() {
                r["searchInclude"] = json!(includes);
            }
            if let Some(rev) = rev_includes.get(*rt) {
                r["searchRevInclude"] = json!(rev);
            }
            if *rt == "Subscription" {
                subscription_capabilities(tenant, &mut r);
                r["documentation"] = json!(FILTER_SEMANTICS);
            }
            r
        })
        .collect();
    let mut cs = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": herald_store::now_instant(),
        "publisher": "Herald",
        "kind": "instance",
        "software": {"name": "Herald", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": format!("Herald FHIR subscription broker, endpoint '{}'", tenant.name), "url": base},
        "fhirVersion": tenant.version.fhir_version(),
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": SEARCH_DOCUMENTATION,
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "searchParam": [
                {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
                {"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}
            ],
            "operation": [{
                "name": "process-message",
                "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
            }],
        }],
        // FHIR messaging (COW pattern 3): synchronous, each message processed once.
        "messaging": [{
            "endpoint": [{
                "protocol": {"system": "http://terminology.hl7.org/CodeSystem/message-transport", "code": "http"},
                "address": format!("{base}/$process-message"),
            }],
            "documentation": "Messages (COW new-order, order-update; subscription event-notification, handshake, heartbeat) are applied by business identifier, all or nothing, once: a resend with the same message id is answered with the first response.",
        }],
    });
    match tenant.version {
        FhirVersion::R4 => cs["instantiates"] = json!([BACKPORT_SERVER_R4]),
        FhirVersion::R4B => cs["instantiates"] = json!([BACKPORT_SERVER_R4B]),
        FhirVersion::R5 => {}
    }
    cs
}

/// What search supports beyond the parameters listed per type (CapabilityStatement has no
/// element for result parameters).
const SEARCH_DOCUMENTATION: &str = "Search result parameters: _count, _offset (paging); _sort on any listed search parameter of the type and on _id and _lastUpdated (comma-separated keys, '-' for descending; resources without a value sort last); _include and _revinclude on reference parameters (Type:param, Type:param:Target, Type:*), one level from the matches (no :iterate), included resources obeying the same access rules as matches (search.mode = include); _summary = true (the core definitions' summary elements plus mandatory ones; meta.tag SUBSETTED), text, data, count or false; _elements (plus mandatory elements; Type.element names apply to that type, including included resources; SUBSETTED); _total = none, estimate or accurate (Herald always counts exactly); _pretty; _format=json. Not supported, and reported (ignored with an OperationOutcome entry, search.mode = outcome; 400 under Prefer: handling=strict): _include:iterate and _revinclude:iterate, _contained, _containedType, _graph, _score, _maxresults, chained and _has parameters, unknown parameters.";

/// How Subscription filters meet updates: said in the CapabilityStatement and in each
/// built-in topic's description, since clients cannot guess it.
pub const FILTER_SEMANTICS: &str = "Filters on an update: a Subscription's filters match a change when they all match the current version (on create), the previous version (on delete), or, on an update, either the previous or the current version. So when a Task's owner moves from A to B, A's subscription hears that update (the Task left it) and nothing after it, and B's hears that update and everything after it; a status filter likewise hears the update that leaves the status and the one that enters it.";

/// `Type:param` for each reference parameter of `rtype` Herald can follow, and `Type:*`.
fn search_includes(tenant: &Tenant, rtype: &str) -> Vec<String> {
    let mut out: Vec<String> = include_params(tenant.version, rtype)
        .into_iter()
        .map(|d| format!("{rtype}:{}", d.code))
        .collect();
    if !out.is_empty() {
        out.push(format!("{rtype}:*"));
    }
    out
}

/// For each resource type, the `Source:param` includes that can point at it (reverse includes).
fn rev_include_index(tenant: &Tenant) -> std::collections::HashMap<String, Vec<String>> {
    let types = herald_fhir::resource_types(tenant.version);
    let mut out: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for source in types {
        for d in include_params(tenant.version, source) {
            for target in types {
                if d.targets.is_empty() || d.targets.iter().any(|t| t == target) {
                    out.entry((*target).to_owned())
                        .or_default()
                        .push(format!("{source}:{}", d.code));
                }
            }
        }
    }
    out
}

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport";
/// Herald's own operation (no HL7 definition): a Subscription's signing secret, see
/// `operations::signing_secret`. Under Herald's canonical base, like the built-in topics.
const SIGNING_SECRET_OPERATION: &str =
    "http://herald.example.org/fhir/OperationDefinition/Subscription-signing-secret";
const BACKPORT_SERVER_R4: &str = "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4";
/// The backport's R4B server CapabilityStatement (it has no `-r4b` suffix).
const BACKPORT_SERVER_R4B: &str = "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server";

/// What a Subscription entry advertises: the operations, and on R4 and R4B the backport profile
/// and the supported topic canonicals (extension `capabilitystatement-subscriptiontopic-canonical`).
fn subscription_capabilities(tenant: &Tenant, r: &mut Value) {
    match tenant.version {
        FhirVersion::R4 | FhirVersion::R4B => {
            let topics: Vec<Value> = tenant
                .engine()
                .catalog
                .iter()
                .map(|t| {
                    json!({
                        "url": format!("{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"),
                        "valueCanonical": t.url,
                    })
                })
                .collect();
            r["extension"] = Value::Array(topics);
            r["supportedProfile"] = json!([format!(
                "{BACKPORT}/StructureDefinition/backport-subscription"
            )]);
            r["operation"] = json!([
                {"name": "status", "definition": format!("{BACKPORT}/OperationDefinition/backport-subscription-status")},
                {"name": "events", "definition": format!("{BACKPORT}/OperationDefinition/backport-subscription-events")},
                {"name": "get-ws-binding-token", "definition": format!("{BACKPORT}/OperationDefinition/backport-subscription-get-ws-binding-token")},
                {"name": "signing-secret", "definition": SIGNING_SECRET_OPERATION},
            ]);
        }
        FhirVersion::R5 => {
            r["operation"] = json!([
                {"name": "status", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-status"},
                {"name": "events", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-events"},
                {"name": "get-ws-binding-token", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-get-ws-binding-token"},
                {"name": "signing-secret", "definition": SIGNING_SECRET_OPERATION},
            ]);
        }
    }
}

/// `rest.security`: how to authenticate (SMART Backend Services), or that nothing is asked.
fn security(state: &AppState, headers: &HeaderMap) -> Value {
    if !state.auth.enabled() {
        return json!({
            "cors": false,
            "description": "No authentication is configured: this endpoint serves a loopback address (or was started with auth.insecure_no_auth) and every caller is an administrator."
        });
    }
    let root = crate::auth::gate::root_url(state, headers);
    json!({
        "cors": false,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "token", "valueUri": format!("{root}/auth/token")}]
        }],
        "description": format!("SMART Backend Services: POST a client_credentials request with a private_key_jwt assertion (RS384 or ES384, aud {root}/auth/token) to the token endpoint, then send 'Authorization: Bearer <access_token>'. Registered API keys are sent the same way. Discovery: {root}/.well-known/smart-configuration.")
    })
}

/// `GET [base]/metadata`.
pub async fn metadata(
    State(state): State<Arc<AppState>>,
    ctx: Ctx,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Ctx {
        tenant,
        base,
        caller: _,
    } = ctx.clone();
    let mut cs = capability_statement(&tenant, &base);
    cs["rest"][0]["security"] = security(&state, &headers);
    Ok(fhir_json(StatusCode::OK, &cs))
}
