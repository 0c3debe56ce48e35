//! `herald-loadgen restart`: start-up and drain with a backlog (issue #14).
//!
//! Set-up: `subs` rest-hook Subscriptions on `cow-task-changed`, subscription *i* filtered on
//! `owner=Organization/grp-<i mod groups>` (so a Task owned by `grp-g` is matched by
//! `subs / groups` of them), plus one on `owner=Organization/steady` for the steady-state rate;
//! each with a one-hour request timeout (`backport-timeout`), so that an attempt to a receiver
//! that has gone away stays in flight instead of failing into the retry schedule.
//!
//! 1. **Steady state**: `steady_clients` clients write Tasks owned by `steady` for `steady`;
//!    events/s = events received ÷ (first write → last event).
//! 2. For each backlog (small: one Task per group's worth, i.e. `subs / groups` events; large:
//!    `events`): the receiver goes down (holds requests unanswered), the Tasks are written
//!    (owners cycling through the groups; every write acknowledged, so durable), the loadgen
//!    waits `settle` (Herald checkpoints its log every 10 s, so the restart replays a short
//!    tail in both cases), then **`kill -9`**, the receiver comes back, Herald is started again
//!    on the same data directory and port, and the loadgen times spawn → `/readyz` 200 and
//!    spawn → first event received, then the drain (every queued event received).
//! 3. The control: the small backlog once more, queued behind `events` written and delivered
//!    first, so that both starts follow the same volume of writes and only the backlog
//!    differs (sled's recovery scans what was written since the previous start).
//! 4. Ratios large/small and large/control (target ≤ 1.5 for both times), drain events/s over steady events/s
//!    (target ≥ 0.8), and the order check: every subscription's event numbers arrived strictly
//!    increasing with none missing (a failure, not a MISS).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use super::node::Node;
use super::receiver::Receiver;
use super::{TASK_TOPIC, client, loadavg, post_all, set_up, subscription, task, verdict};

/// Settings of the `restart` scenario.
#[derive(Debug, Clone)]
pub struct RestartConfig {
    /// The herald binary (a release build).
    pub herald_bin: PathBuf,
    /// `HERALD_DURABILITY`.
    pub durability: String,
    /// Subscriptions with a backlog.
    pub subs: usize,
    /// Owner groups: each Task is matched by `subs / groups` subscriptions.
    pub groups: usize,
    /// Events of the large backlog.
    pub events: usize,
    /// Subscription creates (and Task writes) in flight.
    pub concurrency: usize,
    /// Wait between the last acknowledged write and the kill.
    pub settle: Duration,
    /// Steady-state measurement time.
    pub steady: Duration,
    /// Clients of the steady-state measurement.
    pub steady_clients: usize,
    /// Longest wait for a drain.
    pub drain_timeout: Duration,
}

/// One restart's figures.
#[derive(Debug, Clone, Default)]
pub struct RestartSample {
    /// Events queued when Herald was killed.
    pub backlog: u64,
    /// Spawn → `/readyz` 200.
    pub ready: Duration,
    /// Spawn → first event received.
    pub first: Option<Duration>,
    /// Spawn → every queued event received (None: the drain timed out).
    pub drained: Option<Duration>,
    /// First event → last event.
    pub drain_span: Duration,
    /// Events received.
    pub events: u64,
    /// Notifications received.
    pub notifications: u64,
}

