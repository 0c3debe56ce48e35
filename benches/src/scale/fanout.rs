//! `herald-loadgen fanout`: one change matched by every subscription of an unfiltered topic
//! (issue #14).
//!
//! Set-up: `subs` rest-hook Subscriptions on `cow-servicerequest-changed` with no filter (every
//! ServiceRequest change matches all of them) and `subs` on `cow-task-changed`, subscription
//! *i* filtered on `owner=Organization/org-<i>`, all pointing at one receiver.
//!
//! * **fan-out**: one ServiceRequest create; time from the request until the receiver has all
//!   `subs` events.
//! * **single-match**: `subs` Task creates, the *i*-th owned by `org-<i>` (each matched by
//!   exactly one subscription), `clients` at a time; time from the first request until the
//!   receiver has all `subs` events.
//!
//! Rates are events per second over those times; the two alternate for `rounds` rounds (the
//! order flipped every other round) and the medians are compared (target: fan-out ≥ 0.8 ×
//! single-match). Then the durability check: one more ServiceRequest create, `kill -9` as soon
//! as its 201 arrives, a restart, and every fan-out subscription must count that event (the
//! write and its `subs` events are one log record, durable before the 201).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::Value;

use super::node::Node;
use super::receiver::Receiver;
use super::{
    SR_TOPIC, TASK_TOPIC, admin_rows, client, loadavg, post_all, set_up, subscription, task,
    verdict, wait_events,
};

/// Settings of the `fanout` scenario.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The herald binary (a release build).
    pub herald_bin: PathBuf,
    /// `HERALD_DURABILITY`.
    pub durability: String,
    /// Subscriptions matched by the fan-out write (and single-match subscriptions).
    pub subs: usize,
    /// Clients of the single-match writes (and of the set-up).
    pub clients: usize,
    /// Alternating rounds of both measurements.
    pub rounds: usize,
    /// Longest wait for one measurement's events.
    pub timeout: Duration,
}

const SERVICE_REQUEST: &str = r#"{"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"Patient/p-1"},"requester":{"reference":"Organization/placer"}}"#;

/// Runs the scenario and prints its lines.
pub async fn run(cfg: &FanoutConfig) -> anyhow::Result<()> {
    let receiver = Receiver::start()?;
    let mut node = Node::new(&cfg.herald_bin, &cfg.durability)?;
    let http = client(cfg.clients.max(4))?;
    let started = node.spawn()?;
    node.wait_ready(&http, started, Duration::from_secs(120))
        .await?;
    println!(
        "fanout: herald {} ({}) at {}, {} unfiltered + {} single-match subscriptions, {} client(s) for the single-match writes, {} round(s)",
        cfg.herald_bin.display(),
        cfg.durability,
        node.root,
        cfg.subs,
        cfg.subs,
        cfg.clients,
        cfg.rounds
    );
    let endpoint = receiver.url();
    let mut subs: Vec<Value> = (0..cfg.subs)
        .map(|_| subscription(SR_TOPIC, None, &endpoint, None))
        .collect();
    subs.extend((0..cfg.subs).map(|i| {
        let filter = format!("Task?owner=Organization/org-{i}");
        subscription(TASK_TOPIC, Some(&filter), &endpoint, None)
    }));
    set_up(
        &node,
        &receiver,
        subs,
        cfg.clients.max(16),
        Duration::from_secs(900),
    )
    .await?;

    let mut fan_rates = Vec::new();
    let mut single_rates = Vec::new();
    let mut fan_writes = 0usize;
    for round in 0..cfg.rounds.max(1) {
        let fan_first = round % 2 == 0;
        for fan in [fan_first, !fan_first] {
            receiver.reset();
            let t0 = Instant::now();
            let (ack, label) = if fan {
                fan_writes += 1;
                let ack = post_all(
                    &http,
                    &format!("{}/ServiceRequest", node.fhir("r4")),
                    1,
                    1,
                    Arc::new(|_| SERVICE_REQUEST.to_owned()),
                )
                .await?;
                (ack, "fan-out")
            } else {
                let ack = post_all(
                    &http,
                    &format!("{}/Task", node.fhir("r4")),
                    cfg.subs,
                    cfg.clients,
                    Arc::new(|i| task(&format!("Organization/org-{i}"), "single-match")),
                )
                .await?;
                (ack, "single-match")
            };
            ensure!(
                wait_events(&receiver, cfg.subs as u64, cfg.timeout).await,
                "{label}: only {} of {} events arrived",
                receiver.counts().events,
                cfg.subs
            );
            let c = receiver.counts();
            let span = c
                .last_event
                .map_or(Duration::ZERO, |l| l.saturating_duration_since(t0));
            let rate = c.events as f64 / span.as_secs_f64().max(1e-9);
            println!(
                "  round {} {label:<12} {} events in {} notifications: writes acknowledged after {:.3} s, first event after {:.3} s, all after {:.3} s: {rate:.0} events/s",
                round + 1,
                c.events,
                c.notifications,
                ack.as_secs_f64(),
                c.first_event
                    .map_or(0.0, |f| f.saturating_duration_since(t0).as_secs_f64()),
                span.as_secs_f64()
            );
            if fan {
                fan_rates.push(rate);
            } else {
                single_rates.push(rate);
            }
        }
    }
    let fan = crate::matcher::median(fan_rates);
    let single = crate::matcher::median(single_rates);
    let ratio = fan / single.max(1e-9);
    println!("load average: {}", loadavg());
    println!(
        "fanout delivery of {} notifications from one write: {fan:.0} events/s vs {} single-match writes {single:.0} events/s = {ratio:.2}x   target >= 0.8x   {}",
        cfg.subs,
        cfg.subs,
        verdict(ratio >= 0.8)
    );

    // Durability: kill -9 right after the 201, restart, count.
    receiver.set_up(false);
    post_all(
        &http,
        &format!("{}/ServiceRequest", node.fhir("r4")),
        1,
        1,
        Arc::new(|_| SERVICE_REQUEST.to_owned()),
    )
    .await?;
    node.kill9();
    fan_writes += 1;
    receiver.set_up(true);
    let started = node.spawn()?;
    node.wait_ready(&client(1)?, started, Duration::from_secs(300))
        .await?;
    let rows = admin_rows(&http, &node).await?;
    let fan_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("topic").and_then(Value::as_str) == Some(SR_TOPIC))
        .collect();
    let kept = fan_rows
        .iter()
        .filter(|r| r.get("events_since_start").and_then(Value::as_u64) == Some(fan_writes as u64))
        .count();
    let ok = fan_rows.len() == cfg.subs && kept == cfg.subs;
    println!(
        "fanout durability: kill -9 right after the 201 of fan-out write {fan_writes}: {kept} of {} subscriptions count it after the restart   {}",
        fan_rows.len(),
        if ok { "OK" } else { "FAILED" }
    );
    ensure!(
        ok,
        "fan-out durability: events of an acknowledged write were lost"
    );
    Ok(())
}
