//! The `notify` scenario: end-to-end notifications per second and write→receipt latency through
//! the real binary, against two relay baselines (one plain, one durable) measured in the same
//! run.
//!
//! * **Receiver**: an axum server in this process (its own runtime thread) that answers every
//!   POST with 200 and notes, per Task id, when it first saw it. Herald's notifications are
//!   `id-only`: the receiver reads each `notification-event`'s focus reference
//!   (`…/Task/{id}/_history/1`) and counts *events*, not Bundles (one notification carries up to
//!   `maxCount`, default 20). A relayed Task is recognised by its `id`.
//! * **Herald**: a fresh process (`HERALD_ALLOW_PRIVATE_ENDPOINTS=true`, the chosen durability)
//!   per subscription count S; S R4 backport rest-hook Subscriptions on `cow-task-changed`, the
//!   i-th filtered on `Task?owner=Organization/org-i`, all pointing at the receiver, created
//!   `setup_concurrency` at a time; the measurement starts once every one is `active`
//!   (handshake accepted, per `GET /admin/subscriptions`). Every write names `org-0` as owner, so
//!   exactly one subscription matches whatever S is. The client maps the Task id from the
//!   `Location` of the 201 to its send time; the receiver's first sighting of that id is the
//!   receipt. The two sides are joined after the run, so a notification that overtakes the
//!   201 on its way back is still matched.
//! * **Relay**: the same two HTTP hops with no work in between: an axum server (its own runtime
//!   thread) that forwards each POSTed body to the receiver with one keep-alive reqwest client
//!   and answers 201 once the forward has completed. The clients send a Task-sized body whose
//!   `id` they chose.
//! * **Durable relay**: the relay plus what any durable broker must pay on this disk: before
//!   forwarding a body it appends it (and a newline) to a log file in a temporary directory and
//!   makes it durable with `fdatasync` (`File::sync_data`); it answers 201 only once both the
//!   sync and the forward have completed (forwarding only what is durable, as Herald delivers
//!   only durable events). Syncs are group-committed the way a competent durable broker would:
//!   a dedicated committer thread takes every append pending, writes them with one write and
//!   syncs once for all of them; an idle committer syncs at once (no batching window). Every
//!   Herald write is `fdatasync`ed before it is acknowledged while the plain relay never touches
//!   the disk, so Herald/relay mixes two costs; the durable relay separates the cost of
//!   durability on this disk (durable relay/relay) from Herald's own work (Herald/durable
//!   relay).
//!
//! Each measurement: `warmup` of unmeasured load, `duration` measured, then up to `drain` for
//! outstanding notifications. *Notifications/s* is the number of events the receiver got within
//! the measured window divided by its length (the delivery rate, which a growing backlog cannot
//! inflate); latency is over the writes sent within the window. Writes whose notification had
//! not arrived by the end of the drain are reported as missing. Every S is set up first (one
//! process each, kept running); then, round by round, every (S, C) is measured with Herald, the
//! relay and the durable relay back to back (their order rotated from one measurement to the
//! next so that none is always first, and the order of S reversed every other round), so that
//! noise from other work on the machine falls on all of them alike. Rounds are merged (counts
//! added, latency samples pooled).
//!
//! **Herald's CPU per notification**: Herald's own CPU time (utime + stime of its process, from
//! `/proc/<pid>/stat`, read when the measured window opens and when it closes) divided by the
//! notifications delivered in the window. The load generator shares the cores, so Herald's rate
//! depends on what the other processes take, while its CPU per notification does not (much): it
//! is the figure that says whether Herald got cheaper. With `base_herald_bin`, an older binary
//! is set up the same way (one more process per S) and measured in the same rounds as a fourth
//! target, so new/old CPU per notification is an A/B of one sitting, which is what makes it
//! trustworthy on a machine whose load moves by ±30 % from minute to minute.
//!
//! Targets (issue #14): Herald's rate ≥ 0.80 of the durable relay's and its p99 ≤ 2.0× the
//! durable relay's in every (S, C); CPU per notification at the highest C at most half the
//! baseline's (the old binary of the same rounds, or `cpu_baseline_us`). Herald/relay is
//! reported as context.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::latency::{Latencies, ms};
use crate::process::{HeraldProcess, cpu_time};
use crate::server_thread::ServerThread;

/// Canonical URL of the topic every benchmark subscription uses.
pub const TOPIC: &str = "http://herald.example.org/fhir/SubscriptionTopic/cow-task-changed";

const FILTER_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
const CONTENT_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
const PROFILE_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";

/// Settings of the `notify` scenario.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The herald binary (a release build).
    pub herald_bin: PathBuf,
    /// `HERALD_DURABILITY` for Herald.
    pub durability: String,
    /// Subscription counts, e.g. 1, 100, 10 000 (one Herald process each).
    pub subs: Vec<usize>,
    /// Client counts, e.g. 1, 16.
    pub clients: Vec<usize>,
    /// Measured time per run.
    pub duration: Duration,
    /// Unmeasured load before each run's measurement.
    pub warmup: Duration,
    /// Longest wait after a run for notifications still on their way.
    pub drain: Duration,
    /// Subscription creates in flight during set-up.
    pub setup_concurrency: usize,
    /// Longest set-up (creates + handshakes) per subscription count before it is reported and
    /// skipped.
    pub setup_timeout: Duration,
    /// Whether to measure the relay baseline.
    pub relay: bool,
    /// Whether to measure the durable relay baseline (the relay plus a group-committed,
    /// `fdatasync`ed log of every body).
    pub durable_relay: bool,
    /// Times every (S, C) pair is measured; odd rounds reverse the order of S, and Herald and
    /// the relays rotate which goes first.
    pub rounds: usize,
    /// An older herald binary measured in the same rounds (the CPU target's A/B baseline).
    pub base_herald_bin: Option<PathBuf>,
    /// Herald CPU per notification (µs) to halve, when no base binary is run alongside.
    pub cpu_baseline_us: Option<f64>,
}

