//! Herald's HTTP face: the FHIR REST API per tenant (`/fhir/{tenant}/...`), health endpoints,
//! and the wiring of state shared by the handlers. Routing lives here; each concern has its
//! own module (`rest` for interactions, `search`, `capability`, `write` for the one write path,
//! `error` for the single error→OperationOutcome mapping, `limits` for per-request limits,
//! `listener` for accepting and serving connections).
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod auth;
pub mod boot;
pub mod bundle;
pub mod capability;
pub mod cluster;
pub mod committer;
pub mod config;
pub mod console;
pub mod context;
pub mod engine;
pub mod error;
pub mod http;
pub mod limits;
pub mod listener;
pub mod messaging;
pub mod meta;
pub mod metrics;
mod middleware;
pub mod operations;
pub mod patch;
pub mod rest;
pub mod retention;
pub mod search;
pub mod status;
pub mod write;
pub mod ws;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use herald_fhir::FhirVersion;
use herald_store::{StoreError, Surfaces};

use crate::committer::Committer;
use crate::engine::Engine;
use herald_delivery::{DeliveryConfig, Dispatcher};

pub use config::{ServerConfig, TenantConfig};

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// One FHIR endpoint: a name, a FHIR version, its own data and subscription state.
pub struct Tenant {
    /// URL segment after `/fhir/`.
    pub name: String,
    /// FHIR version served.
    pub version: FhirVersion,
    /// Topics and subscriptions, matched against every write.
    pub engine: RwLock<Engine>,
}

