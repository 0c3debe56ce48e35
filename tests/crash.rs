//! Crash safety of acknowledged writes (design invariant 1, "nothing committed is lost"): the
//! real binary under concurrent writers is killed with SIGKILL at random moments, restarted on
//! the same data directory, and every write it acknowledged must be readable at its exact
//! version with the exact content that was sent.
//!
//! What this can and cannot see: SIGKILL destroys the process, not the machine, so it catches an
//! acknowledgement sent before the data left Herald's own memory (sled's unflushed log buffers,
//! or anything an `off`-like path skips). It cannot see a missing `fsync`: data handed to the
//! kernel survives a process kill. Losing the page cache needs a power cut or a VM kill.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use herald_tests::{Herald, Rng, client, crash_seed as seed, task};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FHIR: &str = "application/fhir+json";
/// Crash-and-restart cycles, all on one data directory.
const CYCLES: usize = 12;
/// Concurrent writer tasks per cycle.
const WRITERS: u64 = 8;
/// Ids that every writer updates (so versions advance under contention); creates add more.
const SHARED_IDS: u64 = 6;

/// One write the server acknowledged: it answered 2xx with this version.
#[derive(Debug, Clone)]
struct Ack {
    id: String,
    version: u64,
    /// The body sent (its `description` is unique across the whole test).
    sent: Value,
    cycle: usize,
}

/// `W/"7"` → 7.
fn etag_version(r: &reqwest::Response) -> Option<u64> {
    let etag = r.headers().get("etag")?.to_str().ok()?;
    etag.trim_start_matches("W/").trim_matches('"').parse().ok()
}

/// `.../Task/{id}/_history/{v}` → (id, v).
fn location_id_version(r: &reqwest::Response) -> Option<(String, u64)> {
    let loc = r.headers().get("location")?.to_str().ok()?;
    let (head, version) = loc.rsplit_once("/_history/")?;
    let (_, id) = head.rsplit_once('/')?;
    Some((id.to_string(), version.parse().ok()?))
}

/// One writer: alternates updates of the shared ids with creates until the server dies or
/// `stop` is set. Records a write as acknowledged as soon as the status line and headers arrive
/// (that is the acknowledgement; the body may be cut off by the kill).
async fn writer(
    c: reqwest::Client,
    base: String,
    writer: u64,
    cycle: usize,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (Vec<Ack>, u64) {
    let mut acks = Vec::new();
    let mut in_flight = 0u64;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let mut body = task(&format!("Organization/w{writer}"));
        body["description"] = json!(format!("write {n} by writer {writer} in cycle {cycle}"));
        let update = i % 4 != 3;
        i += 1;
        let req = if update {
            let id = format!("crash-{}", (writer + i) % SHARED_IDS);
            body["id"] = json!(id);
            c.put(format!("{base}/Task/{id}"))
        } else {
            c.post(format!("{base}/Task"))
        };
        let r = match req
            .header("content-type", FHIR)
            .body(body.to_string())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // Cut off by the kill (a refused connection was never sent): not acknowledged.
                if !e.is_connect() {
                    in_flight += 1;
                }
                break;
            }
        };
        let status = r.status();
        assert!(
            status.is_success(),
            "a write was refused before any crash: {status} {}",
            r.text().await.unwrap_or_default()
        );
        let (id, version) = if update {
            let id = body["id"].as_str().unwrap().to_string();
            let v = etag_version(&r).expect("ETag on an acknowledged update");
            (id, v)
        } else {
            assert_eq!(status, StatusCode::CREATED);
            let (id, v) = location_id_version(&r).expect("Location on an acknowledged create");
            assert_eq!(etag_version(&r), Some(v), "ETag and Location disagree");
            (id, v)
        };
        acks.push(Ack {
            id,
            version,
            sent: body,
            cycle,
        });
    }
    (acks, in_flight)
}

/// The stored version minus what the server sets (`meta.versionId`, `meta.lastUpdated`, `id`).
fn content(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(map) = &mut v {
        map.remove("id");
        map.remove("meta");
    }
    v
}

/// Lost writes among `acks`: each must read back at its version with exactly the sent content,
/// and each id's current version must be at least its highest acknowledged one.
async fn lost_writes(c: &reqwest::Client, base: &str, acks: &[Ack]) -> Vec<String> {
    let mut lost = Vec::new();
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for a in acks {
        let h = highest.entry(&a.id).or_default();
        *h = (*h).max(a.version);
        let r = c
            .get(format!("{base}/Task/{}/_history/{}", a.id, a.version))
            .send()
            .await
            .expect("vread after restart");
        if r.status() != StatusCode::OK {
            lost.push(format!(
                "Task/{} v{} (cycle {}): vread answered {}",
                a.id,
                a.version,
                a.cycle,
                r.status()
            ));
            continue;
        }
        let got: Value = r.json().await.expect("vread body");
        let version_ok = got["meta"]["versionId"] == json!(a.version.to_string());
        if !version_ok || got["id"] != json!(a.id) || content(&got) != content(&a.sent) {
            lost.push(format!(
                "Task/{} v{} (cycle {}): stored {got} but {} was acknowledged",
                a.id, a.version, a.cycle, a.sent
            ));
        }
    }
    for (id, v) in highest {
        let r = c
            .get(format!("{base}/Task/{id}"))
            .send()
            .await
            .expect("read after restart");
        let current = etag_version(&r).unwrap_or(0);
        if current < v {
            lost.push(format!(
                "Task/{id}: current version {current} < acknowledged {v}"
            ));
        }
    }
    lost
}

