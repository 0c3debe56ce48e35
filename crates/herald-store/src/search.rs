//! The search index: the `search` tree, kept in the same log record as the resource write that
//! changes it, so a crash restores both or neither (replay re-applies the record whole).
//!
//! The store does not know FHIR: an [`Indexer`] supplied at open (by the server, which knows each
//! tenant's FHIR version) turns a resource into opaque keys. An entry is `tenant \0 type \0 key
//! \0 id` with an empty value; a write removes the keys of the version it replaces and puts those
//! of the new one (only the difference). The indexer's fingerprint is kept in the tree: when it
//! differs at open (new indexing code, other parameters, an index that was switched off, a data
//! directory from before the index) the tree is rebuilt from `resources` before anything is
//! served. With no indexer the tree is emptied, since writes no longer maintain it.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::wal::{Op, TreeId};
use crate::{Store, decode_version};

/// Computes the search-index keys of resources.
pub trait Indexer: Send + Sync + std::fmt::Debug {
    /// Identifies the key function (code version and definitions); a different one stored with
    /// the index makes the store rebuild it at open.
    fn fingerprint(&self) -> String;
    /// The keys a live resource is filed under; the store adds tenant, type and id. Must be a
    /// function of its arguments alone (an update removes what the old body's keys were).
    fn keys(&self, tenant: &str, resource_type: &str, resource: &Value) -> Vec<Vec<u8>>;
    /// Whether the keys of parameter `code` of `resource_type` are filed (a deployment may
    /// index only some parameters); lookups for one that is not must scan instead.
    fn covers(&self, tenant: &str, resource_type: &str, code: &str) -> bool {
        let _ = (tenant, resource_type, code);
        true
    }
}

/// What a lookup in the search index found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLookup {
    /// No index is kept (the store was opened without an indexer).
    Off,
    /// More than the limit asked for.
    TooMany,
    /// The ids, in id order.
    Ids(BTreeSet<String>),
}

/// Key of the fingerprint: no tenant name starts with 0xff (not UTF-8).
const FINGERPRINT: &[u8] = b"\xffindex-fingerprint";
const SEP: u8 = 0;

fn prefix(tenant: &str, resource_type: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + resource_type.len() + 2);
    k.extend_from_slice(tenant.as_bytes());
    k.push(SEP);
    k.extend_from_slice(resource_type.as_bytes());
    k.push(SEP);
    k
}

fn entry(prefix: &[u8], key: &[u8], id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + key.len() + id.len() + 1);
    k.extend_from_slice(prefix);
    k.extend_from_slice(key);
    k.push(SEP);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The ops that move a resource's entries from `old` keys to `new` keys (both sorted): only
/// the difference, so an update that leaves most parameters alone writes little.
pub(crate) fn diff_ops(
    tenant: &str,
    resource_type: &str,
    id: &str,
    mut old: Vec<Vec<u8>>,
    mut new: Vec<Vec<u8>>,
    ops: &mut Vec<Op>,
) {
    old.sort_unstable();
    old.dedup();
    new.sort_unstable();
    new.dedup();
    let p = prefix(tenant, resource_type);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o == n => {
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o < n => {
                ops.push(Op::Remove(TreeId::Search, entry(&p, o, id)));
                i += 1;
            }
            (Some(o), None) => {
                ops.push(Op::Remove(TreeId::Search, entry(&p, o, id)));
                i += 1;
            }
            (_, Some(n)) => {
                ops.push(Op::Put(TreeId::Search, entry(&p, n, id), Vec::new()));
                j += 1;
            }
            (None, None) => break,
        }
    }
}

impl Store {
    /// Whether a search index is kept (the store was opened with an indexer).
    pub fn search_index_enabled(&self) -> bool {
        self.indexer.is_some()
    }

