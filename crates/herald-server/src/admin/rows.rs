//! One row per subscription, as every admin view shows it: the stored Subscription (status,
//! topic, channel, endpoint) joined with the dispatcher's live delivery state, plus the age of
//! the oldest event still waiting. Built once here for the JSON API, the console, `/metrics`
//! and the health summary, so they cannot disagree.

use std::collections::HashMap;

use herald_delivery::live::LiveState;
use herald_subscriptions::parse_subscription;
use serde::Serialize;

use crate::AppState;
use crate::error::ApiResult;

/// A subscription and its delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub id: String,
    /// Stored status (`requested`, `active`, `error`, `off`).
    pub status: String,
    /// Topic canonical URL.
    pub topic: String,
    /// Channel type code.
    pub channel: String,
    /// Endpoint (rest-hook URL), if any.
    pub endpoint: Option<String>,
    /// `ok`, `failing`, `paused`, `parked`, `idle` (not delivered: off) — one word for a
    /// dashboard, derived from the live state.
    pub health: String,
    /// Events recorded (`eventsSinceSubscriptionStart`).
    pub events_since_start: u64,
    /// Highest event delivered.
    pub last_delivered_event: u64,
    /// Events waiting to be delivered.
    pub queue_depth: u64,
    /// Age in seconds of the oldest waiting event.
    pub oldest_pending_age_secs: Option<f64>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure's cause.
    pub last_error: Option<String>,
    /// What is being sent now.
    pub in_flight: Option<String>,
    /// When the next attempt is due (Unix ms).
    pub next_attempt_at_ms: Option<u64>,
    /// Same, as an instant.
    pub next_attempt_at: Option<String>,
    /// When the last attempt finished (Unix ms).
    pub last_attempt_at_ms: Option<u64>,
    /// Paused by an operator.
    pub paused: bool,
    /// Retry horizon passed.
    pub parked: bool,
    /// Endpoint verified by a handshake.
    pub handshake_accepted: bool,
    /// Resend still to go.
    pub resend: Option<(u64, u64)>,
    /// Whether the dispatcher holds this subscription (false: not loaded or refused).
    pub live: bool,
}

/// Which rows.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this stored status.
    pub status: Option<String>,
    /// Only this subscription.
    pub id: Option<String>,
    /// Only those with a failure streak (or parked).
    pub failing_only: bool,
    /// Failing ones first (most failures first), then by tenant and id.
    pub failing_first: bool,
}

/// The rows matching `f`.
pub async fn rows(state: &AppState, f: &RowFilter) -> ApiResult<Vec<Row>> {
    let live: HashMap<(String, String), LiveState> = state
        .dispatcher
        .snapshot()
        .await
        .into_iter()
        .map(|l| ((l.tenant.clone(), l.id.clone()), l))
        .collect();
    let now = herald_delivery::timers::unix_ms();
    let mut out = Vec::new();
    let mut names: Vec<&String> = state.tenants.keys().collect();
    names.sort();
    for name in names {
        if f.tenant.as_ref().is_some_and(|t| t != name) {
            continue;
        }
        let tenant = &state.tenants[name];
        for item in state
            .store
            .resources
            .live_of_type(&tenant.name, "Subscription")
        {
            let stored = item?;
            if f.id.as_ref().is_some_and(|i| *i != stored.id) {
                continue;
            }
            let Some(body) = &stored.resource else {
                continue;
            };
            let Ok(sub) = parse_subscription(tenant.version, body) else {
                continue;
            };
            let status = sub.status.code().to_owned();
            if f.status.as_ref().is_some_and(|s| *s != status) {
                continue;
            }
            let recorded = state.store.events.event_count(&tenant.name, &stored.id)?;
            let row = match live.get(&(tenant.name.clone(), stored.id.clone())) {
                Some(l) => from_live(l, recorded),
                None => {
                    let ds = state
                        .store
                        .delivery
                        .delivery_state(&tenant.name, &stored.id)?;
                    LiveState {
                        tenant: tenant.name.clone(),
                        id: stored.id.clone(),
                        status: status.clone(),
                        channel: sub.channel.kind.code().to_owned(),
                        durable: recorded,
                        acked: ds.acked,
                        queue_depth: recorded.saturating_sub(ds.acked),
                        in_flight: None,
                        in_flight_since_ms: None,
                        next_attempt_at_ms: ds.next_attempt_at_ms,
                        consecutive_failures: ds.consecutive_failures,
                        last_error: ds.last_error,
                        last_attempt_at_ms: ds.last_attempt_at_ms,
                        last_delivered_at_ms: ds.last_sent_at_ms,
                        paused: ds.paused,
                        parked: ds.parked,
                        verified: ds.verified,
                        resend: None,
                    }
                }
            };
            let is_live = live.contains_key(&(tenant.name.clone(), stored.id.clone()));
            let oldest = if row.queue_depth > 0 {
                state
                    .store
                    .events
                    .events(
                        &tenant.name,
                        &stored.id,
                        Some(row.acked + 1),
                        Some(row.acked + 1),
                    )?
                    .first()
                    .and_then(|e| humantime::parse_rfc3339_weak(&e.timestamp).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| (now as f64 / 1000.0 - d.as_secs_f64()).max(0.0))
            } else {
                None
            };
            let health = if !is_live || matches!(status.as_str(), "off" | "entered-in-error") {
                "idle"
            } else if row.paused {
                "paused"
            } else if row.parked {
                "parked"
            } else if row.consecutive_failures > 0 || status == "error" {
                "failing"
            } else {
                "ok"
            };
            if f.failing_only && !matches!(health, "failing" | "parked") {
                continue;
            }
            out.push(Row {
                tenant: tenant.name.clone(),
                id: stored.id.clone(),
                status,
                topic: sub.topic.clone(),
                channel: row.channel.clone(),
                endpoint: sub.channel.endpoint.clone(),
                health: health.to_owned(),
                events_since_start: recorded,
                last_delivered_event: row.acked,
                queue_depth: recorded.saturating_sub(row.acked),
                oldest_pending_age_secs: oldest,
                consecutive_failures: row.consecutive_failures,
                last_error: row.last_error.clone(),
                in_flight: row.in_flight.clone(),
                next_attempt_at_ms: row.next_attempt_at_ms,
                next_attempt_at: row.next_attempt_at_ms.map(crate::ws::instant),
                last_attempt_at_ms: row.last_attempt_at_ms,
                paused: row.paused,
                parked: row.parked,
                handshake_accepted: row.verified,
                resend: row.resend,
                live: is_live,
            });
        }
    }
    if f.failing_first {
        out.sort_by(|a, b| {
            let rank = |r: &Row| match r.health.as_str() {
                "failing" | "parked" => 0,
                "paused" => 1,
                _ => 2,
            };
            rank(a)
                .cmp(&rank(b))
                .then(b.consecutive_failures.cmp(&a.consecutive_failures))
                .then((&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)))
        });
    }
    Ok(out)
}

fn from_live(l: &LiveState, recorded: u64) -> LiveState {
    // The stored counter may be ahead of what the dispatcher was told is durable for an
    // instant; the queue counts what is recorded.
    LiveState {
        durable: l.durable.max(recorded),
        ..l.clone()
    }
}
