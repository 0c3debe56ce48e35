//! Herald's durable state: resources and their history, per-subscription event logs and
//! counters, delivery bookkeeping, kept in an ordered key-value engine (`engine.rs`: LSM trees by
//! default, or sled) and made durable by Herald's own write-ahead log.
//!
//! One write (or a batch of them) is one log record holding every key it changes: the new
//! version (current + history) and, for every subscription the write hook says matched, the
//! bumped event counter and the numbered event. The write is acknowledged only once the group
//! commit has synced the record (design invariant 1), and only then does it reach the engine, so
//! readers see durable writes only (a write's keys appear together with its sync, one key at a
//! time); at start-up the log is re-applied to the engine (`wal.rs`).
//!
//! Callers hold the store's surfaces (`surface/`: one trait per concern, [`Surfaces`]), never
//! [`Store`] itself, so that another backend can stand behind them. The store knows no resource
//! format: a new version's body is stamped by the [`VersionStamp`] it was opened with.
#![forbid(unsafe_code)]

mod audit;
mod commit;
mod delivery;
mod engine;
mod error;
pub mod keys;
mod log;
mod messages;
mod record;
mod retention;
mod search;
mod secrets;
mod stamp;
pub mod stats;
mod surface;
mod wal;

use std::path::Path;
use std::time::SystemTime;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

pub use audit::AuditRecord;
pub use commit::Durability;
pub use delivery::{AttemptFilter, AttemptPage, AttemptRecord, DeliveryState};
pub use engine::EngineKind;
pub use error::{Result, StoreError};
pub use log::{Appended, Applied, MemoryLog, RecordLog};
pub use messages::{Atomic, MessageRecord};
pub use record::{EventDraft, EventFocus, EventRecord, Interaction, StoredVersion};
pub use retention::Pruned;
pub use search::{IndexLookup, Indexer};
pub use secrets::{SigningKeys, SigningSecret};
pub use stamp::{AsGiven, VersionStamp};
pub use surface::{
    AttemptLog, AuditLog, BoxFuture, DeliveryStore, DurableTicket, EventLog, Measures,
    ResourceStore, Surfaces,
};

use commit::{Checkpointer, GroupCommit};
use wal::{Op, TreeId, Trees, View, Wal};

/// How to open the store.
#[derive(Clone)]
pub struct StoreOptions {
    /// The engine's block-cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// The storage engine (`None`: the one the data directory holds, LSM for a new one).
    pub engine: Option<EngineKind>,
    /// Durability of acknowledged writes.
    pub durability: Durability,
    /// Stamps the bodies of new versions (the server's FHIR `id` and `meta`); the default
    /// stores bodies as given.
    pub stamp: Arc<dyn VersionStamp>,
    /// Keeps a search index with these keys (`None`: no index; search scans).
    pub indexer: Option<Arc<dyn Indexer>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 256 * 1024 * 1024,
            engine: None,
            durability: Durability::GroupCommit,
            stamp: Arc::new(AsGiven),
            indexer: None,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("cache_capacity_bytes", &self.cache_capacity_bytes)
            .field("engine", &self.engine)
            .field("durability", &self.durability)
            .field("search_index", &self.indexer.is_some())
            .finish_non_exhaustive()
    }
}

/// What a write does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Create; fails with [`StoreError::AlreadyExists`] if the id is live.
    Create,
    /// Update, or create when the id is new or deleted (update-as-create).
    Upsert,
    /// Delete; a no-op when the resource is absent or already deleted.
    Delete,
}

/// One write request.
#[derive(Debug, Clone)]
pub struct WriteRequest<'a> {
    /// Tenant name.
    pub tenant: &'a str,
    /// Resource type.
    pub resource_type: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// Create, upsert or delete.
    pub kind: WriteKind,
    /// The new body (for create and upsert), stamped with its version by the store's
    /// [`VersionStamp`] before it is stored.
    pub body: Option<Value>,
    /// `If-Match` version precondition.
    pub if_match: Option<u64>,
}

