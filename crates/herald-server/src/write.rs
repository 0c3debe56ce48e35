//! The one write path. Every create, update and delete — from REST, conditional create, or the
//! server itself (subscription status changes) — goes through [`write`]: validate what changes
//! subscription state, apply the write with the matcher as the store's hook (so events are
//! logged in the same record as the version, design invariant 1) — batched with other writes by
//! the [`crate::committer`] unless it changes subscription state — update the in-memory engine,
//! and return once the group commit has made it durable.

use std::sync::Arc;

use axum::http::StatusCode;
use herald_fhir::FhirVersion;
use herald_store::{Change, EventDraft, WriteKind, WriteOutcome, WriteRequest};
use herald_subscriptions::{
    SubscriptionStatus, builtin, parse_subscription, parse_topic, validate_subscription,
    validate_topic,
};
use serde_json::Value;

use crate::committer::Pending;
use crate::engine::{Kind, Related, classify};
use crate::error::{ApiError, ApiResult};
use crate::{AppState, Tenant};

/// A write as the handlers describe it.
#[derive(Debug)]
pub struct WriteCommand<'a> {
    /// Create, upsert or delete.
    pub kind: WriteKind,
    /// Resource type.
    pub resource_type: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// New body (create/upsert).
    pub body: Option<Value>,
    /// `If-Match` version.
    pub if_match: Option<u64>,
}

/// Who is writing: clients are held to the rules for client-submitted Subscriptions; the
/// server itself (handshake outcomes, error states) is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A REST client.
    Client,
    /// Herald itself.
    Server,
}

/// Runs a client write (resource + triggered events) and returns once it is durable.
pub async fn write(
    state: &AppState,
    tenant: &Arc<Tenant>,
    cmd: WriteCommand<'_>,
) -> ApiResult<WriteOutcome> {
    write_as(state, tenant, cmd, Actor::Client).await
}

