//! The server as one node of a cluster (docs/cluster.md): what it does with records other
//! nodes wrote, and which subscriptions this node delivers.
//!
//! The store applies other nodes' records to this node's index and reports each one
//! ([`herald_store::Applied`]); [`run_applied`] does for them what the write path does for a local
//! write: a written Subscription or topic is reloaded into the tenant's engine, recorded events
//! wake the dispatcher (`write::announce`). Rest-hook and message subscriptions are delivered by
//! the one node holding their lease ([`Leases`], implemented on NATS by `herald-cluster`);
//! websocket subscriptions by every node, to its own sockets. This module knows no NATS.

use std::sync::Arc;
use std::time::Duration;

use herald_store::Applied;
use herald_subscriptions::{ChannelType, Subscription, parse_topic};

use crate::engine::{Kind, classify};
use crate::{AppState, Tenant};

/// Delivery leases: one live node holds each key at a time.
pub trait Leases: Send + Sync {
    /// Takes the lease of `key` when it is free, renews it when this node holds it; true while
    /// this node holds it. Blocking (a round trip to the lease store).
    fn hold(&self, key: &str) -> bool;
    /// Forgets a lease this node no longer wants (it expires on its own).
    fn release(&self, key: &str);
    /// How long a lease lives without renewal.
    fn ttl(&self) -> Duration;
}

/// The lease key of a subscription.
pub fn lease_key(tenant: &str, id: &str) -> String {
    format!("{tenant}.{id}")
}

/// Whether this node delivers `sub` now: always on a single node; in a cluster, websocket
/// subscriptions everywhere (each node to its own sockets), the others only under their lease.
pub fn delivers_here(state: &AppState, tenant: &str, sub: &Subscription) -> bool {
    match &state.leases {
        None => true,
        Some(_) if sub.channel.kind == ChannelType::Websocket => true,
        Some(_) => state
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&lease_key(tenant, &sub.id)),
    }
}

/// Hands a subscription to the dispatcher if this node delivers it.
pub fn upsert_delivery(state: &AppState, tenant: &Tenant, sub: Subscription) {
    if delivers_here(state, &tenant.name, &sub) {
        state.dispatcher.upsert(&tenant.name, tenant.version, sub);
    }
}

/// Reacts to the records of other nodes as the store applies them, until the store stops.
pub async fn run_applied(
    state: Arc<AppState>,
    mut applied: tokio::sync::mpsc::UnboundedReceiver<Applied>,
) {
    while let Some(a) = applied.recv().await {
        for (tenant, rtype, id) in &a.resources {
            if let Some(t) = state.tenants.get(tenant) {
                reload(&state, t, rtype, id);
            }
        }
        for (tenant, sub, upto) in &a.events {
            state.dispatcher.wake(tenant, sub, *upto);
        }
    }
}

/// Brings the engine (and the dispatcher) up to date with a resource another node wrote.
fn reload(state: &AppState, tenant: &Tenant, rtype: &str, id: &str) {
    let Ok(Some(current)) = state.store.resources.current(&tenant.name, rtype, id) else {
        return;
    };
    let body = current.resource.clone();
    // A topic that was replaced or deleted leaves the catalog under its old URL.
    let previous = (current.version > 1)
        .then(|| {
            state
                .store
                .resources
                .read_version(&tenant.name, rtype, id, current.version - 1)
                .ok()
        })
        .flatten()
        .and_then(|v| v.resource);
    let kind = match classify(tenant.version, rtype, body.as_ref()) {
        Kind::Other => classify(tenant.version, rtype, previous.as_ref()),
        k => k,
    };
    match kind {
        Kind::Other => {}
        Kind::Topic => {
            let mut engine = tenant.engine_mut();
            if let Some(old) = previous
                .as_ref()
                .and_then(|b| parse_topic(tenant.version, b).ok())
            {
                engine.remove_topic(&old.url);
            }
            if let Some(t) = body
                .as_ref()
                .and_then(|b| parse_topic(tenant.version, b).ok())
            {
                engine.add_topic(t);
            }
        }
        Kind::Subscription => {
            let admitted = {
                let mut engine = tenant.engine_mut();
                match body.as_ref().map(|b| engine.admit(tenant.version, b)) {
                    Some(Ok(mut s)) => {
                        s.id = id.to_owned();
                        engine.upsert_subscription(s.clone());
                        Some(s)
                    }
                    _ => {
                        engine.matcher.remove_subscription(id);
                        None
                    }
                }
            };
            match admitted {
                Some(s) => upsert_delivery(state, tenant, s),
                // Its delivery state was removed by the node that wrote the deletion.
                None => state.dispatcher.release(&tenant.name, id),
            }
        }
    }
}

/// Takes, renews and gives up delivery leases, forever: every third of the lease's life, each
/// rest-hook or message subscription of every tenant is claimed; a lease won hands the
/// subscription to this node's dispatcher (which reads the delivery state the previous owner
/// left in the log), a lease lost takes it away.
pub async fn run_leases(state: Arc<AppState>, leases: Arc<dyn Leases>) {
    let period = leases.ttl() / 3;
    loop {
        let wanted = delivered_by_lease(&state);
        let leases2 = Arc::clone(&leases);
        let keys: Vec<String> = wanted
            .iter()
            .map(|(t, s)| lease_key(&t.name, &s.id))
            .collect();
        let won = tokio::task::spawn_blocking(move || {
            keys.iter().map(|k| leases2.hold(k)).collect::<Vec<bool>>()
        })
        .await
        .unwrap_or_default();
        for ((tenant, sub), now) in wanted.into_iter().zip(won) {
            let key = lease_key(&tenant.name, &sub.id);
            let before = {
                let mut held = state.held.lock().unwrap_or_else(|p| p.into_inner());
                let before = held.contains(&key);
                if now {
                    held.insert(key.clone());
                } else {
                    held.remove(&key);
                }
                before
            };
            match (before, now) {
                (false, true) => {
                    tracing::info!(tenant = %tenant.name, subscription = %sub.id, "delivery lease taken: this node delivers it");
                    // Up to date with the log first: the cursor the last owner left.
                    let store = Arc::clone(&state.store.resources);
                    let _ = tokio::task::spawn_blocking(move || store.catch_up()).await;
                    let durable = state
                        .store
                        .events
                        .event_count(&tenant.name, &sub.id)
                        .unwrap_or(0);
                    let id = sub.id.clone();
                    state.dispatcher.upsert(&tenant.name, tenant.version, sub);
                    state.dispatcher.wake(&tenant.name, &id, durable);
                }
                (true, false) => {
                    tracing::warn!(tenant = %tenant.name, subscription = %sub.id, "delivery lease lost: another node delivers it");
                    leases.release(&key);
                    state.dispatcher.release(&tenant.name, &sub.id);
                }
                _ => {}
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// The loaded subscriptions delivered under a lease (rest-hook and message).
fn delivered_by_lease(state: &AppState) -> Vec<(Arc<Tenant>, Subscription)> {
    let mut out = Vec::new();
    for t in state.tenants.values() {
        let engine = t.engine();
        for stored in state
            .store
            .resources
            .live_of_type(&t.name, "Subscription")
            .flatten()
        {
            let Some(body) = &stored.resource else {
                continue;
            };
            if let Ok(mut s) = engine.admit(t.version, body)
                && s.channel.kind != ChannelType::Websocket
            {
                s.id = stored.id.clone();
                out.push((Arc::clone(t), s));
            }
        }
    }
    out
}
