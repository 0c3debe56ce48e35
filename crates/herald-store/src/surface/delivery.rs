//! Delivery state (the acknowledged cursor, failures, the next attempt time) and the signing
//! secrets a subscription's requests are signed with.

use std::time::Duration;

use super::BoxFuture;
use crate::{DeliveryState, Result, SigningKeys, Store};

/// Per-subscription delivery bookkeeping.
pub trait DeliveryStore: Send + Sync {
    /// A subscription's delivery state (the default when none is stored).
    fn delivery_state(&self, tenant: &str, subscription: &str) -> Result<DeliveryState>;

    /// Replaces a subscription's delivery state (durable with the next
    /// [`DeliveryStore::make_cursor_durable`]).
    fn put_delivery_state(
        &self,
        tenant: &str,
        subscription: &str,
        state: &DeliveryState,
    ) -> Result<()>;

    /// Forgets a subscription's delivery state.
    fn remove_delivery_state(&self, tenant: &str, subscription: &str) -> Result<()>;

    /// Waits until every delivery state put so far is durable (a moved cursor, before the next
    /// batch is sent). With a `patience` above zero the backend may wait that long for other
    /// writes to share the cost; zero asks for it now.
    fn make_cursor_durable(&self, patience: Duration) -> BoxFuture<'_, Result<()>>;

    /// The signing keys of a resource, if it has any.
    fn signing_keys(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<SigningKeys>>;

    /// The signing keys of a resource, storing `fresh` (durably) if it has none.
    fn signing_keys_or_insert<'a>(
        &'a self,
        tenant: &'a str,
        resource_type: &'a str,
        id: &'a str,
        fresh: SigningKeys,
    ) -> BoxFuture<'a, Result<SigningKeys>>;

    /// Makes `fresh` the current secret, keeping the one it replaces for `overlap_ms`.
    fn rotate_signing_secret<'a>(
        &'a self,
        tenant: &'a str,
        resource_type: &'a str,
        id: &'a str,
        fresh: SigningKeys,
        now_ms: u64,
        overlap_ms: u64,
    ) -> BoxFuture<'a, Result<SigningKeys>>;
}

impl DeliveryStore for Store {
    fn delivery_state(&self, tenant: &str, subscription: &str) -> Result<DeliveryState> {
        Store::delivery_state(self, tenant, subscription)
    }

    fn put_delivery_state(
        &self,
        tenant: &str,
        subscription: &str,
        state: &DeliveryState,
    ) -> Result<()> {
        Store::put_delivery_state(self, tenant, subscription, state)
    }

    fn remove_delivery_state(&self, tenant: &str, subscription: &str) -> Result<()> {
        Store::remove_delivery_state(self, tenant, subscription)
    }

    fn make_cursor_durable(&self, patience: Duration) -> BoxFuture<'_, Result<()>> {
        if patience.is_zero() {
            Box::pin(Store::make_durable(self))
        } else {
            Box::pin(Store::make_durable_lazily(self, patience))
        }
    }

    fn signing_keys(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<SigningKeys>> {
        Store::signing_keys(self, tenant, resource_type, id)
    }

    fn signing_keys_or_insert<'a>(
        &'a self,
        tenant: &'a str,
        resource_type: &'a str,
        id: &'a str,
        fresh: SigningKeys,
    ) -> BoxFuture<'a, Result<SigningKeys>> {
        Box::pin(Store::signing_keys_or_insert(
            self,
            tenant,
            resource_type,
            id,
            fresh,
        ))
    }

    fn rotate_signing_secret<'a>(
        &'a self,
        tenant: &'a str,
        resource_type: &'a str,
        id: &'a str,
        fresh: SigningKeys,
        now_ms: u64,
        overlap_ms: u64,
    ) -> BoxFuture<'a, Result<SigningKeys>> {
        Box::pin(Store::rotate_signing_secret(
            self,
            tenant,
            resource_type,
            id,
            fresh,
            now_ms,
            overlap_ms,
        ))
    }
}
