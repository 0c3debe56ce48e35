//! The audit log of operator actions.

use super::BoxFuture;
use crate::{AuditRecord, Result, Store};

/// Operator actions, newest first when read.
pub trait AuditLog: Send + Sync {
    /// Appends an action (durable after [`AuditLog::flush`]).
    fn record_audit(&self, record: &AuditRecord) -> Result<()>;

    /// Up to `limit` actions, newest first, optionally of one tenant and subscription.
    fn audit(
        &self,
        tenant: Option<&str>,
        subscription: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>>;

    /// Waits until every action recorded so far is durable.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;
}

impl AuditLog for Store {
    fn record_audit(&self, record: &AuditRecord) -> Result<()> {
        Store::record_audit(self, record)
    }

    fn audit(
        &self,
        tenant: Option<&str>,
        subscription: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        Store::audit(self, tenant, subscription, limit)
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Store::make_durable(self))
    }
}
