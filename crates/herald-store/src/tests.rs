use super::*;
use serde_json::json;

fn open(dir: &Path, durability: Durability) -> Store {
    Store::open(
        dir,
        &StoreOptions {
            cache_capacity_bytes: 16 << 20,
            durability,
            indexer: None,
        },
    )
    .expect("open store")
}

fn req<'a>(kind: WriteKind, id: &'a str, body: Option<Value>) -> WriteRequest<'a> {
    WriteRequest {
        tenant: "r4",
        resource_type: "Task",
        id,
        kind,
        body,
        if_match: None,
    }
}

fn no_events() -> impl FnMut(&Change<'_>) -> std::result::Result<Vec<EventDraft>, String> {
    |_| Ok(Vec::new())
}

#[tokio::test]
async fn create_sets_id_version_and_last_updated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    let out = store
        .write(
            req(
                WriteKind::Create,
                "t1",
                Some(json!({"resourceType":"Task","status":"requested"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("create");
    assert!(out.changed);
    assert_eq!(out.stored.version, 1);
    let body = out.stored.resource.expect("body");
    assert_eq!(body["id"], "t1");
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(
        body["meta"]["lastUpdated"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
}

#[tokio::test]
async fn updates_make_contiguous_versions_and_history_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    for status in ["requested", "accepted", "in-progress"] {
        store
            .write(
                req(
                    WriteKind::Upsert,
                    "t1",
                    Some(json!({"resourceType":"Task","status":status})),
                ),
                &mut no_events(),
            )
            .await
            .expect("upsert");
    }
    let hist = store.history("r4", "Task", "t1").expect("history");
    assert_eq!(
        hist.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(hist[0].interaction, Interaction::Update);
    assert_eq!(hist[2].interaction, Interaction::Create);
    let v2 = store.read_version("r4", "Task", "t1", 2).expect("vread");
    assert_eq!(v2.resource.expect("body")["status"], "accepted");
}

#[tokio::test]
async fn identical_update_writes_no_version_and_calls_no_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    let body = json!({"resourceType":"Task","status":"requested"});
    store
        .write(
            req(WriteKind::Upsert, "t1", Some(body.clone())),
            &mut no_events(),
        )
        .await
        .expect("create");
    let mut called = false;
    let mut hook = |_: &Change<'_>| {
        called = true;
        Ok(Vec::new())
    };
    let out = store
        .write(req(WriteKind::Upsert, "t1", Some(body)), &mut hook)
        .await
        .expect("noop");
    assert!(!out.changed);
    assert_eq!(out.stored.version, 1);
    assert!(!called);
}

#[tokio::test]
async fn stale_if_match_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    store
        .write(
            req(
                WriteKind::Upsert,
                "t1",
                Some(json!({"resourceType":"Task","status":"a"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("v1");
    store
        .write(
            req(
                WriteKind::Upsert,
                "t1",
                Some(json!({"resourceType":"Task","status":"b"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("v2");
    let mut r = req(
        WriteKind::Upsert,
        "t1",
        Some(json!({"resourceType":"Task","status":"c"})),
    );
    r.if_match = Some(1);
    let err = store.write(r, &mut no_events()).await.expect_err("stale");
    assert!(matches!(
        err,
        StoreError::VersionConflict {
            expected: 1,
            current: 2,
            ..
        }
    ));
    assert_eq!(store.read("r4", "Task", "t1").expect("read").version, 2);
}

#[tokio::test]
async fn delete_leaves_a_tombstone_and_read_reports_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    store
        .write(
            req(
                WriteKind::Create,
                "t1",
                Some(json!({"resourceType":"Task"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("create");
    let out = store
        .write(req(WriteKind::Delete, "t1", None), &mut no_events())
        .await
        .expect("delete");
    assert_eq!(out.stored.version, 2);
    assert!(matches!(
        store.read("r4", "Task", "t1"),
        Err(StoreError::Gone { version: 2, .. })
    ));
    assert_eq!(store.live_of_type("r4", "Task").count(), 0);
    // Deleting again is a no-op; re-creating continues the version sequence.
    let again = store
        .write(req(WriteKind::Delete, "t1", None), &mut no_events())
        .await
        .expect("delete again");
    assert!(!again.changed);
    let back = store
        .write(
            req(
                WriteKind::Upsert,
                "t1",
                Some(json!({"resourceType":"Task"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("recreate");
    assert_eq!(
        (back.stored.version, back.stored.interaction),
        (3, Interaction::Create)
    );
}

#[tokio::test]
async fn create_of_a_live_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::Off);
    store
        .write(
            req(
                WriteKind::Create,
                "t1",
                Some(json!({"resourceType":"Task"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("create");
    let err = store
        .write(
            req(
                WriteKind::Create,
                "t1",
                Some(json!({"resourceType":"Task"})),
            ),
            &mut no_events(),
        )
        .await
        .expect_err("dup");
    assert!(matches!(err, StoreError::AlreadyExists { .. }));
}

#[tokio::test]
async fn hook_events_are_numbered_per_subscription_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), Durability::GroupCommit);
        let mut hook = |c: &Change<'_>| {
            let mut v = vec![EventDraft {
                subscription_id: "a".into(),
                topic: "t".into(),
                additional_context: vec![],
                ..Default::default()
            }];
            if c.id == "t2" {
                v.push(EventDraft {
                    subscription_id: "b".into(),
                    topic: "t".into(),
                    additional_context: vec!["Patient/p".into()],
                    ..Default::default()
                });
            }
            Ok(v)
        };
        for id in ["t1", "t2", "t3"] {
            store
                .write(
                    req(WriteKind::Create, id, Some(json!({"resourceType":"Task"}))),
                    &mut hook,
                )
                .await
                .expect("write");
        }
        store.close().expect("close");
    }
    let store = open(dir.path(), Durability::GroupCommit);
    assert_eq!(store.event_count("r4", "a").expect("count"), 3);
    assert_eq!(store.event_count("r4", "b").expect("count"), 1);
    let a = store.events("r4", "a", None, None).expect("events");
    assert_eq!(
        a.iter().map(|e| e.number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(a[1].focus_reference(), "Task/t2/_history/1");
    let b = store.events("r4", "b", Some(1), Some(1)).expect("events");
    assert_eq!(b[0].additional_context, vec!["Patient/p".to_string()]);
    let mut hook = |_: &Change<'_>| {
        Ok(vec![EventDraft {
            subscription_id: "a".into(),
            topic: "t".into(),
            additional_context: vec![],
            ..Default::default()
        }])
    };
    let out = store
        .write(
            req(
                WriteKind::Upsert,
                "t1",
                Some(json!({"resourceType":"Task","status":"x"})),
            ),
            &mut hook,
        )
        .await
        .expect("write");
    assert_eq!(out.events, vec![("a".to_string(), 4)]);
}

#[tokio::test]
async fn a_failing_hook_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    let mut hook = |_: &Change<'_>| Err("boom".to_string());
    let err = store
        .write(
            req(
                WriteKind::Create,
                "t1",
                Some(json!({"resourceType":"Task"})),
            ),
            &mut hook,
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, StoreError::Hook(_)));
    assert!(store.current("r4", "Task", "t1").expect("read").is_none());
}

fn draft(sub: &str) -> EventDraft {
    EventDraft {
        subscription_id: sub.into(),
        topic: "t".into(),
        additional_context: vec![],
        ..Default::default()
    }
}

#[test]
fn a_batch_applies_in_order_and_later_writes_see_earlier_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::Off);
    let reqs = [
        req(
            WriteKind::Create,
            "t1",
            Some(json!({"resourceType":"Task","status":"requested"})),
        ),
        req(
            WriteKind::Upsert,
            "t1",
            Some(json!({"resourceType":"Task","status":"accepted"})),
        ),
        req(
            WriteKind::Create,
            "t2",
            Some(json!({"resourceType":"Task","status":"requested"})),
        ),
        req(WriteKind::Delete, "t1", None),
    ];
    let mut seen = Vec::new();
    let mut hook = |i: usize, c: &Change<'_>| {
        seen.push((i, c.id.to_owned(), c.version, c.previous.is_some()));
        Ok(vec![draft("a")])
    };
    let out = store.apply_batch(&reqs, &mut hook).expect("batch");
    let versions: Vec<u64> = out
        .iter()
        .map(|r| r.as_ref().expect("each write succeeds").stored.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 1, 3]);
    // The hook saw each change with its index, and the update saw the create before it.
    assert_eq!(
        seen,
        vec![
            (0, "t1".to_string(), 1, false),
            (1, "t1".to_string(), 2, true),
            (2, "t2".to_string(), 1, false),
            (3, "t1".to_string(), 3, true),
        ]
    );
    // Events are numbered in batch order, one counter across the batch.
    let numbers: Vec<u64> = out
        .iter()
        .flat_map(|r| r.as_ref().expect("ok").events.iter().map(|(_, n)| *n))
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    let events = store.events("r4", "a", None, None).expect("events");
    assert_eq!(
        events
            .iter()
            .map(|e| e.focus_reference())
            .collect::<Vec<_>>(),
        vec![
            "Task/t1/_history/1",
            "Task/t1/_history/2",
            "Task/t2/_history/1",
            "Task/t1/_history/3"
        ]
    );
    assert!(
        store
            .current("r4", "Task", "t1")
            .expect("read")
            .expect("tombstone")
            .is_deleted()
    );
}

#[test]
fn a_refused_write_in_a_batch_leaves_only_itself_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::Off);
    let mut stale = req(
        WriteKind::Upsert,
        "t1",
        Some(json!({"resourceType":"Task","status":"x"})),
    );
    stale.if_match = Some(7);
    let reqs = [
        req(
            WriteKind::Create,
            "t1",
            Some(json!({"resourceType":"Task"})),
        ),
        req(
            WriteKind::Create,
            "t1",
            Some(json!({"resourceType":"Task","status":"dup"})),
        ),
        stale,
        req(
            WriteKind::Create,
            "boom",
            Some(json!({"resourceType":"Task"})),
        ),
        req(WriteKind::Delete, "never", None),
        req(
            WriteKind::Create,
            "t2",
            Some(json!({"resourceType":"Task"})),
        ),
    ];
    let mut hook = |_: usize, c: &Change<'_>| {
        if c.id == "boom" {
            Err("refused".to_string())
        } else {
            Ok(vec![draft("a")])
        }
    };
    let out = store.apply_batch(&reqs, &mut hook).expect("batch");
    assert_eq!(out.len(), 6);
    assert!(out[0].is_ok());
    assert!(matches!(out[1], Err(StoreError::AlreadyExists { .. })));
    assert!(matches!(
        out[2],
        Err(StoreError::VersionConflict {
            expected: 7,
            current: 1,
            ..
        })
    ));
    assert!(matches!(out[3], Err(StoreError::Hook(_))));
    assert!(matches!(out[4], Err(StoreError::NotFound { .. })));
    assert_eq!(
        out[5].as_ref().expect("t2").events,
        vec![("a".to_string(), 2)]
    );
    // Nothing of the refused writes was stored, and their events were not counted.
    assert!(store.current("r4", "Task", "boom").expect("read").is_none());
    assert_eq!(store.history("r4", "Task", "t1").expect("history").len(), 1);
    assert_eq!(store.event_count("r4", "a").expect("count"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_group_commit_writers_all_complete_with_distinct_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(dir.path(), Durability::GroupCommit));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let id = format!("w{w}");
                store
                    .write(
                        WriteRequest {
                            tenant: "r4",
                            resource_type: "Task",
                            id: &id,
                            kind: WriteKind::Upsert,
                            body: Some(json!({"resourceType":"Task","n":i})),
                            if_match: None,
                        },
                        &mut |_| Ok(Vec::new()),
                    )
                    .await
                    .expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    for w in 0..16 {
        assert_eq!(
            store
                .read("r4", "Task", &format!("w{w}"))
                .expect("read")
                .version,
            20
        );
    }
}

#[tokio::test]
async fn delivery_state_and_attempt_log_round_trip_with_filters_and_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::Off);
    assert_eq!(
        store.delivery_state("r4", "s1").expect("state"),
        DeliveryState::default()
    );
    let st = DeliveryState {
        acked: 7,
        consecutive_failures: 2,
        next_attempt_at_ms: Some(99),
        ..Default::default()
    };
    store.put_delivery_state("r4", "s1", &st).expect("put");
    assert_eq!(store.delivery_state("r4", "s1").expect("state"), st);
    for i in 0..10u64 {
        store
            .record_attempt(&AttemptRecord {
                at_ms: 1000 + i,
                at: String::new(),
                tenant: "r4".into(),
                subscription: if i % 2 == 0 { "a".into() } else { "b".into() },
                notification_type: "event-notification".into(),
                events: vec![i],
                outcome: if i < 5 {
                    "failed".into()
                } else {
                    "delivered".into()
                },
                http_status: Some(200),
                error: None,
                latency_ms: 1.0,
                response_body: None,
                request_headers: vec![],
                endpoint: "http://x".into(),
            })
            .expect("record");
    }
    let (total, page) = store
        .attempts(
            &AttemptFilter {
                subscription: Some("a".into()),
                ..Default::default()
            },
            0,
            2,
        )
        .expect("list");
    assert_eq!(total, 5);
    assert_eq!(
        page.iter().map(|a| a.events[0]).collect::<Vec<_>>(),
        vec![8, 6],
        "newest first"
    );
    let (total, _) = store
        .attempts(
            &AttemptFilter {
                outcome: Some("failed".into()),
                since_ms: Some(1002),
                ..Default::default()
            },
            0,
            10,
        )
        .expect("list");
    assert_eq!(total, 3);
    assert_eq!(store.prune_attempts(4).expect("prune"), 6);
    let (total, page) = store
        .attempts(&AttemptFilter::default(), 0, 10)
        .expect("list");
    assert_eq!(total, 4);
    assert_eq!(
        page.last().map(|a| a.events[0]),
        Some(6),
        "oldest dropped first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_durability_rides_along_with_another_writers_flush_or_asks_for_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(dir.path(), Durability::GroupCommit));
    // Idle: after its patience it asks for a flush of its own.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.make_durable_lazily(std::time::Duration::from_millis(1)),
    )
    .await
    .expect("an idle lazy wait must force its own sync")
    .expect("durable");
    // Patient: another writer's sync is enough.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .make_durable_lazily(std::time::Duration::from_secs(3600))
                .await
        })
    };
    // Keep writing (each write syncs) until the waiter is released; a waiter that needed a
    // flush of its own would sit out its hour and fail the bound below.
    let released = async {
        let mut n = 0u32;
        while !waiter.is_finished() {
            n += 1;
            let id = format!("t{n}");
            store
                .write(
                    req(WriteKind::Create, &id, Some(json!({"resourceType":"Task"}))),
                    &mut no_events(),
                )
                .await
                .expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        waiter.await
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), released)
        .await
        .expect("other writers' syncs must release the patient waiter")
        .expect("join")
        .expect("durable");
}

#[tokio::test]
async fn every_version_is_readable_once_whether_current_or_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    for (id, status) in [("a", "requested"), ("a", "accepted"), ("b", "requested")] {
        store
            .write(
                req(
                    WriteKind::Upsert,
                    id,
                    Some(json!({"resourceType":"Task","status":status})),
                ),
                &mut no_events(),
            )
            .await
            .expect("upsert");
    }
    store
        .write(req(WriteKind::Delete, "b", None), &mut no_events())
        .await
        .expect("delete");
    // The current version (2) and the replaced one (1) both read by version.
    let v1 = store.read_version("r4", "Task", "a", 1).expect("v1");
    assert_eq!(v1.resource.expect("body")["status"], "requested");
    let v2 = store.read_version("r4", "Task", "a", 2).expect("v2");
    assert_eq!(v2.resource.expect("body")["status"], "accepted");
    assert!(matches!(
        store.read_version("r4", "Task", "a", 3),
        Err(StoreError::VersionNotFound { version: 3, .. })
    ));
    // A deletion is the current version of b; its create moved to history.
    assert!(
        store
            .read_version("r4", "Task", "b", 2)
            .expect("tombstone")
            .is_deleted()
    );
    assert!(
        !store
            .read_version("r4", "Task", "b", 1)
            .expect("create")
            .is_deleted()
    );
    // Type history lists each version exactly once.
    let mut seen: Vec<(String, u64)> = store
        .type_history("r4", "Task")
        .expect("type history")
        .into_iter()
        .map(|v| (v.id, v.version))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("a".to_string(), 1),
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("b".to_string(), 2)
        ]
    );
}

#[tokio::test]
async fn readers_see_a_write_only_once_it_is_durable_while_later_writes_build_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    let body = |status: &str| Some(json!({"resourceType":"Task","status":status}));
    let first = store
        .apply(
            req(WriteKind::Create, "t1", body("requested")),
            &mut no_events(),
        )
        .expect("apply");
    assert_eq!(first.stored.version, 1);
    // Logged, not yet synced: readers do not see it (it could still be lost)...
    assert!(store.current("r4", "Task", "t1").expect("read").is_none());
    // ...but the next write of the same resource builds on it.
    let second = store
        .apply(
            req(WriteKind::Upsert, "t1", body("accepted")),
            &mut no_events(),
        )
        .expect("apply");
    assert_eq!(second.stored.version, 2);
    assert_eq!(second.stored.interaction, Interaction::Update);
    store.make_durable().await.expect("durable");
    let now = store.read("r4", "Task", "t1").expect("read");
    assert_eq!(now.version, 2);
    assert_eq!(store.history("r4", "Task", "t1").expect("history").len(), 2);
}

#[test]
fn commit_instants_strictly_increase_even_within_one_millisecond() {
    let stamps: Vec<String> = (0..1000).map(|_| commit_instant().0).collect();
    for pair in stamps.windows(2) {
        assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
    }
    assert!(
        stamps
            .iter()
            .all(|s| s.ends_with('Z') && s.len() == "2026-11-29T00:00:00.000000Z".len())
    );
}

fn keys_with(secret: &str, seed: &str) -> SigningKeys {
    SigningKeys {
        current: SigningSecret {
            secret: secret.into(),
            created_at_ms: 1,
            expires_at_ms: None,
        },
        previous: None,
        id_seed: seed.into(),
    }
}

#[tokio::test]
async fn signing_keys_are_made_once_survive_reopen_and_die_with_their_resource() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), Durability::GroupCommit);
        let refused = store
            .signing_keys_or_insert("r4", "Task", "t1", keys_with("whsec_a", "s1"))
            .await;
        assert!(matches!(refused, Err(StoreError::NotFound { .. })));
        store
            .write(
                req(
                    WriteKind::Create,
                    "t1",
                    Some(json!({"resourceType":"Task"})),
                ),
                &mut no_events(),
            )
            .await
            .expect("create");
        let first = store
            .signing_keys_or_insert("r4", "Task", "t1", keys_with("whsec_a", "s1"))
            .await
            .expect("insert");
        let again = store
            .signing_keys_or_insert("r4", "Task", "t1", keys_with("whsec_b", "s2"))
            .await
            .expect("existing");
        assert_eq!(first, again);
        assert_eq!(again.current.secret, "whsec_a");
        store.close().expect("close");
    }
    let store = open(dir.path(), Durability::GroupCommit);
    let kept = store.signing_keys("r4", "Task", "t1").expect("read");
    assert_eq!(kept.map(|k| k.current.secret), Some("whsec_a".into()));
    store
        .write(req(WriteKind::Delete, "t1", None), &mut no_events())
        .await
        .expect("delete");
    assert_eq!(store.signing_keys("r4", "Task", "t1").expect("read"), None);
    let refused = store
        .signing_keys_or_insert("r4", "Task", "t1", keys_with("whsec_c", "s3"))
        .await;
    assert!(matches!(refused, Err(StoreError::Gone { .. })));
    store
        .write(
            req(
                WriteKind::Upsert,
                "t1",
                Some(json!({"resourceType":"Task"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("recreate");
    let fresh = store
        .signing_keys_or_insert("r4", "Task", "t1", keys_with("whsec_d", "s4"))
        .await
        .expect("new incarnation");
    assert_eq!(fresh.current.secret, "whsec_d");
}

#[tokio::test]
async fn rotation_keeps_the_replaced_secret_signing_for_the_overlap_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::GroupCommit);
    store
        .write(
            req(
                WriteKind::Create,
                "t1",
                Some(json!({"resourceType":"Task"})),
            ),
            &mut no_events(),
        )
        .await
        .expect("create");
    store
        .signing_keys_or_insert("r4", "Task", "t1", keys_with("whsec_a", "s1"))
        .await
        .expect("insert");
    let rotated = store
        .rotate_signing_secret("r4", "Task", "t1", keys_with("whsec_b", "s2"), 1000, 500)
        .await
        .expect("rotate");
    assert_eq!(rotated.id_seed, "s1", "the id seed outlives rotations");
    let at = |now| {
        rotated
            .signing_at(now)
            .iter()
            .map(|s| s.secret.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(at(1499), ["whsec_b", "whsec_a"]);
    assert_eq!(at(1500), ["whsec_b"]);
    let again = store
        .rotate_signing_secret("r4", "Task", "t1", keys_with("whsec_c", "s3"), 1100, 0)
        .await
        .expect("rotate without overlap");
    assert_eq!(again.signing_at(1100).len(), 1);
    assert_eq!(
        store.signing_keys("r4", "Task", "t1").expect("read"),
        Some(again)
    );
}

#[test]
fn signing_secrets_never_show_in_debug_output() {
    let k = keys_with("whsec_topsecret", "s1");
    assert!(!format!("{k:?}").contains("topsecret"));
}

fn attempt_at(at_ms: u64, sub: &str, outcome: &str, status: Option<u16>) -> AttemptRecord {
    AttemptRecord {
        at_ms,
        at: String::new(),
        tenant: "r4".into(),
        subscription: sub.into(),
        notification_type: "event-notification".into(),
        events: vec![1],
        outcome: outcome.into(),
        http_status: status,
        error: None,
        latency_ms: 1.0,
        response_body: None,
        request_headers: vec![],
        endpoint: "http://x".into(),
    }
}

#[tokio::test]
async fn retention_removes_only_acknowledged_events_beyond_the_limits_and_remembers_how_far() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::Off);
    let mut hook = |_: &Change<'_>| Ok(vec![draft("a")]);
    for i in 0..50 {
        let body = json!({"resourceType": "Task", "status": "requested", "n": i});
        store
            .write(req(WriteKind::Upsert, "t", Some(body)), &mut hook)
            .await
            .expect("write");
    }
    // 30 acknowledged, keep the newest 10 of those: 1-20 go, 21-50 stay
    assert_eq!(
        store
            .prune_events("r4", "a", 30, Some(10), None)
            .expect("prune"),
        20
    );
    assert_eq!(store.pruned_through("r4", "a").expect("floor"), 20);
    let left = store.events("r4", "a", None, None).expect("events");
    assert_eq!(left.first().map(|e| e.number), Some(21));
    assert_eq!(left.len(), 30);
    // again: nothing more to do
    assert_eq!(
        store
            .prune_events("r4", "a", 30, Some(10), None)
            .expect("prune"),
        0
    );
    // by age: everything acknowledged is older than a cutoff in the future, unacked stays
    let future = u64::MAX / 2;
    assert_eq!(
        store
            .prune_events("r4", "a", 30, None, Some(future))
            .expect("prune"),
        10
    );
    assert_eq!(store.pruned_through("r4", "a").expect("floor"), 30);
    assert_eq!(
        store.events("r4", "a", None, None).expect("events").len(),
        20
    );
    // numbers are never reused: the counter is untouched
    assert_eq!(store.event_count("r4", "a").expect("count"), 50);
    // the floor survives a restart (sled lets go of its file lock once its own threads have
    // seen the last handle dropped: allow it a moment)
    store.close().expect("close");
    drop(store);
    let mut tries = 0;
    let store = loop {
        match Store::open(
            dir.path(),
            &StoreOptions {
                cache_capacity_bytes: 16 << 20,
                durability: Durability::Off,
                indexer: None,
            },
        ) {
            Ok(s) => break s,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("cannot reopen: {e}"),
        }
    };
    assert_eq!(store.pruned_through("r4", "a").expect("floor"), 30);
}

#[test]
fn attempt_pages_follow_the_cursor_and_the_age_limit_cuts_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::Off);
    for i in 0..7u64 {
        let (outcome, status) = if i % 2 == 0 {
            ("failed", Some(503))
        } else {
            ("delivered", Some(200))
        };
        store
            .record_attempt(&attempt_at(1000 + i, "s", outcome, status))
            .expect("record");
    }
    let all = AttemptFilter::default();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .attempt_page(&all, cursor.as_deref(), 3)
            .expect("page")
            .expect("a valid cursor");
        seen.extend(page.entries.iter().map(|(_, a)| a.at_ms));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1000..1007).rev().collect::<Vec<_>>());
    let only_503 = AttemptFilter {
        http_status: Some(503),
        ..Default::default()
    };
    let page = store
        .attempt_page(&only_503, None, 100)
        .expect("page")
        .expect("page");
    assert_eq!(page.entries.len(), 4);
    let (id, a) = &page.entries[0];
    assert_eq!(store.attempt(id).expect("read").as_ref(), Some(a));
    assert_eq!(store.attempt("not-an-id").expect("read"), None);
    assert!(
        store
            .attempt_page(&all, Some("zz"), 3)
            .expect("page")
            .is_none()
    );
    assert_eq!(store.prune_attempts_before(1003).expect("prune"), 3);
    let page = store
        .attempt_page(&all, None, 100)
        .expect("page")
        .expect("page");
    assert_eq!(page.entries.last().map(|(_, a)| a.at_ms), Some(1003));
}

