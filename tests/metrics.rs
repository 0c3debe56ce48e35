//! `/metrics` against the real binary: after known traffic every counter moved by exactly what
//! that traffic does, and the whole exposition parses as OpenMetrics text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use herald_subscriptions::notification::NotificationType;
use herald_tests::receiver::{Receiver, delivered_events};
use herald_tests::{Herald, client, create, r4_subscription, task};

const WAIT: Duration = Duration::from_secs(60);

/// Parses the exposition strictly enough to catch a malformed line: `# HELP`/`# TYPE`/`# UNIT`
/// comments, `name{label="value",...} number` samples, and a final `# EOF`. Returns every
/// sample by its series text.
fn parse(text: &str) -> HashMap<String, f64> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end");
    let mut out = HashMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split(' ').next().unwrap();
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(labels.ends_with('}'), "bad labels: {line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(!v.contains('\n'), "{line}");
            }
        }
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "duplicate series: {line}"
        );
    }
    out
}

async fn scrape(c: &reqwest::Client, h: &Herald) -> HashMap<String, f64> {
    let r = c.get(format!("{}/metrics", h.root)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    parse(&r.text().await.unwrap())
}

fn delta(a: &HashMap<String, f64>, b: &HashMap<String, f64>, series: &str) -> f64 {
    b.get(series).copied().unwrap_or(0.0) - a.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_exactly_the_known_traffic_and_the_exposition_parses() {
    let rx = Receiver::start().await;
    let h = Herald::start_with(&[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
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
    rx.wait_until("/hook", "the handshake", WAIT, |got| !got.is_empty())
        .await;
    // let the status write settle before the first scrape
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = scrape(&c, &h).await;
    for _ in 0..5 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    for _ in 0..3 {
        assert_eq!(
            c.get(format!("{base}/metadata"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        c.get(format!("{base}/Nope/1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let got = rx
        .wait_until("/hook", "events 1-5", WAIT, |got| {
            delivered_events(got).len() == 5
        })
        .await;
    let notifications = got
        .iter()
        .filter(|r| r.kind() == Some(NotificationType::EventNotification))
        .count() as f64;
    // the last attempt is counted when it comes back, a moment after the receiver answered
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = scrape(&c, &h).await;
    let d = |s: &str| delta(&before, &after, s);
    assert_eq!(
        d(
            r#"herald_http_requests_total{method="POST",route="/fhir/{tenant}/{rtype}",status="201"}"#
        ),
        5.0
    );
    assert_eq!(
        d(
            r#"herald_http_requests_total{method="GET",route="/fhir/{tenant}/metadata",status="200"}"#
        ),
        3.0
    );
    assert_eq!(d("herald_writes_total"), 5.0);
    assert_eq!(d("herald_events_recorded_total"), 5.0);
    assert_eq!(d("herald_matched_changes_total"), 5.0);
    assert_eq!(d("herald_match_seconds_count"), 5.0);
    assert_eq!(
        d(r#"herald_delivery_attempts_total{channel="rest-hook",outcome="delivered"}"#),
        notifications
    );
    assert_eq!(
        d(r#"herald_delivery_attempts_total{channel="rest-hook",outcome="failed"}"#),
        0.0
    );
    // one latency observation per event delivered
    assert_eq!(d("herald_delivery_latency_seconds_count"), 5.0);
    assert!(d("herald_log_sync_seconds_count") >= 1.0);
    assert!(d("herald_log_sync_batch_size_count") >= 1.0);
    let q = format!(r#"herald_subscription_queue_depth{{tenant="r4",subscription="{id}"}}"#);
    assert_eq!(after.get(&q), Some(&0.0), "{q}");
    assert_eq!(
        after.get(r#"herald_tenant_backlog{tenant="r4"}"#),
        Some(&0.0)
    );
    assert!(after["herald_tokio_workers"] >= 1.0);
    assert_eq!(after["herald_websocket_connections"], 0.0);
    // route labels are templates, never raw paths
    assert!(
        after
            .keys()
            .all(|k| !k.contains(&id) || k.starts_with("herald_subscription_")),
        "a raw path in a label"
    );
    // the unknown route counted under its template, not its path
    assert_eq!(
        d(
            r#"herald_http_requests_total{method="GET",route="/fhir/{tenant}/{rtype}/{id}",status="404"}"#
        ),
        1.0
    );
}