/// The change a write makes, as the write hook sees it.
#[derive(Debug)]
pub struct Change<'a> {
    /// Tenant name.
    pub tenant: &'a str,
    /// Resource type.
    pub resource_type: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// Create, update or delete.
    pub interaction: Interaction,
    /// The version before the change (live versions only).
    pub previous: Option<&'a Value>,
    /// The version after the change (`None` for a delete).
    pub current: Option<&'a Value>,
    /// The new version id.
    pub version: u64,
    /// The commit timestamp.
    pub last_updated: &'a str,
    /// The same instant in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// The result of a write, once durable.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The version now current.
    pub stored: StoredVersion,
    /// Whether a new version was written (false for a no-op update or a delete of nothing).
    pub changed: bool,
    /// (subscription id, event number) for every event the write recorded.
    pub events: Vec<(String, u64)>,
}

/// The write hook: called while the write is applied, under the log lock, and returns the
/// events to record. An `Err` refuses the write (nothing of it is written).
///
/// Every writer waits for that lock, so the hook must be quick and must **never write to the
/// store** (that would deadlock): read what it needs first.
pub type Hook<'h> =
    &'h mut (dyn FnMut(&Change<'_>) -> std::result::Result<Vec<EventDraft>, String> + Send);

/// The write hook of [`Store::apply_batch`]: like [`Hook`], told which write of the batch (by
/// index) the change belongs to.
pub type BatchHook<'h> =
    &'h mut (dyn FnMut(usize, &Change<'_>) -> std::result::Result<Vec<EventDraft>, String> + Send);

/// The embedded store: an LSM (or sled) engine as the index, Herald's write-ahead log for
/// durability. Callers
/// outside the binary's wiring use it through its [`Surfaces`].
pub struct Store {
    db: Arc<engine::Db>,
    resources: engine::Tree,
    history: engine::Tree,
    counters: engine::Tree,
    events: engine::Tree,
    delivery: engine::Tree,
    attempts: engine::Tree,
    /// Signing secrets of resources (rest-hook Subscriptions), see `secrets.rs`.
    secrets: engine::Tree,
    /// Operator actions, see `audit.rs`.
    audit: engine::Tree,
    /// Per subscription, the highest event number retention removed, see `retention.rs`.
    pruned: engine::Tree,
    /// The store's directory (disk use is measured there).
    dir: std::path::PathBuf,
    /// Log syncs and their batches, for `/metrics`.
    stats: Arc<stats::SyncStats>,
    /// Responses to processed FHIR messages, by message id, see `messages.rs`.
    messages: engine::Tree,
    /// The search index, see `search.rs`.
    search: engine::Tree,
    /// Computes the search index's keys (`None`: no index is kept).
    indexer: Option<Arc<dyn Indexer>>,
    /// Entries in `attempts` (an engine's `len` is a full scan; pruning needs the count often).
    attempts_len: std::sync::atomic::AtomicUsize,
    /// Events decoded by [`Store::events`] since open: what delivery reads is bounded by its
    /// batches, not by the backlog, and tests check that by counting (never by timing).
    events_read: std::sync::atomic::AtomicU64,
    wal: Arc<Wal>,
    durability: Durability,
    group: Option<GroupCommit>,
    checkpointer: Checkpointer,
    /// Stamps new versions' bodies (see `stamp.rs`).
    stamp: Arc<dyn VersionStamp>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, re-applying what the write-ahead log holds.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store> {
        Store::open_with(dir, options, None)
    }

