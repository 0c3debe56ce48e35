//! The ordered key-value engine under the write-ahead log: the named trees the store's records
//! are applied to, and how they reach disk at a checkpoint.
//!
//! Herald's own log (`wal.rs`) makes every write durable; the engine only has to hold what the
//! log applied, and to make it durable when a checkpoint asks, so the log's older segments can
//! go. Two engines can do that, chosen per data directory ([`EngineKind`]):
//!
//! * **LSM** (`lsm-tree`, the default): every put or remove is an insert into an in-memory
//!   table; a checkpoint writes each tree's table out as one sorted, fsynced file, and
//!   compaction merges files in the background of the checkpointer. A write costs an in-memory
//!   insert instead of a B-tree node rewrite, and opening reads the trees' manifests only, so
//!   start-up does not grow with what was written before (the log tail is replayed as ever).
//!   lsm-tree is the engine of fjall without fjall's own journal, which Herald's log replaces.
//! * **sled** 0.34: the first engine, kept for data directories it wrote (chosen automatically
//!   when the directory holds a sled database) and as the baseline of the engine A/B
//!   (`docs/benchmarks.md`).
//!
//! Both are driven through the same [`Db`] and [`Tree`] handles with sled's method names, so
//! the store's code does not know which one runs.
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lsm_tree::{AbstractTree, Guard as _, SeqNo, SequenceNumberCounter};

use crate::error::{Result, StoreError};

/// Which engine holds a data directory's trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Log-structured merge trees (`lsm-tree`): the default for new data directories.
    Lsm,
    /// sled 0.34 (data directories written before the LSM engine).
    Sled,
}

impl EngineKind {
    /// The configuration name (`lsm`, `sled`).
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Lsm => "lsm",
            EngineKind::Sled => "sled",
        }
    }
}

/// Reads see every applied write: the store keeps no snapshots (its readers see durable
/// writes, which the log applies in order), so every read is at the newest sequence number.
/// lsm-tree keeps the top bit of a sequence number for itself.
const READ_ALL: SeqNo = 0x7FFF_FFFF_FFFF_FFFF;

/// The directory of the LSM trees inside a data directory.
const LSM_DIR: &str = "lsm";

/// The tree (outside the log) holding the engine's own markers, such as a replica's
/// checkpointed position.
const META_TREE: &str = "meta";

