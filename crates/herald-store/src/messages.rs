//! All-or-nothing writes and the reliable-messaging cache (`messages` tree).
//!
//! A FHIR transaction (and a message, which Herald applies as one) must leave either every entry
//! written or none: [`Store::apply_atomic`] applies its writes in order as **one** log record, and
//! the first refusal drops the whole record. The hook sees each change as it is applied, so the
//! events the writes trigger are numbered in entry order and logged in the same record.
//!
//! FHIR messaging asks a receiver to process a message once however often it is sent, and to
//! answer a resend with the original response. The response is recorded under the message's
//! id in the same log record as what the message changed, and the check for an earlier record
//! runs under the log lock: two copies of one message racing each other cannot both apply, and
//! a crash leaves either both the changes and the record or neither.

use crate::error::{Result, StoreError};
use crate::wal::TreeId;
use crate::{BatchHook, Change, Pending, Store, WriteOutcome, WriteRequest, apply_one, keys};

/// A processed message to remember: `response` is what a resend of message `id` is answered
/// with (the caller's encoding; the store keeps bytes).
#[derive(Debug, Clone)]
pub struct MessageRecord<'a> {
    /// Tenant the message was sent to.
    pub tenant: &'a str,
    /// The message's stable id (R4 `MessageHeader.id`, R5 `Bundle.identifier`).
    pub id: &'a str,
    /// The encoded response.
    pub response: Vec<u8>,
}

/// What an atomic write did.
#[derive(Debug)]
pub enum Atomic {
    /// Every write was applied, in order, in one log record (not yet durable).
    Applied(Vec<WriteOutcome>),
    /// Write `index` was refused; nothing was written.
    Refused {
        /// Which write (index into the requests).
        index: usize,
        /// Why.
        error: StoreError,
    },
    /// The message was processed before: here is its recorded response; nothing was written.
    Duplicate(Vec<u8>),
}

impl Store {
    /// Applies `reqs` in order as one log record, or nothing when one is refused (a version
    /// conflict, an existing id, a hook refusal). With `message`, the record also remembers the
    /// message's response, unless that message was already processed ([`Atomic::Duplicate`]).
    /// Deleting what does not exist is not a refusal (the outcome says `changed: false`). Like
    /// [`Store::apply`], nothing is durable until [`Store::make_durable`].
    pub fn apply_atomic(
        &self,
        reqs: &[WriteRequest<'_>],
        message: Option<MessageRecord<'_>>,
        hook: BatchHook<'_>,
    ) -> Result<Atomic> {
        self.wal.write(|view| {
            let mut pending = Pending::new(view, self.indexer.as_deref());
            if let Some(m) = &message
                && let Some(earlier) =
                    pending.get(TreeId::Messages, &keys::message(m.tenant, m.id))?
            {
                return Ok((Atomic::Duplicate(earlier), Vec::new()));
            }
            let mut out = Vec::with_capacity(reqs.len());
            for (index, req) in reqs.iter().enumerate() {
                let mut one = |c: &Change<'_>| hook(index, c);
                match apply_one(&mut pending, &*self.stamp, req, &mut one)? {
                    Ok(o) => out.push(o),
                    Err(error) => return Ok((Atomic::Refused { index, error }, Vec::new())),
                }
            }
            if let Some(m) = &message {
                pending.put(
                    TreeId::Messages,
                    keys::message(m.tenant, m.id),
                    m.response.clone(),
                );
            }
            Ok((Atomic::Applied(out), pending.ops))
        })
    }

    /// The recorded response to message `id`, if it was processed.
    pub fn message_response(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .messages
            .get(keys::message(tenant, id))?
            .map(|v| v.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, StoreOptions, WriteKind};
    use serde_json::json;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(
            dir,
            &StoreOptions {
                durability: Durability::GroupCommit,
                ..StoreOptions::default()
            },
        )
        .expect("open")
    }

    fn create<'a>(id: &'a str, body: serde_json::Value) -> WriteRequest<'a> {
        WriteRequest {
            tenant: "r4",
            resource_type: "Task",
            id,
            kind: WriteKind::Create,
            body: Some(body),
            if_match: None,
        }
    }

    #[tokio::test]
    async fn one_refused_write_leaves_none_of_an_atomic_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut none = |_: usize, _: &Change<'_>| Ok(Vec::new());
        store
            .write(create("t0", json!({"resourceType":"Task"})), &mut |_| {
                Ok(Vec::new())
            })
            .await
            .expect("seed");
        let reqs = [
            create("t1", json!({"resourceType":"Task"})),
            create("t0", json!({"resourceType":"Task"})), // exists: refused
        ];
        match store.apply_atomic(&reqs, None, &mut none).expect("apply") {
            Atomic::Refused { index, error } => {
                assert_eq!(index, 1);
                assert!(matches!(error, StoreError::AlreadyExists { .. }));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        store.make_durable().await.expect("sync");
        assert!(store.current("r4", "Task", "t1").expect("read").is_none());
    }

    #[tokio::test]
    async fn a_hook_refusal_in_an_atomic_write_records_no_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut hook = |i: usize, _: &Change<'_>| {
            if i == 1 {
                Err("no".to_string())
            } else {
                Ok(vec![crate::EventDraft {
                    subscription_id: "s".into(),
                    topic: "t".into(),
                    ..Default::default()
                }])
            }
        };
        let reqs = [
            create("t1", json!({"resourceType":"Task"})),
            create("t2", json!({"resourceType":"Task"})),
        ];
        let out = store.apply_atomic(&reqs, None, &mut hook).expect("apply");
        assert!(matches!(out, Atomic::Refused { index: 1, .. }));
        assert_eq!(store.recorded_event_count("r4", "s").expect("count"), 0);
    }

    #[tokio::test]
    async fn a_message_is_applied_once_and_its_response_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            let mut hook = |_: usize, _: &Change<'_>| {
                Ok(vec![crate::EventDraft {
                    subscription_id: "s".into(),
                    topic: "t".into(),
                    ..Default::default()
                }])
            };
            let msg = |r: &[u8]| MessageRecord {
                tenant: "r4",
                id: "m1",
                response: r.to_vec(),
            };
            let reqs = [create("t1", json!({"resourceType":"Task"}))];
            let first = store
                .apply_atomic(&reqs, Some(msg(b"first")), &mut hook)
                .expect("apply");
            assert!(matches!(first, Atomic::Applied(ref o) if o.len() == 1));
            let reqs = [create("t2", json!({"resourceType":"Task"}))];
            match store
                .apply_atomic(&reqs, Some(msg(b"second")), &mut hook)
                .expect("apply")
            {
                Atomic::Duplicate(r) => assert_eq!(r, b"first"),
                other => panic!("expected a duplicate, got {other:?}"),
            }
            store.make_durable().await.expect("sync");
            assert!(store.current("r4", "Task", "t2").expect("read").is_none());
            assert_eq!(store.event_count("r4", "s").expect("count"), 1);
            // No close: the log alone must carry it.
        }
        let store = open(dir.path());
        assert_eq!(
            store.message_response("r4", "m1").expect("read"),
            Some(b"first".to_vec())
        );
        assert!(store.current("r4", "Task", "t1").expect("read").is_some());
    }
}
