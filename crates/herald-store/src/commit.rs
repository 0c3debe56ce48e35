//! Durability of acknowledged writes: group commit on the write-ahead log, and checkpoints.
//!
//! A write is durable once the log segment it was appended to has been `fdatasync`ed, and one
//! sync covers *everything appended before it started*. So a flusher commits many writers at
//! once: each writer, after its record is appended, takes a ticket; a flusher notes the highest
//! ticket issued, syncs, puts the records the sync covered into the engine (`Wal::sync`: readers
//! see only durable writes) and publishes that ticket as durable. There is no batching window: an
//! idle flusher syncs the moment the first ticket arrives, so a lone writer waits for exactly one
//! sync, while writers that append during a sync share the next one. Appending never waits for a
//! sync (the log lock is not held across it), so writers keep going while the disk works.
//!
//! [`FLUSHERS`] flusher threads share the tickets, so the next sync can start while one is still
//! running: the kernel and the disk overlap them (a single flusher left the disk idle between
//! syncs and measured slower than one sync per writer). A sync that ends publishes its target
//! only if it is higher than what is durable already, since syncs may finish out of order.
//!
//! The checkpointer thread bounds the log: every [`CHECKPOINT_EVERY`] (or sooner once a
//! segment passes [`CHECKPOINT_BYTES`]) it moves the log to a new segment and makes the engine
//! durable, after which the old segment is deleted (`wal.rs`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, StoreError};
use crate::stats::SyncStats;
use crate::wal::Wal;

/// How writes are made durable before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// fsync before acknowledging; concurrent writers share one sync (the default).
    #[default]
    GroupCommit,
    /// fsync before acknowledging; every writer issues its own sync (baseline for benchmarks).
    FlushPerWrite,
    /// Acknowledge without waiting for fsync: the log reaches the disk when the OS writes it
    /// back, so a machine crash (not a process crash) can lose the last acknowledged writes.
    /// For benchmarks and tests only.
    Off,
}

/// Syncs that may run at once (see the module doc).
const FLUSHERS: usize = 3;

/// Longest time between checkpoints while anything was written.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// A segment this large is checkpointed at once (it bounds the replay at start-up).
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

#[derive(Default)]
struct Tickets {
    /// Highest ticket handed out.
    issued: u64,
    /// Highest ticket a sync has started for (covered once that sync ends).
    started: u64,
    stopping: bool,
}

/// The flushers: OS threads that turn issued tickets into durable tickets.
pub(crate) struct GroupCommit {
    tickets: Arc<(Mutex<Tickets>, Condvar)>,
    durable: watch::Receiver<u64>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl GroupCommit {
    pub(crate) fn start(wal: Arc<Wal>, stats: Arc<SyncStats>) -> Self {
        let tickets = Arc::new((Mutex::new(Tickets::default()), Condvar::new()));
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut threads = Vec::with_capacity(FLUSHERS);
        for i in 0..FLUSHERS {
            let (wal, shared, tx) = (Arc::clone(&wal), Arc::clone(&tickets), Arc::clone(&tx));
            let stats = Arc::clone(&stats);
            match thread::Builder::new()
                .name(format!("herald-flush-{i}"))
                .spawn(move || flusher(&wal, &shared, &tx, &stats))
            {
                Ok(h) => threads.push(h),
                Err(e) => tracing::error!(error = %e, "could not start a group-commit thread"),
            }
        }
        if threads.is_empty() {
            tracing::error!("no group-commit thread runs; writes will not be acknowledged");
        }
        GroupCommit {
            tickets,
            durable: rx,
            threads: Mutex::new(threads),
        }
    }

    /// Issues a ticket for a write that has already been appended to the log.
    pub(crate) fn ticket(&self) -> u64 {
        let (lock, cv) = &*self.tickets;
        let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
        t.issued += 1;
        let ticket = t.issued;
        // Only wake a flusher when no started sync covers this ticket yet.
        if t.started < ticket {
            cv.notify_one();
        }
        ticket
    }

    /// A ticket that the *next* sync to start will cover, without asking for one: for writes
    /// that can ride along with other writers' syncs. (The next ticket issued is this number;
    /// whichever sync covers it started after this write was appended.)
    pub(crate) fn passive_ticket(&self) -> u64 {
        let (lock, _) = &*self.tickets;
        let t = lock.lock().unwrap_or_else(|p| p.into_inner());
        t.issued + 1
    }

    /// Waits until `ticket` is durable.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<()> {
        let mut rx = self.durable.clone();
        rx.wait_for(|d| *d >= ticket)
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Unavailable("the group-commit thread stopped".into()))
    }

    pub(crate) fn stop(&self) {
        {
            let (lock, cv) = &*self.tickets;
            let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
            t.stopping = true;
            cv.notify_all();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for h in threads {
            let _ = h.join();
        }
    }
}

fn flusher(
    wal: &Wal,
    tickets: &(Mutex<Tickets>, Condvar),
    durable: &watch::Sender<u64>,
    stats: &SyncStats,
) {
    let (lock, cv) = tickets;
    loop {
        let (target, batch) = {
            let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
            while t.issued == t.started && !t.stopping {
                t = cv.wait(t).unwrap_or_else(|p| p.into_inner());
            }
            if t.issued == t.started {
                return; // stopping, and every ticket is covered
            }
            let batch = t.issued - t.started;
            t.started = t.issued;
            (t.issued, batch)
        };
        let began = Instant::now();
        // Every write holding a ticket <= target was appended before its ticket was issued, so
        // before this point: the sync covers it (and puts it into the engine before it is
        // published).
        match wal.sync() {
            Ok(()) => {
                stats.observe(began.elapsed(), batch);
                durable.send_if_modified(|d| {
                    let newer = target > *d;
                    if newer {
                        *d = target;
                    }
                    newer
                });
            }
            Err(e) => {
                // Never acknowledge what is not on disk: hand the target back for a retry.
                tracing::error!(error = %e, "write-ahead log sync failed; retrying");
                thread::sleep(Duration::from_millis(100));
                let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
                t.started = t.started.min(*durable.borrow());
                cv.notify_one();
            }
        }
    }
}

/// The checkpointer thread (see the module doc).
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Checkpointer {
    pub(crate) fn start(wal: Arc<Wal>) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("herald-checkpoint".into())
            .spawn(move || checkpointer(&wal, &shared))
            .ok();
        if handle.is_none() {
            tracing::error!(
                "could not start the checkpoint thread; the log will grow until restart"
            );
        }
        Checkpointer {
            stop,
            thread: Mutex::new(handle),
        }
    }

    pub(crate) fn stop(&self) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_one();
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn checkpointer(wal: &Wal, stop: &(Mutex<bool>, Condvar)) {
    let (lock, cv) = stop;
    let mut last = Instant::now();
    loop {
        {
            let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (stopped, _) = cv
                .wait_timeout(stopped, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
        }
        let len = wal.segment_len();
        if len >= CHECKPOINT_BYTES || (len > 0 && last.elapsed() >= CHECKPOINT_EVERY) {
            match wal.checkpoint() {
                Ok(()) => last = Instant::now(),
                Err(e) => tracing::error!(error = %e, "checkpoint failed; the log is kept"),
            }
        }
        // The engine merges the files of earlier checkpoints here, off the write path (a no-op
        // when there is nothing to merge, and on sled).
        if let Err(e) = wal.compact() {
            tracing::warn!(error = %e, "engine compaction failed; it is retried");
        }
    }
}