/// A value (or key) read from a tree.
#[derive(Clone)]
pub(crate) enum Bytes {
    Sled(sled::IVec),
    Lsm(lsm_tree::Slice),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Sled(v) => v,
            Bytes::Lsm(v) => v,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// An iterator over key-value pairs of a tree, in key order (reversible).
pub(crate) type Iter = Box<dyn DoubleEndedIterator<Item = Result<(Bytes, Bytes)>> + Send>;

/// One engine's database: its trees, and how they reach disk.
pub(crate) struct Db {
    inner: Inner,
    kind: EngineKind,
    /// Source of [`Db::generate_id`] on the LSM engine: unique and increasing across restarts
    /// (seeded from the clock in microseconds at open).
    next_id: AtomicU64,
}

enum Inner {
    Sled {
        db: sled::Db,
        /// sled's data file (fsynced at a checkpoint: sled's flush does not).
        file: PathBuf,
    },
    Lsm(Arc<Lsm>),
}

struct Lsm {
    dir: PathBuf,
    /// Held (an exclusive `flock`) while the database is open: a second process on the same
    /// directory would apply its own log over this one's trees.
    _lock: std::fs::File,
    seqno: SequenceNumberCounter,
    visible: SequenceNumberCounter,
    cache: Arc<lsm_tree::Cache>,
    descriptors: Arc<lsm_tree::DescriptorTable>,
    /// Every tree opened so far (a checkpoint persists them all).
    trees: std::sync::Mutex<Vec<lsm_tree::AnyTree>>,
    /// Markers outside the log ([`Db::meta_get`]); set once at open.
    meta: Option<lsm_tree::AnyTree>,
}

/// A named tree of a [`Db`].
#[derive(Clone)]
pub(crate) enum Tree {
    Sled(sled::Tree),
    Lsm {
        tree: lsm_tree::AnyTree,
        seqno: SequenceNumberCounter,
    },
}

/// Whether `dir` holds a database written by sled (its `conf` and `db` files).
fn holds_sled(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

impl Db {
    /// Opens (or creates) the engine's database in `dir`. `kind` `None` takes the engine the
    /// directory already holds (LSM for a new one); naming an engine other than the one the
    /// directory holds is refused.
    pub(crate) fn open(dir: &Path, kind: Option<EngineKind>, cache_bytes: u64) -> Result<Db> {
        let has_sled = holds_sled(dir);
        let has_lsm = dir.join(LSM_DIR).is_dir();
        let found = match (has_sled, has_lsm) {
            (true, false) => Some(EngineKind::Sled),
            (false, true) => Some(EngineKind::Lsm),
            (false, false) => None,
            (true, true) => {
                return Err(StoreError::Refused(format!(
                    "{} holds both a sled and an LSM database; move one of them away",
                    dir.display()
                )));
            }
        };
        let kind = match (kind, found) {
            (Some(want), Some(have)) if want != have => {
                return Err(StoreError::Refused(format!(
                    "the data directory {} was written by the {} engine, but the {} engine is \
                     configured; configure {} (or start from an empty directory)",
                    dir.display(),
                    have.as_str(),
                    want.as_str(),
                    have.as_str()
                )));
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => EngineKind::Lsm,
        };
        let inner = match kind {
            EngineKind::Sled => {
                let db = sled::Config::new()
                    .path(dir)
                    .cache_capacity(cache_bytes)
                    // sled's own periodic flush (every 500 ms by default) is redundant with the
                    // write-ahead log's checkpoints and competes with the log's syncs.
                    .flush_every_ms(None)
                    .open()?;
                Inner::Sled {
                    db,
                    file: dir.join("db"),
                }
            }
            EngineKind::Lsm => Inner::Lsm(Arc::new(Lsm::open(&dir.join(LSM_DIR), cache_bytes)?)),
        };
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Ok(Db {
            inner,
            kind,
            next_id: AtomicU64::new(micros),
        })
    }

    /// The engine this database runs on.
    pub(crate) fn kind(&self) -> EngineKind {
        self.kind
    }

    /// Opens (or creates) the tree `name`.
    pub(crate) fn open_tree(&self, name: &str) -> Result<Tree> {
        match &self.inner {
            Inner::Sled { db, .. } => Ok(Tree::Sled(db.open_tree(name)?)),
            Inner::Lsm(lsm) => lsm.open_tree(name),
        }
    }

    /// Makes everything applied so far durable in the engine's files.
    pub(crate) fn persist(&self) -> Result<()> {
        match &self.inner {
            Inner::Sled { db, file } => {
                // sled's flush writes its log with `sync_file_range`, which flushes neither the
                // device cache nor file metadata; an fsync of its data file does.
                db.flush()?;
                std::fs::File::open(file)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| StoreError::Io(e.to_string()))
            }
            Inner::Lsm(lsm) => lsm.persist(),
        }
    }

    /// Merges files written by earlier checkpoints (LSM), so reads touch few of them and
    /// removed entries are dropped. Runs on the checkpointer's thread, after a persist.
    pub(crate) fn compact(&self) -> Result<()> {
        match &self.inner {
            Inner::Sled { .. } => Ok(()),
            Inner::Lsm(lsm) => lsm.compact(),
        }
    }

    /// A number unique among this database's ids, increasing across restarts.
    pub(crate) fn generate_id(&self) -> Result<u64> {
        match &self.inner {
            Inner::Sled { db, .. } => Ok(db.generate_id()?),
            Inner::Lsm(_) => Ok(self.next_id.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// A marker stored outside the log (made durable by the next [`Db::persist`]).
    pub(crate) fn meta_get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        match &self.inner {
            Inner::Sled { db, .. } => Ok(db.get(key)?.map(Bytes::Sled)),
            Inner::Lsm(lsm) => lsm
                .meta()?
                .get(key, READ_ALL)
                .map(|v| v.map(Bytes::Lsm))
                .map_err(StoreError::from),
        }
    }

    /// Sets a marker (see [`Db::meta_get`]).
    pub(crate) fn meta_insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        match &self.inner {
            Inner::Sled { db, .. } => {
                db.insert(key, value)?;
            }
            Inner::Lsm(lsm) => {
                lsm.meta()?.insert(key, value, lsm.seqno.next());
            }
        }
        Ok(())
    }
}

impl Lsm {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Lsm> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(e.to_string()))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        lock.try_lock().map_err(|e| {
            StoreError::Refused(format!(
                "the data directory {} is in use by another process ({e})",
                dir.display()
            ))
        })?;
        let mut lsm = Lsm {
            dir: dir.to_path_buf(),
            _lock: lock,
            seqno: SequenceNumberCounter::default(),
            visible: SequenceNumberCounter::default(),
            cache: Arc::new(lsm_tree::Cache::with_capacity_bytes(cache_bytes)),
            descriptors: Arc::new(lsm_tree::DescriptorTable::new(512)),
            trees: std::sync::Mutex::new(Vec::new()),
            meta: None,
        };
        lsm.meta = Some(lsm.open_any(META_TREE)?);
        Ok(lsm)
    }

    fn meta(&self) -> Result<&lsm_tree::AnyTree> {
        self.meta
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("the engine's meta tree is not open".into()))
    }

