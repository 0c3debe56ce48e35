//! Applies the dispatcher's status changes (`requested` → `active` after an accepted handshake,
//! → `error` after failures, back to `active` on recovery) to the stored Subscriptions, through
//! the one write path so that the new version, the matcher and the dispatcher stay in step.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use herald_delivery::StatusChange;
use herald_store::WriteKind;
use herald_subscriptions::{SubscriptionStatus, parse_subscription, set_subscription_status};
use tokio::sync::mpsc;

use crate::AppState;
use crate::write::{Actor, WriteCommand, write_as};

/// Runs until the channel closes.
pub async fn apply_status_changes(
    state: Arc<AppState>,
    mut rx: mpsc::UnboundedReceiver<StatusChange>,
) {
    while let Some(change) = rx.recv().await {
        // A concurrent client write makes our If-Match stale (412): re-read and try again.
        let result = (|| apply(&state, &change))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(5))
                    .with_max_times(5),
            )
            .when(|e| e.status == axum::http::StatusCode::PRECONDITION_FAILED)
            .await;
        if let Err(e) = result {
            tracing::warn!(tenant = %change.tenant, subscription = %change.subscription, error = %e, "cannot apply status change");
        }
    }
}

/// Sets a stored Subscription that start-up refused to load to `error`, with the reason. It
/// stays out of the matcher and the dispatcher (the write path admits it no more than start-up
/// did) until its client replaces it with one that passes.
pub async fn refuse_stored(state: &AppState, tenant: &str, refused: &crate::engine::Refused) {
    let change = StatusChange {
        tenant: tenant.to_owned(),
        subscription: refused.id.clone(),
        status: SubscriptionStatus::Error,
        error: Some(format!("not loaded: {}", refused.reason)),
    };
    if let Err(e) = apply(state, &change).await {
        tracing::warn!(tenant, subscription = %refused.id, error = %e, "cannot set a refused Subscription to error");
    }
}

async fn apply(state: &AppState, change: &StatusChange) -> crate::error::ApiResult<()> {
    let tenant = crate::context::tenant(state, &change.tenant)?;
    let stored = state
        .store
        .resources
        .read(&tenant.name, "Subscription", &change.subscription)?;
    let Some(mut body) = stored.resource else {
        return Ok(());
    };
    let current =
        parse_subscription(tenant.version, &body).map_err(crate::error::ApiError::from)?;
    // A client's `off` (or a newer request) wins over what delivery observed.
    if matches!(
        current.status,
        SubscriptionStatus::Off | SubscriptionStatus::EnteredInError
    ) || current.status == change.status
    {
        return Ok(());
    }
    set_subscription_status(
        tenant.version,
        &mut body,
        change.status,
        change.error.as_deref(),
    )
    .map_err(crate::error::ApiError::from)?;
    write_as(
        state,
        &tenant,
        WriteCommand {
            kind: WriteKind::Upsert,
            resource_type: "Subscription",
            id: &change.subscription,
            body: Some(body),
            if_match: Some(stored.version),
        },
        Actor::Server,
    )
    .await?;
    match &change.error {
        Some(reason) => {
            tracing::info!(tenant = %change.tenant, subscription = %change.subscription, status = change.status.code(), reason = %reason, "subscription status changed")
        }
        None => {
            tracing::info!(tenant = %change.tenant, subscription = %change.subscription, status = change.status.code(), "subscription status changed")
        }
    }
    Ok(())
}

/// Sets a Subscription's status on an operator's request (the admin `activate` and `off`
/// actions), through the same write path as delivery's own changes.
pub async fn set_by_operator(
    state: &AppState,
    tenant: &str,
    id: &str,
    status: SubscriptionStatus,
) -> crate::error::ApiResult<()> {
    let change = StatusChange {
        tenant: tenant.to_owned(),
        subscription: id.to_owned(),
        status,
        error: None,
    };
    apply(state, &change).await
}