#[test]
fn audit_records_come_back_newest_first_per_subscription() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Durability::Off);
    for (i, (sub, action)) in [("a", "pause"), ("b", "retry"), ("a", "resume")]
        .iter()
        .enumerate()
    {
        store
            .record_audit(&AuditRecord {
                at_ms: 1000 + i as u64,
                at: String::new(),
                actor: "ops".into(),
                action: (*action).into(),
                tenant: "r4".into(),
                subscription: (*sub).into(),
                detail: None,
            })
            .expect("audit");
    }
    let a: Vec<String> = store
        .audit(Some("r4"), Some("a"), 10)
        .expect("audit")
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(a, ["resume", "pause"]);
    assert_eq!(store.audit(None, None, 2).expect("audit").len(), 2);
}

/// A steady load over `rounds`: attempts and events, each round followed by a retention pass
/// (when `retain`) and a checkpoint. Returns the disk use after each round.
async fn steady_load(dir: &Path, rounds: usize, retain: bool) -> Vec<u64> {
    let store = open(dir, Durability::Off);
    let mut hook = |_: &Change<'_>| Ok(vec![draft("a")]);
    let mut sizes = Vec::new();
    let (mut at, mut written) = (0u64, 0u64);
    for _ in 0..rounds {
        for _ in 0..2000 {
            at += 1;
            let mut a = attempt_at(at, "a", "delivered", Some(200));
            a.response_body = Some("x".repeat(200));
            store.record_attempt(&a).expect("record");
        }
        for _ in 0..200 {
            written += 1;
            let body = json!({"resourceType": "Task", "status": "requested", "n": written});
            store
                .write(req(WriteKind::Upsert, "t", Some(body)), &mut hook)
                .await
                .expect("write");
        }
        if retain {
            store.prune_attempts(1000).expect("prune attempts");
            store
                .prune_events("r4", "a", written, Some(100), None)
                .expect("prune events");
        }
        store.wal.checkpoint().expect("checkpoint");
        sizes.push(store.disk_bytes());
    }
    if retain {
        assert_eq!(
            store.events("r4", "a", None, None).expect("events").len(),
            100
        );
    }
    sizes
}

/// A long steady load, simulated with small limits: under retention the disk use levels off
/// (what grows is the resource's own history, which is kept), while without it the logs grow
/// with every round.
#[tokio::test]
async fn disk_use_levels_off_when_retention_keeps_up_with_a_steady_load() {
    let (with, without) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let kept = steady_load(with.path(), 16, true).await;
    let all = steady_load(without.path(), 16, false).await;
    eprintln!("disk bytes per round, with retention: {kept:?}; without: {all:?}");
    let growth = |s: &[u64]| s[15].saturating_sub(s[5]);
    assert!(
        growth(&kept) * 3 < growth(&all),
        "retention should stop most of the growth: with {kept:?}, without {all:?}"
    );
}