impl Tenant {
    /// Read access to the engine (a poisoned lock is recovered: the engine is rebuilt from
    /// committed state only, so a panic elsewhere cannot leave it half-updated on disk).
    pub fn engine(&self) -> std::sync::RwLockReadGuard<'_, Engine> {
        self.engine.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the engine.
    pub fn engine_mut(&self) -> std::sync::RwLockWriteGuard<'_, Engine> {
        self.engine.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// State shared by all handlers.
pub struct AppState {
    /// The durable store, through its surfaces.
    pub store: Surfaces,
    /// Tenants by name.
    pub tenants: HashMap<String, Arc<Tenant>>,
    /// Server configuration.
    pub config: ServerConfig,
    /// Delivery configuration (the egress guard is applied at Subscription creation too).
    pub delivery: DeliveryConfig,
    /// The delivery dispatcher, told about subscription changes and committed events.
    pub dispatcher: Dispatcher,
    /// Applies resource writes in batches (see [`committer`]).
    pub committer: Committer,
    /// Who may call (see [`auth`]).
    pub auth: auth::Auth,
    /// In a cluster, the delivery leases (see [`cluster`]); `None` on a single node.
    pub leases: Option<Arc<dyn cluster::Leases>>,
    /// The lease keys this node holds (kept by [`cluster::run_leases`]).
    pub held: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl AppState {
    /// Builds the state from a store and configuration, loading each tenant's topics and
    /// subscriptions (and seeding the built-in topics).
    pub async fn new(
        store: Surfaces,
        config: ServerConfig,
        delivery: DeliveryConfig,
        dispatcher: Dispatcher,
        auth: auth::Auth,
    ) -> Result<Arc<AppState>, StoreError> {
        AppState::new_node(store, config, delivery, dispatcher, auth, None).await
    }

    /// [`AppState::new`] for a node of a cluster: subscriptions delivered under a lease are
    /// handed to the dispatcher only once this node holds it ([`cluster::run_leases`]).
    pub async fn new_node(
        store: Surfaces,
        config: ServerConfig,
        delivery: DeliveryConfig,
        dispatcher: Dispatcher,
        auth: auth::Auth,
        leases: Option<Arc<dyn cluster::Leases>>,
    ) -> Result<Arc<AppState>, StoreError> {
        let mut tenants = HashMap::new();
        let mut refused = Vec::new();
        for t in &config.tenants {
            let loaded = Engine::load(&*store.resources, &t.name, t.fhir_version).await?;
            let engine = loaded.engine;
            refused.extend(loaded.refused.into_iter().map(|r| (t.name.clone(), r)));
            for sub in loaded.subscriptions {
                if leases.is_some()
                    && sub.channel.kind != herald_subscriptions::ChannelType::Websocket
                {
                    continue; // delivered once this node holds its lease
                }
                // What survived on disk is what may be delivered.
                let durable = store.events.event_count(&t.name, &sub.id)?;
                let id = sub.id.clone();
                dispatcher.upsert(&t.name, t.fhir_version, sub);
                dispatcher.wake(&t.name, &id, durable);
            }
            tenants.insert(
                t.name.clone(),
                Arc::new(Tenant {
                    name: t.name.clone(),
                    version: t.fhir_version,
                    engine: RwLock::new(engine),
                }),
            );
        }
        metrics::METRICS.register_sources(dispatcher.metrics(), store.measures.sync_stats());
        let committer = Committer::start(Arc::clone(&store.resources))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the committer: {e}")))?;
        let state = Arc::new(AppState {
            auth,
            committer,
            store,
            tenants,
            config,
            delivery,
            dispatcher,
            leases,
            held: Default::default(),
        });
        // The send-time check: a notification carries a resource only if the Subscription's
        // creator may read it now.
        let weak = Arc::downgrade(&state);
        state.dispatcher.set_visibility(Arc::new(
            move |tenant: &str, sub: &str, rtype: &str, id: &str, body: &serde_json::Value| {
                weak.upgrade().is_some_and(|st| {
                    access::subscriber_may_read(&st, tenant, sub, rtype, id, body)
                })
            },
        ));
        // Subscriptions that may not be loaded say why, through their status.
        for (tenant, r) in refused {
            status::refuse_stored(&state, &tenant, &r).await;
        }
        Ok(state)
    }
}

/// The complete HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    let fhir = Router::new()
        .route("/", post(bundle::system_post))
        .route("/$process-message", post(messaging::process_message))
        .route("/metadata", get(capability::metadata))
        .route(
            "/.well-known/smart-configuration",
            get(auth::gate::smart_configuration),
        )
        .route(
            "/{rtype}",
            get(search::search_get).post(operations::create_or_misplaced),
        )
        .route("/{rtype}/_search", post(search::search_post))
        .route("/{rtype}/_history", get(rest::type_history))
        .route(
            "/{rtype}/{id}",
            get(rest::read)
                .put(rest::update)
                .patch(patch::patch)
                .delete(rest::delete)
                .post(operations::type_operation),
        )
        .route(
            "/{rtype}/{id}/{op}",
            get(operations::instance_operation).post(operations::instance_operation),
        )
        .route("/{rtype}/{id}/_history", get(rest::instance_history))
        .route("/{rtype}/{id}/_history/{vid}", get(rest::vread));
    Router::new()
        .route("/healthz", get(middleware::healthz))
        .route("/readyz", get(middleware::readyz))
        .route("/ws", get(ws::upgrade))
        .route(
            "/.well-known/smart-configuration",
            get(auth::gate::smart_configuration),
        )
        .route("/auth/token", post(auth::gate::token))
        .merge(admin::routes())
        .merge(console::routes())
        .route("/metrics", get(metrics::scrape))
        .nest("/fhir/{tenant}", fhir)
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        // Bodies are limited by our own reader so that the 413 is an OperationOutcome.
        .layer(DefaultBodyLimit::disable())
        // Who is calling, and whether their scopes allow the interaction (inside the limits:
        // an oversized request is refused before anyone's credentials are looked at).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::gate::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::request_limits,
        ))
        .layer(axum::middleware::from_fn(
            middleware::outcome_for_bare_errors,
        ))
        .layer(axum::middleware::from_fn(middleware::request_context))
        // Outermost, so refusals by the layers above are counted too.
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .with_state(state)
}