impl RestartSample {
    /// Events per second of the drain (first → last event).
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.events, self.drain_span)
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// Runs the scenario and prints its lines.
pub async fn run(cfg: &RestartConfig) -> anyhow::Result<()> {
    ensure!(
        cfg.groups >= 1 && cfg.subs.is_multiple_of(cfg.groups),
        "--subs must be a multiple of --groups"
    );
    let per_write = cfg.subs / cfg.groups;
    ensure!(
        cfg.events.is_multiple_of(per_write),
        "--events must be a multiple of subs/groups ({per_write})"
    );
    let receiver = Receiver::start()?;
    let mut node = Node::new(&cfg.herald_bin, &cfg.durability)?;
    let http = client(64)?;
    let started = node.spawn()?;
    node.wait_ready(&http, started, Duration::from_secs(120))
        .await?;
    println!(
        "restart: herald {} ({}) at {}, {} subscriptions in {} groups ({per_write} per Task), backlogs {per_write} and {} events, kill -9 after {:.0} s settle",
        cfg.herald_bin.display(),
        cfg.durability,
        node.root,
        cfg.subs,
        cfg.groups,
        cfg.events,
        cfg.settle.as_secs_f64()
    );
    let endpoint = receiver.url();
    let mut subs: Vec<_> = (0..cfg.subs)
        .map(|i| {
            let filter = format!("Task?owner=Organization/grp-{}", i % cfg.groups);
            subscription(TASK_TOPIC, Some(&filter), &endpoint, Some(3600))
        })
        .collect();
    subs.push(subscription(
        TASK_TOPIC,
        Some("Task?owner=Organization/steady"),
        &endpoint,
        Some(3600),
    ));
    set_up(
        &node,
        &receiver,
        subs,
        cfg.concurrency,
        Duration::from_secs(600),
    )
    .await?;

    // 1. Steady state.
    let steady = steady_state(cfg, &node, &receiver).await?;
    println!(
        "steady state: {} events in {} notifications over {:.2} s: {:.0} events/s, {:.0} notifications/s",
        steady.0,
        steady.1,
        steady.2.as_secs_f64(),
        per_sec(steady.0, steady.2),
        per_sec(steady.1, steady.2)
    );
    let steady_rate = per_sec(steady.0, steady.2);

    // 2. The two backlogs.
    let mut expected: HashMap<String, u64> = HashMap::new();
    let small = backlog_restart(cfg, &mut node, &receiver, 0, per_write, &mut expected).await?;
    print_sample("small", &small);
    let large = backlog_restart(cfg, &mut node, &receiver, 0, cfg.events, &mut expected).await?;
    print_sample("large", &large);
    // The control: the small backlog again, queued behind as many events as the large one,
    // delivered before the receiver goes down. Both starts then follow the same volume of
    // writes; only the backlog differs.
    let control = backlog_restart(
        cfg,
        &mut node,
        &receiver,
        cfg.events,
        per_write,
        &mut expected,
    )
    .await?;
    print_sample("small after the large volume, delivered", &control);

    // 3. Verdicts.
    println!("load average: {}", loadavg());
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let ready = ratio(large.ready, small.ready);
    println!(
        "restart ready with {} vs {} queued: {:.3} s vs {:.3} s = {ready:.2}x   target <= 1.5x   {}",
        large.backlog,
        small.backlog,
        large.ready.as_secs_f64(),
        small.ready.as_secs_f64(),
        verdict(ready <= 1.5)
    );
    match (large.first, small.first) {
        (Some(l), Some(s)) => {
            let first = ratio(l, s);
            println!(
                "restart first notification with {} vs {} queued: {:.3} s vs {:.3} s = {first:.2}x   target <= 1.5x   {}",
                large.backlog,
                small.backlog,
                l.as_secs_f64(),
                s.as_secs_f64(),
                verdict(first <= 1.5)
            );
        }
        _ => println!("restart first notification: none received   MISS"),
    }
    let controlled = ratio(large.ready, control.ready);
    println!(
        "restart ready with {} vs {} queued after the same write volume: {:.3} s vs {:.3} s = {controlled:.2}x   target <= 1.5x   {}",
        large.backlog,
        control.backlog,
        large.ready.as_secs_f64(),
        control.ready.as_secs_f64(),
        verdict(controlled <= 1.5)
    );
    if let (Some(l), Some(c)) = (large.first, control.first) {
        let first = ratio(l, c);
        println!(
            "restart first notification with {} vs {} queued after the same write volume: {:.3} s vs {:.3} s = {first:.2}x   target <= 1.5x   {}",
            large.backlog,
            control.backlog,
            l.as_secs_f64(),
            c.as_secs_f64(),
            verdict(first <= 1.5)
        );
    }
    let drain = large.events_per_sec() / steady_rate.max(1e-9);
    println!(
        "restart drain of {}: {:.0} events/s ({:.0} notifications/s) vs steady {:.0} events/s = {drain:.2}x   target >= 0.8x   {}",
        large.backlog,
        large.events_per_sec(),
        per_sec(large.notifications, large.drain_span),
        steady_rate,
        verdict(large.drained.is_some() && drain >= 0.8)
    );
    let (violations, described) = receiver.violations();
    let last = receiver.last_events();
    let missing: u64 = expected
        .iter()
        .map(|(id, n)| n.saturating_sub(last.get(id).copied().unwrap_or(0)))
        .sum();
    let order_ok = violations == 0 && missing == 0;
    println!(
        "restart order: {} subscriptions, {violations} out-of-order arrival(s), {missing} event(s) missing   {}",
        expected.len(),
        if order_ok { "OK" } else { "FAILED" }
    );
    for d in described {
        println!("  {d}");
    }
    ensure!(order_ok, "per-subscription order was broken");
    Ok(())
}

