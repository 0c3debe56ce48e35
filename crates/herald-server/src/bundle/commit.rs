//! The all-or-nothing write behind a transaction and a FHIR message: every write of it in one
//! log record, matched in entry order (so its notifications follow that order), durable before
//! it is answered, or nothing at all.
//!
//! It runs beside the committer rather than through it: the committer's batches let each write
//! fail alone, which a transaction may not. Lock order is the same (engine, then store).

use std::sync::Arc;

use herald_store::{
    Atomic, Change, EventDraft, MessageRecord, WriteKind, WriteOutcome, WriteRequest,
};
use serde_json::Value;

use crate::engine::{Kind, Related, classify};
use crate::error::ApiError;
use crate::write::announce;
use crate::{AppState, Tenant};

/// One write of an atomic group.
#[derive(Debug, Clone)]
pub struct AtomicWrite {
    /// Resource type.
    pub resource_type: String,
    /// Logical id (already resolved).
    pub id: String,
    /// Create, upsert or delete.
    pub kind: WriteKind,
    /// New body (create/upsert).
    pub body: Option<Value>,
    /// `If-Match` version.
    pub if_match: Option<u64>,
}

/// What an atomic write did, once durable.
#[derive(Debug)]
pub enum Committed {
    /// Every write applied, in order.
    Applied(Vec<WriteOutcome>),
    /// The message was processed before: its recorded response; nothing was written.
    Duplicate(Vec<u8>),
}

/// A refusal: which write (if one is to blame) and why.
#[derive(Debug)]
pub struct Refusal {
    /// Index into the writes.
    pub index: Option<usize>,
    /// The error.
    pub error: ApiError,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal { index: None, error }
    }
}

/// Applies `writes` all or nothing (and records `message`'s response with them), then waits
/// until it is durable and tells delivery. Subscriptions and topics cannot be part of it: they
/// change the matcher itself, one at a time (`crate::write`).
pub async fn commit_atomic(
    state: &AppState,
    tenant: &Arc<Tenant>,
    writes: &[AtomicWrite],
    message: Option<MessageRecord<'_>>,
) -> Result<Committed, Refusal> {
    for (i, w) in writes.iter().enumerate() {
        if classify(tenant.version, &w.resource_type, w.body.as_ref()) != Kind::Other {
            return Err(Refusal {
                index: Some(i),
                error: ApiError::unprocessable(format!(
                    "{} cannot be written in a transaction or message (it changes what Herald matches); write it on its own or in a batch",
                    w.resource_type
                )),
            });
        }
    }
    // Related data as it will be once the earlier writes are in: a ServiceRequest and the Task
    // naming its owner may arrive together, in either order.
    let tasks: Vec<(&str, &Value)> = writes
        .iter()
        .filter(|w| w.resource_type == "Task")
        .filter_map(|w| w.body.as_ref().map(|b| (w.id.as_str(), b)))
        .collect();
    let requests: Vec<&str> = writes
        .iter()
        .filter(|w| w.resource_type == "ServiceRequest")
        .map(|w| w.id.as_str())
        .collect();
    let related: Vec<Related> = writes
        .iter()
        .map(|w| {
            Related::prefetch(
                &tenant.engine(),
                &*state.store.resources,
                &tenant.name,
                &w.resource_type,
                &w.id,
                w.body.as_ref(),
            )
            .with_tasks(&tasks)
            .without_requests(&requests)
        })
        .collect();
    let reqs: Vec<WriteRequest<'_>> = writes
        .iter()
        .map(|w| WriteRequest {
            tenant: &tenant.name,
            resource_type: &w.resource_type,
            id: &w.id,
            kind: w.kind,
            body: w.body.clone(),
            if_match: w.if_match,
        })
        .collect();
    let result = {
        let engine = tenant.engine();
        let mut hook = |i: usize, c: &Change<'_>| -> Result<Vec<EventDraft>, String> {
            engine.events_for(c, &related[i])
        };
        state
            .store
            .resources
            .apply_atomic(&reqs, message, &mut hook)
    };
    match result.map_err(|e| Refusal::from(ApiError::from(e)))? {
        Atomic::Refused { index, error } => Err(Refusal {
            index: Some(index),
            error: ApiError::from(error),
        }),
        Atomic::Duplicate(response) => Ok(Committed::Duplicate(response)),
        Atomic::Applied(outcomes) => {
            state
                .store
                .resources
                .make_durable()
                .await
                .map_err(|e| Refusal::from(ApiError::from(e)))?;
            let events: Vec<(String, u64)> = outcomes
                .iter()
                .flat_map(|o| o.events.iter().cloned())
                .collect();
            announce(state, tenant, &events);
            Ok(Committed::Applied(outcomes))
        }
    }
}
