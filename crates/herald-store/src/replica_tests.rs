//! Stores as replicas of one shared log (docs/cluster.md), on the in-memory log: what the
//! JetStream cluster relies on, checked without a network.

use super::*;
use serde_json::json;

fn replica(
    dir: &Path,
    log: &Arc<MemoryLog>,
) -> (Store, tokio::sync::mpsc::UnboundedReceiver<Applied>) {
    Store::open_replicated(
        dir,
        &StoreOptions {
            cache_capacity_bytes: 16 << 20,
            durability: Durability::GroupCommit,
            ..StoreOptions::default()
        },
        Arc::clone(log) as Arc<dyn RecordLog>,
    )
    .expect("open replica")
}

fn task<'a>(kind: WriteKind, id: &'a str, status: &str, if_match: Option<u64>) -> WriteRequest<'a> {
    WriteRequest {
        tenant: "r4",
        resource_type: "Task",
        id,
        kind,
        body: Some(json!({"resourceType": "Task", "status": status})),
        if_match,
    }
}

/// A hook that records one event for subscription `s` per change.
fn one_event() -> impl FnMut(&Change<'_>) -> std::result::Result<Vec<EventDraft>, String> {
    |_| {
        Ok(vec![EventDraft {
            subscription_id: "s".into(),
            topic: "http://example.org/topic".into(),
            ..EventDraft::default()
        }])
    }
}

#[tokio::test]
async fn a_write_on_one_replica_is_readable_on_another_after_it_catches_up() {
    let log = Arc::new(MemoryLog::default());
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _) = replica(a_dir.path(), &log);
    let (b, mut b_applied) = replica(b_dir.path(), &log);
    a.write(
        task(WriteKind::Create, "t1", "requested", None),
        &mut one_event(),
    )
    .await
    .expect("write on a");
    assert!(matches!(
        b.read("r4", "Task", "t1"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(b.catch_up().expect("catch up"), 1);
    assert_eq!(b.read("r4", "Task", "t1").expect("read on b").version, 1);
    assert_eq!(b.event_count("r4", "s").expect("count"), 1);
    let applied = b_applied.try_recv().expect("b reports a's record");
    assert_eq!(
        applied.resources,
        vec![("r4".into(), "Task".into(), "t1".into())]
    );
    assert_eq!(applied.events, vec![("r4".into(), "s".into(), 1)]);
    assert_eq!((a.log_position(), b.log_position()), (Some(1), Some(1)));
}

#[tokio::test]
async fn concurrent_if_match_updates_on_two_replicas_let_exactly_one_win() {
    let log = Arc::new(MemoryLog::default());
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _) = replica(a_dir.path(), &log);
    let (b, _) = replica(b_dir.path(), &log);
    a.write(
        task(WriteKind::Create, "t1", "requested", None),
        &mut one_event(),
    )
    .await
    .expect("create");
    b.catch_up().expect("catch up");
    // Both saw version 1; a appends first, b's append finds the log ahead and is recomputed.
    a.write(
        task(WriteKind::Upsert, "t1", "accepted", Some(1)),
        &mut one_event(),
    )
    .await
    .expect("a wins");
    let lost = b
        .write(
            task(WriteKind::Upsert, "t1", "rejected", Some(1)),
            &mut one_event(),
        )
        .await;
    assert!(
        matches!(lost, Err(StoreError::VersionConflict { current: 2, .. })),
        "{lost:?}"
    );
    for s in [&a, &b] {
        s.catch_up().expect("catch up");
        let v = s.read("r4", "Task", "t1").expect("read");
        assert_eq!(v.version, 2);
        assert_eq!(v.resource.expect("body")["status"], "accepted");
    }
}

#[tokio::test]
async fn event_numbers_stay_gap_free_and_equal_when_replicas_write_in_turn_without_catching_up() {
    let log = Arc::new(MemoryLog::default());
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _) = replica(a_dir.path(), &log);
    let (b, _) = replica(b_dir.path(), &log);
    let mut numbers = Vec::new();
    for i in 0..10 {
        let id = format!("t{i}");
        let s = if i % 2 == 0 { &a } else { &b };
        let out = s
            .write(
                task(WriteKind::Create, &id, "requested", None),
                &mut one_event(),
            )
            .await
            .expect("write");
        numbers.extend(out.events.into_iter().map(|(_, n)| n));
    }
    assert_eq!(numbers, (1..=10).collect::<Vec<u64>>());
    for s in [&a, &b] {
        s.catch_up().expect("catch up");
        let events = s.events("r4", "s", None, None).expect("events");
        let ids: Vec<String> = events.iter().map(|e| e.focus_id.clone()).collect();
        assert_eq!(ids, (0..10).map(|i| format!("t{i}")).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_reopened_replica_resumes_from_its_checkpoint_and_applies_what_it_missed() {
    let log = Arc::new(MemoryLog::default());
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, _) = replica(a_dir.path(), &log);
    {
        let (b, _) = replica(b_dir.path(), &log);
        b.write(
            task(WriteKind::Create, "t1", "requested", None),
            &mut one_event(),
        )
        .await
        .expect("write on b");
        b.close().expect("close b");
    }
    a.catch_up().expect("catch up");
    a.write(
        task(WriteKind::Upsert, "t1", "accepted", Some(1)),
        &mut one_event(),
    )
    .await
    .expect("write on a while b is down");
    let (b, _) = replica(b_dir.path(), &log);
    assert_eq!(b.log_position(), Some(2));
    assert_eq!(b.read("r4", "Task", "t1").expect("read").version, 2);
    assert_eq!(b.event_count("r4", "s").expect("count"), 2);
}
