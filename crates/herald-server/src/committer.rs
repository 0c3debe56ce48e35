//! The committer: one thread that applies concurrent resource writes in batches, one store
//! write (one log record, one pass under the log lock) per batch.
//!
//! Why: a write's fixed costs — taking the store's log lock, the `write(2)` of its log record,
//! the engine read lock — are paid once per batch instead of once per write, and writers never
//! contend for those locks among themselves. Writers hand their write to this thread and await
//! the outcome; the thread takes every write waiting (up to [`MAX_BATCH`]), applies them in order
//! ([`herald_store::ResourceStore::apply_batch`]) with the tenant's matcher as the hook, and answers each.
//! Durability is unchanged: each writer then waits for the group commit, so the writes of a
//! batch share one log sync.
//!
//! Only writes that leave subscription state alone come here. A Subscription or topic write
//! changes the matcher itself and runs on its own under the engine's write lock
//! (`crate::write`). Lock order is engine, then store, on both paths: the committer takes the
//! engines' read locks *before* calling the store, never inside it.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use herald_store::{
    Change, DurableTicket, EventDraft, ResourceStore, StoreError, WriteKind, WriteOutcome,
    WriteRequest,
};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::Tenant;
use crate::engine::{Engine, Related};

/// Most writes applied in one batch. Bounds the time a batch holds the log lock (and so the
/// latency the first write of a batch pays for the others).
pub const MAX_BATCH: usize = 256;

/// A write handed to the committer, owning what applying it needs.
pub struct Pending {
    /// The tenant written to.
    pub tenant: Arc<Tenant>,
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Create, upsert or delete.
    pub kind: WriteKind,
    /// New body (create/upsert).
    pub body: Option<Value>,
    /// `If-Match` version.
    pub if_match: Option<u64>,
    /// Related resources the matcher may need, read before the write is applied.
    pub related: Related,
}

struct Job {
    write: Pending,
    reply: oneshot::Sender<Result<(WriteOutcome, DurableTicket), StoreError>>,
}

/// The handle writers use; the thread stops when the last handle is dropped.
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committer thread. Fails only if the OS refuses a thread (start-up).
    pub fn start(store: Arc<dyn ResourceStore>) -> std::io::Result<Committer> {
        let (jobs, rx) = mpsc::channel();
        thread::Builder::new()
            .name("herald-committer".into())
            .spawn(move || run(&*store, &rx))?;
        Ok(Committer { jobs })
    }

    /// Applies `write` and asks for it to be made durable: the caller waits for that with
    /// [`ResourceStore::wait_durable`] before acknowledging.
    pub async fn apply(&self, write: Pending) -> Result<(WriteOutcome, DurableTicket), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .map_err(|_| StoreError::Unavailable("the server is stopping".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the server is stopping".into()))?
    }
}

fn run(store: &dyn ResourceStore, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(store, batch);
    }
}

/// Applies one batch and answers every writer in it.
fn commit(store: &dyn ResourceStore, mut batch: Vec<Job>) {
    // The bodies move into the requests (no copy of the JSON).
    let bodies: Vec<Option<Value>> = batch.iter_mut().map(|j| j.write.body.take()).collect();
    // Engine read guards first (lock order: engine, then store), one per tenant in the batch.
    let mut tenants: Vec<&Arc<Tenant>> = Vec::new();
    let slot: Vec<usize> = batch
        .iter()
        .map(
            |j| match tenants.iter().position(|t| Arc::ptr_eq(t, &j.write.tenant)) {
                Some(i) => i,
                None => {
                    tenants.push(&j.write.tenant);
                    tenants.len() - 1
                }
            },
        )
        .collect();
    let engines: Vec<std::sync::RwLockReadGuard<'_, Engine>> =
        tenants.iter().map(|t| t.engine()).collect();
    let requests: Vec<WriteRequest<'_>> = batch
        .iter()
        .zip(bodies)
        .map(|(j, body)| WriteRequest {
            tenant: &j.write.tenant.name,
            resource_type: &j.write.resource_type,
            id: &j.write.id,
            kind: j.write.kind,
            body,
            if_match: j.write.if_match,
        })
        .collect();
    let m = &*crate::metrics::METRICS;
    let mut hook = |i: usize, c: &Change<'_>| -> Result<Vec<EventDraft>, String> {
        let began = std::time::Instant::now();
        let events = engines[slot[i]].events_for(c, &batch[i].write.related);
        m.match_seconds.observe(began.elapsed().as_secs_f64());
        m.matched_changes.inc();
        events
    };
    let results = store.apply_batch(&requests, &mut hook);
    drop(requests);
    drop(engines);
    match results {
        Ok(results) => {
            // One sync for the batch, asked for before any writer is woken.
            let sync = store.request_durable();
            for r in results.iter().flatten().filter(|o| o.changed) {
                m.writes.inc();
                m.events.inc_by(r.events.len() as u64);
            }
            for (job, result) in batch.into_iter().zip(results) {
                let result = result.map(|outcome| (outcome, sync));
                // A writer that went away (client disconnected) no longer needs its answer.
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "a write batch failed; none of it was applied");
            let message = e.to_string();
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(StoreError::Unavailable(message.clone())));
            }
        }
    }
}