/// Rate against the durable relay's, per (S, C): at least this.
pub const DURABLE_RATE_TARGET: f64 = 0.80;
/// p99 against the durable relay's, per (S, C): at most this.
pub const DURABLE_P99_TARGET: f64 = 2.0;
/// CPU per notification against the baseline's, at the highest client count: at most this.
pub const CPU_TARGET: f64 = 0.50;

/// What one run (or several merged) measured.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Writes answered 201 that were sent within the measured window.
    pub writes: u64,
    /// Failed writes (any other answer, or a transport error) sent within the window.
    pub write_errors: u64,
    /// Events the receiver got within the measured window.
    pub delivered: u64,
    /// Notification requests (Bundles, or relayed bodies) the receiver got within the window.
    pub requests: u64,
    /// Measured time.
    pub measured: Duration,
    /// Write→receipt latency of the window's writes that were delivered.
    pub latencies: Latencies,
    /// Write→201 latency of the window's writes.
    pub write_latencies: Latencies,
    /// The window's acknowledged writes with no notification by the end of the drain.
    pub missing: u64,
    /// Receipts of an id the receiver had already seen.
    pub duplicates: u64,
    /// Time from the end of the window until every notification had arrived (or the drain
    /// gave up), summed over merged runs.
    pub drain: Duration,
    /// Herald's CPU time (user + system) within the measured window; zero for the relays.
    pub cpu: Duration,
}

impl Sample {
    /// Events received per second of the window.
    pub fn rate(&self) -> f64 {
        per_sec(self.delivered, self.measured)
    }

    /// Acknowledged writes per second of the window.
    pub fn write_rate(&self) -> f64 {
        per_sec(self.writes, self.measured)
    }

    /// Herald's CPU time per event delivered in the window, µs (`None` without CPU samples or
    /// deliveries).
    pub fn cpu_per_notification_us(&self) -> Option<f64> {
        (self.delivered > 0 && !self.cpu.is_zero())
            .then(|| self.cpu.as_secs_f64() * 1e6 / self.delivered as f64)
    }

    /// Mean events per notification request.
    pub fn batch(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.delivered as f64 / self.requests as f64
        }
    }

    fn merge(&mut self, o: &Sample) {
        self.writes += o.writes;
        self.write_errors += o.write_errors;
        self.delivered += o.delivered;
        self.requests += o.requests;
        self.measured += o.measured;
        self.latencies.merge(&o.latencies);
        self.write_latencies.merge(&o.write_latencies);
        self.missing += o.missing;
        self.duplicates += o.duplicates;
        self.drain += o.drain;
        self.cpu += o.cpu;
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

/// How long setting up one subscription count took.
#[derive(Debug, Clone, Default)]
pub struct SetupReport {
    /// Subscription count asked for.
    pub subs: usize,
    /// Subscriptions created (201).
    pub created: usize,
    /// Handshakes the receiver got.
    pub handshakes: u64,
    /// Subscriptions `active` with the handshake accepted, at the last check.
    pub active: usize,
    /// Time until the last create was answered.
    pub create_time: Duration,
    /// Time until every subscription was active (or the set-up gave up).
    pub total_time: Duration,
    /// Whether every subscription became active in time.
    pub complete: bool,
}

/// Runs the scenario and prints progress, the tables, the ratios and the targets to stdout.
pub async fn run(cfg: &NotifyConfig) -> anyhow::Result<()> {
    for bin in std::iter::once(&cfg.herald_bin).chain(cfg.base_herald_bin.as_ref()) {
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build it with `cargo build --release -p herald` or pass --herald-bin",
            bin.display()
        );
    }
    let receiver = Receiver::start()?;
    let relay = if cfg.relay {
        Some(Relay::start(&receiver.url())?)
    } else {
        None
    };
    let durable_relay = if cfg.durable_relay {
        Some(DurableRelay::start(&receiver.url())?)
    } else {
        None
    };
    println!(
        "notify: herald {} ({}), subscriptions {:?}, clients {:?}, {} s measured after {} s warm-up, drain <= {} s",
        cfg.herald_bin.display(),
        cfg.durability,
        cfg.subs,
        cfg.clients,
        cfg.duration.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        cfg.drain.as_secs_f64()
    );
    if let Some(base) = &cfg.base_herald_bin {
        println!(
            "base herald (the CPU target's baseline, same rounds): {}",
            base.display()
        );
    }
    if let Some(r) = &durable_relay {
        println!(
            "durable relay: appends + fdatasync (group commit) to {}",
            r.log_path().display()
        );
    }
    let mut results: BTreeMap<Target, BTreeMap<(usize, usize), Sample>> = BTreeMap::new();
    let mut setups = Vec::new();
    // Every subscription count gets its own process (two with a base binary), set up first and
    // kept running, so that the measurements of all counts can be interleaved round by round.
    let mut heralds: Vec<(usize, HeraldProcess, Option<HeraldProcess>)> = Vec::new();
    for &subs in &cfg.subs {
        let mut ready = Vec::new();
        for (label, bin) in std::iter::once(("herald", &cfg.herald_bin))
            .chain(cfg.base_herald_bin.iter().map(|b| ("base", b)))
        {
            let herald = HeraldProcess::start_with_env(
                bin,
                &cfg.durability,
                &[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")],
            )?;
            println!("S={subs}: {label} pid {} at {}", herald.pid(), herald.root);
            let setup = set_up(cfg, &herald, &receiver, subs).await?;
            println!(
                "S={subs}: {label} set-up {}: {} created in {:.1} s ({:.0}/s), {} handshake(s), {} active after {:.1} s",
                if setup.complete { "done" } else { "INCOMPLETE" },
                setup.created,
                setup.create_time.as_secs_f64(),
                per_sec(setup.created as u64, setup.create_time),
                setup.handshakes,
                setup.active,
                setup.total_time.as_secs_f64()
            );
            let complete = setup.complete;
            setups.push((label, setup));
            if !complete {
                println!("S={subs}: skipped: not every {label} subscription became active");
                break;
            }
            ready.push(herald);
        }
        let wanted = 1 + usize::from(cfg.base_herald_bin.is_some());
        if ready.len() == wanted {
            let mut ready = ready.into_iter();
            if let Some(herald) = ready.next() {
                heralds.push((subs, herald, ready.next()));
            }
        }
    }
    let mut targets = vec![Target::Herald];
    if cfg.base_herald_bin.is_some() {
        targets.push(Target::BaseHerald);
    }
    if relay.is_some() {
        targets.push(Target::Relay);
    }
    if durable_relay.is_some() {
        targets.push(Target::DurableRelay);
    }
    // Which of the targets goes first rotates from one (S, C) measurement to the next.
    let mut turn = 0usize;
    for round in 0..cfg.rounds {
        for &clients in &cfg.clients {
            let mut order: Vec<usize> = (0..heralds.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (subs, herald, base) = &heralds[i];
                let subs = *subs;
                let mut lineup = targets.clone();
                lineup.rotate_left(turn % targets.len());
                turn += 1;
                for target in lineup {
                    let (url, pid) = match target {
                        Target::Herald => {
                            (format!("{}/Task", herald.fhir("r4")), Some(herald.pid()))
                        }
                        Target::BaseHerald => match base {
                            Some(b) => (format!("{}/Task", b.fhir("r4")), Some(b.pid())),
                            None => continue,
                        },
                        Target::Relay => match &relay {
                            Some(r) => (r.url(), None),
                            None => continue,
                        },
                        Target::DurableRelay => match &durable_relay {
                            Some(r) => (r.url(), None),
                            None => continue,
                        },
                    };
                    let mut s = measure(cfg, &receiver, &url, clients, pid).await?;
                    let cpu = s
                        .cpu_per_notification_us()
                        .map(|us| format!("  cpu {us:.0} us/notif"))
                        .unwrap_or_default();
                    println!(
                        "  round {} S={subs:<6} C={clients:<3} {:<7} {:>8.0} notif/s  p50 {:>8} ms  p99 {:>8} ms  writes {:>6.0}/s (201 p50 {} ms, p99 {} ms)  {:>5.1} ev/notif  missing {}  errors {}  drain {:.2} s{cpu}",
                        round + 1,
                        target.label(),
                        s.rate(),
                        ms(s.latencies.quantile(0.50)),
                        ms(s.latencies.quantile(0.99)),
                        s.write_rate(),
                        ms(s.write_latencies.quantile(0.50)),
                        ms(s.write_latencies.quantile(0.99)),
                        s.batch(),
                        s.missing,
                        s.write_errors,
                        s.drain.as_secs_f64()
                    );
                    results
                        .entry(target)
                        .or_default()
                        .entry((subs, clients))
                        .or_default()
                        .merge(&s);
                }
            }
        }
    }
    drop(heralds);
    drop(relay);
    drop(durable_relay);
    report(cfg, &setups, &mut results);
    Ok(())
}

/// What one measurement is run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// The Herald process of the subscription count being measured.
    Herald,
    /// The base binary's process of that subscription count.
    BaseHerald,
    /// The plain relay.
    Relay,
    /// The durable relay.
    DurableRelay,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Herald => "herald",
            Target::BaseHerald => "base",
            Target::Relay => "relay",
            Target::DurableRelay => "d-relay",
        }
    }
}