    /// Opens (or creates) the store in `dir` as one replica of the shared `log`
    /// (docs/cluster.md): the records after the checkpointed position are applied first, then
    /// every write is appended to `log` (durable once it answers; no local sync) and applied
    /// here. The receiver gets what records of other replicas changed, once applied.
    pub fn open_replicated(
        dir: &Path,
        options: &StoreOptions,
        log: Arc<dyn RecordLog>,
    ) -> Result<(Store, tokio::sync::mpsc::UnboundedReceiver<Applied>)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let options = StoreOptions {
            durability: Durability::Off,
            ..options.clone()
        };
        Ok((Store::open_with(dir, &options, Some((log, tx)))?, rx))
    }

    fn open_with(
        dir: &Path,
        options: &StoreOptions,
        replica: Option<(
            Arc<dyn RecordLog>,
            tokio::sync::mpsc::UnboundedSender<Applied>,
        )>,
    ) -> Result<Store> {
        let started = std::time::Instant::now();
        let db = Arc::new(engine::Db::open(
            dir,
            options.engine,
            options.cache_capacity_bytes,
        )?);
        let trees = Trees::open(&db)?;
        let engine_open = started.elapsed();
        let defer = options.durability != Durability::Off;
        let mut wal = Wal::open(dir, Arc::clone(&db), trees.clone(), defer)?;
        if let Some((log, announce)) = replica {
            wal.replicate(log, announce)?;
        }
        let wal = Arc::new(wal);
        // Start-up time is what an orchestrator waits for: say where it went.
        tracing::info!(
            engine = db.kind().as_str(),
            engine_ms = engine_open.as_millis() as u64,
            log_ms = (started.elapsed() - engine_open).as_millis() as u64,
            "store opened"
        );
        let stats = Arc::new(stats::SyncStats::default());
        let group = match options.durability {
            Durability::GroupCommit => {
                Some(GroupCommit::start(Arc::clone(&wal), Arc::clone(&stats)))
            }
            _ => None,
        };
        let [
            resources,
            history,
            counters,
            events,
            delivery,
            attempts,
            secrets,
            audit,
            pruned,
            messages,
            search,
        ] = trees.0;
        let store = Store {
            attempts_len: std::sync::atomic::AtomicUsize::new(attempts.len()?),
            events_read: std::sync::atomic::AtomicU64::new(0),
            resources,
            history,
            counters,
            events,
            delivery,
            attempts,
            secrets,
            audit,
            pruned,
            dir: dir.to_path_buf(),
            stats,
            messages,
            checkpointer: Checkpointer::start(Arc::clone(&wal)),
            wal,
            db,
            durability: options.durability,
            group,
            stamp: Arc::clone(&options.stamp),
            search,
            indexer: options.indexer.clone(),
        };
        store.prepare_search_index()?;
        Ok(store)
    }

    /// Makes everything durable in the engine (a checkpoint) and stops the background threads. Call
    /// once at shutdown.
    pub fn close(&self) -> Result<()> {
        self.checkpointer.stop();
        self.wal.checkpoint()?;
        if let Some(g) = &self.group {
            g.stop();
        }
        Ok(())
    }

    /// On a replica: applies the records other replicas appended since this one last looked
    /// (they are reported to the receiver [`Store::open_replicated`] returned). Returns how many.
    /// A no-op on the embedded store.
    pub fn catch_up(&self) -> Result<usize> {
        self.wal.catch_up()
    }

    /// On a replica, the position in the shared log of the last record applied here.
    pub fn log_position(&self) -> Option<u64> {
        self.wal.position()
    }

    /// Writes one resource change and its events, and returns once it is durable.
    pub async fn write(&self, req: WriteRequest<'_>, hook: Hook<'_>) -> Result<WriteOutcome> {
        let outcome = self.apply(req, hook)?;
        if outcome.changed {
            self.make_durable().await?;
        }
        Ok(outcome)
    }

    /// Waits until every write applied so far is durable, preferably by riding along with the
    /// next sync other writers cause; only if none starts within `patience` does it ask for a
    /// sync of its own. For bookkeeping that must be durable before the caller goes on but is
    /// not worth a disk round trip of its own under load (the delivery cursor: under a steady
    /// write load every delivery would otherwise add a sync to the writers' own).
    pub(crate) async fn make_durable_lazily(&self, patience: std::time::Duration) -> Result<()> {
        match &self.group {
            Some(g) => {
                let ticket = g.passive_ticket();
                match tokio::time::timeout(patience, g.wait(ticket)).await {
                    Ok(r) => r,
                    Err(_) => g.wait(g.ticket()).await,
                }
            }
            None => self.make_durable().await,
        }
    }

    /// Waits until every write applied so far is durable, per the configured mode.
    pub async fn make_durable(&self) -> Result<()> {
        self.wait_synced(self.request_sync()).await
    }

    /// Asks for a sync covering every write applied so far, without waiting for it: the group
    /// commit can start on it while the writer is still being told. Wait with
    /// [`Store::wait_synced`].
    pub(crate) fn request_sync(&self) -> DurableTicket {
        DurableTicket(self.group.as_ref().map(GroupCommit::ticket))
    }

    /// Waits until the writes a [`DurableTicket`] covers are durable, per the configured mode.
    pub(crate) async fn wait_synced(&self, request: DurableTicket) -> Result<()> {
        match (&self.group, request.0, self.durability) {
            (Some(g), Some(ticket), _) => g.wait(ticket).await,
            (_, _, Durability::FlushPerWrite) => {
                let wal = Arc::clone(&self.wal);
                tokio::task::spawn_blocking(move || wal.sync())
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("sync task failed: {e}")))?
            }
            _ => Ok(()),
        }
    }

    /// Applies a write. It is **not yet durable**: acknowledge it only after
    /// [`Store::make_durable`] returns (which [`Store::write`] does). Split from `write` so a
    /// caller can hold a lock across the write without holding it across the fsync.
    pub fn apply(&self, req: WriteRequest<'_>, hook: Hook<'_>) -> Result<WriteOutcome> {
        let mut one = |_: usize, c: &Change<'_>| hook(c);
        self.apply_batch(std::slice::from_ref(&req), &mut one)?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("a batch of one gave no result".into())))
    }

    /// Applies several writes as **one** log record, in order, each seeing the ones before it
    /// (two updates of one resource in a batch get consecutive versions; events are numbered
    /// in batch order). Each write succeeds or fails on its own — a version conflict, an
    /// existing id, or a hook refusal leaves that write out and the others in — and the outer
    /// error is a storage failure, in which case nothing was written.
    ///
    /// Batching pays the log append (one `write(2)`) and the lock once for many writes. Like
    /// [`Store::apply`], nothing is durable until [`Store::make_durable`].
    pub fn apply_batch(
        &self,
        reqs: &[WriteRequest<'_>],
        hook: BatchHook<'_>,
    ) -> Result<Vec<Result<WriteOutcome>>> {
        let results = self.wal.write(|view| {
            let mut pending = Pending::new(view, self.indexer.as_deref());
            let mut out = Vec::with_capacity(reqs.len());
            for (i, req) in reqs.iter().enumerate() {
                let mut one = |c: &Change<'_>| hook(i, c);
                out.push(apply_one(&mut pending, &*self.stamp, req, &mut one)?);
            }
            Ok((out, pending.ops))
        })?;
        Ok(results
            .into_iter()
            .zip(reqs)
            .map(|(r, req)| match r {
                Ok(o) if o.stored.version == 0 => Err(StoreError::NotFound {
                    resource_type: req.resource_type.into(),
                    id: req.id.into(),
                }),
                other => other,
            })
            .collect())
    }

    /// The current version of a resource, including deletion tombstones.
    pub fn current(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>> {
        self.resources
            .get(keys::resource(tenant, resource_type, id))?
            .map(|b| decode_version(&b))
            .transpose()
    }

    /// Reads the live resource: `NotFound` if never written, `Gone` if deleted.
    pub fn read(&self, tenant: &str, resource_type: &str, id: &str) -> Result<StoredVersion> {
        match self.current(tenant, resource_type, id)? {
            None => Err(StoreError::NotFound {
                resource_type: resource_type.into(),
                id: id.into(),
            }),
            Some(v) if v.is_deleted() => Err(StoreError::Gone {
                resource_type: resource_type.into(),
                id: id.into(),
                version: v.version,
            }),
            Some(v) => Ok(v),
        }
    }

    /// Reads one version (a deletion version is returned as such; the caller answers 410).
    pub fn read_version(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<StoredVersion> {
        let key = keys::history(tenant, resource_type, id, version);
        if let Some(b) = self.history.get(&key)? {
            return decode_version(&b);
        }
        // The current version lives in `resources` only (see `apply_one`).
        let current = self.current(tenant, resource_type, id)?;
        match current {
            Some(c) if c.version == version => Ok(c),
            // An update moved it to `history` between the two reads.
            Some(c)
                if c.version > version
                    && let Some(b) = self.history.get(&key)? =>
            {
                decode_version(&b)
            }
            Some(_) => Err(StoreError::VersionNotFound {
                resource_type: resource_type.into(),
                id: id.into(),
                version,
            }),
            None => Err(StoreError::NotFound {
                resource_type: resource_type.into(),
                id: id.into(),
            }),
        }
    }

    /// All versions of one resource, newest first.
    pub fn history(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<StoredVersion>> {
        // Current first, then the older versions below it: a consistent list even when an
        // update moves the current version into `history` in between.
        let Some(current) = self.current(tenant, resource_type, id)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<StoredVersion> = self
            .scan_history(&keys::history_prefix(tenant, resource_type, id))?
            .into_iter()
            .filter(|v| v.version < current.version)
            .collect();
        out.push(current);
        out.reverse();
        Ok(out)
    }

    /// All versions of all resources of one type, newest first.
    pub fn type_history(&self, tenant: &str, resource_type: &str) -> Result<Vec<StoredVersion>> {
        let prefix = keys::resource_type_prefix(tenant, resource_type);
        let currents = self
            .resources
            .scan_prefix(&prefix)
            .map(|kv| kv.and_then(|(_, v)| decode_version(&v)))
            .collect::<Result<Vec<_>>>()?;
        let latest: HashMap<&str, u64> = currents
            .iter()
            .map(|c| (c.id.as_str(), c.version))
            .collect();
        let mut out: Vec<StoredVersion> = self
            .scan_history(&prefix)?
            .into_iter()
            .filter(|v| latest.get(v.id.as_str()).is_some_and(|n| v.version < *n))
            .collect();
        out.extend(currents);
        out.sort_by(|a, b| {
            b.last_updated
                .cmp(&a.last_updated)
                .then(b.version.cmp(&a.version))
        });
        Ok(out)
    }

    fn scan_history(&self, prefix: &[u8]) -> Result<Vec<StoredVersion>> {
        self.history
            .scan_prefix(prefix)
            .map(|kv| kv.and_then(|(_, v)| decode_version(&v)))
            .collect()
    }

    /// Every live resource of one type, in id order.
    pub fn live_of_type(
        &self,
        tenant: &str,
        resource_type: &str,
    ) -> impl Iterator<Item = Result<StoredVersion>> + '_ {
        self.resources
            .scan_prefix(keys::resource_type_prefix(tenant, resource_type))
            .map(|kv| kv.and_then(|(_, v)| decode_version(&v)))
            .filter(|r| !matches!(r, Ok(v) if v.is_deleted()))
    }

    /// Number of events recorded for a subscription, including those of writes whose log sync
    /// is still running (they are durable in a moment or lost with their write). For deciding
    /// whether more events are coming; what is reported uses [`Store::event_count`].
    pub fn recorded_event_count(&self, tenant: &str, subscription_id: &str) -> Result<u64> {
        Ok(keys::decode_u64(
            self.wal
                .view()
                .get(
                    TreeId::Counters,
                    &keys::subscription(tenant, subscription_id),
                )?
                .as_deref(),
        ))
    }

    /// Number of events recorded so far for a subscription (`eventsSinceSubscriptionStart`).
    pub fn event_count(&self, tenant: &str, subscription_id: &str) -> Result<u64> {
        Ok(keys::decode_u64(
            self.counters
                .get(keys::subscription(tenant, subscription_id))?
                .as_deref(),
        ))
    }

    /// Events `since..=until` (inclusive, either end optional) of one subscription, in order.
    pub fn events(
        &self,
        tenant: &str,
        subscription_id: &str,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<Vec<EventRecord>> {
        let lo = keys::event(tenant, subscription_id, since.unwrap_or(0));
        let hi = keys::event(tenant, subscription_id, until.unwrap_or(u64::MAX));
        self.events
            .range(lo..=hi)
            .map(|kv| {
                let (_, v) = kv?;
                self.events_read
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Events read by [`Store::events`] since the store was opened.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.checkpointer.stop();
        if let Some(g) = &self.group {
            g.stop();
        }
    }
}

/// The ops of a batch being computed, and a view of the store that sees them (a later write of
/// the batch reads what an earlier one wrote).
struct Pending<'t> {
    view: &'t View<'t>,
    /// Computes the search-index keys of the versions written (`None`: no index).
    indexer: Option<&'t dyn Indexer>,
    ops: Vec<Op>,
    /// The batch's own puts (`Some`) and removes (`None`).
    written: HashMap<(TreeId, Vec<u8>), Option<Vec<u8>>>,
}

impl<'t> Pending<'t> {
    fn new(view: &'t View<'t>, indexer: Option<&'t dyn Indexer>) -> Self {
        Pending {
            view,
            indexer,
            ops: Vec::new(),
            written: HashMap::new(),
        }
    }

    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.written.get(&(tree, key.to_vec())) {
            return Ok(v.clone());
        }
        self.view.get(tree, key)
    }

    fn put(&mut self, tree: TreeId, key: Vec<u8>, value: Vec<u8>) {
        self.written
            .insert((tree, key.clone()), Some(value.clone()));
        self.ops.push(Op::Put(tree, key, value));
    }

    fn remove(&mut self, tree: TreeId, key: Vec<u8>) {
        self.written.insert((tree, key.clone()), None);
        self.ops.push(Op::Remove(tree, key));
    }
}

/// One write of a batch: `Ok(Err(..))` refuses this write alone (nothing of it is written); the
/// outer error is a storage failure and fails the batch.
fn apply_one(
    pending: &mut Pending<'_>,
    stamp: &dyn VersionStamp,
    req: &WriteRequest<'_>,
    hook: &mut dyn FnMut(&Change<'_>) -> std::result::Result<Vec<EventDraft>, String>,
) -> Result<Result<WriteOutcome>> {
    let key = keys::resource(req.tenant, req.resource_type, req.id);
    let previous_bytes = pending.get(TreeId::Resources, &key)?;
    let previous = match &previous_bytes {
        Some(bytes) => Some(decode_version(bytes)?),
        None => None,
    };
    let prev_live = previous.as_ref().filter(|p| !p.is_deleted());
    let prev_version = previous.as_ref().map_or(0, |p| p.version);
    if let Some(expected) = req.if_match {
        let current = prev_live.map_or(0, |p| p.version);
        if expected != current {
            return Ok(Err(StoreError::VersionConflict {
                resource_type: req.resource_type.into(),
                id: req.id.into(),
                expected,
                current,
            }));
        }
    }
    let interaction = match (req.kind, prev_live) {
        (WriteKind::Create, Some(_)) => {
            return Ok(Err(StoreError::AlreadyExists {
                resource_type: req.resource_type.into(),
                id: req.id.into(),
            }));
        }
        (WriteKind::Delete, None) => return Ok(Ok(unchanged(previous.clone(), req))),
        (WriteKind::Delete, Some(_)) => Interaction::Delete,
        (_, Some(_)) => Interaction::Update,
        (_, None) => Interaction::Create,
    };
    let version = prev_version + 1;
    let (last_updated, at_ms) = commit_instant();
    let current = match &req.body {
        Some(body) if interaction != Interaction::Delete => {
            if let Some(prev) = prev_live.and_then(|p| p.resource.as_ref())
                && stamp.same_content(prev, body)
            {
                return Ok(Ok(unchanged(previous.clone(), req)));
            }
            Some(stamp.stamp(body, req.id, version, &last_updated))
        }
        _ => None,
    };
    if interaction != Interaction::Delete && current.is_none() {
        return Ok(Err(StoreError::Hook(
            "a create or update needs a body".into(),
        )));
    }
    let stored = StoredVersion {
        resource_type: req.resource_type.to_owned(),
        id: req.id.to_owned(),
        version,
        last_updated: last_updated.clone(),
        interaction,
        resource: current,
    };
    let change = Change {
        tenant: req.tenant,
        resource_type: req.resource_type,
        id: req.id,
        interaction,
        previous: prev_live.and_then(|p| p.resource.as_ref()),
        current: stored.resource.as_ref(),
        version,
        last_updated: &last_updated,
        at_ms,
    };
    let drafts = match hook(&change) {
        Ok(d) => d,
        Err(e) => return Ok(Err(StoreError::Hook(e))),
    };
    // The current version is kept once, in `resources`; the one it replaces moves to
    // `history` (as stored, not re-encoded). A create, the common write, stores its body once.
    if let Some(prev) = previous_bytes {
        pending.put(
            TreeId::History,
            keys::history(req.tenant, req.resource_type, req.id, prev_version),
            prev,
        );
    }
    // A resource's signing secrets die with it, in the same log record: a Subscription
    // created again under the same id gets a new secret, never its predecessor's.
    if interaction == Interaction::Delete && pending.get(TreeId::Secrets, &key)?.is_some() {
        pending.remove(TreeId::Secrets, key.clone());
    }
    pending.put(TreeId::Resources, key, encode_version(&stored)?);
    // The search index moves with the version, in the same record (`search.rs`). Its keys are
    // never read back by a write, so they skip `Pending::written`.
    if let Some(indexer) = pending.indexer {
        let keys = |body: Option<&Value>| {
            body.map(|b| indexer.keys(req.tenant, req.resource_type, b))
                .unwrap_or_default()
        };
        let old = keys(prev_live.and_then(|p| p.resource.as_ref()));
        let new = keys(stored.resource.as_ref());
        search::diff_ops(
            req.tenant,
            req.resource_type,
            req.id,
            old,
            new,
            &mut pending.ops,
        );
    }
    let recorded = record_events(pending, req, &stored, drafts)?;
    Ok(Ok(WriteOutcome {
        stored,
        changed: true,
        events: recorded,
    }))
}

fn record_events(
    pending: &mut Pending<'_>,
    req: &WriteRequest<'_>,
    stored: &StoredVersion,
    drafts: Vec<EventDraft>,
) -> Result<Vec<(String, u64)>> {
    let mut recorded = Vec::with_capacity(drafts.len());
    for d in drafts {
        let ckey = keys::subscription(req.tenant, &d.subscription_id);
        let number = keys::decode_u64(pending.get(TreeId::Counters, &ckey)?.as_deref()) + 1;
        pending.put(TreeId::Counters, ckey, keys::encode_u64(number).to_vec());
        let event = match d.focus {
            Some(f) => EventRecord {
                number,
                timestamp: stored.last_updated.clone(),
                topic: d.topic,
                focus_type: f.resource_type,
                focus_id: f.id,
                focus_version: f.version,
                // The focus itself did not change: what happened is news about it.
                interaction: Interaction::Update,
                additional_context: d.additional_context,
            },
            None => EventRecord {
                number,
                timestamp: stored.last_updated.clone(),
                topic: d.topic,
                focus_type: stored.resource_type.clone(),
                focus_id: stored.id.clone(),
                focus_version: stored.version,
                interaction: stored.interaction,
                additional_context: d.additional_context,
            },
        };
        let bytes = serde_json::to_vec(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        pending.put(
            TreeId::Events,
            keys::event(req.tenant, &d.subscription_id, number),
            bytes,
        );
        recorded.push((d.subscription_id, number));
    }
    Ok(recorded)
}

fn unchanged(previous: Option<StoredVersion>, req: &WriteRequest<'_>) -> WriteOutcome {
    WriteOutcome {
        stored: previous.unwrap_or_else(|| StoredVersion {
            resource_type: req.resource_type.into(),
            id: req.id.into(),
            version: 0,
            last_updated: String::new(),
            interaction: Interaction::Delete,
            resource: None,
        }),
        changed: false,
        events: Vec::new(),
    }
}

fn encode_version(v: &StoredVersion) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_version(bytes: &[u8]) -> Result<StoredVersion> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Current time as a FHIR instant with millisecond precision, UTC.
pub fn now_instant() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A version's `meta.lastUpdated`: the current time with microsecond precision, and strictly
/// after the one given to any earlier write in this process, so that "newest first" (type and
/// system history) follows commit order even for writes within the same millisecond. Also
/// returned in milliseconds since the Unix epoch.
fn commit_instant() -> (String, i64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_MICROS: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    let micros = loop {
        let next = now.max(last + 1);
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    let ms = i64::try_from(micros / 1000).unwrap_or(i64::MAX);
    (humantime::format_rfc3339_micros(at).to_string(), ms)
}

#[cfg(test)]
mod search_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod replica_tests;
