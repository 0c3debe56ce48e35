//! Delivery leases in a JetStream key-value bucket: one live node delivers each rest-hook or
//! message subscription at a time (docs/cluster.md).
//!
//! A lease is a key (`<tenant>.<subscription id>`) whose value is the holder's node id. `create`
//! takes a free one (it fails while the key exists); `update` at the revision last seen renews
//! one's own (it fails once someone else wrote it). The bucket's `max_age` is the lease's time
//! to live: a node that stops renewing loses the key to expiry, and another node's `create`
//! succeeds. The bucket's stream is made by hand because the client's `create_key_value` cannot
//! read nats-server 2.9.10's reply (rust-stack.md §3); the settings are the ones it would use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use bytes::Bytes;
use herald_server::cluster::Leases;

use crate::LEASE_BUCKET;
use crate::connection::Nats;
use crate::error::ClusterError;

/// Leases held in the bucket [`LEASE_BUCKET`].
pub struct KvLeases {
    nats: Arc<Nats>,
    kv: kv::Store,
    ttl: Duration,
    /// The revision of each lease this node holds.
    held: Mutex<HashMap<String, u64>>,
}

impl KvLeases {
    /// Opens the bucket, creating its stream when missing.
    pub fn open(nats: Arc<Nats>, replicas: usize, ttl: Duration) -> Result<KvLeases, ClusterError> {
        let js = nats.jetstream.clone();
        let kv = nats
            .run(async move {
                js.get_or_create_stream(stream::Config {
                    name: format!("KV_{LEASE_BUCKET}"),
                    subjects: vec![format!("$KV.{LEASE_BUCKET}.>")],
                    max_messages_per_subject: 1,
                    max_age: ttl,
                    storage: StorageType::File,
                    num_replicas: replicas.max(1),
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: DiscardPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
                js.get_key_value(LEASE_BUCKET)
                    .await
                    .map_err(|e| e.to_string())
            })?
            .map_err(|reason| ClusterError::JetStream {
                what: format!("lease bucket {LEASE_BUCKET}"),
                reason,
            })?;
        Ok(KvLeases {
            nats,
            kv,
            ttl,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Leases for KvLeases {
    fn hold(&self, key: &str) -> bool {
        let revision = self.held().get(key).copied();
        let kv = self.kv.clone();
        let (k, me) = (key.to_owned(), Bytes::from(self.nats.node_id.clone()));
        let answer = self.nats.run(async move {
            if let Some(rev) = revision
                && let Ok(next) = kv.update(&k, me.clone(), rev).await
            {
                return Some(next);
            }
            // Not held, or the renewal failed: free (expired) keys can be taken.
            kv.create(&k, me).await.ok()
        });
        match answer {
            Ok(Some(rev)) => {
                self.held().insert(key.to_owned(), rev);
                true
            }
            _ => {
                self.held().remove(key);
                false
            }
        }
    }

    fn release(&self, key: &str) {
        self.held().remove(key);
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}