/// Counts of one run.
struct Report {
    acknowledged: usize,
    /// Requests sent but cut off by a kill before their answer.
    in_flight: u64,
    /// Acknowledged writes missing right after the restart that followed them.
    lost: Vec<String>,
    /// Acknowledged writes (of any cycle) missing after the last restart.
    lost_at_end: Vec<String>,
    /// Acknowledgements that repeat an earlier (id, version): a lost version handed out again.
    reused: usize,
}

/// Runs `CYCLES` load → SIGKILL → restart → verify cycles on one data directory, verifying each
/// cycle's acknowledged writes after its restart and, at the end, all of them again.
async fn crash_cycles(env: &[(&str, &str)], seed: u64) -> Report {
    let mut rng = Rng(seed);
    let mut h = Herald::start_with(env);
    let c = client();
    let counter = Arc::new(AtomicU64::new(0));
    let mut all: Vec<Ack> = Vec::new();
    let mut in_flight = 0;
    let mut lost = Vec::new();
    for cycle in 0..CYCLES {
        let base = h.fhir("r4");
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    c.clone(),
                    base.clone(),
                    w,
                    cycle,
                    counter.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let delay = rng.range(50, 400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        h.kill9();
        stop.store(true, Ordering::SeqCst);
        let mut acks = Vec::new();
        let mut cut = 0;
        for w in writers {
            let (a, u) = w.await.expect("writer task");
            acks.extend(a);
            cut += u;
        }
        in_flight += cut;
        h.restart();
        let base = h.fhir("r4");
        let cycle_lost = lost_writes(&c, &base, &acks).await;
        println!(
            "cycle {cycle:2}: killed after {delay:3} ms, {:4} acknowledged, {cut} cut off \
             in flight, {} lost",
            acks.len(),
            cycle_lost.len()
        );
        lost.extend(cycle_lost);
        all.extend(acks);
    }
    // Later crashes must not have damaged what earlier cycles committed.
    let base = h.fhir("r4");
    let lost_at_end = lost_writes(&c, &base, &all).await;
    println!(
        "after {CYCLES} cycles: {} acknowledged, {in_flight} cut off in flight, {} lost after \
         their own restart, {} lost on the final re-check",
        all.len(),
        lost.len(),
        lost_at_end.len()
    );
    let distinct: HashSet<(&str, u64)> = all.iter().map(|a| (a.id.as_str(), a.version)).collect();
    Report {
        reused: all.len() - distinct.len(),
        acknowledged: all.len(),
        in_flight,
        lost,
        lost_at_end,
    }
}

/// Invariant 1 under group commit (the default durability), in 12 kill -9 cycles on one data
/// directory with 8 concurrent writers mixing creates and contended updates.
///
/// Durability `off` is deliberately not tested the other way round ("the checker does see
/// losses"): whether `off` loses anything depends on where the kill lands relative to sled's
/// background flush (every ~500 ms), so such an assertion would be flaky. To see the checker
/// catch losses by hand, run [`durability_off_loses_acknowledged_writes_demonstration`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_concurrent_writers_loses_no_acknowledged_write() {
    let seed = seed();
    println!("seed {seed} (replay with HERALD_CRASH_SEED={seed})");
    let report = crash_cycles(&[("HERALD_DURABILITY", "group-commit")], seed).await;
    assert!(
        report.acknowledged >= CYCLES,
        "too few acknowledged writes ({}) for the test to mean anything",
        report.acknowledged
    );
    assert!(
        report.in_flight > 0,
        "no request was in flight at any kill: the kills did not land under load"
    );
    assert!(
        report.lost.is_empty(),
        "seed {seed}: {} of {} acknowledged writes lost after their restart:\n{}",
        report.lost.len(),
        report.acknowledged,
        report.lost.join("\n")
    );
    assert_eq!(
        report.reused, 0,
        "seed {seed}: acknowledged versions were handed out twice"
    );
    assert!(
        report.lost_at_end.is_empty(),
        "seed {seed}: {} of {} acknowledged writes lost by the last restart:\n{}",
        report.lost_at_end.len(),
        report.acknowledged,
        report.lost_at_end.join("\n")
    );
}

/// The same procedure with `HERALD_DURABILITY=off`, which acknowledges before flushing. It
/// asserts nothing (losses depend on timing, see the test above) and is ignored; run it by
/// hand to see that the checker does report losses when acknowledgements outrun the flush:
/// `cargo test -p herald-tests --test crash -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "demonstration: asserts nothing, prints the writes durability=off loses"]
async fn durability_off_loses_acknowledged_writes_demonstration() {
    let seed = seed();
    let report = crash_cycles(&[("HERALD_DURABILITY", "off")], seed).await;
    println!(
        "durability=off, seed {seed}: {} of {} acknowledged writes lost after their restart, \
         {} after the last one; {} versions acknowledged twice",
        report.lost.len(),
        report.acknowledged,
        report.lost_at_end.len(),
        report.reused
    );
    for l in report.lost.iter().take(10) {
        println!("  {l}");
    }
}
