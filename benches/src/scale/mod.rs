//! The scale scenarios of issue #14 against the real binary: [`restart`] (start-up and drain
//! with a backlog of a million events) and [`fanout`] (one change matched by ten thousand
//! subscriptions). They share a restartable process ([`node`]), an order-checking receiver
//! ([`receiver`]) and the set-up below: R4 backport rest-hook Subscriptions created over HTTP
//! and awaited until their handshakes are accepted.

pub mod fanout;
pub mod node;
pub mod receiver;
pub mod restart;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use self::node::Node;
use self::receiver::Receiver;

const FILTER_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
const CONTENT_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
const TIMEOUT_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout";
const PROFILE_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
/// `cow-task-changed`.
pub const TASK_TOPIC: &str = "http://herald.example.org/fhir/SubscriptionTopic/cow-task-changed";
/// `cow-servicerequest-changed` (no filter: every ServiceRequest change).
pub const SR_TOPIC: &str =
    "http://herald.example.org/fhir/SubscriptionTopic/cow-servicerequest-changed";

/// An R4 backport rest-hook Subscription, `id-only`, on `topic`, with an optional filter and a
/// request timeout in seconds.
pub fn subscription(
    topic: &str,
    filter: Option<&str>,
    endpoint: &str,
    timeout_secs: Option<u32>,
) -> Value {
    let mut sub = serde_json::json!({
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE_URL]},
        "status": "requested",
        "reason": "herald-loadgen scale",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": CONTENT_URL, "valueCode": "id-only"}]}
        }
    });
    if let Some(f) = filter {
        sub["_criteria"] =
            serde_json::json!({"extension": [{"url": FILTER_URL, "valueString": f}]});
    }
    if let Some(t) = timeout_secs {
        sub["channel"]["extension"] =
            serde_json::json!([{"url": TIMEOUT_URL, "valueUnsignedInt": t}]);
    }
    sub
}

/// A Task owned by `owner`.
pub fn task(owner: &str, note: &str) -> String {
    format!(
        r#"{{"resourceType":"Task","status":"requested","intent":"order","description":"herald-loadgen {note}","owner":{{"reference":"{owner}"}}}}"#
    )
}

/// An HTTP client with a pool of `pool` idle connections.
pub fn client(pool: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pool.max(1))
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")
}

/// POSTs `count` bodies made by `body(i)` to `url`, `concurrency` at a time; each must be
/// answered 201. Returns the time it took.
pub async fn post_all(
    http: &reqwest::Client,
    url: &str,
    count: usize,
    concurrency: usize,
    body: Arc<dyn Fn(usize) -> String + Send + Sync>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, url, next, body) = (http.clone(), url.to_owned(), next.clone(), body.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                let r = http
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .body(body(i))
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = r.status();
                if status != reqwest::StatusCode::CREATED {
                    let text = r.text().await.unwrap_or_default();
                    bail!("POST {url} #{i}: {status}: {text}");
                }
                r.bytes().await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a client task panicked")??;
    }
    Ok(started.elapsed())
}

/// Creates the subscriptions and waits until the receiver has every handshake and the admin
/// API shows them all active. Prints progress; returns the creation rate (per second).
pub async fn set_up(
    node: &Node,
    receiver: &Receiver,
    subs: Vec<Value>,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let total = subs.len();
    let http = client(concurrency)?;
    let bodies: Arc<Vec<String>> = Arc::new(subs.iter().map(Value::to_string).collect());
    let handshakes_before = receiver.counts().handshakes;
    let took = post_all(
        &http,
        &format!("{}/Subscription", node.fhir("r4")),
        total,
        concurrency,
        Arc::new(move |i| bodies[i].clone()),
    )
    .await?;
    let rate = total as f64 / took.as_secs_f64();
    println!(
        "set-up: {total} subscriptions created in {:.1} s ({rate:.0}/s)",
        took.as_secs_f64()
    );
    let deadline = Instant::now() + timeout;
    while receiver.counts().handshakes - handshakes_before < total as u64 {
        ensure!(
            Instant::now() < deadline,
            "only {} of {total} handshakes arrived",
            receiver.counts().handshakes - handshakes_before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let rows = admin_rows(&http, node).await?;
        let active = rows
            .iter()
            .filter(|r| {
                r.get("status").and_then(Value::as_str) == Some("active")
                    && r.get("handshake_accepted").and_then(Value::as_bool) == Some(true)
            })
            .count();
        if active >= total {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {active} of {total} subscriptions became active"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(rate)
}

/// The rows of `GET /admin/subscriptions`.
pub async fn admin_rows(http: &reqwest::Client, node: &Node) -> anyhow::Result<Vec<Value>> {
    let v: Value = http
        .get(format!("{}/admin/subscriptions", node.root))
        .send()
        .await
        .context("GET /admin/subscriptions")?
        .error_for_status()?
        .json()
        .await
        .context("reading /admin/subscriptions")?;
    Ok(v.get("subscriptions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// Waits until the receiver has counted `events` events since its reset (or `timeout` passes);
/// returns whether it has.
pub async fn wait_events(receiver: &Receiver, events: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if receiver.counts().events >= events {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `PASS`/`MISS`.
pub fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// The load average, for the report.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