/// Creates `subs` subscriptions (at most `setup_concurrency` in flight) and waits until every
/// one is active.
async fn set_up(
    cfg: &NotifyConfig,
    herald: &HeraldProcess,
    receiver: &Receiver,
    subs: usize,
) -> anyhow::Result<SetupReport> {
    receiver.reset();
    let started = Instant::now();
    let deadline = started + cfg.setup_timeout;
    let http = client(cfg.setup_concurrency)?;
    let url = format!("{}/Subscription", herald.fhir("r4"));
    let endpoint = receiver.url();
    let next = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.setup_concurrency.max(1) {
        let (http, url, endpoint) = (http.clone(), url.clone(), endpoint.clone());
        let (next, created) = (next.clone(), created.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= subs || Instant::now() >= deadline {
                    return Ok::<(), anyhow::Error>(());
                }
                let r = http
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .json(&subscription(i, &endpoint))
                    .send()
                    .await
                    .context("creating a subscription")?;
                let status = r.status();
                if status != reqwest::StatusCode::CREATED {
                    let text = r.text().await.unwrap_or_default();
                    bail!("creating subscription {i}: {status}: {text}");
                }
                created.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut last_progress = Instant::now();
    let mut create_time = None;
    let mut report = SetupReport {
        subs,
        ..SetupReport::default()
    };
    let admin = format!("{}/admin/subscriptions", herald.root);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Some(done) = workers.try_join_next() {
            done.context("a set-up worker panicked")??;
        }
        let n = created.load(Ordering::Relaxed);
        if create_time.is_none() && workers.is_empty() {
            create_time = Some(started.elapsed());
        }
        let handshakes = receiver.handshakes();
        // The admin listing walks every subscription: only ask once all handshakes are in.
        if workers.is_empty() && handshakes >= subs as u64 {
            report.active = count_active(&http, &admin).await?;
        }
        report.created = n;
        report.handshakes = handshakes;
        if report.active >= subs {
            report.complete = true;
            break;
        }
        if Instant::now() >= deadline {
            workers.abort_all();
            if report.active == 0 && n > 0 {
                report.active = count_active(&http, &admin).await?;
            }
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            println!(
                "S={subs}: {:.0} s: {n} created, {handshakes} handshake(s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    report.total_time = started.elapsed();
    report.create_time = create_time.unwrap_or(report.total_time);
    Ok(report)
}

async fn count_active(http: &reqwest::Client, admin: &str) -> anyhow::Result<usize> {
    let v: Value = http
        .get(admin)
        .send()
        .await
        .context("GET /admin/subscriptions")?
        .error_for_status()?
        .json()
        .await
        .context("reading /admin/subscriptions")?;
    Ok(v.get("subscriptions")
        .and_then(Value::as_array)
        .map_or(0, |rows| {
            rows.iter()
                .filter(|r| {
                    r.get("status").and_then(Value::as_str) == Some("active")
                        && r.get("handshake_accepted").and_then(Value::as_bool) == Some(true)
                })
                .count()
        }))
}

/// The i-th benchmark subscription: R4 backport rest-hook, `id-only`, on `Task?owner=org-i`.
pub fn subscription(i: usize, endpoint: &str) -> Value {
    serde_json::json!({
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE_URL]},
        "status": "requested",
        "reason": "herald-loadgen notify",
        "criteria": TOPIC,
        "_criteria": {"extension": [{
            "url": FILTER_URL,
            "valueString": format!("Task?owner=Organization/org-{i}")
        }]},
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": CONTENT_URL, "valueCode": "id-only"}]}
        }
    })
}

fn client(pool: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pool.max(1))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// One write as the client saw it.
struct Sent {
    id: String,
    at: Instant,
    answered: Instant,
}

/// One measurement: `clients` connections POSTing Tasks owned by `org-0` back to back to
/// `url` (a Herald process, whose CPU time is sampled at the window's edges, or one of the
/// relays when `herald_pid` is `None`), then the drain.
async fn measure(
    cfg: &NotifyConfig,
    receiver: &Receiver,
    url: &str,
    clients: usize,
    herald_pid: Option<u32>,
) -> anyhow::Result<Sample> {
    let herald = herald_pid.is_some();
    receiver.reset();
    let start = Instant::now() + cfg.warmup;
    let end = start + cfg.duration;
    // A request still unanswered this long after the window is given up on.
    let give_up = end + Duration::from_secs(10);
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let http = client(1)?;
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sent: Vec<Sent> = Vec::new();
            let (mut errors, mut n) = (0u64, 0u64);
            loop {
                let at = Instant::now();
                if at >= end {
                    break;
                }
                n += 1;
                let mine = format!("c{c}-{n}");
                // The relay gets a Task carrying the id the receiver will see; Herald assigns
                // its own (and the client reads it from the Location).
                let id_member = if herald {
                    String::new()
                } else {
                    format!(r#""id":"{mine}","#)
                };
                let body = format!(
                    r#"{{"resourceType":"Task",{id_member}"status":"requested","intent":"order","description":"herald-loadgen notify {mine}","owner":{{"reference":"Organization/org-0"}}}}"#
                );
                let request = async {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/fhir+json")
                        .body(body)
                        .send()
                        .await
                        .ok()?;
                    if r.status() != reqwest::StatusCode::CREATED {
                        return None;
                    }
                    let id = if herald {
                        location_id(r.headers())?
                    } else {
                        mine
                    };
                    r.bytes().await.ok()?;
                    Some(id)
                };
                let Ok(outcome) = tokio::time::timeout_at(give_up.into(), request).await else {
                    break;
                };
                let answered = Instant::now();
                match outcome {
                    Some(id) => sent.push(Sent { id, at, answered }),
                    None => {
                        if at >= start {
                            errors += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (sent, errors)
        }));
    }
    let mut sent = Vec::new();
    let mut s = Sample {
        measured: cfg.duration,
        ..Sample::default()
    };
    if let Some(pid) = herald_pid {
        tokio::time::sleep_until(start.into()).await;
        let cpu0 = cpu_time(pid)?;
        tokio::time::sleep_until(end.into()).await;
        s.cpu = cpu_time(pid)?.saturating_sub(cpu0);
    }
    for t in tasks {
        let (mine, errors) = t.await.context("a load client panicked")?;
        sent.extend(mine);
        s.write_errors += errors;
    }
    // Drain: wait until every acknowledged write has been notified, or give up.
    let drain_deadline = Instant::now().max(end) + cfg.drain;
    loop {
        let outstanding = receiver.outstanding(&sent);
        if outstanding == 0 || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.drain = Instant::now().saturating_duration_since(end);
    let seen = receiver.snapshot();
    s.delivered = seen
        .event_times
        .iter()
        .filter(|t| **t >= start && **t <= end)
        .count() as u64;
    s.requests = seen
        .request_times
        .iter()
        .filter(|t| **t >= start && **t <= end)
        .count() as u64;
    s.duplicates = seen.duplicates;
    for w in sent.iter().filter(|w| w.at >= start && w.at < end) {
        s.writes += 1;
        s.write_latencies.record(w.answered - w.at);
        match seen.first.get(&w.id) {
            Some(r) => s.latencies.record(r.saturating_duration_since(w.at)),
            None => s.missing += 1,
        }
    }
    Ok(s)
}

/// The Task id in a `Location` such as `http://h/fhir/r4/Task/{id}/_history/1`.
fn location_id(headers: &HeaderMap) -> Option<String> {
    let loc = headers.get(header::LOCATION)?.to_str().ok()?;
    task_id(loc).map(str::to_owned)
}

/// The id following the `Task` segment of a reference or URL.
pub fn task_id(reference: &str) -> Option<&str> {
    let mut segments = reference.split('/');
    segments.find(|s| *s == "Task")?;
    segments.next().filter(|s| !s.is_empty())
}

/// What a notification request carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Events (their Task ids): an event-notification Bundle, or one relayed Task.
    Events(Vec<String>),
    /// A handshake.
    Handshake,
    /// A heartbeat or anything else.
    Other,
}

/// Reads a request body as the receiver sees it: an R4 backport notification Bundle (the
/// `notification-event` focus references of its `SubscriptionStatus` Parameters) or a Task.
pub fn parse_received(body: &[u8]) -> Received {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Received::Other;
    };
    match v.get("resourceType").and_then(Value::as_str) {
        Some("Task") => match v.get("id").and_then(Value::as_str) {
            Some(id) => Received::Events(vec![id.to_owned()]),
            None => Received::Other,
        },
        Some("Bundle") => {
            let params = v
                .pointer("/entry/0/resource/parameter")
                .and_then(Value::as_array);
            let Some(params) = params else {
                return Received::Other;
            };
            let named = |p: &&Value, n: &str| p.get("name").and_then(Value::as_str) == Some(n);
            let kind = params
                .iter()
                .find(|p| named(p, "type"))
                .and_then(|p| p.get("valueCode"))
                .and_then(Value::as_str);
            match kind {
                Some("handshake") => Received::Handshake,
                Some("event-notification") => Received::Events(
                    params
                        .iter()
                        .filter(|p| named(p, "notification-event"))
                        .filter_map(|p| p.get("part").and_then(Value::as_array))
                        .filter_map(|parts| {
                            parts
                                .iter()
                                .find(|q| named(q, "focus"))
                                .and_then(|q| q.pointer("/valueReference/reference"))
                                .and_then(Value::as_str)
                                .and_then(task_id)
                                .map(str::to_owned)
                        })
                        .collect(),
                ),
                _ => Received::Other,
            }
        }
        _ => Received::Other,
    }
}

/// What the receiver has seen since its last reset.
#[derive(Debug, Default, Clone)]
struct Seen {
    first: HashMap<String, Instant>,
    event_times: Vec<Instant>,
    request_times: Vec<Instant>,
    duplicates: u64,
    handshakes: u64,
}

/// The subscriber endpoint: notes when each Task id first arrived.
struct Receiver {
    server: ServerThread,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = axum::Router::new()
            .route("/notify", axum::routing::post(receive))
            .with_state(seen.clone());
        Ok(Receiver {
            server: ServerThread::start("notify-receiver", app)?,
            seen,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/notify", self.server.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reset(&self) {
        *self.lock() = Seen::default();
    }

    fn handshakes(&self) -> u64 {
        self.lock().handshakes
    }

    fn outstanding(&self, sent: &[Sent]) -> usize {
        let seen = self.lock();
        sent.iter()
            .filter(|w| !seen.first.contains_key(&w.id))
            .count()
    }

    fn snapshot(&self) -> Seen {
        self.lock().clone()
    }
}

async fn receive(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let received = parse_received(&body);
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    match received {
        Received::Events(ids) => {
            seen.request_times.push(at);
            for id in ids {
                seen.event_times.push(at);
                if seen.first.insert(id, at).is_some() {
                    seen.duplicates += 1;
                }
            }
        }
        Received::Handshake => seen.handshakes += 1,
        Received::Other => {}
    }
    StatusCode::OK
}

/// The baseline: forwards every POSTed body to the receiver and answers once that is done.
struct Relay {
    server: ServerThread,
}

#[derive(Clone)]
struct RelayState {
    http: reqwest::Client,
    target: Arc<str>,
}

impl Relay {
    fn start(target: &str) -> anyhow::Result<Relay> {
        let state = RelayState {
            http: client(1024)?,
            target: Arc::from(target),
        };
        let app = axum::Router::new()
            .route("/fhir/r4/Task", axum::routing::post(relay))
            .with_state(state);
        Ok(Relay {
            server: ServerThread::start("notify-relay", app)?,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/fhir/r4/Task", self.server.addr)
    }
}

async fn relay(State(state): State<RelayState>, body: Bytes) -> (StatusCode, HeaderMap, Bytes) {
    let forwarded = state
        .http
        .post(&*state.target)
        .header("content-type", "application/fhir+json")
        .body(body.clone())
        .send()
        .await;
    let ok = match forwarded {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    };
    if ok {
        (StatusCode::CREATED, fhir_json_headers(), body)
    } else {
        (StatusCode::BAD_GATEWAY, fhir_json_headers(), Bytes::new())
    }
}

fn fhir_json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/fhir+json"),
    );
    headers
}

/// The durable baseline: the relay, except that every body is first appended (with a newline)
/// to a log file and made durable with `fdatasync`, group-committed by a dedicated thread; it
/// answers 201 once both the sync and the forward have completed. The log lives in a temporary
/// directory, removed when the relay is dropped.
struct DurableRelay {
    /// `None` once stopped (in `drop`, before the committer is joined).
    server: Option<ServerThread>,
    /// The committer thread; it ends once every sender (held by the server's handlers) is gone.
    committer: Option<std::thread::JoinHandle<CommitStats>>,
    log: PathBuf,
    /// Dropped (removed) after `drop` has stopped the server and joined the committer.
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct DurableRelayState {
    relay: RelayState,
    log: mpsc::UnboundedSender<Append>,
}

/// One body waiting to be appended to the durable log and synced.
struct Append {
    /// The body (the committer adds the newline).
    body: Bytes,
    /// Answered once the batch holding this body is synced (or failed to be).
    done: oneshot::Sender<Result<(), String>>,
}

/// What the committer did, for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct CommitStats {
    /// `fdatasync` calls (one per batch).
    syncs: u64,
    /// Bodies appended.
    appends: u64,
}

impl DurableRelay {
    fn start(target: &str) -> anyhow::Result<DurableRelay> {
        let dir = tempfile::tempdir().context("temporary directory for the durable relay")?;
        let log = dir.path().join("relay.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let committer = std::thread::Builder::new()
            .name("notify-durable-log".into())
            .spawn(move || commit_loop(file, rx))
            .context("starting the durable relay's committer thread")?;
        let state = DurableRelayState {
            relay: RelayState {
                http: client(1024)?,
                target: Arc::from(target),
            },
            log: tx,
        };
        let app = axum::Router::new()
            .route("/fhir/r4/Task", axum::routing::post(durable_relay))
            .with_state(state);
        Ok(DurableRelay {
            server: Some(ServerThread::start("notify-d-relay", app)?),
            committer: Some(committer),
            log,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        match &self.server {
            Some(server) => format!("http://{}/fhir/r4/Task", server.addr),
            None => String::new(),
        }
    }

    /// The durable log: every body acknowledged so far, one per line.
    fn log_path(&self) -> &std::path::Path {
        &self.log
    }
}

impl Drop for DurableRelay {
    fn drop(&mut self) {
        // Stopping the server drops its runtime and with it every sender of appends, which ends
        // the committer (and closes the log) before the directory goes.
        drop(self.server.take());
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

async fn durable_relay(
    State(state): State<DurableRelayState>,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let (done, synced) = oneshot::channel();
    let append = Append {
        body: body.clone(),
        done,
    };
    let durable = state.log.send(append).is_ok() && matches!(synced.await, Ok(Ok(())));
    if !durable {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            fhir_json_headers(),
            Bytes::new(),
        );
    }
    relay(State(state.relay), body).await
}

/// The durable relay's committer (a dedicated thread, so that no file I/O runs on an async
/// worker): waits for an append, takes every other one pending, writes them all with one write,
/// `fdatasync`s once, then answers each waiter. Appends arriving during a sync form the next
/// batch; an idle committer syncs a lone append at once. After an I/O error every later append
/// fails too (what reached the disk is unknown). Returns when every sender is gone.
fn commit_loop(
    mut file: std::fs::File,
    mut pending: mpsc::UnboundedReceiver<Append>,
) -> CommitStats {
    let mut stats = CommitStats::default();
    let mut batch: Vec<Append> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut failed: Option<String> = None;
    while let Some(first) = pending.blocking_recv() {
        batch.push(first);
        while let Ok(more) = pending.try_recv() {
            batch.push(more);
        }
        let outcome = match &failed {
            Some(e) => Err(e.clone()),
            None => {
                buf.clear();
                for a in &batch {
                    buf.extend_from_slice(&a.body);
                    buf.push(b'\n');
                }
                stats.syncs += 1;
                file.write_all(&buf)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| format!("durable relay log: {e}"))
            }
        };
        if let Err(e) = &outcome {
            failed.get_or_insert_with(|| e.clone());
        } else {
            stats.appends += batch.len() as u64;
        }
        for a in batch.drain(..) {
            let _ = a.done.send(outcome.clone());
        }
    }
    stats
}

type Results = BTreeMap<(usize, usize), Sample>;

fn report(
    cfg: &NotifyConfig,
    setups: &[(&str, SetupReport)],
    results: &mut BTreeMap<Target, Results>,
) {
    println!();
    println!(
        "set-up (S subscriptions created {} at a time, until all active):",
        cfg.setup_concurrency
    );
    for (label, s) in setups {
        println!(
            "  S={:<6} created {:>6} in {:>7.1} s ({:>5.0}/s)  handshakes {:>6}  active {:>6} after {:>7.1} s{}{}",
            s.subs,
            s.created,
            s.create_time.as_secs_f64(),
            per_sec(s.created as u64, s.create_time),
            s.handshakes,
            s.active,
            s.total_time.as_secs_f64(),
            if *label == "herald" {
                String::new()
            } else {
                format!("  ({label})")
            },
            if s.complete {
                ""
            } else {
                "  INCOMPLETE (not measured)"
            }
        );
    }
    let mut take = |t: Target| results.remove(&t).unwrap_or_default();
    let (mut herald, mut base, mut relay, mut durable) = (
        take(Target::Herald),
        take(Target::BaseHerald),
        take(Target::Relay),
        take(Target::DurableRelay),
    );
    for (title, results) in [
        ("herald", &mut herald),
        ("base herald", &mut base),
        ("relay", &mut relay),
        ("durable relay", &mut durable),
    ] {
        if results.is_empty() {
            continue;
        }
        println!();
        println!(
            "{title} (p50/p99: write sent -> notification received; 201 p50/p99: write sent -> 201):\n{:>6} {:>4} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8} {:>8} {:>7}",
            "S",
            "C",
            "notif/s",
            "p50 ms",
            "p99 ms",
            "writes/s",
            "201 p50 ms",
            "201 p99 ms",
            "ev/notif",
            "missing",
            "errors"
        );
        for ((subs, clients), s) in results.iter_mut() {
            println!(
                "{:>6} {:>4} {:>9.0} {:>9} {:>9} {:>9.0} {:>11} {:>11} {:>8.1} {:>8} {:>7}",
                subs,
                clients,
                s.rate(),
                ms(s.latencies.quantile(0.50)),
                ms(s.latencies.quantile(0.99)),
                s.write_rate(),
                ms(s.write_latencies.quantile(0.50)),
                ms(s.write_latencies.quantile(0.99)),
                s.batch(),
                s.missing,
                s.write_errors
            );
        }
    }
    if !relay.is_empty() {
        println!();
        println!("herald/relay (relay measured alongside each S; context, no target):");
        ratio_table(&mut herald, &mut relay, None);
    }
    let mut verdicts = Vec::new();
    if !durable.is_empty() {
        println!();
        println!(
            "herald/durable relay (targets: rate >= {DURABLE_RATE_TARGET:.2}, p99 <= {DURABLE_P99_TARGET:.1}x):"
        );
        let (rate, p99) = ratio_table(
            &mut herald,
            &mut durable,
            Some((DURABLE_RATE_TARGET, DURABLE_P99_TARGET)),
        );
        verdicts.push(every_cell(
            &format!("rate >= {DURABLE_RATE_TARGET:.2} x the durable relay's"),
            "lowest",
            rate,
            |r| r >= DURABLE_RATE_TARGET,
        ));
        verdicts.push(every_cell(
            &format!("p99 <= {DURABLE_P99_TARGET:.1}x the durable relay's"),
            "highest",
            p99,
            |r| r <= DURABLE_P99_TARGET,
        ));
        if !base.is_empty() {
            println!();
            println!("base herald/durable relay (the base binary in the same rounds, context):");
            ratio_table(&mut base, &mut durable, None);
        }
        if !relay.is_empty() {
            println!();
            println!("durable relay/relay (what durability alone costs on this machine):");
            for (key, d) in durable.iter_mut() {
                let Some(r) = relay.get_mut(key) else {
                    continue;
                };
                println!(
                    "  S={:<6} C={:<3} rate {}  p99 {}",
                    key.0,
                    key.1,
                    verdict_cell(ratio(d.rate(), r.rate()), None),
                    verdict_cell(quantile_ratio(d, r, 0.99), None),
                );
            }
        }
    }
    if let Some(v) = cpu_report(cfg, &herald, &base) {
        verdicts.push(v);
    }
    if let (Some(&few), Some(&many)) = (cfg.subs.iter().min(), cfg.subs.iter().max())
        && few != many
    {
        println!();
        println!("subscription scaling (target: rate with S={many} >= 0.80 x rate with S={few}):");
        for &clients in &cfg.clients {
            let (Some(a), Some(b)) = (herald.get(&(many, clients)), herald.get(&(few, clients)))
            else {
                println!("  C={clients:<3} n/a (S={many} or S={few} not measured)");
                continue;
            };
            let r = ratio(a.rate(), b.rate());
            println!(
                "  C={clients:<3} {:.0}/s vs {:.0}/s: {}",
                a.rate(),
                b.rate(),
                verdict_cell(r, r.map(|x| x >= 0.80)).trim()
            );
        }
    }
    if !verdicts.is_empty() {
        println!();
        println!("targets:");
        for v in verdicts {
            println!("  {v}");
        }
    }
}

/// Prints a/b (rate, p50, p99) per (S, C) measured by both, with verdicts when `targets` (rate
/// at least, p99 at most) is given; returns the rate and p99 ratios per (S, C) (`None` where
/// one side delivered nothing).
#[allow(clippy::type_complexity)]
fn ratio_table(
    a: &mut Results,
    b: &mut Results,
    targets: Option<(f64, f64)>,
) -> (
    Vec<((usize, usize), Option<f64>)>,
    Vec<((usize, usize), Option<f64>)>,
) {
    println!(
        "{:>6} {:>4} {:>11} {:>11} {:>11}",
        "S", "C", "rate", "p50", "p99"
    );
    let (mut rates, mut p99s) = (Vec::new(), Vec::new());
    for (key, h) in a.iter_mut() {
        let Some(d) = b.get_mut(key) else {
            continue;
        };
        let rate = ratio(h.rate(), d.rate());
        let p50 = quantile_ratio(h, d, 0.50);
        let p99 = quantile_ratio(h, d, 0.99);
        println!(
            "{:>6} {:>4} {:>11} {:>11} {:>11}",
            key.0,
            key.1,
            verdict_cell(rate, targets.and_then(|(t, _)| rate.map(|x| x >= t))),
            verdict_cell(p50, None),
            verdict_cell(p99, targets.and_then(|(_, t)| p99.map(|x| x <= t))),
        );
        rates.push((*key, rate));
        p99s.push((*key, p99));
    }
    (rates, p99s)
}

/// One target line over every (S, C): PASS when every cell has a figure and each passes;
/// names the worst cell (`worst` is "lowest" or "highest").
fn every_cell(
    what: &str,
    worst: &str,
    cells: Vec<((usize, usize), Option<f64>)>,
    ok: impl Fn(f64) -> bool,
) -> String {
    if cells.is_empty() {
        return format!("n/a  {what} in every (S, C): nothing measured");
    }
    let pass = cells.iter().all(|(_, r)| r.is_some_and(&ok));
    let missing = cells.iter().filter(|(_, r)| r.is_none()).count();
    let figures: Vec<((usize, usize), f64)> = cells
        .iter()
        .filter_map(|(k, r)| r.map(|r| (*k, r)))
        .collect();
    let pick = figures.iter().copied().reduce(|x, y| {
        let y_worse = if worst == "lowest" {
            y.1 < x.1
        } else {
            y.1 > x.1
        };
        if y_worse { y } else { x }
    });
    let failing = cells.iter().filter(|(_, r)| !r.is_some_and(&ok)).count();
    let worst_cell = match pick {
        Some(((s, c), r)) => format!("{worst} {r:.2} at S={s} C={c}"),
        None => "no figure".into(),
    };
    format!(
        "{} {what} in every (S, C): {worst_cell}; {failing} of {} cell(s) miss{}",
        if pass { "PASS" } else { "MISS" },
        cells.len(),
        if missing > 0 {
            format!(" ({missing} without a figure)")
        } else {
            String::new()
        }
    )
}

/// Prints Herald's CPU per notification per (S, C), the base binary's beside it and new/base,
/// and returns the CPU target's line: at the highest client count, new/base ≤ [`CPU_TARGET`]
/// in every S (or, without a base binary, at most that share of `cpu_baseline_us`).
fn cpu_report(cfg: &NotifyConfig, herald: &Results, base: &Results) -> Option<String> {
    if herald.is_empty() {
        return None;
    }
    let top = cfg.clients.iter().copied().max()?;
    println!();
    println!(
        "herald CPU per notification (Herald's utime+stime in the window / notifications delivered in it; target at C={top}: new <= {CPU_TARGET:.2}x {}):",
        if base.is_empty() {
            "the baseline"
        } else {
            "base"
        }
    );
    println!(
        "{:>6} {:>4} {:>12} {:>12} {:>11}",
        "S", "C", "herald us", "base us", "new/base"
    );
    let mut cells = Vec::new();
    for (key, h) in herald {
        let new = h.cpu_per_notification_us();
        let old = base.get(key).and_then(Sample::cpu_per_notification_us);
        let r = match (new, old) {
            (Some(n), Some(o)) if o > 0.0 => Some(n / o),
            _ => None,
        };
        let judged = key.1 == top && !base.is_empty();
        println!(
            "{:>6} {:>4} {:>12} {:>12} {:>11}",
            key.0,
            key.1,
            new.map_or("-".into(), |x| format!("{x:.1}")),
            old.map_or("-".into(), |x| format!("{x:.1}")),
            verdict_cell(r, judged.then(|| r.map(|x| x <= CPU_TARGET)).flatten()),
        );
        if key.1 == top {
            cells.push((*key, r, new));
        }
    }
    if !base.is_empty() {
        return Some(every_cell(
            &format!(
                "Herald CPU per notification at C={top} <= {CPU_TARGET:.2}x the base binary's"
            ),
            "highest",
            cells.into_iter().map(|(k, r, _)| (k, r)).collect(),
            |r| r <= CPU_TARGET,
        ));
    }
    let baseline = cfg.cpu_baseline_us?;
    let limit = baseline * CPU_TARGET;
    Some(every_cell(
        &format!(
            "Herald CPU per notification at C={top} <= {limit:.1} us ({CPU_TARGET:.2}x the baseline {baseline:.1} us)"
        ),
        "highest",
        cells.into_iter().map(|(k, _, us)| (k, us)).collect(),
        |us| us <= limit,
    ))
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn quantile_ratio(h: &mut Sample, r: &mut Sample, q: f64) -> Option<f64> {
    match (h.latencies.quantile(q), r.latencies.quantile(q)) {
        (Some(a), Some(b)) if !b.is_zero() => Some(a.as_secs_f64() / b.as_secs_f64()),
        _ => None,
    }
}

fn verdict_cell(r: Option<f64>, ok: Option<bool>) -> String {
    match (r, ok) {
        (Some(r), Some(true)) => format!("{r:.2} PASS"),
        (Some(r), Some(false)) => format!("{r:.2} MISS"),
        (Some(r), None) => format!("{r:.2}"),
        (None, _) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_come_from_references_and_locations() {
        assert_eq!(
            task_id("http://127.0.0.1:1/fhir/r4/Task/abc/_history/1"),
            Some("abc")
        );
        assert_eq!(task_id("Task/xyz"), Some("xyz"));
        assert_eq!(task_id("Organization/org-0"), None);
    }

    #[test]
    fn the_receiver_reads_events_handshakes_and_relayed_tasks() {
        let bundle = |kind: &str, ids: &[&str]| {
            let mut params = vec![
                serde_json::json!({"name": "type", "valueCode": kind}),
                serde_json::json!({"name": "events-since-subscription-start", "valueString": "2"}),
            ];
            for (n, id) in ids.iter().enumerate() {
                params.push(serde_json::json!({"name": "notification-event", "part": [
                    {"name": "event-number", "valueString": (n + 1).to_string()},
                    {"name": "focus", "valueReference": {"reference": format!("http://h/fhir/r4/Task/{id}/_history/1")}}
                ]}));
            }
            serde_json::json!({"resourceType": "Bundle", "type": "history", "entry": [
                {"resource": {"resourceType": "Parameters", "parameter": params}}
            ]})
            .to_string()
        };
        assert_eq!(
            parse_received(bundle("event-notification", &["a", "b"]).as_bytes()),
            Received::Events(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_received(bundle("handshake", &[]).as_bytes()),
            Received::Handshake
        );
        assert_eq!(
            parse_received(bundle("heartbeat", &[]).as_bytes()),
            Received::Other
        );
        assert_eq!(
            parse_received(br#"{"resourceType":"Task","id":"c0-1"}"#),
            Received::Events(vec!["c0-1".into()])
        );
        assert_eq!(parse_received(b"not json"), Received::Other);
    }

    #[test]
    fn a_target_passes_only_when_every_cell_passes_and_names_the_worst() {
        let cells = vec![((1, 1), Some(0.9)), ((1, 16), Some(0.85))];
        let line = every_cell("rate", "lowest", cells, |r| r >= 0.80);
        assert!(line.starts_with("PASS "), "{line}");
        assert!(line.contains("lowest 0.85 at S=1 C=16"), "{line}");
        let cells = vec![((1, 1), Some(1.5)), ((100, 16), Some(2.4))];
        let line = every_cell("p99", "highest", cells, |r| r <= 2.0);
        assert!(line.starts_with("MISS "), "{line}");
        assert!(
            line.contains("highest 2.40 at S=100 C=16; 1 of 2"),
            "{line}"
        );
        // A cell without a figure (nothing delivered) cannot pass.
        let cells = vec![((1, 1), Some(0.9)), ((1, 16), None)];
        let line = every_cell("rate", "lowest", cells, |r| r >= 0.80);
        assert!(line.starts_with("MISS "), "{line}");
        assert!(line.contains("(1 without a figure)"), "{line}");
    }

    #[test]
    fn cpu_per_notification_is_the_window_cpu_over_the_events_delivered() {
        let s = Sample {
            delivered: 1000,
            cpu: Duration::from_millis(140),
            ..Sample::default()
        };
        assert_eq!(s.cpu_per_notification_us(), Some(140.0));
        let relay = Sample {
            delivered: 1000,
            ..Sample::default()
        };
        assert_eq!(relay.cpu_per_notification_us(), None);
    }

    #[test]
    fn subscriptions_filter_on_their_own_owner() {
        let s = subscription(7, "http://127.0.0.1:9/notify");
        assert_eq!(
            s.pointer("/_criteria/extension/0/valueString")
                .and_then(Value::as_str),
            Some("Task?owner=Organization/org-7")
        );
        assert_eq!(s["criteria"], TOPIC);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_durable_relay_logs_durably_every_body_it_forwards() {
        let receiver = Receiver::start().unwrap();
        let relay = DurableRelay::start(&receiver.url()).unwrap();
        let log = relay.log_path().to_path_buf();
        let http = client(8).unwrap();
        let bodies: Vec<String> = (0..8)
            .map(|i| {
                format!(
                    r#"{{"resourceType":"Task","id":"durable-{i}","status":"requested","intent":"order"}}"#
                )
            })
            .collect();
        let posts: Vec<_> = bodies
            .iter()
            .map(|body| {
                let request = http
                    .post(relay.url())
                    .header("content-type", "application/fhir+json")
                    .body(body.clone());
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        for post in posts {
            assert_eq!(post.await.unwrap(), reqwest::StatusCode::CREATED);
        }
        // A 201 means both the forward and the sync are done.
        let seen = receiver.snapshot();
        let logged = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines.len(), bodies.len(), "one line per body: {logged}");
        for (i, body) in bodies.iter().enumerate() {
            assert!(
                seen.first.contains_key(&format!("durable-{i}")),
                "durable-{i} was forwarded"
            );
            assert!(lines.contains(&body.as_str()), "durable-{i} is in the log");
        }
        drop(relay);
        assert!(
            !log.exists(),
            "the log's directory is removed with the relay"
        );
    }

    #[test]
    fn the_durable_log_writes_every_pending_append_with_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let waiters: Vec<_> = (0..5)
            .map(|i| {
                let (done, synced) = oneshot::channel();
                let body = Bytes::from(format!("body-{i}"));
                assert!(tx.send(Append { body, done }).is_ok());
                synced
            })
            .collect();
        drop(tx);
        // Everything is already pending when the committer starts: one batch, one sync.
        let stats = commit_loop(file, rx);
        assert_eq!(
            stats,
            CommitStats {
                syncs: 1,
                appends: 5
            }
        );
        for synced in waiters {
            assert_eq!(synced.blocking_recv().unwrap(), Ok(()));
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "body-0\nbody-1\nbody-2\nbody-3\nbody-4\n"
        );
    }
}
