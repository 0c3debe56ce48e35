//! Durability of acknowledged writes: group commit.
//!
//! sled keeps writes in an in-memory log and makes *everything written so far* durable with one
//! `flush()`. So one flusher thread can commit many writers at once: each writer, after its
//! transaction has applied, takes a ticket; the flusher notes the highest ticket issued, flushes,
//! and publishes that ticket as durable. A writer is acknowledged once the durable ticket reaches
//! its own. There is no batching window: an idle flusher starts flushing the moment the first
//! ticket arrives, so a lone writer waits for exactly one flush, while writers that arrive during
//! a flush share the next one.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

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

/// The flusher: one OS thread that turns issued tickets into durable tickets.
pub(crate) struct GroupCommit {
    tickets: Arc<(Mutex<Tickets>, Condvar)>,
    durable: watch::Receiver<u64>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl GroupCommit {
    pub(crate) fn start(db: sled::Db) -> Self {
        let tickets = Arc::new((Mutex::new(Tickets::default()), Condvar::new()));
        let (tx, rx) = watch::channel(0u64);
        let shared = Arc::clone(&tickets);
        let handle = thread::Builder::new()
            .name("herald-group-commit".into())
            .spawn(move || flusher(db, shared, tx))
            .ok();
        if handle.is_none() {
            tracing::error!(
                "could not start the group-commit thread; writes will not be acknowledged"
            );
        }
        GroupCommit {
            tickets,
            durable: rx,
            thread: Mutex::new(handle),
        }
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

fn flusher(db: sled::Db, tickets: Arc<(Mutex<Tickets>, Condvar)>, durable: watch::Sender<u64>) {
    let (lock, cv) = &*tickets;
    let mut done = 0u64;
    loop {
        let target = {
            let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
            while t.issued == done && !t.stopping {
                t = cv.wait(t).unwrap_or_else(|p| p.into_inner());
            }
            if t.stopping && t.issued == done {
                return;
            }
            t.issued
        };
        // Every write holding a ticket <= target was applied before the ticket was issued, so
        // this flush covers it.
        match db.flush() {
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