/// Writes Tasks owned by `steady` for `cfg.steady` with `cfg.steady_clients` clients and waits
/// for their events: (events, notifications, first write → last event).
async fn steady_state(
    cfg: &RestartConfig,
    node: &Node,
    receiver: &Receiver,
) -> anyhow::Result<(u64, u64, Duration)> {
    receiver.reset();
    let http = client(cfg.steady_clients)?;
    let url = format!("{}/Task", node.fhir("r4"));
    let started = Instant::now();
    let end = started + cfg.steady;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..cfg.steady_clients.max(1) {
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let r = http
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .body(task("Organization/steady", &format!("steady c{c}-{n}")))
                    .send()
                    .await?;
                ensure!(r.status() == reqwest::StatusCode::CREATED, "{}", r.status());
                r.bytes().await?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        });
    }
    let mut writes = 0;
    while let Some(done) = tasks.join_next().await {
        writes += done.context("a client panicked")??;
    }
    ensure!(
        super::wait_events(receiver, writes, cfg.drain_timeout).await,
        "steady state: only {} of {writes} events arrived",
        receiver.counts().events
    );
    let c = receiver.counts();
    let span = c
        .last_event
        .map_or(Duration::ZERO, |l| l.saturating_duration_since(started));
    Ok((c.events, c.notifications, span))
}

/// Writes `delivered` events with the receiver up and waits until they have all arrived; then
/// builds a backlog of `events` with the receiver down, kills Herald, brings the receiver back,
/// restarts Herald and times it.
async fn backlog_restart(
    cfg: &RestartConfig,
    node: &mut Node,
    receiver: &Receiver,
    delivered: usize,
    events: usize,
    expected: &mut HashMap<String, u64>,
) -> anyhow::Result<RestartSample> {
    let per_write = cfg.subs / cfg.groups;
    let http = client(cfg.concurrency)?;
    let groups = cfg.groups;
    let url = format!("{}/Task", node.fhir("r4"));
    if delivered > 0 {
        receiver.reset();
        let offset = 1_000_000_000;
        let took = post_all(
            &http,
            &url,
            delivered / per_write,
            cfg.concurrency,
            Arc::new(move |k| {
                task(
                    &format!("Organization/grp-{}", k % groups),
                    &format!("delivered {}", offset + k),
                )
            }),
        )
        .await?;
        ensure!(
            super::wait_events(receiver, delivered as u64, cfg.drain_timeout).await,
            "only {} of {delivered} events were delivered",
            receiver.counts().events
        );
        println!(
            "volume: {delivered} events written in {:.1} s and delivered",
            took.as_secs_f64()
        );
    }
    let writes = events / per_write;
    receiver.set_up(false);
    let offset = expected.values().sum::<u64>() as usize;
    let took = post_all(
        &http,
        &url,
        writes,
        cfg.concurrency,
        Arc::new(move |k| {
            task(
                &format!("Organization/grp-{}", k % groups),
                &format!("backlog {}", offset + k),
            )
        }),
    )
    .await?;
    println!(
        "backlog: {writes} Task writes ({events} events) in {:.1} s ({:.0} events/s recorded), {} attempt(s) held by the receiver",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        receiver.held()
    );
    // Which subscription got how many: the ids are Herald's, so ask it.
    let rows = super::admin_rows(&http, node).await?;
    for r in &rows {
        if let (Some(id), Some(n)) = (
            r.get("id").and_then(serde_json::Value::as_str),
            r.get("events_since_start")
                .and_then(serde_json::Value::as_u64),
        ) {
            expected.insert(id.to_owned(), n);
        }
    }
    // Queued = recorded minus what the receiver has already seen. (Not the rows' queue depth:
    // a delivery the receiver has answered may not have reached the dispatcher yet, and it is
    // not sent again after the restart.)
    let seen = receiver.last_events();
    let queued: u64 = expected
        .iter()
        .map(|(id, n)| n.saturating_sub(seen.get(id).copied().unwrap_or(0)))
        .sum();
    tokio::time::sleep(cfg.settle).await;
    node.kill9();
    receiver.set_up(true);
    receiver.reset();
    let started = node.spawn()?;
    let ready = node
        .wait_ready(&client(1)?, started, Duration::from_secs(600))
        .await?;
    let drained_ok = super::wait_events(receiver, queued, cfg.drain_timeout).await;
    let c = receiver.counts();
    let first = c.first_event.map(|t| t.saturating_duration_since(started));
    Ok(RestartSample {
        backlog: queued,
        ready,
        first,
        drained: drained_ok.then(|| {
            c.last_event
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(started))
        }),
        drain_span: match (c.first_event, c.last_event) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        },
        events: c.events,
        notifications: c.notifications,
    })
}

fn print_sample(label: &str, s: &RestartSample) {
    println!(
        "restart ({label}, {} queued): ready {:.3} s, first notification {}, drained {} ({} events in {} notifications, {:.0} events/s)",
        s.backlog,
        s.ready.as_secs_f64(),
        s.first.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.3} s", d.as_secs_f64())
        ),
        s.drained.map_or_else(
            || "NOT within the timeout".to_owned(),
            |d| format!("after {:.2} s", d.as_secs_f64())
        ),
        s.events,
        s.notifications,
        s.events_per_sec()
    );
}
