//! What the group commit measures about itself, for `/metrics`: how long each log sync took and
//! how many writers it covered. Kept as prometheus-client histograms (lock-free atomics) where
//! the sync happens, so nothing is copied or aggregated twice; the server registers them.

use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Log-sync measurements.
#[derive(Debug, Clone)]
pub struct SyncStats {
    /// Seconds per `fdatasync` of the write-ahead log (including putting the synced records
    /// into the engine).
    pub sync_seconds: Histogram,
    /// Writers (tickets) one sync made durable.
    pub batch_size: Histogram,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            // 50 µs … ~1.6 s.
            sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 … 4096 writers.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        }
    }
}

impl SyncStats {
    pub(crate) fn observe(&self, took: Duration, batch: u64) {
        self.sync_seconds.observe(took.as_secs_f64());
        self.batch_size.observe(batch as f64);
    }
}

impl crate::Store {
    /// The group commit's measurements (empty unless durability is `group-commit`).
    pub fn sync_stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Bytes the store's directory holds on disk (the engine's files and the write-ahead log).
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }
}
