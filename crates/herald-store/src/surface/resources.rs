//! Resources and their history: reads, and writes whose events are recorded with them.

use super::BoxFuture;
use crate::{
    Atomic, BatchHook, Hook, IndexLookup, MessageRecord, Result, Store, StoredVersion,
    WriteOutcome, WriteRequest,
};

/// What a caller holds to learn when the writes applied before it are durable (see
/// [`ResourceStore::request_durable`]). Opaque: its meaning is the backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableTicket(pub(crate) Option<u64>);

/// Resources, history and writes. A write is *applied* (visible to later writes, recorded with
/// its events, not yet acknowledged) and then made *durable*; callers acknowledge only after.
pub trait ResourceStore: Send + Sync {
    /// The current version, including a deletion tombstone.
    fn current(&self, tenant: &str, resource_type: &str, id: &str)
    -> Result<Option<StoredVersion>>;

    /// The live resource: `NotFound` if never written, `Gone` if deleted.
    fn read(&self, tenant: &str, resource_type: &str, id: &str) -> Result<StoredVersion>;

    /// One version (a deletion version is returned as such).
    fn read_version(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<StoredVersion>;

    /// All versions of one resource, newest first.
    fn history(&self, tenant: &str, resource_type: &str, id: &str) -> Result<Vec<StoredVersion>>;

    /// All versions of all resources of one type, newest first.
    fn type_history(&self, tenant: &str, resource_type: &str) -> Result<Vec<StoredVersion>>;

    /// Every live resource of one type, in id order.
    fn live_of_type<'a>(
        &'a self,
        tenant: &str,
        resource_type: &str,
    ) -> Box<dyn Iterator<Item = Result<StoredVersion>> + Send + 'a>;

    /// Applies one write and returns once it is durable.
    fn write<'a>(
        &'a self,
        req: WriteRequest<'a>,
        hook: Hook<'a>,
    ) -> BoxFuture<'a, Result<WriteOutcome>>;

    /// Applies one write, not yet durable (so a caller can hold a lock across the write but
    /// not across the wait for durability).
    fn apply(&self, req: WriteRequest<'_>, hook: Hook<'_>) -> Result<WriteOutcome>;

    /// Applies several writes together, in order, each seeing the ones before it and each
    /// succeeding or failing alone; not yet durable.
    fn apply_batch(
        &self,
        reqs: &[WriteRequest<'_>],
        hook: BatchHook<'_>,
    ) -> Result<Vec<Result<WriteOutcome>>>;

    /// Applies writes all or nothing, with a processed message's response if given (refused
    /// as a duplicate if that message has one already); not yet durable.
    fn apply_atomic(
        &self,
        reqs: &[WriteRequest<'_>],
        message: Option<MessageRecord<'_>>,
        hook: BatchHook<'_>,
    ) -> Result<Atomic>;

    /// The response kept for a processed message, by message id.
    fn message_response(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>>;

    /// Starts making every write applied so far durable, without waiting: the backend can get
    /// going while the caller does other work. Wait with [`ResourceStore::wait_durable`].
    fn request_durable(&self) -> DurableTicket;

    /// Waits until the writes a ticket covers are durable.
    fn wait_durable(&self, ticket: DurableTicket) -> BoxFuture<'_, Result<()>>;

    /// Waits until every write applied so far is durable.
    fn make_durable(&self) -> BoxFuture<'_, Result<()>>;

    /// Brings this copy up to date with what other nodes of a cluster wrote (the records it
    /// has not applied yet); returns how many it applied. Nothing to do on one machine.
    fn catch_up(&self) -> Result<usize>;

    /// Whether a search index is kept (else every search reads the whole type).
    fn search_index_enabled(&self) -> bool;

    /// Whether the index files parameter `code` of `resource_type` (a deployment may index
    /// only some): a criterion on one it does not is answered by a scan.
    fn search_index_covers(&self, tenant: &str, resource_type: &str, code: &str) -> bool;

    /// Ids of the live resources of one type filed under a key in any of `ranges` (half-open
    /// ranges of the indexer's keys), or [`IndexLookup::TooMany`] past `limit`.
    fn search_index(
        &self,
        tenant: &str,
        resource_type: &str,
        ranges: &[(Vec<u8>, Vec<u8>)],
        limit: Option<usize>,
    ) -> Result<IndexLookup>;
}

impl ResourceStore for Store {
    fn current(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>> {
        Store::current(self, tenant, resource_type, id)
    }

    fn read(&self, tenant: &str, resource_type: &str, id: &str) -> Result<StoredVersion> {
        Store::read(self, tenant, resource_type, id)
    }

    fn read_version(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<StoredVersion> {
        Store::read_version(self, tenant, resource_type, id, version)
    }

    fn history(&self, tenant: &str, resource_type: &str, id: &str) -> Result<Vec<StoredVersion>> {
        Store::history(self, tenant, resource_type, id)
    }

    fn type_history(&self, tenant: &str, resource_type: &str) -> Result<Vec<StoredVersion>> {
        Store::type_history(self, tenant, resource_type)
    }

    fn live_of_type<'a>(
        &'a self,
        tenant: &str,
        resource_type: &str,
    ) -> Box<dyn Iterator<Item = Result<StoredVersion>> + Send + 'a> {
        Box::new(Store::live_of_type(self, tenant, resource_type))
    }

    fn write<'a>(
        &'a self,
        req: WriteRequest<'a>,
        hook: Hook<'a>,
    ) -> BoxFuture<'a, Result<WriteOutcome>> {
        Box::pin(Store::write(self, req, hook))
    }

    fn apply(&self, req: WriteRequest<'_>, hook: Hook<'_>) -> Result<WriteOutcome> {
        Store::apply(self, req, hook)
    }

    fn apply_batch(
        &self,
        reqs: &[WriteRequest<'_>],
        hook: BatchHook<'_>,
    ) -> Result<Vec<Result<WriteOutcome>>> {
        Store::apply_batch(self, reqs, hook)
    }

    fn apply_atomic(
        &self,
        reqs: &[WriteRequest<'_>],
        message: Option<MessageRecord<'_>>,
        hook: BatchHook<'_>,
    ) -> Result<Atomic> {
        Store::apply_atomic(self, reqs, message, hook)
    }

    fn message_response(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>> {
        Store::message_response(self, tenant, id)
    }

    fn request_durable(&self) -> DurableTicket {
        Store::request_sync(self)
    }

    fn wait_durable(&self, ticket: DurableTicket) -> BoxFuture<'_, Result<()>> {
        Box::pin(Store::wait_synced(self, ticket))
    }

    fn make_durable(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Store::make_durable(self))
    }

    fn catch_up(&self) -> Result<usize> {
        Store::catch_up(self)
    }

    fn search_index_enabled(&self) -> bool {
        Store::search_index_enabled(self)
    }

    fn search_index_covers(&self, tenant: &str, resource_type: &str, code: &str) -> bool {
        Store::search_index_covers(self, tenant, resource_type, code)
    }

    fn search_index(
        &self,
        tenant: &str,
        resource_type: &str,
        ranges: &[(Vec<u8>, Vec<u8>)],
        limit: Option<usize>,
    ) -> Result<IndexLookup> {
        Store::search_index(self, tenant, resource_type, ranges, limit)
    }
}
