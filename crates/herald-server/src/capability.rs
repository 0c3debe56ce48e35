//! `GET [base]/metadata`: the CapabilityStatement, built from what the code actually supports
//! (every resource type of the tenant's version, the interactions implemented in `rest`, and the
//! search parameters whose types `herald-fhir` evaluates).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use herald_fhir::FhirVersion;
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
            if *rt == "Subscription" {
                subscription_capabilities(tenant, &mut r);
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
            "resource": resources,
            "searchParam": [
                {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
                {"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}
            ],
        }],
    });
    if tenant.version == FhirVersion::R4 {
        cs["instantiates"] = json!([BACKPORT_SERVER_R4]);
    }
    cs
}

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport";
/// Herald's own operation (no HL7 definition): a Subscription's signing secret, see
/// `operations::signing_secret`. Under Herald's canonical base, like the built-in topics.
const SIGNING_SECRET_OPERATION: &str =
    "http://herald.example.org/fhir/OperationDefinition/Subscription-signing-secret";
const BACKPORT_SERVER_R4: &str = "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4";

/// What a Subscription entry advertises: the operations, and on R4 the backport profile and
/// the supported topic canonicals (extension `capabilitystatement-subscriptiontopic-canonical`).
fn subscription_capabilities(tenant: &Tenant, r: &mut Value) {
    match tenant.version {
        FhirVersion::R4 => {
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