/// Runs a write on behalf of `actor`.
pub async fn write_as(
    state: &AppState,
    tenant: &Arc<Tenant>,
    cmd: WriteCommand<'_>,
    actor: Actor,
) -> ApiResult<WriteOutcome> {
    // The stored body, where the change needs it: a delete is classified by what it removes,
    // and a topic write must drop the topic it replaces from the catalog.
    let may_be_topic = matches!(cmd.resource_type, "SubscriptionTopic" | "Basic");
    let prior = if cmd.kind == WriteKind::Delete || may_be_topic {
        state
            .store
            .resources
            .current(&tenant.name, cmd.resource_type, cmd.id)?
            .and_then(|s| s.resource)
    } else {
        None
    };
    let kind = match classify(tenant.version, cmd.resource_type, cmd.body.as_ref()) {
        Kind::Other => classify(tenant.version, cmd.resource_type, prior.as_ref()),
        k => k,
    };
    if kind == Kind::Subscription
        && actor == Actor::Client
        && let Some(body) = &cmd.body
    {
        check_egress(state, tenant.version, body).await?;
    }
    let related = Related::prefetch(
        &tenant.engine(),
        &*state.store.resources,
        &tenant.name,
        cmd.resource_type,
        cmd.id,
        cmd.body.as_ref(),
    );
    let mut changed_subscription: Option<Option<herald_subscriptions::Subscription>> = None;
    let mut synced = None;
    let request = |body| WriteRequest {
        tenant: &tenant.name,
        resource_type: cmd.resource_type,
        id: cmd.id,
        kind: cmd.kind,
        body,
        if_match: cmd.if_match,
    };
    let outcome = match kind {
        // The common case: batched with concurrent writes, one log record for all.
        Kind::Other => {
            let (outcome, sync) = state
                .committer
                .apply(Pending {
                    tenant: Arc::clone(tenant),
                    resource_type: cmd.resource_type.to_owned(),
                    id: cmd.id.to_owned(),
                    kind: cmd.kind,
                    body: cmd.body,
                    if_match: cmd.if_match,
                    related,
                })
                .await?;
            synced = Some(sync);
            outcome
        }
        Kind::Subscription | Kind::Topic => {
            // Subscription state changes hold the engine's write lock across the store write,
            // so no concurrent write can match against a half-updated index.
            let mut engine = tenant.engine_mut();
            let body = match (&cmd.body, kind) {
                (Some(b), Kind::Subscription) => {
                    let sub = match actor {
                        Actor::Client => validate_subscription(tenant.version, b, &engine.catalog),
                        // Herald's own status changes carry statuses clients may not submit.
                        Actor::Server => parse_subscription(tenant.version, b),
                    }
                    .map_err(ApiError::from)?;
                    if actor == Actor::Client {
                        check_end(&sub)?;
                        check_channel_delivered(state, &sub)?;
                    }
                    Some(prepare_subscription(
                        tenant.version,
                        b.clone(),
                        &sub,
                        actor,
                    )?)
                }
                (Some(b), _) => {
                    guard_builtin_topic(cmd.resource_type, cmd.id, actor)?;
                    validate_topic(tenant.version, b).map_err(ApiError::from)?;
                    Some(b.clone())
                }
                (None, Kind::Topic) => {
                    guard_builtin_topic(cmd.resource_type, cmd.id, actor)?;
                    if let Some(t) = prior
                        .as_ref()
                        .and_then(|e| parse_topic(tenant.version, e).ok())
                    {
                        guard_topic_in_use(state, tenant, &t.url)?;
                    }
                    None
                }
                (None, _) => None,
            };
            let previous_topic = prior
                .as_ref()
                .filter(|_| kind == Kind::Topic)
                .and_then(|e| parse_topic(tenant.version, e).ok());
            let mut hook = |c: &Change<'_>| -> Result<Vec<EventDraft>, String> {
                engine.events_for(c, &related)
            };
            let outcome = state.store.resources.apply(request(body), &mut hook)?;
            if outcome.changed {
                if let Some(old) = previous_topic {
                    engine.remove_topic(&old.url);
                }
                match (kind, &outcome.stored.resource) {
                    // Loaded only if it passes the same check as at start-up (a server
                    // write of a refused Subscription, e.g. its `error` status, keeps it out).
                    (Kind::Subscription, Some(b)) => match engine.admit(tenant.version, b) {
                        Ok(mut s) => {
                            s.id = cmd.id.to_owned();
                            changed_subscription = Some(Some(s.clone()));
                            engine.upsert_subscription(s);
                        }
                        Err(reason) => {
                            tracing::warn!(subscription = %cmd.id, %reason, "Subscription not loaded");
                            engine.matcher.remove_subscription(cmd.id);
                            changed_subscription = Some(None);
                        }
                    },
                    (Kind::Subscription, None) => {
                        engine.matcher.remove_subscription(cmd.id);
                        changed_subscription = Some(None);
                    }
                    (_, Some(b)) => match parse_topic(tenant.version, b) {
                        Ok(t) => engine.add_topic(t),
                        Err(e) => tracing::error!(error = %e, "stored topic does not parse"),
                    },
                    (_, None) => {}
                }
            }
            outcome
        }
    };
    if outcome.changed {
        match synced {
            Some(ticket) => state.store.resources.wait_durable(ticket).await?,
            None => state.store.resources.make_durable().await?,
        }
        // Only now, with the change durable, may delivery see it.
        match changed_subscription {
            Some(Some(sub)) => crate::cluster::upsert_delivery(state, tenant, sub),
            Some(None) => state.dispatcher.remove(&tenant.name, cmd.id),
            None => {}
        }
        announce(state, tenant, &outcome.events);
    }
    Ok(outcome)
}

/// Tells delivery about events that are durable now: each subscription's highest event number,
/// and with it every lower one (numbers are assigned in commit order). Call only after the
/// sync that made them durable.
pub fn announce(state: &AppState, tenant: &Tenant, events: &[(String, u64)]) {
    let mut durable: Vec<(&str, u64)> = Vec::new();
    for (sub, n) in events {
        match durable.iter_mut().find(|(s, _)| *s == sub.as_str()) {
            Some((_, upto)) => *upto = (*upto).max(*n),
            None => durable.push((sub, *n)),
        }
    }
    for (sub, upto) in durable {
        state.dispatcher.wake(&tenant.name, sub, upto);
    }
}

