//! Delivery survives `kill -9` (at-least-once, in order, gap-free): the real binary delivers to
//! a real receiver while concurrent writers produce events; it is killed with SIGKILL at
//! random moments, many times, and restarted on the same data. Afterwards, for every
//! subscription:
//!
//! * every event number `1..=N` (N from `$status`) reached the receiver, and N covers every
//!   write Herald acknowledged;
//! * within one Herald process, notifications follow each other exactly (`first == previous
//!   last + 1`): a number is repeated only by the first notification after a restart, and only
//!   from the batch that was in flight (the dispatcher makes its cursor durable before it sends
//!   the next batch, so the first notification after a restart never starts before the first
//!   event of the last notification the receiver accepted);
//! * a number always means the same event: every delivery of it names the same focus version
//!   (an event must never be delivered before it is durable, or a crash could reuse its number).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_subscriptions::notification::{NotificationType, parse_status_bundle};
use herald_tests::receiver::{Received, Receiver, has_all_events, summary};
use herald_tests::{
    Herald, Rng, client, crash_seed as seed, r4_subscription, r5_subscription, task,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FHIR: &str = "application/fhir+json";
/// Crash-and-restart cycles, all on one data directory.
const CYCLES: usize = 12;
/// Concurrent writer tasks per tenant.
const WRITERS: usize = 3;
const WAIT: Duration = Duration::from_secs(60);

struct Sub {
    tenant: &'static str,
    path: &'static str,
    id: String,
    max_count: u64,
}

async fn send(c: &reqwest::Client, method: reqwest::Method, url: &str, body: &Value) -> Value {
    let (status, v) = herald_tests::send(c, method, url, body).await;
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

async fn wait_active(c: &reqwest::Client, base: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: Value = c
            .get(format!("{base}/Subscription/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["status"] == "active" {
            return;
        }
        assert!(Instant::now() < deadline, "never active: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes Tasks (creates, then updates of the same Task) until `stop`; counts acknowledged
/// writes. Errors (the server was killed) end nothing: the loop only stops on `stop`.
async fn writer(base: String, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>, n: usize) {
    let c = client();
    let mut current: Option<Value> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let result = match current.take() {
            Some(mut t) if !i.is_multiple_of(4) => {
                t["status"] = json!(if i.is_multiple_of(2) {
                    "accepted"
                } else {
                    "in-progress"
                });
                c.put(format!("{base}/Task/{}", t["id"].as_str().unwrap()))
                    .header("content-type", FHIR)
                    .body(t.to_string())
                    .send()
                    .await
            }
            _ => {
                c.post(format!("{base}/Task"))
                    .header("content-type", FHIR)
                    .body(task(&format!("Organization/w{n}")).to_string())
                    .send()
                    .await
            }
        };
        match result {
            Ok(r) if r.status().is_success() => {
                if let Ok(body) = r.json::<Value>().await {
                    acked.fetch_add(1, Ordering::SeqCst);
                    current = Some(body);
                }
            }
            Ok(r) => assert_ne!(
                r.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "writes are valid"
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Checks one subscription's deliveries (arrival order) as described at the top of the file;
/// returns the largest number of events redelivered after one restart.
fn check_sequence(sub: &Sub, got: &[Received]) -> u64 {
    let mut max_seen = 0u64;
    let mut prev: Option<(String, u64, u64)> = None; // (sender, first, last number)
    let mut focus_of: BTreeMap<u64, Option<String>> = BTreeMap::new();
    let mut worst_redelivery = 0;
    for r in got
        .iter()
        .filter(|r| r.accepted() && r.kind() == Some(NotificationType::EventNotification))
    {
        let n = r.notification.as_ref().unwrap();
        let nums = r.event_numbers();
        let (first, last) = (nums[0], *nums.last().unwrap());
        assert_eq!(
            nums,
            (first..=last).collect::<Vec<_>>(),
            "{}: a notification carries consecutive events",
            sub.path
        );
        assert!(nums.len() as u64 <= sub.max_count, "{}: maxCount", sub.path);
        let sender = r.sender().unwrap();
        assert!(
            first <= max_seen + 1,
            "{}: gap: {first}..={last} after {max_seen}: {}",
            sub.path,
            summary(got)
        );
        match &prev {
            Some((s, _, prev_last)) if *s == sender => assert_eq!(
                first,
                prev_last + 1,
                "{}: within one process notifications follow each other exactly: {}",
                sub.path,
                summary(got)
            ),
            Some((_, prev_first, _)) => {
                assert!(
                    first >= *prev_first,
                    "{}: after a restart only the batch in flight may be redelivered, but {first} precedes {prev_first}: {}",
                    sub.path,
                    summary(got)
                );
                worst_redelivery = worst_redelivery.max((max_seen + 1).saturating_sub(first));
            }
            None => {}
        }
        for e in &n.events {
            // the base URL names the process (its port); the rest names the event's focus
            let focus = e.focus.as_deref().map(|f| {
                f.split_once("/fhir/")
                    .map_or(f, |(_, rest)| rest)
                    .to_owned()
            });
            let seen = focus_of.entry(e.number).or_insert_with(|| focus.clone());
            assert_eq!(
                *seen, focus,
                "{}: event {} was delivered as two different events",
                sub.path, e.number
            );
        }
        max_seen = max_seen.max(last);
        prev = Some((sender, first, last));
    }
    worst_redelivery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_in_order_without_gaps_across_kill_9_restarts() {
    let seed = seed();
    eprintln!("delivery crash test seed: {seed} (replay with HERALD_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let rx = Receiver::start().await;
    let mut h = tokio::task::spawn_blocking(|| {
        Herald::start_with(&[
            ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
            ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
            ("HERALD__DELIVERY__ERROR_AFTER_FAILURES", "100"),
        ])
    })
    .await
    .unwrap();
    let c = client();
    let mut subs = Vec::new();
    for (tenant, path, content, max_count) in [
        ("r4", "/r4-id-only", "id-only", 5u64),
        ("r4", "/r4-empty", "empty", 20),
        ("r5", "/r5-full", "full-resource", 3),
    ] {
        let mut body = if tenant == "r4" {
            r4_subscription("cow-task-changed", &[], &rx.url(path), content)
        } else {
            r5_subscription("cow-task-changed", &[], &rx.url(path), content)
        };
        if max_count != 20 {
            if tenant == "r4" {
                body["channel"]["extension"] = json!([{
                    "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count",
                    "valuePositiveInt": max_count
                }]);
            } else {
                body["maxCount"] = json!(max_count);
            }
        }
        let created = send(
            &c,
            reqwest::Method::POST,
            &format!("{}/Subscription", h.fhir(tenant)),
            &body,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        wait_active(&c, &h.fhir(tenant), &id).await;
        subs.push(Sub {
            tenant,
            path,
            id,
            max_count,
        });
    }
    let acked: BTreeMap<&str, Arc<AtomicU64>> = [("r4", Arc::default()), ("r5", Arc::default())]
        .into_iter()
        .collect();
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for tenant in ["r4", "r5"] {
            for n in 0..WRITERS {
                writers.push(tokio::spawn(writer(
                    h.fhir(tenant),
                    stop.clone(),
                    acked[tenant].clone(),
                    n,
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
        let mut dead = tokio::task::spawn_blocking(move || {
            h.kill9();
            h
        })
        .await
        .unwrap();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.await.unwrap();
        }
        eprintln!(
            "cycle {cycle}: acked r4={} r5={}",
            acked["r4"].load(Ordering::SeqCst),
            acked["r5"].load(Ordering::SeqCst)
        );
        h = tokio::task::spawn_blocking(move || {
            dead.restart();
            dead
        })
        .await
        .unwrap();
    }
    // The last process runs undisturbed: everything must arrive.
    for sub in &subs {
        let b: Value = c
            .get(format!(
                "{}/Subscription/{}/$status",
                h.fhir(sub.tenant),
                sub.id
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = parse_status_bundle(&b).unwrap().remove(0);
        let n = status.events_since_start.unwrap();
        let acked = acked[sub.tenant].load(Ordering::SeqCst);
        assert!(
            n >= acked,
            "{}: {n} events but {acked} acknowledged writes",
            sub.path
        );
        let got = rx
            .wait_until(sub.path, &format!("events 1..={n}"), WAIT, |l| {
                has_all_events(l, n)
            })
            .await;
        let worst = check_sequence(sub, &got);
        let notifications = got
            .iter()
            .filter(|r| r.kind() == Some(NotificationType::EventNotification))
            .count();
        eprintln!(
            "{}: {n} events ({acked} acknowledged writes) in {notifications} notifications; at most {worst} redelivered after a restart",
            sub.path
        );
    }
}
