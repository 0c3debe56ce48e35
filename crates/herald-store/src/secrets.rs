//! Signing secrets (`secrets` tree): the keys with which Herald signs what it sends for a
//! resource — today the rest-hook notifications of a Subscription (Standard Webhooks). Keyed like
//! the resource (`tenant \0 type \0 id`), one [`SigningKeys`] value per resource.
//!
//! The store only keeps them: secrets are made by the caller (the store has no randomness and
//! knows nothing of their format). Every change goes through the write-ahead log like any other
//! write and is durable before it is returned, so a secret handed to a subscriber or used to sign
//! a notification survives a crash. Creation happens under the log lock, which makes it atomic
//! with the resource's deletion: a secret is only created for a live resource, and deleting the
//! resource removes its secret in the same log record (`apply_one`).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::wal::{Op, TreeId, View};
use crate::{Store, decode_version, keys};

/// One signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    /// The secret as handed to the subscriber (`whsec_…`).
    pub secret: String,
    /// When it was made (Unix ms).
    pub created_at_ms: u64,
    /// When it stops signing (Unix ms); `None` while it is the current secret.
    pub expires_at_ms: Option<u64>,
}

/// Never prints the secret (debug output ends up in logs).
impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret")
            .field("secret", &"[redacted]")
            .field("created_at_ms", &self.created_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The signing state of one resource: its current secret and, during a rotation's overlap, the
/// one it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeys {
    /// The secret made last; it signs first.
    pub current: SigningSecret,
    /// The secret `current` replaced, signing alongside it until its `expires_at_ms`.
    pub previous: Option<SigningSecret>,
    /// Random, made with the first secret and kept across rotations: message ids are derived
    /// from it, so they differ between a resource and one created later under the same id.
    pub id_seed: String,
}

impl SigningKeys {
    /// The secrets that sign at `now_ms`: the current one, then the previous one while its
    /// overlap lasts.
    pub fn signing_at(&self, now_ms: u64) -> Vec<&SigningSecret> {
        let mut out = vec![&self.current];
        if let Some(p) = &self.previous
            && p.expires_at_ms.is_some_and(|t| now_ms < t)
        {
            out.push(p);
        }
        out
    }
}

impl Store {
    /// The durable signing keys of a resource, if it has any.
    pub fn signing_keys(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<SigningKeys>> {
        self.secrets
            .get(keys::resource(tenant, resource_type, id))?
            .map(|b| decode_keys(&b))
            .transpose()
    }

    /// The signing keys of a resource, storing `fresh` first when it has none; returns once
    /// what it returns is durable. Fails with `NotFound`/`Gone` when the resource is not live.
    /// Concurrent callers all get the same keys (the first one's `fresh`).
    pub async fn signing_keys_or_insert(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        fresh: SigningKeys,
    ) -> Result<SigningKeys> {
        if let Some(k) = self.signing_keys(tenant, resource_type, id)? {
            return Ok(k);
        }
        let key = keys::resource(tenant, resource_type, id);
        let keys = self.wal.write(|view| {
            if let Some(b) = view.get(TreeId::Secrets, &key)? {
                // Made by a concurrent caller, maybe not durable yet: the sync below covers it.
                return Ok((decode_keys(&b)?, Vec::new()));
            }
            ensure_live(view, &key, resource_type, id)?;
            let ops = vec![Op::Put(TreeId::Secrets, key.clone(), encode_keys(&fresh)?)];
            Ok((fresh.clone(), ops))
        })?;
        self.make_durable().await?;
        Ok(keys)
    }

    /// Makes `fresh` the current secret of a resource. The secret it replaces keeps signing
    /// until `now_ms + overlap_ms` (not at all when `overlap_ms` is 0); one replaced before
    /// stops at once. A resource without keys gets `fresh` as its first. Returns once durable;
    /// fails with `NotFound`/`Gone` when the resource is not live.
    pub async fn rotate_signing_secret(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        fresh: SigningKeys,
        now_ms: u64,
        overlap_ms: u64,
    ) -> Result<SigningKeys> {
        let key = keys::resource(tenant, resource_type, id);
        let keys = self.wal.write(|view| {
            ensure_live(view, &key, resource_type, id)?;
            let next = match view.get(TreeId::Secrets, &key)? {
                None => fresh.clone(),
                Some(b) => {
                    let old = decode_keys(&b)?;
                    let previous = (overlap_ms > 0).then(|| SigningSecret {
                        expires_at_ms: Some(now_ms.saturating_add(overlap_ms)),
                        ..old.current
                    });
                    SigningKeys {
                        current: fresh.current.clone(),
                        previous,
                        id_seed: old.id_seed,
                    }
                }
            };
            let ops = vec![Op::Put(TreeId::Secrets, key.clone(), encode_keys(&next)?)];
            Ok((next, ops))
        })?;
        self.make_durable().await?;
        Ok(keys)
    }
}

/// Refuses unless the resource under `key` is live (read under the log lock).
fn ensure_live(view: &View<'_>, key: &[u8], resource_type: &str, id: &str) -> Result<()> {
    let current = view
        .get(TreeId::Resources, key)?
        .map(|b| decode_version(&b))
        .transpose()?;
    match current {
        None => Err(StoreError::NotFound {
            resource_type: resource_type.into(),
            id: id.into(),
        }),
        Some(v) if v.is_deleted() => Err(StoreError::Gone {
            resource_type: resource_type.into(),
            id: id.into(),
            version: v.version,
        }),
        Some(_) => Ok(()),
    }
}

fn encode_keys(k: &SigningKeys) -> Result<Vec<u8>> {
    serde_json::to_vec(k).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A decoding error names where, not what: serde's message may quote the value (the secret).
fn decode_keys(b: &[u8]) -> Result<SigningKeys> {
    serde_json::from_slice(b).map_err(|e| {
        StoreError::Corrupt(format!(
            "signing keys: {:?} error at line {}, column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}