/// The egress guard at creation: a rest-hook endpoint that is (or resolves to) an internal
/// address is refused unless private endpoints are allowed or the allow-list admits it.
async fn check_egress(state: &AppState, version: FhirVersion, body: &Value) -> ApiResult<()> {
    let Ok(sub) = parse_subscription(version, body) else {
        return Ok(()); // validation reports what is wrong with it
    };
    if !matches!(
        sub.channel.kind,
        herald_subscriptions::ChannelType::RestHook | herald_subscriptions::ChannelType::Message
    ) {
        return Ok(());
    }
    let Some(endpoint) = &sub.channel.endpoint else {
        return Ok(());
    };
    herald_delivery::egress::check_endpoint(endpoint, &state.delivery.guard())
        .await
        .map_err(ApiError::from)
}

/// A channel type Herald does not deliver is refused: accepting it would record events that
/// nobody will ever receive, with a Subscription that says `requested` forever.
fn check_channel_delivered(
    state: &AppState,
    sub: &herald_subscriptions::Subscription,
) -> ApiResult<()> {
    if state.dispatcher.delivers(sub.channel.kind) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not-supported",
        format!(
            "channel type '{}' is not delivered by this server; use {}",
            sub.channel.kind.code(),
            delivered_list(state)
        ),
    ))
}

/// The delivered channel types, for messages.
fn delivered_list(state: &AppState) -> String {
    use herald_subscriptions::ChannelType::*;
    [RestHook, Websocket, Email, Message]
        .into_iter()
        .filter(|k| state.dispatcher.delivers(*k))
        .map(|k| format!("'{}'", k.code()))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The status a stored Subscription starts with. Clients may submit `requested` or `off`
/// (validation refuses the rest); a channel that needs a handshake stays `requested` until the
/// delivery side confirms it.
fn prepare_subscription(
    version: FhirVersion,
    mut body: Value,
    sub: &herald_subscriptions::Subscription,
    actor: Actor,
) -> ApiResult<Value> {
    if actor == Actor::Server {
        return Ok(body);
    }
    let status = match sub.status {
        SubscriptionStatus::Off => SubscriptionStatus::Off,
        _ => SubscriptionStatus::Requested,
    };
    herald_subscriptions::set_subscription_status(version, &mut body, status, None)
        .map_err(ApiError::from)?;
    Ok(body)
}

/// A Subscription asked to run must end in the future: the server turns it off when `end`
/// passes, so one that has already ended could never notify anything.
fn check_end(sub: &herald_subscriptions::Subscription) -> ApiResult<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match (sub.status, sub.end_ms()) {
        (SubscriptionStatus::Off, _) | (_, None) => Ok(()),
        (_, Some(end)) if end > now_ms => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "business-rule",
            format!(
                "Subscription.end ({}) has already passed; a subscription is turned off at its end",
                sub.end.as_deref().unwrap_or_default()
            ),
        )),
    }
}

fn guard_builtin_topic(resource_type: &str, id: &str, actor: Actor) -> ApiResult<()> {
    if actor == Actor::Client && builtin::BUILTIN_IDS.contains(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "{resource_type}/{id} is a built-in topic managed by Herald; it cannot be changed or deleted"
            ),
        ));
    }
    Ok(())
}

fn guard_topic_in_use(state: &AppState, tenant: &Tenant, url: &str) -> ApiResult<()> {
    let users: Vec<String> = state
        .store
        .resources
        .live_of_type(&tenant.name, "Subscription")
        .filter_map(Result::ok)
        .filter(|s| {
            s.resource
                .as_ref()
                .and_then(|b| parse_subscription(tenant.version, b).ok())
                .is_some_and(|sub| {
                    herald_subscriptions::catalog::canonical_url(&sub.topic)
                        == herald_subscriptions::catalog::canonical_url(url)
                })
        })
        .map(|s| s.id)
        .collect();
    if users.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "topic {url} is used by {} subscription(s) ({}); delete or re-point them first",
                users.len(),
                users.join(", ")
            ),
        ))
    }
}
