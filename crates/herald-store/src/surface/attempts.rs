//! The delivery-attempt log: every attempt, paged by cursor for the admin API, and its
//! retention.

use super::BoxFuture;
use crate::{AttemptFilter, AttemptPage, AttemptRecord, Result, Store};

/// Delivery attempts, oldest first.
pub trait AttemptLog: Send + Sync {
    /// Appends an attempt (readable after the next [`AttemptLog::flush`] or write).
    fn record_attempt(&self, attempt: &AttemptRecord) -> Result<()>;

    /// The attempts matching `filter`, newest first: their total and `count` of them from
    /// `offset`.
    fn attempts(
        &self,
        filter: &AttemptFilter,
        offset: usize,
        count: usize,
    ) -> Result<(usize, Vec<AttemptRecord>)>;

    /// A page of attempts matching `filter`, newest first, below the cursor `after` (an
    /// attempt id from an earlier page); `None` when the cursor is not an attempt id.
    fn attempt_page(
        &self,
        filter: &AttemptFilter,
        after: Option<&str>,
        count: usize,
    ) -> Result<Option<AttemptPage>>;

    /// One attempt by id.
    fn attempt(&self, id: &str) -> Result<Option<AttemptRecord>>;

    /// Removes the oldest attempts beyond `keep`; returns how many went.
    fn prune_attempts(&self, keep: usize) -> Result<usize>;

    /// Removes the attempts made before `cutoff_ms`; returns how many went.
    fn prune_attempts_before(&self, cutoff_ms: u64) -> Result<usize>;

    /// Waits until every attempt recorded so far is durable and readable.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;
}

impl AttemptLog for Store {
    fn record_attempt(&self, attempt: &AttemptRecord) -> Result<()> {
        Store::record_attempt(self, attempt)
    }

    fn attempts(
        &self,
        filter: &AttemptFilter,
        offset: usize,
        count: usize,
    ) -> Result<(usize, Vec<AttemptRecord>)> {
        Store::attempts(self, filter, offset, count)
    }

    fn attempt_page(
        &self,
        filter: &AttemptFilter,
        after: Option<&str>,
        count: usize,
    ) -> Result<Option<AttemptPage>> {
        Store::attempt_page(self, filter, after, count)
    }

    fn attempt(&self, id: &str) -> Result<Option<AttemptRecord>> {
        Store::attempt(self, id)
    }

    fn prune_attempts(&self, keep: usize) -> Result<usize> {
        Store::prune_attempts(self, keep)
    }

    fn prune_attempts_before(&self, cutoff_ms: u64) -> Result<usize> {
        Store::prune_attempts_before(self, cutoff_ms)
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Store::make_durable(self))
    }
}