    fn open_any(&self, name: &str) -> Result<lsm_tree::AnyTree> {
        let tree = lsm_tree::Config::new(
            self.dir.join(name),
            self.seqno.clone(),
            self.visible.clone(),
        )
        .use_cache(Arc::clone(&self.cache))
        .use_descriptor_table(Some(Arc::clone(&self.descriptors)))
        .open()?;
        // New writes must sort after everything already on disk, in every tree.
        if let Some(highest) = tree.get_highest_persisted_seqno() {
            self.seqno.fetch_max(highest + 1);
            self.visible.fetch_max(highest + 1);
        }
        self.lock_trees().push(tree.clone());
        Ok(tree)
    }

    fn open_tree(&self, name: &str) -> Result<Tree> {
        Ok(Tree::Lsm {
            tree: self.open_any(name)?,
            seqno: self.seqno.clone(),
        })
    }

    fn lock_trees(&self) -> std::sync::MutexGuard<'_, Vec<lsm_tree::AnyTree>> {
        self.trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every tree's in-memory table out as a sorted, fsynced file (lsm-tree persists
    /// the tree's new version, naming the file, before it returns).
    fn persist(&self) -> Result<()> {
        let trees = self.lock_trees().clone();
        let watermark = self.seqno.get();
        for tree in trees {
            if tree.active_memtable().is_empty() && tree.sealed_memtable_count() == 0 {
                continue;
            }
            let lock = tree.get_flush_lock();
            tree.rotate_memtable();
            tree.flush(&lock, watermark)?;
        }
        Ok(())
    }

    /// Runs leveled compaction on every tree until it has nothing left to merge (bounded,
    /// so one call never runs away; the next checkpointer tick goes on).
    fn compact(&self) -> Result<()> {
        let trees = self.lock_trees().clone();
        let strategy: Arc<dyn lsm_tree::compaction::CompactionStrategy> =
            Arc::new(lsm_tree::compaction::Leveled::default());
        for tree in trees {
            for _ in 0..64 {
                let before = (tree.table_count(), tree.l0_run_count());
                tree.compact(Arc::clone(&strategy), self.seqno.get())?;
                if (tree.table_count(), tree.l0_run_count()) == before {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl Tree {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        match self {
            Tree::Sled(t) => Ok(t.get(key)?.map(Bytes::Sled)),
            Tree::Lsm { tree, .. } => tree
                .get(key, READ_ALL)
                .map(|v| v.map(Bytes::Lsm))
                .map_err(StoreError::from),
        }
    }

    pub(crate) fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Tree::Sled(t) => {
                t.insert(key, value)?;
            }
            Tree::Lsm { tree, seqno } => {
                tree.insert(key, value, seqno.next());
            }
        }
        Ok(())
    }

    pub(crate) fn remove(&self, key: &[u8]) -> Result<()> {
        match self {
            Tree::Sled(t) => {
                t.remove(key)?;
            }
            Tree::Lsm { tree, seqno } => {
                tree.remove(key, seqno.next());
            }
        }
        Ok(())
    }

    /// The pairs whose keys fall in `range`, in key order.
    pub(crate) fn range<K, R>(&self, range: R) -> Iter
    where
        K: AsRef<[u8]>,
        R: RangeBounds<K>,
    {
        match self {
            Tree::Sled(t) => Box::new(t.range(range).map(sled_pair)),
            Tree::Lsm { tree, .. } => Box::new(tree.range(range, READ_ALL, None).map(lsm_pair)),
        }
    }

    /// The pairs whose keys start with `prefix`, in key order.
    pub(crate) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Tree::Sled(t) => Box::new(t.scan_prefix(prefix).map(sled_pair)),
            Tree::Lsm { tree, .. } => Box::new(tree.prefix(prefix, READ_ALL, None).map(lsm_pair)),
        }
    }

