//! Durability of acknowledged writes: group commit.
//!
//! sled keeps writes in an in-memory log and makes *everything written so far* durable with one
//! `flush()`. So one flusher thread can commit many writers at once: each writer, after its
//! transaction has applied, takes a ticket; the flusher notes the highest ticket issued, flushes,
//! and publishes that ticket as durable. A writer is acknowledged once the durable ticket reaches
//! its own. There is no batching window: an idle flusher starts flushing the moment the first
//! ticket arrives, so a lone writer waits for exactly one flush, while writers that arrive during
//! a flush share the next one.
//!
//! One subtlety of sled 0.34: a flush holds sled's concurrency lock until its fsync returns, and
//! a transaction needs that lock exclusively, so writers pile up behind a running flush. When it
//! ends they apply one after another; a flusher that started again at the first new ticket would
//! lock the rest out and commit them one by one. So the flusher lets the writers that are
//! *already applying* finish first (counted by [`GroupCommit::applying`], bounded by
//! `GATHER_MAX`): with no writer in the middle of a transaction it does not wait at all.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, StoreError};

/// How writes are made durable before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// fsync before acknowledging; concurrent writers share one flush (the default).
    #[default]
    GroupCommit,
    /// fsync before acknowledging; every writer issues its own flush (baseline for benchmarks).
    FlushPerWrite,
    /// Acknowledge without waiting for fsync: sled flushes in the background (about every
    /// 500 ms), so a crash can lose the last acknowledged writes. For benchmarks and tests only.
    Off,
}

#[derive(Default)]
struct Tickets {
    issued: u64,
    stopping: bool,
}

/// Longest a flush waits for writers that are in the middle of applying a transaction.
const GATHER_MAX: Duration = Duration::from_millis(2);

/// The flusher: one OS thread that turns issued tickets into durable tickets.
pub(crate) struct GroupCommit {
    tickets: Arc<(Mutex<Tickets>, Condvar)>,
    applying: Arc<AtomicUsize>,
    flushing: Arc<AtomicBool>,
    durable: watch::Receiver<u64>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl GroupCommit {
    pub(crate) fn start(db: sled::Db) -> Self {
        let tickets = Arc::new((Mutex::new(Tickets::default()), Condvar::new()));
        let (tx, rx) = watch::channel(0u64);
        let shared = Arc::clone(&tickets);
        let applying = Arc::new(AtomicUsize::new(0));
        let gathering = Arc::clone(&applying);
        let flushing = Arc::new(AtomicBool::new(false));
        let in_flush = Arc::clone(&flushing);
        let handle = thread::Builder::new()
            .name("herald-group-commit".into())
            .spawn(move || flusher(db, shared, gathering, in_flush, tx))
            .ok();
        if handle.is_none() {
            tracing::error!(
                "could not start the group-commit thread; writes will not be acknowledged"
            );
        }
        GroupCommit {
            tickets,
            applying,
            flushing,
            durable: rx,
            thread: Mutex::new(handle),
        }
    }

    /// Marks a writer as applying a transaction until the guard drops (see the module doc).
    pub(crate) fn applying(&self) -> ApplyingGuard<'_> {
        self.applying.fetch_add(1, Ordering::SeqCst);
        ApplyingGuard(&self.applying)
    }

    /// Is a flush running right now (so a transaction would wait for its fsync)?
    pub(crate) fn flushing(&self) -> bool {
        self.flushing.load(Ordering::SeqCst)
    }

    /// Issues a ticket for a write that has already been applied to sled's log.
    pub(crate) fn ticket(&self) -> u64 {
        let (lock, cv) = &*self.tickets;
        let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
        t.issued += 1;
        let ticket = t.issued;
        cv.notify_one();
        ticket
    }

    /// A ticket that the *next* flush will cover, without asking for one: for writes that can
    /// ride along with other writers' flushes.
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
            .map_err(|_| StoreError::Corrupt("the group-commit thread stopped".into()))
    }

    pub(crate) fn stop(&self) {
        {
            let (lock, cv) = &*self.tickets;
            let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
            t.stopping = true;
            cv.notify_one();
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Counts a writer out of [`GroupCommit::applying`] when dropped.
pub(crate) struct ApplyingGuard<'a>(&'a AtomicUsize);

impl Drop for ApplyingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn flusher(
    db: sled::Db,
    tickets: Arc<(Mutex<Tickets>, Condvar)>,
    applying: Arc<AtomicUsize>,
    flushing: Arc<AtomicBool>,
    durable: watch::Sender<u64>,
) {
    let (lock, cv) = &*tickets;
    let mut done = 0u64;
    loop {
        let woke = {
            let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
            while t.issued == done && !t.stopping {
                t = cv.wait(t).unwrap_or_else(|p| p.into_inner());
            }
            if t.stopping && t.issued == done {
                return;
            }
            t.issued
        };
        // Let the writers already inside a transaction join this flush.
        let gather_start = Instant::now();
        while applying.load(Ordering::SeqCst) > 0 && gather_start.elapsed() < GATHER_MAX {
            thread::sleep(Duration::from_micros(50));
        }
        let target = {
            let t = lock.lock().unwrap_or_else(|p| p.into_inner());
            t.issued.max(woke)
        };
        // Every write holding a ticket <= target was applied before the ticket was issued, so
        // this flush covers it.
        flushing.store(true, Ordering::SeqCst);
        let flushed = db.flush();
        flushing.store(false, Ordering::SeqCst);
        match flushed {
            Ok(_) => {
                done = target;
                durable.send_replace(target);
            }
            Err(e) => {
                // Never acknowledge what is not on disk: keep the waiters waiting and retry.
                tracing::error!(error = %e, "flush failed; retrying");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
