//! Tests of the search index: maintained by every write in the write's own log record, restored
//! by replay, rebuilt when its definition changes.

use super::*;
use serde_json::json;
use std::collections::BTreeSet;

/// Files a resource under `field \0 value` for its top-level string fields `status` and
/// `owner` (and, with `extra`, `intent`), like a real indexer files parameters.
#[derive(Debug)]
struct FieldIndexer {
    extra: bool,
}

impl Indexer for FieldIndexer {
    fn fingerprint(&self) -> String {
        format!("fields extra={}", self.extra)
    }

    fn keys(&self, _tenant: &str, _rt: &str, resource: &Value) -> Vec<Vec<u8>> {
        let mut fields = vec!["status", "owner"];
        if self.extra {
            fields.push("intent");
        }
        fields
            .into_iter()
            .filter_map(|f| {
                let v = resource.get(f)?.as_str()?;
                Some([f.as_bytes(), b"\0", v.as_bytes()].concat())
            })
            .collect()
    }
}

fn open_with(dir: &Path, indexer: Option<FieldIndexer>) -> Store {
    let options = StoreOptions {
        cache_capacity_bytes: 16 << 20,
        durability: Durability::GroupCommit,
        indexer: indexer.map(|i| Arc::new(i) as Arc<dyn Indexer>),
        ..StoreOptions::default()
    };
    // The engine lets go of its file lock once its own threads have seen the last handle
    // dropped.
    for _ in 0..100 {
        match Store::open(dir, &options) {
            Ok(s) => return s,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    Store::open(dir, &options).expect("open store")
}

fn exact(field: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    let start = [field.as_bytes(), b"\0", value.as_bytes(), b"\0"].concat();
    let end = [field.as_bytes(), b"\0", value.as_bytes(), b"\x01"].concat();
    (start, end)
}

fn ids(store: &Store, field: &str, value: &str) -> BTreeSet<String> {
    match store
        .search_index("r4", "Task", &[exact(field, value)], None)
        .expect("lookup")
    {
        IndexLookup::Ids(ids) => ids,
        other => panic!("{other:?}"),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn put(store: &Store, kind: WriteKind, id: &str, body: Option<Value>) {
    store
        .write(
            WriteRequest {
                tenant: "r4",
                resource_type: "Task",
                id,
                kind,
                body,
                if_match: None,
            },
            &mut |_: &Change<'_>| Ok(Vec::new()),
        )
        .await
        .expect("write");
}

fn task(status: &str, owner: &str) -> Option<Value> {
    Some(json!({"resourceType": "Task", "status": status, "owner": owner, "intent": "order"}))
}

/// The records in the store's log segments, oldest first.
fn log_records(dir: &Path) -> Vec<Vec<wal::Op>> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| wal::decode(&std::fs::read(f).expect("read")).0)
        .collect()
}

#[tokio::test]
async fn index_follows_create_update_and_delete_in_the_writes_own_log_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with(dir.path(), Some(FieldIndexer { extra: false }));
    assert!(store.search_index_enabled());
    put(&store, WriteKind::Create, "a", task("requested", "o1")).await;
    put(&store, WriteKind::Create, "b", task("requested", "o2")).await;
    assert_eq!(ids(&store, "status", "requested"), set(&["a", "b"]));
    assert_eq!(ids(&store, "owner", "o1"), set(&["a"]));

    put(&store, WriteKind::Upsert, "a", task("accepted", "o1")).await;
    assert_eq!(ids(&store, "status", "requested"), set(&["b"]));
    assert_eq!(ids(&store, "status", "accepted"), set(&["a"]));
    assert_eq!(ids(&store, "owner", "o1"), set(&["a"]));

    put(&store, WriteKind::Delete, "a", None).await;
    assert!(ids(&store, "status", "accepted").is_empty());
    assert!(ids(&store, "owner", "o1").is_empty());

    // Each write is one record holding its resource and its index changes; the update moved
    // only the key that changed (owner stayed).
    let records = log_records(dir.path());
    let update = records
        .iter()
        .filter(|ops| {
            ops.iter()
                .any(|op| matches!(op, wal::Op::Put(wal::TreeId::History, ..)))
        })
        .find(|ops| {
            ops.iter()
                .any(|op| matches!(op, wal::Op::Put(wal::TreeId::Search, ..)))
        })
        .expect("the update's record");
    let search_ops: Vec<&wal::Op> = update
        .iter()
        .filter(|op| {
            matches!(
                op,
                wal::Op::Put(wal::TreeId::Search, ..) | wal::Op::Remove(wal::TreeId::Search, _)
            )
        })
        .collect();
    assert_eq!(search_ops.len(), 2, "{search_ops:?}");
    assert!(
        update
            .iter()
            .any(|op| matches!(op, wal::Op::Put(wal::TreeId::Resources, ..)))
    );
    store.close().expect("close");
}

#[tokio::test]
async fn a_batch_updating_one_resource_twice_leaves_the_last_versions_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with(dir.path(), Some(FieldIndexer { extra: false }));
    put(&store, WriteKind::Create, "a", task("draft", "o1")).await;
    let reqs: Vec<WriteRequest<'_>> = [("requested", "o2"), ("accepted", "o3")]
        .into_iter()
        .map(|(s, o)| WriteRequest {
            tenant: "r4",
            resource_type: "Task",
            id: "a",
            kind: WriteKind::Upsert,
            body: task(s, o),
            if_match: None,
        })
        .collect();
    let out = store
        .apply_batch(&reqs, &mut |_, _: &Change<'_>| Ok(Vec::new()))
        .expect("batch");
    assert!(out.iter().all(Result::is_ok));
    store.make_durable().await.expect("sync");
    for (field, gone) in [
        ("status", "draft"),
        ("status", "requested"),
        ("owner", "o2"),
    ] {
        assert!(ids(&store, field, gone).is_empty(), "{field}={gone}");
    }
    assert_eq!(ids(&store, "status", "accepted"), set(&["a"]));
    assert_eq!(ids(&store, "owner", "o3"), set(&["a"]));
    store.close().expect("close");
}

#[tokio::test]
async fn a_replayed_log_restores_resources_and_their_index_entries_together() {
    let source = tempfile::tempdir().expect("tempdir");
    let store = open_with(source.path(), Some(FieldIndexer { extra: false }));
    put(&store, WriteKind::Create, "a", task("requested", "o1")).await;
    put(&store, WriteKind::Upsert, "a", task("accepted", "o1")).await;
    put(&store, WriteKind::Create, "b", task("requested", "o1")).await;
    let records = log_records(source.path());
    assert!(!records.is_empty(), "written records are still in the log");

    // A store whose engine lost everything the log holds (a crash before any checkpoint): its
    // index is current (an empty store, fingerprint stored), then the log is replayed into it.
    let target = tempfile::tempdir().expect("tempdir");
    open_with(target.path(), Some(FieldIndexer { extra: false }))
        .close()
        .expect("close");
    let mut bytes = Vec::new();
    for ops in &records {
        wal::encode(ops, &mut bytes);
    }
    std::fs::write(
        target.path().join("wal").join(format!("{:020}.log", 99)),
        bytes,
    )
    .expect("copy log");
    let replayed = open_with(target.path(), Some(FieldIndexer { extra: false }));
    assert_eq!(replayed.read("r4", "Task", "a").expect("a").version, 2);
    assert_eq!(ids(&replayed, "status", "accepted"), set(&["a"]));
    assert_eq!(ids(&replayed, "status", "requested"), set(&["b"]));
    assert_eq!(ids(&replayed, "owner", "o1"), set(&["a", "b"]));
    replayed.close().expect("close");
    store.close().expect("close");
}

#[tokio::test]
async fn the_index_is_rebuilt_when_its_definition_changes_and_dropped_when_switched_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A data directory from before the index.
    let store = open_with(dir.path(), None);
    assert!(!store.search_index_enabled());
    assert_eq!(
        store
            .search_index("r4", "Task", &[exact("status", "requested")], None)
            .expect("lookup"),
        IndexLookup::Off
    );
    put(&store, WriteKind::Create, "a", task("requested", "o1")).await;
    put(&store, WriteKind::Create, "b", task("requested", "o2")).await;
    put(&store, WriteKind::Create, "gone", task("requested", "o2")).await;
    put(&store, WriteKind::Delete, "gone", None).await;
    store.close().expect("close");
    drop(store);

    let store = open_with(dir.path(), Some(FieldIndexer { extra: false }));
    assert_eq!(ids(&store, "status", "requested"), set(&["a", "b"]));
    assert!(ids(&store, "intent", "order").is_empty());
    store.close().expect("close");
    drop(store);

    // Another definition: rebuilt with it.
    let store = open_with(dir.path(), Some(FieldIndexer { extra: true }));
    assert_eq!(ids(&store, "intent", "order"), set(&["a", "b"]));
    assert_eq!(
        store
            .search_index("r4", "Task", &[exact("intent", "order")], Some(1))
            .expect("lookup"),
        IndexLookup::TooMany
    );
    store.close().expect("close");
    drop(store);

    // Switched off, written meanwhile, switched on again: what was written while off is found.
    let store = open_with(dir.path(), None);
    put(&store, WriteKind::Upsert, "a", task("accepted", "o1")).await;
    store.close().expect("close");
    drop(store);
    let store = open_with(dir.path(), Some(FieldIndexer { extra: true }));
    assert_eq!(ids(&store, "status", "requested"), set(&["b"]));
    assert_eq!(ids(&store, "status", "accepted"), set(&["a"]));
    store.close().expect("close");
}
