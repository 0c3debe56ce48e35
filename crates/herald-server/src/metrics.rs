//! `/metrics`: Prometheus exposition (OpenMetrics text, which Prometheus scrapes) through
//! prometheus-client. One registry per process holds the families Herald counts as things
//! happen — HTTP requests by route and status (middleware here), writes, matches and match time
//! (the committer), websocket connections (`ws`), delivery attempts and commit→delivery latency
//! (`herald-delivery::metrics`), log syncs (`herald-store::stats`) — and gauges set at scrape
//! time from the live state: queue depth and oldest pending age per subscription, runtime basics.
//!
//! Label sets are bounded: routes are axum's route templates (never raw paths), statuses and
//! methods are small sets, and per-subscription series are limited to the
//! [`MAX_SUBSCRIPTION_SERIES`] subscriptions with the deepest queues; totals cover all.

use std::sync::{Arc, LazyLock, Mutex, Once};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::admin::rows::{RowFilter, rows};

/// Subscriptions that get their own queue series (the deepest queues); the rest are in totals.
pub const MAX_SUBSCRIPTION_SERIES: usize = 100;

/// HTTP request labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Method (GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, other).
    pub method: String,
    /// Route template (`/fhir/{tenant}/{rtype}/{id}`), or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Per-subscription labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubLabels {
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub subscription: String,
}

/// Per-tenant labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Tenant.
    pub tenant: String,
}

/// The process's metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    sources: Once,
    /// HTTP requests answered.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Resource writes that made a new version.
    pub writes: Counter,
    /// Events recorded (one per matching subscription per write).
    pub events: Counter,
    /// Changes run through the matcher.
    pub matched_changes: Counter,
    /// Seconds the matcher took per change.
    pub match_seconds: Histogram,
    /// Open websocket connections.
    pub websocket_connections: Gauge,
    queue_depth: Family<SubLabels, Gauge>,
    oldest_pending: Family<SubLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    tenant_backlog: Family<TenantLabels, Gauge>,
    failing: Gauge,
    workers: Gauge,
    alive_tasks: Gauge,
    global_queue: Gauge,
}

/// The registry of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("herald")),
            sources: Once::new(),
            http_requests: Family::default(),
            writes: Counter::default(),
            events: Counter::default(),
            matched_changes: Counter::default(),
            // 1 µs … ~33 ms.
            match_seconds: Histogram::new(exponential_buckets(0.000_001, 2.0, 16)),
            websocket_connections: Gauge::default(),
            queue_depth: Family::default(),
            oldest_pending: Family::default(),
            tenant_backlog: Family::default(),
            failing: Gauge::default(),
            workers: Gauge::default(),
            alive_tasks: Gauge::default(),
            global_queue: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "http_requests",
                "HTTP requests answered, by method, route template and status",
                m.http_requests.clone(),
            );
            r.register(
                "writes",
                "Resource writes that made a new version",
                m.writes.clone(),
            );
            r.register(
                "events_recorded",
                "Events recorded (one per matching subscription per write)",
                m.events.clone(),
            );
            r.register(
                "matched_changes",
                "Changes run through the matcher",
                m.matched_changes.clone(),
            );
            r.register(
                "match_seconds",
                "Time the matcher took per change",
                m.match_seconds.clone(),
            );
            r.register(
                "websocket_connections",
                "Open websocket connections",
                m.websocket_connections.clone(),
            );
            r.register(
                "subscription_queue_depth",
                "Events waiting for delivery, per subscription (the deepest queues only)",
                m.queue_depth.clone(),
            );
            r.register(
                "subscription_oldest_pending_seconds",
                "Age of the oldest event waiting for delivery, per subscription (the deepest queues only)",
                m.oldest_pending.clone(),
            );
            r.register(
                "tenant_backlog",
                "Events waiting for delivery over all subscriptions of a tenant",
                m.tenant_backlog.clone(),
            );
            r.register(
                "subscriptions_failing",
                "Subscriptions with a failure streak, in error or parked",
                m.failing.clone(),
            );
            r.register(
                "tokio_workers",
                "Worker threads of the runtime",
                m.workers.clone(),
            );
            r.register(
                "tokio_alive_tasks",
                "Tasks alive in the runtime",
                m.alive_tasks.clone(),
            );
            r.register(
                "tokio_global_queue_depth",
                "Tasks waiting in the runtime's global queue",
                m.global_queue.clone(),
            );
        }
        m
    }

    /// Registers the families of delivery and the store (once per process: the first server
    /// state built is the one served).
    pub fn register_sources(
        &self,
        delivery: &herald_delivery::metrics::DeliveryMetrics,
        sync: &herald_store::stats::SyncStats,
    ) {
        self.sources.call_once(|| {
            let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "delivery_attempts",
                "Delivery attempts (handshakes, heartbeats, notifications) by channel and outcome",
                delivery.attempts.clone(),
            );
            r.register(
                "delivery_latency_seconds",
                "Time from an event's commit to the notification carrying it being accepted",
                delivery.latency.clone(),
            );
            r.register(
                "log_sync_seconds",
                "Time per write-ahead log sync (fdatasync and applying to sled)",
                sync.sync_seconds.clone(),
            );
            r.register(
                "log_sync_batch_size",
                "Writers made durable by one log sync",
                sync.batch_size.clone(),
            );
        });
    }

    /// Encodes every family.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &r)?;
        Ok(out)
    }
}

/// Counts every request by method, route template and status.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let m = &*METRICS;
    if let Ok(all) = rows(&state, &RowFilter::default()).await {
        m.queue_depth.clear();
        m.oldest_pending.clear();
        m.tenant_backlog.clear();
        for name in state.tenants.keys() {
            let backlog: u64 = all
                .iter()
                .filter(|r| &r.tenant == name)
                .map(|r| r.queue_depth)
                .sum();
            m.tenant_backlog
                .get_or_create(&TenantLabels {
                    tenant: name.clone(),
                })
                .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
        m.failing.set(
            i64::try_from(
                all.iter()
                    .filter(|r| matches!(r.health.as_str(), "failing" | "parked"))
                    .count(),
            )
            .unwrap_or(i64::MAX),
        );
        let mut deepest: Vec<_> = all.iter().filter(|r| r.live).collect();
        deepest.sort_by_key(|r| std::cmp::Reverse(r.queue_depth));
        for r in deepest.into_iter().take(MAX_SUBSCRIPTION_SERIES) {
            let labels = SubLabels {
                tenant: r.tenant.clone(),
                subscription: r.id.clone(),
            };
            m.queue_depth
                .get_or_create(&labels)
                .set(i64::try_from(r.queue_depth).unwrap_or(i64::MAX));
            m.oldest_pending
                .get_or_create(&labels)
                .set(r.oldest_pending_age_secs.unwrap_or(0.0));
        }
    }
    let rt = tokio::runtime::Handle::current().metrics();
    m.workers
        .set(i64::try_from(rt.num_workers()).unwrap_or(i64::MAX));
    m.alive_tasks
        .set(i64::try_from(rt.num_alive_tasks()).unwrap_or(i64::MAX));
    m.global_queue
        .set(i64::try_from(rt.global_queue_depth()).unwrap_or(i64::MAX));
    match m.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => crate::error::ApiError::internal("encoding metrics", e).into_response(),
    }
}
