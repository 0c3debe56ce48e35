//! What the store reports about itself for operators: disk use and commit measurements.

use crate::Store;
use crate::stats::SyncStats;

/// The store's own measures.
pub trait Measures: Send + Sync {
    /// Bytes the store holds on disk.
    fn disk_bytes(&self) -> u64;

    /// How long making writes durable takes and how many it covers at once (empty where the
    /// backend does not batch).
    fn sync_stats(&self) -> &SyncStats;
}

impl Measures for Store {
    fn disk_bytes(&self) -> u64 {
        Store::disk_bytes(self)
    }

    fn sync_stats(&self) -> &SyncStats {
        Store::sync_stats(self)
    }
}