    /// Whether the search index files parameter `code` of `resource_type` (false without an
    /// index): only then may a lookup of its keys stand for a scan.
    pub fn search_index_covers(&self, tenant: &str, resource_type: &str, code: &str) -> bool {
        self.indexer
            .as_ref()
            .is_some_and(|i| i.covers(tenant, resource_type, code))
    }

    /// Ids of the live resources of one type filed under a key in any of `ranges` (half-open
    /// `[start, end)` ranges of the indexer's keys), or [`IndexLookup::TooMany`] past `limit`.
    /// Reads durable state only, like every reader.
    pub fn search_index(
        &self,
        tenant: &str,
        resource_type: &str,
        ranges: &[(Vec<u8>, Vec<u8>)],
        limit: Option<usize>,
    ) -> Result<IndexLookup> {
        if self.indexer.is_none() {
            return Ok(IndexLookup::Off);
        }
        let p = prefix(tenant, resource_type);
        let mut ids = BTreeSet::new();
        for (start, end) in ranges {
            let (mut lo, mut hi) = (p.clone(), p.clone());
            lo.extend_from_slice(start);
            hi.extend_from_slice(end);
            for kv in self.search.range(lo..hi) {
                let (k, _) = kv?;
                let at = k.iter().rposition(|b| *b == SEP).map_or(k.len(), |i| i + 1);
                let id = std::str::from_utf8(&k[at..])
                    .map_err(|_| StoreError::Corrupt("search index id is not UTF-8".into()))?;
                ids.insert(id.to_owned());
                if limit.is_some_and(|l| ids.len() > l) {
                    return Ok(IndexLookup::TooMany);
                }
            }
        }
        Ok(IndexLookup::Ids(ids))
    }

    /// Makes the index match the indexer at open (see the module doc). Runs before the store
    /// serves anything, after the log is replayed.
    pub(crate) fn prepare_search_index(&self) -> Result<()> {
        let stored = self.search.get(FINGERPRINT)?;
        let Some(indexer) = &self.indexer else {
            if stored.is_some() || !self.search.is_empty()? {
                tracing::info!("search index switched off: its entries are dropped");
                self.search.clear()?;
                self.db.persist()?;
            }
            return Ok(());
        };
        let fingerprint = indexer.fingerprint();
        if stored.as_deref() == Some(fingerprint.as_bytes()) {
            return Ok(());
        }
        let began = Instant::now();
        tracing::info!(
            reason = if stored.is_some() {
                "its definition changed"
            } else {
                "none is stored"
            },
            "rebuilding the search index from the stored resources before serving"
        );
        self.search.clear()?;
        self.db.persist()?;
        let (mut resources, mut entries) = (0u64, 0u64);
        let mut pending = 0usize;
        for kv in self.resources.iter() {
            let (k, v) = kv?;
            let mut parts = k.splitn(3, |b| *b == SEP);
            let (Some(tenant), Some(rtype), Some(id)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(tenant), Ok(rtype), Ok(id)) = (
                std::str::from_utf8(tenant),
                std::str::from_utf8(rtype),
                std::str::from_utf8(id),
            ) else {
                continue;
            };
            let version = decode_version(&v)?;
            let Some(body) = &version.resource else {
                continue;
            };
            let p = prefix(tenant, rtype);
            for key in indexer.keys(tenant, rtype, body) {
                self.search.insert(&entry(&p, &key, id), &[])?;
                entries += 1;
                pending += 1;
            }
            resources += 1;
            if pending >= 1_000_000 {
                // Bounds the engine's in-memory table while a large store is indexed.
                self.db.persist()?;
                pending = 0;
            }
        }
        // The fingerprint last: a crash before it makes the next start rebuild again.
        self.db.persist()?;
        self.search.insert(FINGERPRINT, fingerprint.as_bytes())?;
        self.db.persist()?;
        // A bulk load leaves many files behind: merge them before serving reads.
        self.db.compact()?;
        tracing::info!(
            resources,
            entries,
            seconds = began.elapsed().as_secs_f64(),
            "search index rebuilt"
        );
        Ok(())
    }
}
