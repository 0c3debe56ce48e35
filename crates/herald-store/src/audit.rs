//! The audit log of operator actions (retry, pause, resend, status changes made through the
//! admin API): who did what to which subscription and when. Kept apart from the delivery log
//! because it answers a different question ("who touched this?") and is never pruned by the
//! delivery log's retention.

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::error::{Result, StoreError};
use crate::wal::{Op, TreeId};

/// One operator action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (Unix ms).
    pub at_ms: u64,
    /// Same, as a FHIR instant.
    pub at: String,
    /// The caller (client id, `anonymous` when authentication is off).
    pub actor: String,
    /// `retry`, `pause`, `resume`, `resend`, `activate`, `off`.
    pub action: String,
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub subscription: String,
    /// What exactly (e.g. the event range resent).
    pub detail: Option<String>,
}

impl Store {
    /// Appends an action to the audit log (durable with the next log sync; the caller awaits
    /// [`Store::make_durable`] before answering).
    pub fn record_audit(&self, record: &AuditRecord) -> Result<()> {
        let mut key = record.at_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.wal.put(vec![Op::Put(TreeId::Audit, key, bytes)])
    }

    /// The newest `limit` actions, newest first, optionally of one subscription.
    pub fn audit(
        &self,
        tenant: Option<&str>,
        subscription: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let mut out = Vec::new();
        for kv in self.audit.iter().rev() {
            let (_, v) = kv?;
            let r: AuditRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if tenant.is_some_and(|t| t != r.tenant)
                || subscription.is_some_and(|s| s != r.subscription)
            {
                continue;
            }
            out.push(r);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
