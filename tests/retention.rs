//! Retention against the real binary: with small limits, the background passes remove
//! delivered events beyond the limit and old attempt-log entries, and `$events` says which
//! event numbers were pruned instead of answering without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use herald_tests::receiver::{Receiver, delivered_events};
use herald_tests::{Herald, client, create, r4_subscription, task};
use reqwest::StatusCode;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn delivered_events_beyond_the_limit_are_pruned_and_events_says_so() {
    let rx = Receiver::start().await;
    let h = Herald::start_with(&[
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD__RETENTION__EVENTS_KEEP_COUNT", "5"),
        ("HERALD__RETENTION__INTERVAL_SECS", "1"),
        ("HERALD__DELIVERY__ATTEMPT_LOG_MAX", "4"),
    ]);
    let c = client();
    let base = h.fhir("r4");
    let id = create(
        &c,
        &base,
        "Subscription",
        &r4_subscription("cow-task-changed", &[], &rx.url("/hook"), "id-only"),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..30 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    rx.wait_until("/hook", "30 events", WAIT, |got| {
        delivered_events(got).len() == 30
    })
    .await;
    // the next passes prune 1-25 and cut the attempt log to 4 entries
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) =
            herald_tests::get(&c, &format!("{}/admin/subscriptions/r4/{id}", h.root)).await;
        let (_, a) = herald_tests::get(&c, &format!("{}/admin/attempts?_count=1000", h.root)).await;
        if v["events_pruned_through"] == 25 && a["count"].as_u64() <= Some(4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never caught up: {v} {a}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, oo) = herald_tests::get(
        &c,
        &format!("{base}/Subscription/{id}/$events?eventsSinceNumber=3"),
    )
    .await;
    assert_eq!(s, StatusCode::GONE, "{oo}");
    let why = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(why.contains("events 1-25"), "{why}");
    assert!(why.contains("removed by retention"), "{why}");
    assert!(why.contains("eventsSinceNumber=26"), "{why}");
    // no eventsSinceNumber means 1: also pruned
    let (s, _) = herald_tests::get(&c, &format!("{base}/Subscription/{id}/$events")).await;
    assert_eq!(s, StatusCode::GONE);
    let (s, b) = herald_tests::get(
        &c,
        &format!("{base}/Subscription/{id}/$events?eventsSinceNumber=26"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // the status entry plus the five events kept
    let entries = b["entry"].as_array().map_or(0, Vec::len);
    assert_eq!(entries, 6, "{b}");
    // resending pruned events is refused with the same reason
    let r = c
        .post(format!(
            "{}/admin/subscriptions/r4/{id}/resend?from=20&to=27",
            h.root
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("removed by retention"),
        "{v}"
    );
}
