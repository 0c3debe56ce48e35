//! `herald-loadgen search`: search latency with the search index at two store sizes, and the
//! write rate with the index against without it.
//!
//! Two data directories are built through `herald-store` directly (COW-shaped Tasks, five per
//! owner of which two are `requested`, one identifier each; far faster than HTTP), without an
//! index, so the first Herald started on each rebuilds it: that start-up is the rebuild time.
//! Both Heralds then run side by side and the queries alternate between them, one at a time, so
//! the machine's load falls on both sizes alike; each answer's `total` is checked. The write
//! rate compares two fresh Heralds, index on and off, in alternating rounds of concurrent Task
//! creates. Every target is printed as a ratio with PASS/MISS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald_store::{Durability, Store, StoreOptions, WriteKind, WriteRequest};
use serde_json::{Value, json};

use crate::latency::{Latencies, ms};
use crate::process::HeraldProcess;

/// What to run.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// The herald binary.
    pub herald_bin: PathBuf,
    /// Where the data directories are built (reused when already there).
    pub data_root: PathBuf,
    /// Tasks in the small store.
    pub small: usize,
    /// Tasks in the large store.
    pub large: usize,
    /// Requests per query and size.
    pub queries: usize,
    /// Concurrent writers in the write-rate rounds.
    pub write_clients: usize,
    /// Rounds per side (index on, off), alternated.
    pub write_rounds: usize,
    /// Length of one round.
    pub write_round: Duration,
}

/// Ratio targets of the issue.
const QUERY_RATIO_MAX: f64 = 1.5;
const WRITE_RATIO_MIN: f64 = 0.85;
const TENANT: &str = "r4";

fn task(i: usize) -> Value {
    let status = if i % 5 < 2 {
        "requested"
    } else {
        ["accepted", "in-progress", "completed"][i % 3]
    };
    json!({
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "identifier": [{"system": "urn:loadgen:task", "value": format!("v{i}")}],
        "basedOn": [{"reference": format!("ServiceRequest/sr{i}")}],
        "focus": {"reference": format!("ServiceRequest/sr{i}")},
        "for": {"reference": format!("Patient/p{}", i % 1000)},
        "requester": {"reference": "Organization/placer"},
        "owner": {"reference": format!("Organization/org{}", i / 5)},
        "authoredOn": "2026-12-01T10:00:00Z",
        "lastModified": "2026-12-01T10:00:00Z",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}
    })
}

