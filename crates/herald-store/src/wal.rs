//! Herald's write-ahead log: what makes a write durable.
//!
//! Every mutation of the store is a list of puts and removes on named trees. It is appended to
//! the log as one checksummed record, under one lock, so the log order is the order of writes.
//! Durability is an `fdatasync` of the log file (the group commit in `commit.rs` shares one
//! between concurrent writers, and several may run at once). Only a record that is durable is
//! put into the engine (`engine.rs`: LSM trees, or sled) — in log order — so the engine, and
//! every reader, holds nothing that could still be lost; writes computed meanwhile read the
//! pending records first ([`View`]). The engine is written without transactions and without
//! waiting, and catches up on disk at a **checkpoint**: the log moves to a new segment, the
//! engine persists its trees (fsynced), and the older segments are deleted. At start-up every
//! record still in the log is re-applied to the engine (puts and removes of whole values are
//! idempotent), so it ends up holding every acknowledged write, whatever it had persisted when
//! the process or the machine stopped.
//!
//! Why not an engine's own transactions and journal: in sled 0.34 each transaction seals sled's
//! in-memory log twice (each a `pwrite` + `sync_file_range` on its IO threads) and, once any
//! transaction has run, every read goes through a global lock that a flush holds until its disk
//! write returns. That made a write cost several disk round trips and serialised writers behind
//! every flush. Here a write costs one `write(2)` into the page cache, and the flush that makes
//! it durable runs while the next writers keep appending; the LSM engine is used without a
//! journal of its own for the same reason (this log is its journal).
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`; payload: `count: u32`, then
//! per op `kind: u8 (1 put, 2 remove) | tree: u8 | key_len: u32 | key | [value_len: u32 | value]`.
//! A record that is short or fails its checksum ends the log (a torn tail from a crash while
//! appending); it can only be the last one, since nothing was acknowledged after it.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::{Db, Tree};
use crate::error::{Result, StoreError};
use crate::log::{Appended, Applied, RecordLog};

/// The trees of the store, in the order their ids are written to the log (never reorder).
pub(crate) const TREE_NAMES: [&str; 11] = [
    "resources",
    "history",
    "counters",
    "events",
    "delivery",
    "attempts",
    "secrets",
    "audit",
    "pruned",
    "messages",
    "search",
];

/// A tree's id in log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TreeId {
    Resources = 0,
    History = 1,
    Counters = 2,
    Events = 3,
    Delivery = 4,
    Attempts = 5,
    Secrets = 6,
    /// Operator actions (`audit.rs`).
    Audit = 7,
    /// Per subscription, the highest event number removed by retention (`retention.rs`).
    Pruned = 8,
    /// Responses to processed FHIR messages (`messages.rs`).
    Messages = 9,
    /// The search index (`search.rs`).
    Search = 10,
}

/// One mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put(TreeId, Vec<u8>, Vec<u8>),
    Remove(TreeId, Vec<u8>),
}

/// The engine's trees, indexed by [`TreeId`].
#[derive(Clone)]
pub(crate) struct Trees(pub(crate) [Tree; 11]);

impl Trees {
    pub(crate) fn open(db: &Db) -> Result<Trees> {
        let mut trees = Vec::with_capacity(TREE_NAMES.len());
        for name in TREE_NAMES {
            trees.push(db.open_tree(name)?);
        }
        let trees: [Tree; 11] = trees
            .try_into()
            .map_err(|_| StoreError::Corrupt("tree list".into()))?;
        Ok(Trees(trees))
    }

    pub(crate) fn get(&self, id: TreeId) -> &Tree {
        &self.0[id as usize]
    }

    fn apply(&self, ops: &[Op]) -> Result<()> {
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    self.get(*t).insert(k, v)?;
                }
                Op::Remove(t, k) => {
                    self.get(*t).remove(k)?;
                }
            }
        }
        Ok(())
    }
}

fn tree_id(b: u8) -> Option<TreeId> {
    Some(match b {
        0 => TreeId::Resources,
        1 => TreeId::History,
        2 => TreeId::Counters,
        3 => TreeId::Events,
        4 => TreeId::Delivery,
        5 => TreeId::Attempts,
        6 => TreeId::Secrets,
        7 => TreeId::Audit,
        8 => TreeId::Pruned,
        9 => TreeId::Messages,
        10 => TreeId::Search,
        _ => return None,
    })
}

/// Appends one framed record holding `ops` to `out`.
pub(crate) fn encode(ops: &[Op], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]); // length and checksum, filled in below
    put_u32(out, ops.len());
    for op in ops {
        match op {
            Op::Put(t, k, v) => {
                out.push(1);
                out.push(*t as u8);
                put_u32(out, k.len());
                out.extend_from_slice(k);
                put_u32(out, v.len());
                out.extend_from_slice(v);
            }
            Op::Remove(t, k) => {
                out.push(2);
                out.push(*t as u8);
                put_u32(out, k.len());
                out.extend_from_slice(k);
            }
        }
    }
    let payload_len = out.len() - start - 8;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// The records of one segment, and the length of its valid prefix (shorter than `bytes` when
/// the tail is torn).
pub(crate) fn decode(bytes: &[u8]) -> (Vec<Vec<Op>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((ops, next)) = decode_one(bytes, at) {
        records.push(ops);
        at = next;
    }
    (records, at)
}

fn decode_one(bytes: &[u8], at: usize) -> Option<(Vec<Op>, usize)> {
    let len = read_u32(bytes, at)? as usize;
    let crc = read_u32(bytes, at + 4)?;
    let payload = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut p = 0;
    let count = read_u32(payload, p)?;
    p += 4;
    let mut ops = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let kind = *payload.get(p)?;
        let tree = tree_id(*payload.get(p + 1)?)?;
        p += 2;
        let key = read_bytes(payload, &mut p)?;
        ops.push(match kind {
            1 => Op::Put(tree, key, read_bytes(payload, &mut p)?),
            2 => Op::Remove(tree, key),
            _ => return None,
        });
    }
    (p == payload.len()).then_some((ops, at + 8 + len))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn read_bytes(bytes: &[u8], p: &mut usize) -> Option<Vec<u8>> {
    let len = read_u32(bytes, *p)? as usize;
    let v = bytes.get(*p + 4..(*p + 4).checked_add(len)?)?.to_vec();
    *p += 4 + len;
    Some(v)
}

/// The segment being appended to.
struct Segment {
    number: u64,
    file: Arc<File>,
    len: u64,
    /// Set when an append failed and the file could not be brought back to its last record:
    /// appending after an unknown tail could hide later records behind it at recovery.
    broken: bool,
}

/// The log: the current segment, the trees it applies to, and the engine they live in.
pub(crate) struct Wal {
    dir: PathBuf,
    segment: Mutex<Segment>,
    /// Records appended so far (the last one's sequence number); changed under `segment`.
    appended: AtomicU64,
    /// Records appended but not yet put into the engine (see [`Wal::write`]).
    unsynced: Mutex<Unsynced>,
    /// The sequence number up to which records are in the engine; held while putting them
    /// there, so records reach the engine in log order.
    applied: Mutex<u64>,
    /// Put records into the engine only once they are durable (false with durability `off`, where
    /// nothing ever waits for a sync).
    defer: bool,
    trees: Trees,
    db: Arc<Db>,
    /// Set when the store is one replica of a shared log (docs/cluster.md): records go there
    /// instead of the segment file.
    replicated: Option<Replicated>,
}

/// How many times a write is computed again after finding the shared log ahead of it before it
/// gives up (the writer gets a 503): each retry first applies what the others appended.
const MAX_RECOMPUTE: usize = 64;

/// Records read per catch-up request.
const CATCH_UP_BATCH: usize = 512;

/// The engine's marker key of the checkpointed log position of a replica (outside the log).
const CHECKPOINTED: &[u8] = b"herald.cluster.checkpointed";

/// The store as one replica of a shared [`RecordLog`].
struct Replicated {
    log: Arc<dyn RecordLog>,
    /// The position of the last record applied to the engine; held while computing, appending and
    /// applying, so it is also the log lock of a replica.
    applied: Mutex<u64>,
    /// The position last stored as checkpointed.
    checkpointed: AtomicU64,
    /// Where records of other replicas are reported once applied (the server reacts to them).
    announce: Option<tokio::sync::mpsc::UnboundedSender<Applied>>,
}

/// Records appended but not yet durable, in order, and the newest pending value of every key
/// they touch (what the writers' own reads must see).
#[derive(Default)]
struct Unsynced {
    queue: VecDeque<(u64, Vec<Op>)>,
    /// The sequence number of the newest pending record that touches each key.
    latest: HashMap<(TreeId, Vec<u8>), u64>,
}

impl Unsynced {
    /// The pending value of a key: `None` when no pending record touches it, `Some(None)` when
    /// the newest one removes it.
    fn value(&self, tree: TreeId, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let seq = *self.latest.get(&(tree, key.to_vec()))?;
        let at = self.queue.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        let (_, ops) = self.queue.get(at)?;
        ops.iter().rev().find_map(|op| match op {
            Op::Put(t, k, v) if *t == tree && k == key => Some(Some(v.clone())),
            Op::Remove(t, k) if *t == tree && k == key => Some(None),
            _ => None,
        })
    }
}

/// What a write reads while it is computed: pending (not yet durable) records first, then the
/// engine.
pub(crate) struct View<'a> {
    wal: &'a Wal,
}

impl View<'_> {
    /// The value of `key` in `tree` as the log stands (durable or not).
    pub(crate) fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.wal.unsynced().value(tree, key) {
            return Ok(v);
        }
        Ok(self.wal.trees.get(tree).get(key)?.map(|v| v.to_vec()))
    }
}

/// Segment files are `wal/{number:020}.log` inside the store directory.
fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = number {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn create_segment(dir: &Path, number: u64) -> Result<Segment> {
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(segment_path(dir, number))
        .map_err(io)?;
    sync_dir(dir)?;
    Ok(Segment {
        number,
        file: Arc::new(file),
        len: 0,
        broken: false,
    })
}

impl Wal {
    /// Opens the log in `store_dir/wal`, re-applies every record it holds to `trees`, checkpoints
    /// (so the replayed state is on disk in the engine) and starts a fresh segment.
    pub(crate) fn open(store_dir: &Path, db: Arc<Db>, trees: Trees, defer: bool) -> Result<Wal> {
        let dir = store_dir.join("wal");
        fs::create_dir_all(&dir).map_err(io)?;
        let found = segments(&dir)?;
        let last = found.last().map_or(0, |(n, _)| *n);
        let mut replayed = 0usize;
        for (i, (number, path)) in found.iter().enumerate() {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io)?;
            let (records, valid) = decode(&bytes);
            if valid < bytes.len() {
                if i + 1 < found.len() {
                    // Only the newest segment can end in a torn record: older ones were fsynced
                    // whole before the next was started.
                    return Err(StoreError::Corrupt(format!(
                        "write-ahead log segment {number} is damaged at byte {valid} and is not the newest"
                    )));
                }
                tracing::warn!(
                    segment = number,
                    at = valid,
                    dropped = bytes.len() - valid,
                    "write-ahead log ends in a torn record (a crash while appending); it was never acknowledged"
                );
            }
            for ops in &records {
                trees.apply(ops)?;
            }
            replayed += records.len();
        }
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                segments = found.len(),
                "write-ahead log replayed"
            );
        }
        db.persist()?;
        // Replayed state is on disk in the engine: the segments can go, then a fresh one starts (in
        // this order, so a crash in between never leaves a torn segment behind an empty one).
        for (_, path) in found {
            fs::remove_file(path).map_err(io)?;
        }
        sync_dir(&dir)?;
        Ok(Wal {
            segment: Mutex::new(create_segment(&dir, last + 1)?),
            appended: AtomicU64::new(0),
            unsynced: Mutex::new(Unsynced::default()),
            applied: Mutex::new(0),
            defer,
            dir,
            trees,
            db,
            replicated: None,
        })
    }

    /// Makes this log one replica of `log`: records after the checkpointed position are
    /// applied (start-up catch-up, not announced: the server loads its state after it), and
    /// from then on every write is appended there. `announce` receives what records of other
    /// replicas changed.
    pub(crate) fn replicate(
        &mut self,
        log: Arc<dyn RecordLog>,
        announce: tokio::sync::mpsc::UnboundedSender<Applied>,
    ) -> Result<()> {
        let checkpointed = crate::keys::decode_u64(self.db.meta_get(CHECKPOINTED)?.as_deref());
        let r = Replicated {
            log,
            applied: Mutex::new(checkpointed),
            checkpointed: AtomicU64::new(checkpointed),
            announce: None,
        };
        let mut seen = Vec::new();
        {
            let mut at = lock_position(&r);
            self.catch_up_locked(&r, &mut at, &mut seen)?;
            tracing::info!(
                from = checkpointed,
                to = *at,
                "replica caught up with the shared log"
            );
        }
        self.defer = false;
        self.replicated = Some(Replicated {
            announce: Some(announce),
            ..r
        });
        Ok(())
    }

    /// Applies the records other replicas appended since this one last looked, and reports
    /// them. Returns how many were applied.
    pub(crate) fn catch_up(&self) -> Result<usize> {
        let Some(r) = &self.replicated else {
            return Ok(0);
        };
        let mut seen = Vec::new();
        let result = {
            let mut at = lock_position(r);
            self.catch_up_locked(r, &mut at, &mut seen)
        };
        let n = seen.len();
        report(r, seen);
        result.map(|()| n)
    }

    /// Reads and applies every record after `*at` (the caller holds the position lock).
    fn catch_up_locked(&self, r: &Replicated, at: &mut u64, seen: &mut Vec<Applied>) -> Result<()> {
        loop {
            let batch = r.log.read_from(*at, CATCH_UP_BATCH)?;
            let full = batch.len() >= CATCH_UP_BATCH;
            for (position, bytes) in batch {
                if position != *at + 1 {
                    return Err(StoreError::Corrupt(format!(
                        "the shared log skipped from position {} to {position}",
                        *at
                    )));
                }
                let (mut records, valid) = decode(&bytes);
                if valid != bytes.len() || records.len() != 1 {
                    return Err(StoreError::Corrupt(format!(
                        "record {position} of the shared log does not decode"
                    )));
                }
                let ops = records.pop().unwrap_or_default();
                self.trees.apply(&ops)?;
                *at = position;
                seen.push(summarise(position, &ops));
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// [`Wal::write`] on a replica: compute against the local state at position P, append
    /// expecting P; when another replica appended first, apply its records and compute again.
    fn write_replicated<T>(
        &self,
        r: &Replicated,
        mut f: impl FnMut(&View<'_>) -> Result<(T, Vec<Op>)>,
    ) -> Result<T> {
        let mut seen = Vec::new();
        let result = (|| {
            let mut at = lock_position(r);
            let mut buf = Vec::with_capacity(256);
            for _ in 0..MAX_RECOMPUTE {
                let (out, ops) = f(&self.view())?;
                if ops.is_empty() {
                    return Ok(out);
                }
                buf.clear();
                encode(&ops, &mut buf);
                match r.log.append(*at, &buf)? {
                    Appended::At(position) => {
                        self.trees.apply(&ops)?;
                        *at = position;
                        return Ok(out);
                    }
                    Appended::Behind => self.catch_up_locked(r, &mut at, &mut seen)?,
                }
            }
            Err(StoreError::Unavailable(
                "the shared log kept moving ahead of this node; try again".into(),
            ))
        })();
        report(r, seen);
        result
    }

    fn lock(&self) -> MutexGuard<'_, Segment> {
        self.segment.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What writers read: pending records first, then the engine.
    pub(crate) fn view(&self) -> View<'_> {
        View { wal: self }
    }

    fn unsynced(&self) -> MutexGuard<'_, Unsynced> {
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` under the log lock (so what it reads is not changed underneath it), then logs
    /// the ops it returns. They reach the engine — and so every reader — only once the record
    /// is durable ([`Wal::sync`]): the engine never holds a write that was not acknowledgeable, so a
    /// machine crash cannot leave part of an unacknowledged write behind, and readers never see
    /// a write that could still be lost. Until then `f`'s [`View`] shows them to later writes.
    /// (With durability `off` the ops go to the engine at once.)
    ///
    /// On a replica `f` may run more than once (each time on newer state): it must only read.
    pub(crate) fn write<T>(&self, f: impl FnMut(&View<'_>) -> Result<(T, Vec<Op>)>) -> Result<T> {
        if let Some(r) = &self.replicated {
            return self.write_replicated(r, f);
        }
        let mut f = f;
        let mut seg = self.lock();
        if seg.broken {
            return Err(StoreError::Io(
                "the write-ahead log could not be repaired after a failed append; restart the server".into(),
            ));
        }
        let (out, ops) = f(&self.view())?;
        if ops.is_empty() {
            return Ok(out);
        }
        let mut buf = Vec::with_capacity(256);
        encode(&ops, &mut buf);
        if let Err(e) = seg.file.write_all_at(&buf, seg.len) {
            // Nothing of this write was applied; cut off whatever part of it reached the file
            // so the next record follows the last good one.
            if seg.file.set_len(seg.len).is_err() {
                seg.broken = true;
            }
            return Err(io(e));
        }
        seg.len += buf.len() as u64;
        let seq = self.appended.load(Ordering::Acquire) + 1;
        if self.defer {
            let mut pending = self.unsynced();
            for op in &ops {
                let (Op::Put(t, k, _) | Op::Remove(t, k)) = op;
                // Nothing reads search entries through the pending view (searches read durable
                // state), and they are most of a write's keys: not worth a map entry each.
                if *t != TreeId::Search {
                    pending.latest.insert((*t, k.clone()), seq);
                }
            }
            pending.queue.push_back((seq, ops));
            self.appended.store(seq, Ordering::Release);
        } else {
            self.appended.store(seq, Ordering::Release);
            // Should the engine fail here, the caller gets the error although the record is logged:
            // the write is then applied at the next start-up (as a write whose answer was lost).
            self.trees.apply(&ops)?;
        }
        Ok(out)
    }

    /// Makes every record appended so far durable (`fdatasync` of the segment they are in) and
    /// puts them into the engine. Concurrent calls overlap their syncs; records still reach
    /// the engine in order.
    pub(crate) fn sync(&self) -> Result<()> {
        let (file, upto) = {
            let seg = self.lock();
            (Arc::clone(&seg.file), self.appended.load(Ordering::Acquire))
        };
        // Records of an older segment were synced by the checkpoint that closed it.
        file.sync_data().map_err(io)?;
        self.apply_through(upto)
    }

    /// Puts the durable records up to `upto` into the engine, in order. The pending view is
    /// locked meanwhile: a writer must find each key either still pending or already applied.
    fn apply_through(&self, upto: u64) -> Result<()> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if *applied >= upto {
            return Ok(());
        }
        let mut pending = self.unsynced();
        let n = pending
            .queue
            .iter()
            .take_while(|(seq, _)| *seq <= upto)
            .count();
        for (_, ops) in pending.queue.iter().take(n) {
            self.trees.apply(ops)?;
        }
        let ready: Vec<(u64, Vec<Op>)> = pending.queue.drain(..n).collect();
        for (_, ops) in &ready {
            for op in ops {
                let (Op::Put(t, k, _) | Op::Remove(t, k)) = op;
                if *t == TreeId::Search {
                    continue;
                }
                let key = (*t, k.clone());
                if pending.latest.get(&key).is_some_and(|seq| *seq <= upto) {
                    pending.latest.remove(&key);
                }
            }
        }
        *applied = upto;
        Ok(())
    }

    /// Logs and applies `ops`.
    pub(crate) fn put(&self, ops: Vec<Op>) -> Result<()> {
        if self.replicated.is_some() {
            // A blind put reads nothing: computing it again after a catch-up gives the same ops.
            return self.write(|_| Ok(((), ops.clone())));
        }
        let mut ops = Some(ops);
        self.write(|_| Ok(((), ops.take().unwrap_or_default())))
    }

    /// Moves the log to a new segment, makes the engine durable and deletes the older segments. The
    /// old segment is synced before the switch (its waiters are then durable too).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        if let Some(r) = &self.replicated {
            // Everything applied up to `upto` is in the engine before the flush; only then is the
            // position recorded (and flushed) as where a restart resumes.
            let upto = *lock_position(r);
            self.db.persist()?;
            self.db.meta_insert(CHECKPOINTED, &upto.to_be_bytes())?;
            self.db.persist()?;
            r.checkpointed.store(upto, Ordering::Release);
            return Ok(());
        }
        let (old, upto) = {
            let mut seg = self.lock();
            if seg.len == 0 {
                return Ok(());
            }
            seg.file.sync_data().map_err(io)?;
            let next = create_segment(&self.dir, seg.number + 1)?;
            (
                std::mem::replace(&mut *seg, next),
                self.appended.load(Ordering::Acquire),
            )
        };
        // Everything in the old segment is durable now: into the engine with it, then the
        // engine to disk.
        self.apply_through(upto)?;
        self.db.persist()?;
        // Every older segment goes, not only the one just closed: one left behind by a failed
        // checkpoint would otherwise be replayed at start-up *without* the newer records that
        // overwrite its keys, turning them back to old values.
        for (number, path) in segments(&self.dir)? {
            if number <= old.number {
                fs::remove_file(path).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Lets the engine merge the files earlier checkpoints wrote (see `engine.rs`).
    pub(crate) fn compact(&self) -> Result<()> {
        self.db.compact()
    }

    /// Bytes appended to the current segment (checkpoints start a new one); on a replica, the
    /// records applied since the last checkpoint.
    pub(crate) fn segment_len(&self) -> u64 {
        if let Some(r) = &self.replicated {
            return lock_position(r).saturating_sub(r.checkpointed.load(Ordering::Acquire));
        }
        self.lock().len
    }

    /// The position of the last record applied, on a replica.
    pub(crate) fn position(&self) -> Option<u64> {
        self.replicated.as_ref().map(|r| *lock_position(r))
    }
}

fn lock_position(r: &Replicated) -> MutexGuard<'_, u64> {
    r.applied.lock().unwrap_or_else(|p| p.into_inner())
}

