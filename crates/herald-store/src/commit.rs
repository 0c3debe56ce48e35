//! Durability of acknowledged writes: group commit on the write-ahead log, and checkpoints.
//!
//! A write is durable once the log segment it was appended to has been `fdatasync`ed, and one
//! sync covers *everything appended so far*. So one flusher thread commits many writers at
//! once: each writer, after its record is appended, takes a ticket; the flusher notes the
//! highest ticket issued, syncs, and publishes that ticket as durable. There is no batching
//! window: an idle flusher syncs the moment the first ticket arrives, so a lone writer waits for
//! exactly one sync, while writers that append during a sync share the next one. Appending never
//! waits for a sync (the log lock is not held across it), so writers keep going while the disk
//! works.
//!
//! The checkpointer thread bounds the log: every [`CHECKPOINT_EVERY`] (or sooner once a
//! segment passes [`CHECKPOINT_BYTES`]) it moves the log to a new segment and makes sled
//! durable, after which the old segment is deleted (`wal.rs`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, StoreError};
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

/// Longest time between checkpoints while anything was written.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// A segment this large is checkpointed at once (it bounds the replay at start-up).
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

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
    pub(crate) fn start(wal: Arc<Wal>) -> Self {
        let tickets = Arc::new((Mutex::new(Tickets::default()), Condvar::new()));
        let (tx, rx) = watch::channel(0u64);
        let shared = Arc::clone(&tickets);
        let handle = thread::Builder::new()
            .name("herald-group-commit".into())
            .spawn(move || flusher(&wal, &shared, &tx))
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

    /// Issues a ticket for a write that has already been appended to the log.
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
            .map_err(|_| StoreError::Unavailable("the group-commit thread stopped".into()))
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

fn flusher(wal: &Wal, tickets: &(Mutex<Tickets>, Condvar), durable: &watch::Sender<u64>) {
    let (lock, cv) = tickets;
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
        // Every write holding a ticket <= target was appended before its ticket was issued, so
        // before this point: the segment taken now holds it, or an older one that the
        // checkpoint synced before moving on.
        match wal.current_file().sync_data() {
            Ok(()) => {
                done = target;
                durable.send_replace(target);
            }
            Err(e) => {
                // Never acknowledge what is not on disk: keep the waiters waiting and retry.
                tracing::error!(error = %e, "write-ahead log sync failed; retrying");
                thread::sleep(Duration::from_millis(100));
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
    }
}
