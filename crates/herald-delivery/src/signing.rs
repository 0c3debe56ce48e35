//! Signed notifications, per the Standard Webhooks scheme: what a rest-hook request carries so
//! that its receiver can tell it comes from Herald, unaltered and recent.
//!
//! * `webhook-id`: the notification's id, the same on every retry of it ([`message_id`]);
//! * `webhook-timestamp`: Unix seconds when the request was sent;
//! * `webhook-signature`: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per
//!   signing secret, space-separated (two during a rotation's overlap, the newest first).
//!
//! A secret is `whsec_` + base64 of [`SECRET_BYTES`] random bytes; the HMAC key is the decoded
//! bytes. Each Subscription gets its secret when it is first needed — its first rest-hook
//! delivery or the first `$signing-secret` call, whichever comes first — and keeps it in the
//! store's `secrets` tree (durable, removed with the Subscription). This module owns the format,
//! the signature and the message ids; the store only keeps the keys.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use herald_store::{DeliveryState, DeliveryStore, SigningKeys, SigningSecret, StoreError};

use crate::transition::Job;

/// Header with the notification's id.
pub const ID_HEADER: &str = "webhook-id";
/// Header with the send time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header with the signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret (the Standard Webhooks range is 24 to 64).
pub const SECRET_BYTES: usize = 32;
/// The resource type whose secrets these are (the store keys secrets by resource).
const RESOURCE_TYPE: &str = "Subscription";

/// Why signing material could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The operating system gave no random bytes.
    #[error("no randomness for a signing secret: {0}")]
    Random(String),
    /// A stored secret is not `whsec_` + base64.
    #[error("a stored signing secret is malformed")]
    Malformed,
    /// The store failed, or the Subscription is not live.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the rest-hook channel needs to sign one notification: its id and the HMAC keys, the
/// newest first. Its debug output shows the id only.
#[derive(Clone)]
pub struct Signing {
    /// `webhook-id`.
    pub id: String,
    macs: Vec<Hmac<Sha256>>,
}

impl fmt::Debug for Signing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signing")
            .field("id", &self.id)
            .field("keys", &self.macs.len())
            .finish()
    }
}

impl Signing {
    /// Signing material from decoded secrets (newest first).
    pub fn new(id: String, secrets: &[&SigningSecret]) -> Result<Signing, SigningError> {
        let macs = secrets
            .iter()
            .map(|s| {
                secret_key(&s.secret)
                    .and_then(|k| keyed(&k))
                    .ok_or(SigningError::Malformed)
            })
            .collect::<Result<_, _>>()?;
        Ok(Signing { id, macs })
    }

    /// The `webhook-signature` value for `body` sent at `timestamp`.
    pub fn header(&self, timestamp: u64, body: &[u8]) -> String {
        self.macs
            .iter()
            .map(|m| format!("v1,{}", sign_with(m.clone(), &self.id, timestamp, body)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A new secret, `whsec_` + base64 of [`SECRET_BYTES`] random bytes.
pub fn new_secret(now_ms: u64) -> Result<SigningSecret, SigningError> {
    Ok(SigningSecret {
        secret: format!(
            "{SECRET_PREFIX}{}",
            BASE64.encode(random::<SECRET_BYTES>()?)
        ),
        created_at_ms: now_ms,
        expires_at_ms: None,
    })
}

/// New signing keys: a fresh secret and a fresh message-id seed.
pub fn new_keys(now_ms: u64) -> Result<SigningKeys, SigningError> {
    Ok(SigningKeys {
        current: new_secret(now_ms)?,
        previous: None,
        id_seed: hex(&random::<16>()?),
    })
}

fn random<const N: usize>() -> Result<[u8; N], SigningError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SigningError::Random(e.to_string()))?;
    Ok(b)
}

/// The HMAC key of a secret: the base64-decoded part after `whsec_`.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    BASE64
        .decode(secret.strip_prefix(SECRET_PREFIX)?)
        .ok()
        .filter(|k| !k.is_empty())
}

/// `base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`; `None` for an empty key.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> Option<String> {
    Some(sign_with(keyed(key)?, id, timestamp, body))
}

/// An HMAC-SHA256 keyed with `key` (any non-empty length: RFC 2104 hashes longer keys first).
fn keyed(key: &[u8]) -> Option<Hmac<Sha256>> {
    if key.is_empty() {
        return None;
    }
    Hmac::<Sha256>::new_from_slice(key).ok()
}

fn sign_with(mut mac: Hmac<Sha256>, id: &str, timestamp: u64, body: &[u8]) -> String {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

/// The `webhook-id` of a notification: `msg_` + 32 hex digits of SHA-256 over the subscription's
/// id seed, its tenant and id, the notification type and what tells this notification apart from
/// the others of its type while staying the same across its retries:
///
/// * events: the range `first-last` (a retry after more events arrived may carry a wider range:
///   that is a different notification, with a different id; event numbers still deduplicate);
/// * handshake and heartbeat: when anything was last delivered (`last_sent_at_ms`), which only a
///   success moves, so retries keep it and the next heartbeat (or handshake) gets a new id.
///
/// The seed is random per Subscription, so a Subscription deleted and created again under the
/// same id does not repeat its predecessor's ids; restarts do not change ids (all inputs are
/// stored).
pub fn message_id(
    keys: &SigningKeys,
    tenant: &str,
    subscription: &str,
    job: Job,
    state: &DeliveryState,
) -> String {
    let which = match job {
        Job::Events(first, last) => format!("event-notification\0{first}-{last}"),
        Job::Handshake => format!("handshake\0{}", state.last_sent_at_ms.unwrap_or(0)),
        Job::Heartbeat => format!("heartbeat\0{}", state.last_sent_at_ms.unwrap_or(0)),
    };
    let mut h = Sha256::new();
    for part in [keys.id_seed.as_str(), tenant, subscription, which.as_str()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("msg_{}", hex(&h.finalize()[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signing keys of a Subscription, made (durably) when it has none yet.
pub async fn keys_for(
    store: &dyn DeliveryStore,
    tenant: &str,
    subscription: &str,
    now_ms: u64,
) -> Result<SigningKeys, SigningError> {
    if let Some(k) = store.signing_keys(tenant, RESOURCE_TYPE, subscription)? {
        return Ok(k);
    }
    let fresh = new_keys(now_ms)?;
    Ok(store
        .signing_keys_or_insert(tenant, RESOURCE_TYPE, subscription, fresh)
        .await?)
}

/// Replaces a Subscription's secret; the old one keeps signing for `overlap_secs`.
pub async fn rotate(
    store: &dyn DeliveryStore,
    tenant: &str,
    subscription: &str,
    now_ms: u64,
    overlap_secs: u64,
) -> Result<SigningKeys, SigningError> {
    let fresh = new_keys(now_ms)?;
    Ok(store
        .rotate_signing_secret(
            tenant,
            RESOURCE_TYPE,
            subscription,
            fresh,
            now_ms,
            overlap_secs.saturating_mul(1000),
        )
        .await?)
}

/// What one notification is signed with: its id and the secrets signing at `now_ms`.
pub async fn prepare(
    store: &dyn DeliveryStore,
    tenant: &str,
    subscription: &str,
    job: Job,
    state: &DeliveryState,
    now_ms: u64,
) -> Result<Signing, SigningError> {
    let keys = keys_for(store, tenant, subscription, now_ms).await?;
    let id = message_id(&keys, tenant, subscription, job, state);
    Signing::new(id, &keys.signing_at(now_ms))
}

#[cfg(test)]
mod tests;