    /// Every pair, in key order.
    pub(crate) fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    /// How many pairs the tree holds (a full scan on both engines: callers count once).
    pub(crate) fn len(&self) -> Result<usize> {
        match self {
            Tree::Sled(t) => Ok(t.len()),
            Tree::Lsm { tree, .. } => tree.len(READ_ALL, None).map_err(StoreError::from),
        }
    }

    pub(crate) fn is_empty(&self) -> Result<bool> {
        match self {
            Tree::Sled(t) => Ok(t.is_empty()),
            Tree::Lsm { tree, .. } => tree.is_empty(READ_ALL, None).map_err(StoreError::from),
        }
    }

    /// Removes every pair.
    pub(crate) fn clear(&self) -> Result<()> {
        match self {
            Tree::Sled(t) => {
                t.clear()?;
            }
            Tree::Lsm { tree, .. } => tree.clear()?,
        }
        Ok(())
    }
}

fn sled_pair(kv: sled::Result<(sled::IVec, sled::IVec)>) -> Result<(Bytes, Bytes)> {
    let (k, v) = kv?;
    Ok((Bytes::Sled(k), Bytes::Sled(v)))
}

fn lsm_pair(g: lsm_tree::IterGuardImpl) -> Result<(Bytes, Bytes)> {
    let (k, v) = g.into_inner()?;
    Ok((Bytes::Lsm(k), Bytes::Lsm(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, kind: Option<EngineKind>) -> Db {
        Db::open(dir, kind, 1 << 24).expect("open")
    }

    fn keys(iter: Iter) -> Vec<Vec<u8>> {
        iter.map(|kv| kv.expect("read").0.to_vec()).collect()
    }

    /// The behaviour the store relies on, whichever engine runs.
    fn behaves_like_an_ordered_map(kind: EngineKind) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path(), Some(kind));
        assert_eq!(db.kind(), kind);
        let t = db.open_tree("t").expect("tree");
        let other = db.open_tree("other").expect("tree");
        assert!(t.is_empty().expect("empty"));
        for k in [b"b1".as_slice(), b"a1", b"b2", b"c1", b"b3"] {
            t.insert(k, k).expect("insert");
        }
        other.insert(b"b1", b"elsewhere").expect("insert");
        t.insert(b"b2", b"new").expect("overwrite");
        t.remove(b"b3").expect("remove");
        assert_eq!(
            t.get(b"b2").expect("get").as_deref(),
            Some(b"new".as_slice())
        );
        assert_eq!(
            t.get(b"b1").expect("get").as_deref(),
            Some(b"b1".as_slice())
        );
        assert!(t.get(b"b3").expect("get").is_none());
        assert_eq!(t.len().expect("len"), 4);
        assert_eq!(
            keys(t.iter()),
            vec![
                b"a1".to_vec(),
                b"b1".to_vec(),
                b"b2".to_vec(),
                b"c1".to_vec()
            ]
        );
        assert_eq!(
            keys(t.scan_prefix(b"b")),
            vec![b"b1".to_vec(), b"b2".to_vec()]
        );
        assert_eq!(
            keys(Box::new(t.range(b"a2".to_vec()..b"c1".to_vec()).rev())),
            vec![b"b2".to_vec(), b"b1".to_vec()]
        );
        assert_eq!(
            keys(t.range(b"b2".to_vec()..=b"c1".to_vec())),
            vec![b"b2".to_vec(), b"c1".to_vec()]
        );
        let first = db.generate_id().expect("id");
        assert!(db.generate_id().expect("id") > first);
        db.meta_insert(b"marker", b"7").expect("meta");
        db.persist().expect("persist");
        drop((t, other, db));

        // What was persisted is there after reopening, and writes after the reopen win over
        // it (their sequence numbers continue above the persisted ones).
        let db = open(dir.path(), None);
        assert_eq!(db.kind(), kind, "the directory's engine is found again");
        assert!(db.generate_id().expect("id") > first);
        assert_eq!(
            db.meta_get(b"marker").expect("meta").as_deref(),
            Some(b"7".as_slice())
        );
        let t = db.open_tree("t").expect("tree");
        assert_eq!(
            t.get(b"b2").expect("get").as_deref(),
            Some(b"new".as_slice())
        );
        t.insert(b"b2", b"newer").expect("insert");
        t.remove(b"a1").expect("remove");
        assert_eq!(
            t.get(b"b2").expect("get").as_deref(),
            Some(b"newer".as_slice())
        );
        assert!(t.get(b"a1").expect("get").is_none());
        db.persist().expect("persist");
        db.compact().expect("compact");
        assert_eq!(
            keys(t.iter()),
            vec![b"b1".to_vec(), b"b2".to_vec(), b"c1".to_vec()]
        );
        let other = db.open_tree("other").expect("tree");
        assert_eq!(
            other.get(b"b1").expect("get").as_deref(),
            Some(b"elsewhere".as_slice())
        );
        t.clear().expect("clear");
        assert!(t.is_empty().expect("empty"));
        db.persist().expect("persist");
        drop((t, other, db));
        let db = open(dir.path(), None);
        let t = db.open_tree("t").expect("tree");
        assert!(
            t.is_empty().expect("empty"),
            "a cleared tree stays empty after reopening"
        );
    }

    #[test]
    fn the_lsm_engine_behaves_like_an_ordered_map_across_reopens() {
        behaves_like_an_ordered_map(EngineKind::Lsm);
    }

    #[test]
    fn the_sled_engine_behaves_like_an_ordered_map_across_reopens() {
        behaves_like_an_ordered_map(EngineKind::Sled);
    }

    #[test]
    fn writes_not_persisted_are_gone_after_reopening_the_lsm_engine() {
        // The engine is not the durable part: the write-ahead log replays what a checkpoint
        // had not persisted. This pins down that the engine alone does not keep it.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path(), None);
        let t = db.open_tree("t").expect("tree");
        t.insert(b"kept", b"1").expect("insert");
        db.persist().expect("persist");
        t.insert(b"lost", b"1").expect("insert");
        drop((t, db));
        let db = open(dir.path(), None);
        let t = db.open_tree("t").expect("tree");
        assert!(t.get(b"kept").expect("get").is_some());
        assert!(t.get(b"lost").expect("get").is_none());
    }

    #[test]
    fn a_new_directory_gets_the_lsm_engine_and_an_old_sled_directory_keeps_sled() {
        let fresh = tempfile::tempdir().expect("tempdir");
        assert_eq!(open(fresh.path(), None).kind(), EngineKind::Lsm);
        let old = tempfile::tempdir().expect("tempdir");
        drop(open(old.path(), Some(EngineKind::Sled)));
        assert_eq!(open(old.path(), None).kind(), EngineKind::Sled);
    }

    #[test]
    fn naming_another_engine_than_the_directory_holds_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path(), Some(EngineKind::Sled)));
        let err = Db::open(dir.path(), Some(EngineKind::Lsm), 1 << 24)
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("sled engine") && text.contains("lsm engine"),
            "{text}"
        );
        let lsm = tempfile::tempdir().expect("tempdir");
        drop(open(lsm.path(), None));
        assert!(Db::open(lsm.path(), Some(EngineKind::Sled), 1 << 24).is_err());
    }

    #[test]
    fn a_data_directory_in_use_is_refused_until_it_is_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open(dir.path(), None);
        let err = Db::open(dir.path(), None, 1 << 24).err().expect("refused");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        drop(open(dir.path(), None));
    }
}
