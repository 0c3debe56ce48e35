//! Herald's HTTP face: the FHIR REST API per tenant (`/fhir/{tenant}/...`), health endpoints,
//! and the wiring of state shared by the handlers. Routing lives here; each concern has its
//! own module (`rest` for interactions, `search`, `capability`, `write` for the one write path,
//! `error` for the single error→OperationOutcome mapping).
#![forbid(unsafe_code)]

pub mod capability;
pub mod config;
pub mod error;
pub mod http;
mod middleware;
pub mod rest;
pub mod search;
pub mod write;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use herald_fhir::FhirVersion;
use herald_store::Store;

pub use config::{ServerConfig, TenantConfig};

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// One FHIR endpoint: a name, a FHIR version, its own data.
#[derive(Debug)]
pub struct Tenant {
    /// URL segment after `/fhir/`.
    pub name: String,
    /// FHIR version served.
    pub version: FhirVersion,
}

/// State shared by all handlers.
pub struct AppState {
    /// The durable store.
    pub store: Arc<Store>,
    /// Tenants by name.
    pub tenants: HashMap<String, Arc<Tenant>>,
    /// Server configuration.
    pub config: ServerConfig,
}

impl AppState {
    /// Builds the state from a store and configuration.
    pub fn new(store: Arc<Store>, config: ServerConfig) -> Arc<AppState> {
        let tenants = config
            .tenants
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Arc::new(Tenant {
                        name: t.name.clone(),
                        version: t.fhir_version,
                    }),
                )
            })
            .collect();
        Arc::new(AppState {
            store,
            tenants,
            config,
        })
    }
}

/// The complete HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    let fhir = Router::new()
        .route("/metadata", get(capability::metadata))
        .route("/{rtype}", get(search::search_get).post(rest::create))
        .route("/{rtype}/_search", post(search::search_post))
        .route("/{rtype}/_history", get(rest::type_history))
        .route(
            "/{rtype}/{id}",
            get(rest::read).put(rest::update).delete(rest::delete),
        )
        .route("/{rtype}/{id}/_history", get(rest::instance_history))
        .route("/{rtype}/{id}/_history/{vid}", get(rest::vread));
    Router::new()
        .route("/healthz", get(middleware::healthz))
        .route("/readyz", get(middleware::readyz))
        .nest("/fhir/{tenant}", fhir)
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        // Bodies are limited by our own reader so that the 413 is an OperationOutcome.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state)
}
