//! The `writes` scenario: Task creates per second and per-request latency over HTTP against the
//! real binary, for each durability mode (`group-commit`, `flush-per-write`, `off`) and each
//! client count, measured in one run with the modes interleaved so that noise from other work
//! on the machine falls on all of them alike. An in-process HTTP server that answers every POST
//! with 201 and no storage gives the loopback-HTTP ceiling in the same run.
//!
//! Every run gets a fresh herald process and data directory; each client is its own keep-alive
//! connection POSTing `Task`s back to back. Only requests that start after the warm-up and end
//! before the deadline are counted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::latency::{Latencies, ms};
use crate::process::HeraldProcess;
use crate::server_thread::ServerThread;

/// What a run loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Herald with `HERALD_DURABILITY=group-commit`.
    GroupCommit,
    /// Herald with `HERALD_DURABILITY=flush-per-write`.
    FlushPerWrite,
    /// Herald with `HERALD_DURABILITY=off`.
    Off,
    /// A bare HTTP server answering 201: the loopback ceiling.
    HttpBaseline,
}

impl Target {
    /// The label printed (and, for Herald, the `HERALD_DURABILITY` value).
    pub fn label(self) -> &'static str {
        match self {
            Target::GroupCommit => "group-commit",
            Target::FlushPerWrite => "flush-per-write",
            Target::Off => "off",
            Target::HttpBaseline => "http-baseline",
        }
    }
}

/// Settings of the `writes` scenario.
#[derive(Debug, Clone)]
pub struct WritesConfig {
    /// The herald binary (a release build).
    pub herald_bin: PathBuf,
    /// Client counts, e.g. 1, 16, 64.
    pub clients: Vec<usize>,
    /// Measured time per run.
    pub duration: Duration,
    /// Unmeasured load before each run's measurement.
    pub warmup: Duration,
    /// Times every (target, clients) pair is run; odd rounds reverse the order of the targets.
    pub rounds: usize,
    /// Whether to run the bare-HTTP baseline too.
    pub baseline: bool,
}

/// Counts of one or more runs of one (target, clients) pair.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Creates answered 201 within the measured window.
    pub completed: u64,
    /// Failed requests (status other than 201, or transport error) within the window.
    pub errors: u64,
    /// Measured time.
    pub measured: Duration,
    /// Latency of every completed create.
    pub latencies: Latencies,
    /// Requests still unanswered at the deadline and abandoned (at most one per client per run,
    /// unless the server stalled).
    pub abandoned: u64,
}

impl Sample {
    /// Creates per second.
    pub fn throughput(&self) -> f64 {
        let s = self.measured.as_secs_f64();
        if s > 0.0 {
            self.completed as f64 / s
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: &Sample) {
        self.completed += other.completed;
        self.errors += other.errors;
        self.measured += other.measured;
        self.latencies.merge(&other.latencies);
        self.abandoned += other.abandoned;
    }

    /// Whether nothing completed although requests were outstanding: the server hung.
    pub fn stalled(&self) -> bool {
        self.completed == 0 && self.abandoned > 0
    }
}

/// Runs the scenario and prints progress, the table, the ratios and the targets to stdout.
pub async fn run(cfg: &WritesConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.herald_bin.exists(),
        "{} not found: build it with `cargo build --release -p herald` or pass --herald-bin",
        cfg.herald_bin.display()
    );
    let mut targets = vec![Target::GroupCommit, Target::FlushPerWrite, Target::Off];
    if cfg.baseline {
        targets.push(Target::HttpBaseline);
    }
    let baseline = if cfg.baseline {
        Some(baseline_server()?)
    } else {
        None
    };
    println!(
        "writes: herald {}, clients {:?}, {} s measured after {} s warm-up, {} round(s)",
        cfg.herald_bin.display(),
        cfg.clients,
        cfg.duration.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        cfg.rounds
    );
    let mut results: BTreeMap<(usize, Target), Sample> = BTreeMap::new();
    let mut flip = false;
    for round in 0..cfg.rounds {
        for &clients in &cfg.clients {
            let mut order = targets.clone();
            if flip {
                order.reverse();
            }
            flip = !flip;
            for &target in &order {
                let sample = match target {
                    Target::HttpBaseline => match &baseline {
                        Some(b) => {
                            let url = format!("http://{}/fhir/r4/Task", b.addr);
                            load(&url, clients, cfg.warmup, cfg.duration).await?
                        }
                        None => continue,
                    },
                    _ => {
                        let herald = HeraldProcess::start(&cfg.herald_bin, target.label())?;
                        let url = format!("{}/Task", herald.fhir("r4"));
                        load(&url, clients, cfg.warmup, cfg.duration).await?
                    }
                };
                let mut s = sample.clone();
                println!(
                    "  round {} {:>3} client(s) {:<15} {:>9.0} creates/s  p50 {:>7} ms  p99 {:>7} ms  errors {}{}",
                    round + 1,
                    clients,
                    target.label(),
                    s.throughput(),
                    ms(s.latencies.quantile(0.50)),
                    ms(s.latencies.quantile(0.99)),
                    s.errors,
                    stall_note(&s)
                );
                results.entry((clients, target)).or_default().merge(&sample);
            }
        }
    }
    drop(baseline);
    report(cfg, &targets, &mut results);
    Ok(())
}