/// Builds (or reuses) a data directory holding `n` Tasks, without a search index.
fn build(root: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let dir = root.join(format!("tasks-{n}"));
    let done = dir.join("loadgen-complete");
    if done.exists() {
        println!("  reusing {} ({n} Tasks)", dir.display());
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).context("removing a half-built data directory")?;
    }
    std::fs::create_dir_all(&dir)?;
    let began = Instant::now();
    let store = Store::open(
        &dir,
        &StoreOptions {
            durability: Durability::Off,
            indexer: None,
            // Stored as Herald stores them (id and meta), so the server reads them as its own.
            stamp: herald_server::meta::stamp(),
            ..StoreOptions::default()
        },
    )?;
    let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let reqs: Vec<WriteRequest<'_>> = chunk
            .iter()
            .map(|&i| WriteRequest {
                tenant: TENANT,
                resource_type: "Task",
                id: &ids[i],
                kind: WriteKind::Create,
                body: Some(task(i)),
                if_match: None,
            })
            .collect();
        for r in store.apply_batch(&reqs, &mut |_, _| Ok(Vec::new()))? {
            r?;
        }
    }
    store.close()?;
    drop(store);
    std::fs::write(&done, b"")?;
    println!(
        "  built {} ({n} Tasks) in {:.1} s",
        dir.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(dir)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A small deterministic generator (xorshift): the same queries every run.
struct Pick(u64);

impl Pick {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below.max(1) as u64) as usize
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

async fn timed_search(
    http: &reqwest::Client,
    url: &str,
    expected: u64,
    lat: &mut Latencies,
) -> anyhow::Result<()> {
    let sent = Instant::now();
    let resp = http.get(url).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    lat.record(sent.elapsed());
    let total = body.get("total").and_then(Value::as_u64);
    if !status.is_success() || total != Some(expected) {
        bail!("{url}: status {status}, total {total:?}, expected {expected}");
    }
    Ok(())
}

/// Runs the scenario and prints its lines.
pub async fn run(cfg: &SearchConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_root)?;
    println!("data directories (through herald-store, no index):");
    let (small_dir, large_dir) = {
        let (root, small, large) = (cfg.data_root.clone(), cfg.small, cfg.large);
        tokio::task::spawn_blocking(move || -> anyhow::Result<(PathBuf, PathBuf)> {
            Ok((build(&root, small)?, build(&root, large)?))
        })
        .await??
    };
    let before = dir_bytes(&large_dir);
    let on = [("HERALD_SEARCH_INDEX", "true")];
    let hour = Duration::from_secs(3600);
    let began = Instant::now();
    let small = HeraldProcess::start_on(&cfg.herald_bin, &small_dir, "group-commit", &on, hour)?;
    let small_start = began.elapsed();
    let began = Instant::now();
    let large = HeraldProcess::start_on(&cfg.herald_bin, &large_dir, "group-commit", &on, hour)?;
    let large_start = began.elapsed();
    let after = dir_bytes(&large_dir);
    println!(
        "start-up with the index (a rebuild when the directory had none): {} Tasks {:.1} s, {} Tasks {:.1} s",
        cfg.small,
        small_start.as_secs_f64(),
        cfg.large,
        large_start.as_secs_f64()
    );
    println!(
        "disk at {} Tasks: {:.0} MiB before the index was first built, {:.0} MiB after (the engine's files and the log; a rough figure)",
        cfg.large,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut pick = Pick(0x9e37_79b9_7f4a_7c15);
    let mut lat: [[Latencies; 2]; 2] = Default::default(); // [query][size]
    let sizes = [(cfg.small, &small), (cfg.large, &large)];
    // Warm both (connection, caches) before measuring.
    for (n, h) in &sizes {
        let url = format!(
            "{}/Task?identifier=urn:loadgen:task|v{}",
            h.fhir(TENANT),
            n / 2
        );
        timed_search(&http, &url, 1, &mut Latencies::default()).await?;
    }
    for q in 0..cfg.queries {
        for step in 0..2 {
            // Alternate which size goes first.
            let s = (q + step) % 2;
            let (n, h) = sizes[s];
            let owner = pick.next(n / 5);
            let url = format!(
                "{}/Task?owner=Organization/org{owner}&status=requested",
                h.fhir(TENANT)
            );
            timed_search(&http, &url, 2, &mut lat[0][s]).await?;
            let id = pick.next(n);
            let url = format!("{}/Task?identifier=urn:loadgen:task|v{id}", h.fhir(TENANT));
            timed_search(&http, &url, 1, &mut lat[1][s]).await?;
        }
    }
    for (qi, name) in ["Task?owner=X&status=requested", "Task?identifier=S|V"]
        .iter()
        .enumerate()
    {
        let [a, b] = &mut lat[qi];
        let (pa, pb) = (a.quantile(0.5), b.quantile(0.5));
        let ratio = match (pa, pb) {
            (Some(x), Some(y)) if !x.is_zero() => y.as_secs_f64() / x.as_secs_f64(),
            _ => f64::INFINITY,
        };
        println!(
            "{name}: {} Tasks p50 {} p99 {}; {} Tasks p50 {} p99 {}; p50 ratio {ratio:.2} (target <= {QUERY_RATIO_MAX}) {}",
            cfg.small,
            ms(pa),
            ms(a.quantile(0.99)),
            cfg.large,
            ms(pb),
            ms(b.quantile(0.99)),
            verdict(ratio <= QUERY_RATIO_MAX)
        );
    }
    drop(large);
    drop(small);
    write_rate(cfg).await
}

async fn write_rate(cfg: &SearchConfig) -> anyhow::Result<()> {
    let with = HeraldProcess::start_with_env(
        &cfg.herald_bin,
        "group-commit",
        &[("HERALD_SEARCH_INDEX", "true")],
    )?;
    let without = HeraldProcess::start_with_env(
        &cfg.herald_bin,
        "group-commit",
        &[("HERALD_SEARCH_INDEX", "false")],
    )?;
    let mut done = [0u64; 2];
    let mut spent = [Duration::ZERO; 2];
    let mut next = 0usize;
    for round in 0..cfg.write_rounds * 2 {
        // on, off, off, on, on, off, ...: each side leads as often as it follows.
        let side = (round + round / 2) % 2;
        let h = if side == 0 { &with } else { &without };
        let (n, took) = creates(
            &format!("{}/Task", h.fhir(TENANT)),
            cfg.write_clients,
            cfg.write_round,
            &mut next,
        )
        .await?;
        done[side] += n;
        spent[side] += took;
    }
    let rate = |i: usize| done[i] as f64 / spent[i].as_secs_f64().max(1e-9);
    let ratio = rate(0) / rate(1).max(1e-9);
    println!(
        "writes ({} clients, {} rounds of {:.0} s per side, alternated): with the index {:.0}/s, without {:.0}/s; ratio {ratio:.2} (target >= {WRITE_RATIO_MIN}) {}",
        cfg.write_clients,
        cfg.write_rounds,
        cfg.write_round.as_secs_f64(),
        rate(0),
        rate(1),
        verdict(ratio >= WRITE_RATIO_MIN)
    );
    Ok(())
}

/// `clients` writers creating COW-shaped Tasks back to back for `length`; creates completed
/// and the time they took.
async fn creates(
    url: &str,
    clients: usize,
    length: Duration,
    next: &mut usize,
) -> anyhow::Result<(u64, Duration)> {
    let began = Instant::now();
    let end = began + length;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()?;
        let url = url.to_string();
        let base = *next + c * 1_000_000;
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let body = task(base + n as usize).to_string();
                let ok = http
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED);
                if ok {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.context("a writer panicked")?;
    }
    *next += clients * 1_000_000;
    Ok((total, began.elapsed()))
}
