//! Retention in the background: every `interval_secs`, each subscription's acknowledged events
//! beyond `[retention]` limits are removed, and the attempt log is cut by age and count. Runs
//! on the blocking pool, one subscription at a time, in small log records (`herald-store`'s
//! retention), so writers never wait behind a whole pass.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AppState;

/// `[retention]` settings. Unset limits keep everything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Acknowledged events kept per subscription (the newest ones).
    pub events_keep_count: Option<u64>,
    /// Acknowledged events older than this many seconds are removed.
    pub events_max_age_secs: Option<u64>,
    /// Attempt-log entries older than this many seconds are removed (the count limit is
    /// `delivery.attempt_log_max`).
    pub attempts_max_age_secs: Option<u64>,
    /// Seconds between passes.
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            events_keep_count: None,
            events_max_age_secs: Some(30 * 24 * 3600),
            attempts_max_age_secs: Some(30 * 24 * 3600),
            interval_secs: 60,
        }
    }
}

/// One pass over every subscription; returns what was removed.
pub fn pass(state: &AppState, cfg: &RetentionConfig) -> herald_store::Pruned {
    let now = herald_delivery::timers::unix_ms();
    let cutoff = |secs: Option<u64>| secs.map(|s| now.saturating_sub(s.saturating_mul(1000)));
    let mut pruned = herald_store::Pruned::default();
    for tenant in state.tenants.values() {
        for item in state
            .store
            .resources
            .live_of_type(&tenant.name, "Subscription")
        {
            let Ok(stored) = item else { continue };
            let acked = match state
                .store
                .delivery
                .delivery_state(&tenant.name, &stored.id)
            {
                Ok(ds) => ds.acked,
                Err(_) => continue,
            };
            match state.store.events.prune_events(
                &tenant.name,
                &stored.id,
                acked,
                cfg.events_keep_count,
                cutoff(cfg.events_max_age_secs),
            ) {
                Ok(n) => pruned.events += n,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, subscription = %stored.id, error = %e, "retention: cannot prune events")
                }
            }
        }
    }
    if let Some(cut) = cutoff(cfg.attempts_max_age_secs) {
        match state.store.attempts.prune_attempts_before(cut) {
            Ok(n) => pruned.attempts += n,
            Err(e) => tracing::warn!(error = %e, "retention: cannot prune the attempt log"),
        }
    }
    match state
        .store
        .attempts
        .prune_attempts(state.delivery.attempt_log_max)
    {
        Ok(n) => pruned.attempts += n,
        Err(e) => tracing::warn!(error = %e, "retention: cannot prune the attempt log"),
    }
    pruned
}

/// Runs passes forever (spawned at start-up).
pub async fn run(state: Arc<AppState>, cfg: RetentionConfig) {
    let every = Duration::from_secs(cfg.interval_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        let (st, c) = (Arc::clone(&state), cfg.clone());
        match tokio::task::spawn_blocking(move || pass(&st, &c)).await {
            Ok(p) if p.events + p.attempts > 0 => {
                tracing::info!(
                    events = p.events,
                    attempts = p.attempts,
                    "retention pass removed old entries"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}