fn report(r: &Replicated, seen: Vec<Applied>) {
    if let Some(tx) = &r.announce {
        for a in seen {
            let _ = tx.send(a);
        }
    }
}

/// What a record changed that the server reacts to (see [`Applied`]).
fn summarise(position: u64, ops: &[Op]) -> Applied {
    let mut out = Applied {
        position,
        ..Applied::default()
    };
    for op in ops {
        match op {
            Op::Put(TreeId::Resources, k, _) | Op::Remove(TreeId::Resources, k) => {
                let mut parts = k
                    .split(|b| *b == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                if let (Some(t), Some(ty), Some(id)) = (parts.next(), parts.next(), parts.next()) {
                    out.resources.push((t, ty, id));
                }
            }
            Op::Put(TreeId::Counters, k, v) => {
                let mut parts = k
                    .split(|b| *b == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                if let (Some(t), Some(sub)) = (parts.next(), parts.next()) {
                    out.events.push((t, sub, crate::keys::decode_u64(Some(v))));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Op> {
        vec![
            Op::Put(
                TreeId::Resources,
                b"r4\0Task\0a".to_vec(),
                b"{\"v\":1}".to_vec(),
            ),
            Op::Remove(TreeId::Delivery, b"k".to_vec()),
            Op::Put(TreeId::Attempts, Vec::new(), Vec::new()),
        ]
    }

    #[test]
    fn records_round_trip_in_order() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        encode(
            &[Op::Put(TreeId::Events, b"e".to_vec(), b"1".to_vec())],
            &mut buf,
        );
        let (records, valid) = decode(&buf);
        assert_eq!(valid, buf.len());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], sample());
        assert_eq!(
            records[1][0],
            Op::Put(TreeId::Events, b"e".to_vec(), b"1".to_vec())
        );
    }

    #[test]
    fn a_torn_or_corrupted_tail_ends_the_log_at_the_last_whole_record() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        let first = buf.len();
        encode(&sample(), &mut buf);
        for cut in first + 1..buf.len() {
            let (records, valid) = decode(&buf[..cut]);
            assert_eq!((records.len(), valid), (1, first), "cut at {cut}");
        }
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let (records, valid) = decode(&flipped);
        assert_eq!((records.len(), valid), (1, first));
    }

    fn open_store_dir(dir: &Path) -> (Arc<Db>, Trees) {
        let db = Arc::new(Db::open(dir, None, 1 << 24).expect("engine"));
        let trees = Trees::open(&db).expect("trees");
        (db, trees)
    }

    #[test]
    fn records_left_in_the_log_are_reapplied_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A log segment as a crash leaves it: records appended, never applied to the engine, and a
        // torn record after them.
        fs::create_dir_all(dir.path().join("wal")).expect("mkdir");
        let mut buf = Vec::new();
        encode(
            &[Op::Put(TreeId::Resources, b"a".to_vec(), b"1".to_vec())],
            &mut buf,
        );
        encode(
            &[
                Op::Put(TreeId::Resources, b"a".to_vec(), b"2".to_vec()),
                Op::Put(TreeId::Counters, b"c".to_vec(), b"9".to_vec()),
            ],
            &mut buf,
        );
        let whole = buf.len();
        encode(&[Op::Remove(TreeId::Resources, b"a".to_vec())], &mut buf);
        buf.truncate(whole + 5);
        fs::write(segment_path(&dir.path().join("wal"), 7), &buf).expect("write");
        let (db, trees) = open_store_dir(dir.path());
        let wal = Wal::open(dir.path(), db, trees.clone(), true).expect("open");
        let get = |t: TreeId, k: &[u8]| trees.get(t).get(k).expect("get").map(|v| v.to_vec());
        assert_eq!(get(TreeId::Resources, b"a"), Some(b"2".to_vec()));
        assert_eq!(get(TreeId::Counters, b"c"), Some(b"9".to_vec()));
        // Replayed state is checkpointed: the old segment is gone, a new one follows it.
        let left: Vec<u64> = segments(&dir.path().join("wal"))
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, vec![8]);
        assert_eq!(wal.segment_len(), 0);
    }

    #[test]
    fn a_damaged_segment_that_is_not_the_newest_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal_dir = dir.path().join("wal");
        fs::create_dir_all(&wal_dir).expect("mkdir");
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        buf.push(0xff);
        fs::write(segment_path(&wal_dir, 1), &buf).expect("write");
        fs::write(segment_path(&wal_dir, 2), b"").expect("write");
        let (db, trees) = open_store_dir(dir.path());
        assert!(matches!(
            Wal::open(dir.path(), db, trees, true),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_checkpoint_starts_a_new_segment_and_keeps_what_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, trees) = open_store_dir(dir.path());
        let wal = Wal::open(dir.path(), db, trees.clone(), true).expect("open");
        wal.put(vec![Op::Put(
            TreeId::Delivery,
            b"k".to_vec(),
            b"v".to_vec(),
        )])
        .expect("put");
        assert!(wal.segment_len() > 0);
        wal.checkpoint().expect("checkpoint");
        assert_eq!(wal.segment_len(), 0);
        assert_eq!(
            trees
                .get(TreeId::Delivery)
                .get(b"k")
                .expect("get")
                .as_deref(),
            Some(&b"v"[..])
        );
        let left = segments(&dir.path().join("wal")).expect("list");
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn a_checkpoint_removes_every_older_segment_so_none_can_be_replayed_out_of_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, trees) = open_store_dir(dir.path());
        let wal = Wal::open(dir.path(), db, trees, true).expect("open");
        // A segment a failed checkpoint left behind, older than the current one (1).
        let mut stale = Vec::new();
        encode(
            &[Op::Put(TreeId::Counters, b"c".to_vec(), b"1".to_vec())],
            &mut stale,
        );
        fs::write(segment_path(&dir.path().join("wal"), 0), &stale).expect("write");
        wal.put(vec![Op::Put(
            TreeId::Counters,
            b"c".to_vec(),
            b"2".to_vec(),
        )])
        .expect("put");
        wal.checkpoint().expect("checkpoint");
        let left: Vec<u64> = segments(&dir.path().join("wal"))
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, vec![2]);
    }
}