fn report(cfg: &WritesConfig, targets: &[Target], results: &mut BTreeMap<(usize, Target), Sample>) {
    println!();
    println!(
        "{:<16} {:>7} {:>11} {:>9} {:>9} {:>8}",
        "mode", "clients", "creates/s", "p50 ms", "p99 ms", "errors"
    );
    for &clients in &cfg.clients {
        for &t in targets {
            if let Some(s) = results.get_mut(&(clients, t)) {
                println!(
                    "{:<16} {:>7} {:>11.0} {:>9} {:>9} {:>8}{}",
                    t.label(),
                    clients,
                    s.throughput(),
                    ms(s.latencies.quantile(0.50)),
                    ms(s.latencies.quantile(0.99)),
                    s.errors,
                    stall_note(s)
                );
            }
        }
    }
    println!();
    println!("ratios (throughput):");
    for &clients in &cfg.clients {
        let tp = |t| results.get(&(clients, t)).map(Sample::throughput);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "  {:>3} client(s): group-commit/off {}  group-commit/flush-per-write {}  off/http-baseline {}",
            clients,
            ratio(tp(Target::GroupCommit), tp(Target::Off)),
            ratio(tp(Target::GroupCommit), tp(Target::FlushPerWrite)),
            ratio(tp(Target::Off), tp(Target::HttpBaseline)),
        );
    }
    println!();
    println!("targets:");
    let many = cfg.clients.iter().copied().max().unwrap_or(0);
    let gc = results
        .get(&(many, Target::GroupCommit))
        .map(Sample::throughput);
    let off = results.get(&(many, Target::Off)).map(Sample::throughput);
    match (gc, off) {
        (Some(gc), Some(off)) if off > 0.0 => {
            let r = gc / off;
            println!(
                "  {} throughput with {many} clients: group-commit {:.0}/s is {:.0}% of off {:.0}/s (target >= 70%)",
                verdict(r >= 0.70),
                gc,
                r * 100.0,
                off
            );
        }
        _ => println!("  n/a  throughput target: no group-commit/off figures"),
    }
    let gc1 = results.get(&(1, Target::GroupCommit)).cloned();
    let fpw1 = results.get(&(1, Target::FlushPerWrite)).cloned();
    match (gc1, fpw1) {
        (Some(mut gc), Some(mut fpw)) => {
            for (name, q) in [("p50", 0.50), ("p99", 0.99)] {
                match (gc.latencies.quantile(q), fpw.latencies.quantile(q)) {
                    (Some(a), Some(b)) if !b.is_zero() => {
                        let r = a.as_secs_f64() / b.as_secs_f64();
                        println!(
                            "  {} {name} latency with 1 client: group-commit {} ms is {:.2}x flush-per-write {} ms (target <= 1.5x)",
                            verdict(r <= 1.5),
                            ms(Some(a)),
                            r,
                            ms(Some(b))
                        );
                    }
                    _ => println!("  n/a  {name} latency target: no samples"),
                }
            }
        }
        _ => println!("  n/a  latency target: run with --clients including 1"),
    }
}

fn stall_note(s: &Sample) -> String {
    if s.stalled() {
        format!(
            "  STALLED: no create answered, {} request(s) hung",
            s.abandoned
        )
    } else {
        String::new()
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// Loads `url` with `clients` connections each POSTing Tasks back to back.
pub async fn load(
    url: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut s = Sample::default();
            let mut n = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                n += 1;
                let body = format!(
                    r#"{{"resourceType":"Task","status":"requested","intent":"order","description":"load client {c} create {n}","owner":{{"reference":"Organization/o{c}"}}}}"#
                );
                let request = async {
                    match http
                        .post(&url)
                        .header("content-type", "application/fhir+json")
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let created = r.status() == reqwest::StatusCode::CREATED;
                            created && r.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    }
                };
                // Past the deadline a request no longer counts: abandon it rather than wait
                // (a hung server would otherwise hold the run until the client timeout).
                let Ok(ok) = tokio::time::timeout_at(end.into(), request).await else {
                    s.abandoned += 1;
                    break;
                };
                let done = Instant::now();
                if sent < start || done > end {
                    continue;
                }
                if ok {
                    s.completed += 1;
                    s.latencies.record(done - sent);
                } else {
                    s.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            s
        }));
    }
    let mut total = Sample::default();
    for t in tasks {
        let s = t.await.context("a load client panicked")?;
        total.completed += s.completed;
        total.errors += s.errors;
        total.latencies.merge(&s.latencies);
        total.abandoned += s.abandoned;
    }
    total.measured = duration;
    Ok(total)
}

/// The bare-HTTP ceiling: answers every POST with 201 and stores nothing.
fn baseline_server() -> anyhow::Result<ServerThread> {
    let app = axum::Router::new().route(
        "/fhir/{tenant}/Task",
        axum::routing::post(|body: axum::body::Bytes| async move {
            (
                axum::http::StatusCode::CREATED,
                [
                    ("content-type", "application/fhir+json"),
                    ("etag", "W/\"1\""),
                ],
                body,
            )
        }),
    );
    ServerThread::start("http-baseline", app)
}
