//! The matcher measured in process: the fixture that `benches/benches/matcher.rs` (criterion)
//! and `herald-loadgen matcher` share, and the loadgen's scale run (issue #14: per-change cost
//! at 1 000 000 subscriptions against 100, memory per subscription, creation rate while
//! growing). One fixture, so that the two tools measure the same thing.
//!
//! Every subscription is on the built-in `cow-task-changed` topic and filters `owner` on its own
//! organization (`sub-<i>`: `owner=Organization/org-<i>`); the matcher holds every built-in
//! topic, as a tenant does. The change is a Task update (`requested` → `in-progress`, owner
//! kept): owner `org-<n/2>` matches exactly one subscription, owner `org-nobody` none.
//!
//! The scale run grows one matcher from 0 to the largest size, noting the allocator's live
//! bytes before and after (the caller supplies the counter: the loadgen binary installs a
//! counting global allocator, a library cannot) and the insert rate per stretch; then it times
//! the two changes against the smallest and the largest matcher in interleaved rounds (each
//! round times both sizes back to back, so that load from other processes weighs on both), and
//! reports the median of the per-round ratios.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use herald_fhir::FhirVersion;
use herald_matcher::{Change, Matcher, NoRelated};
use herald_subscriptions::builtin::{self, COW_TASK_CHANGED};
use herald_subscriptions::{
    Channel, ChannelType, Filter, Interaction, PayloadContent, Subscription, SubscriptionStatus,
};
use serde_json::{Value, json};

/// The FHIR version of the fixture's tenant.
pub const VERSION: FhirVersion = FhirVersion::R4;
/// Owner of the change that matches no subscription.
pub const NOBODY: &str = "Organization/org-nobody";
/// Target: indexed cost at the largest size over the smallest, at most this.
pub const FLAT_TARGET: f64 = 1.2;

/// The i-th subscription: `cow-task-changed`, `owner=Organization/org-<i>`, rest-hook.
pub fn subscription(i: usize) -> Subscription {
    Subscription {
        id: format!("sub-{i}"),
        identifier: Vec::new(),
        status: SubscriptionStatus::Active,
        topic: builtin::canonical(COW_TASK_CHANGED),
        filters: vec![Filter {
            resource_type: Some("Task".to_owned()),
            parameter: "owner".to_owned(),
            comparator: None,
            modifier: None,
            value: format!("Organization/org-{i}"),
        }],
        channel: Channel {
            kind: ChannelType::RestHook,
            endpoint: Some(format!("https://subscriber-{i}.example.org/hook")),
            headers: Vec::new(),
            heartbeat_period: None,
            timeout: None,
            content_type: "application/fhir+json".to_owned(),
            content: PayloadContent::IdOnly,
            max_count: None,
        },
        end: None,
        reason: None,
    }
}

/// A matcher holding the built-in topics and no subscription.
pub fn empty_matcher() -> anyhow::Result<Matcher> {
    let mut m = Matcher::new(VERSION);
    for t in builtin::topics(VERSION) {
        m.upsert_topic(t).context("a built-in topic compiles")?;
    }
    Ok(m)
}

/// A matcher holding the built-in topics and subscriptions `0..n`.
pub fn matcher(n: usize) -> anyhow::Result<Matcher> {
    let mut m = empty_matcher()?;
    for i in 0..n {
        m.upsert_subscription(subscription(i))
            .context("a subscription compiles")?;
    }
    ensure!(m.subscription_count() == n, "every subscription is held");
    Ok(m)
}

/// A Task version with the given owner, status and version id.
pub fn task(owner: &str, status: &str, version: &str) -> Value {
    json!({
        "resourceType": "Task",
        "id": "task-1",
        "meta": { "versionId": version },
        "status": status,
        "intent": "order",
        "code": { "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill" }] },
        "focus": { "reference": "ServiceRequest/sr-1" },
        "for": { "reference": "Patient/p-1" },
        "requester": { "reference": "Organization/placer" },
        "owner": { "reference": owner }
    })
}

/// Previous and current version of a Task update (status requested → in-progress, same owner).
pub fn update(owner: &str) -> (Value, Value) {
    (
        task(owner, "requested", "1"),
        task(owner, "in-progress", "2"),
    )
}

/// The change between the two versions.
pub fn change(versions: &(Value, Value)) -> Change<'_> {
    Change {
        resource_type: "Task",
        id: "task-1",
        interaction: Interaction::Update,
        previous: Some(&versions.0),
        current: Some(&versions.1),
        at_ms: None,
    }
}

/// Which of the two changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Owner `org-<n/2>`: one subscription matches.
    Match,
    /// Owner `org-nobody`: none matches.
    NoMatch,
}

impl Which {
    /// Both changes.
    pub const BOTH: [Which; 2] = [Which::Match, Which::NoMatch];

    /// `match` / `no-match`.
    pub fn name(self) -> &'static str {
        match self {
            Which::Match => "match",
            Which::NoMatch => "no-match",
        }
    }
}

/// One subscription count with its two changes.
pub struct Case {
    /// Subscriptions held.
    pub n: usize,
    /// The matcher.
    pub matcher: Matcher,
    hit: (Value, Value),
    miss: (Value, Value),
}

impl Case {
    /// A case over a matcher built elsewhere (holding subscriptions `0..n`).
    pub fn with_matcher(n: usize, matcher: Matcher) -> Case {
        Case {
            n,
            matcher,
            hit: update(&format!("Organization/org-{}", n / 2)),
            miss: update(NOBODY),
        }
    }

    /// A case with a fresh matcher of `n` subscriptions.
    pub fn new(n: usize) -> anyhow::Result<Case> {
        Ok(Case::with_matcher(n, matcher(n)?))
    }

    /// The versions of one change.
    pub fn versions(&self, which: Which) -> &(Value, Value) {
        match which {
            Which::Match => &self.hit,
            Which::NoMatch => &self.miss,
        }
    }

    /// The index gives the expected answer and evaluates only the matching candidate; with
    /// `linear`, the scan of every subscription agrees (a scan of a million takes seconds).
    pub fn check(&self, linear: bool) -> anyhow::Result<()> {
        let m = &self.matcher;
        let hit = change(&self.hit);
        let miss = change(&self.miss);
        let indexed = m.matches(&hit, &NoRelated)?;
        ensure!(indexed.len() == 1, "exactly one subscription matches");
        ensure!(
            indexed[0].subscription_id == format!("sub-{}", self.n / 2),
            "the matching subscription is sub-{}",
            self.n / 2
        );
        ensure!(m.matches(&miss, &NoRelated)?.is_empty(), "none matches");
        ensure!(m.candidate_count(&hit, &NoRelated)? == 1, "one candidate");
        ensure!(m.candidate_count(&miss, &NoRelated)? == 0, "no candidate");
        if linear {
            ensure!(
                m.matches_linear(&hit, &NoRelated)? == indexed,
                "the scan agrees"
            );
            ensure!(
                m.matches_linear(&miss, &NoRelated)?.is_empty(),
                "the scan finds none"
            );
        }
        Ok(())
    }
}

/// Settings of `herald-loadgen matcher`.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// The baseline size (the 100).
    pub small: usize,
    /// The size to reach (the 1 000 000).
    pub large: usize,
    /// Interleaved timing rounds.
    pub rounds: usize,
    /// Time per batch of calls in a round.
    pub batch: Duration,
}

/// What the scale run measured.
#[derive(Debug, Clone)]
pub struct ScaleReport {
    /// Live heap bytes the growth to `large` added, per subscription.
    pub bytes_per_subscription: f64,
    /// Inserts per second over the whole growth.
    pub create_rate: f64,
    /// Inserts per second of the last stretch (`STRETCH` inserts) before each size in
    /// `checkpoints`: (size, rate).
    pub stretch_rates: Vec<(usize, f64)>,
    /// Median time per change, ns: (which, small, large).
    pub medians: Vec<(Which, f64, f64)>,
    /// Median of the per-round ratios large/small, per change.
    pub ratios: Vec<(Which, f64)>,
}

/// Inserts timed together to give "the rate at that size".
pub const STRETCH: usize = 10_000;

/// Runs the scale measurement. `live_bytes` reads the allocator's bytes in use.
pub fn run_scale(cfg: &ScaleConfig, live_bytes: &dyn Fn() -> i64) -> anyhow::Result<ScaleReport> {
    ensure!(
        cfg.small >= 2 && cfg.large > cfg.small,
        "need 2 <= small < large"
    );
    let small = Case::new(cfg.small)?;
    small.check(true)?;
    // Grow the large matcher, noting the rate of each stretch that ends at a power of ten (and
    // at the end).
    let mut m = empty_matcher()?;
    let before = live_bytes();
    let started = Instant::now();
    let mut stretch_start = started;
    let mut stretch_rates = Vec::new();
    for i in 0..cfg.large {
        let size = i + 1;
        if size + STRETCH - 1 == cfg.large || is_decade(size + STRETCH - 1) {
            stretch_start = Instant::now();
        }
        m.upsert_subscription(subscription(i))
            .context("a subscription compiles")?;
        if (size == cfg.large || is_decade(size)) && size >= STRETCH {
            let took = stretch_start.elapsed();
            stretch_rates.push((size, STRETCH as f64 / took.as_secs_f64()));
        }
    }
    let grew = started.elapsed();
    let after = live_bytes();
    let large = Case::with_matcher(cfg.large, m);
    large.check(false)?;
    let bytes_per_subscription = (after - before) as f64 / cfg.large as f64;
    let create_rate = cfg.large as f64 / grew.as_secs_f64();

    let cases = [&small, &large];
    let mut timings: Vec<Timing> = Vec::new();
    for case in cases {
        for which in Which::BOTH {
            timings.push(Timing::new(which, case, cfg.batch));
        }
    }
    for r in 0..cfg.rounds.max(1) {
        for j in 0..timings.len() {
            let i = (r + j) % timings.len();
            let t = &mut timings[i];
            let case = if t.n == small.n { &small } else { &large };
            t.round(case);
        }
    }
    let find = |which: Which, n: usize| {
        timings
            .iter()
            .find(|t| t.which == which && t.n == n)
            .map(|t| t.samples.clone())
            .unwrap_or_default()
    };
    let mut medians = Vec::new();
    let mut ratios = Vec::new();
    for which in Which::BOTH {
        let s = find(which, small.n);
        let l = find(which, large.n);
        let ratio = median(l.iter().zip(&s).map(|(l, s)| l / s).collect());
        medians.push((which, median(s), median(l)));
        ratios.push((which, ratio));
    }
    Ok(ScaleReport {
        bytes_per_subscription,
        create_rate,
        stretch_rates,
        medians,
        ratios,
    })
}

fn is_decade(n: usize) -> bool {
    let mut p = 10;
    while p < n {
        p *= 10;
    }
    p == n
}

/// One (change, size) of the summary: calls per batch and the time per call of each round.
pub struct Timing {
    /// Which change.
    pub which: Which,
    /// Size of the matcher.
    pub n: usize,
    batch: u32,
    /// Nanoseconds per call, one per round.
    pub samples: Vec<f64>,
}

impl Timing {
    /// Calibrates a batch lasting about `target`.
    pub fn new(which: Which, case: &Case, target: Duration) -> Timing {
        let versions = case.versions(which);
        let ch = change(versions);
        Timing {
            which,
            n: case.n,
            batch: calibrate(&case.matcher, &ch, target),
            samples: Vec::new(),
        }
    }

    /// Times one batch.
    pub fn round(&mut self, case: &Case) {
        let ch = change(case.versions(self.which));
        let start = Instant::now();
        for _ in 0..self.batch {
            black_box(indexed(&case.matcher, black_box(&ch)));
        }
        self.samples
            .push(start.elapsed().as_secs_f64() * 1e9 / f64::from(self.batch));
    }
}

fn indexed(m: &Matcher, c: &Change<'_>) -> usize {
    m.matches(c, &NoRelated).map_or(0, |v| v.len())
}

fn calibrate(m: &Matcher, c: &Change<'_>, target: Duration) -> u32 {
    let mut batch: u32 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            black_box(indexed(m, black_box(c)));
        }
        let took = start.elapsed();
        if took >= target || batch >= 1 << 24 {
            let per_call = took.as_secs_f64() / f64::from(batch);
            return ((target.as_secs_f64() / per_call).ceil() as u32).max(1);
        }
        batch = batch.saturating_mul(2);
    }
}

/// The median (0 for no samples).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `12.3 µs`, `4.56 ms`.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Prints the scale report with PASS/MISS.
pub fn print_scale(cfg: &ScaleConfig, r: &ScaleReport) {
    println!(
        "matcher: grew to {} subscriptions at {:.0} inserts/s overall",
        cfg.large, r.create_rate
    );
    for (size, rate) in &r.stretch_rates {
        println!("  creation rate of the last {STRETCH} inserts up to {size:>9}: {rate:>9.0}/s");
    }
    println!(
        "  memory: {:.0} bytes per subscription (live heap added by the growth / {})",
        r.bytes_per_subscription, cfg.large
    );
    for (which, s, l) in &r.medians {
        println!(
            "  median per change ({:<8}): {:>10} at {}, {:>10} at {}",
            which.name(),
            fmt_ns(*s),
            cfg.small,
            fmt_ns(*l),
            cfg.large
        );
    }
    for (which, ratio) in &r.ratios {
        println!(
            "matcher {}/{} per-change cost ({:<8}) = {ratio:.3}x   target <= {FLAT_TARGET}x   {}",
            cfg.large,
            cfg.small,
            which.name(),
            if *ratio <= FLAT_TARGET {
                "PASS"
            } else {
                "MISS"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_are_powers_of_ten() {
        assert!(is_decade(10) && is_decade(10_000) && is_decade(1_000_000));
        assert!(!is_decade(0) && !is_decade(1) && !is_decade(9_999) && !is_decade(20_000));
    }

    #[test]
    fn a_small_scale_run_checks_its_cases_and_reports_every_figure() {
        let cfg = ScaleConfig {
            small: 10,
            large: 20_000,
            rounds: 3,
            batch: Duration::from_micros(200),
        };
        let r = run_scale(&cfg, &|| 0).expect("scale run");
        assert_eq!(r.ratios.len(), 2);
        assert!(r.ratios.iter().all(|(_, x)| *x > 0.0));
        assert_eq!(
            r.stretch_rates.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![10_000, 20_000]
        );
        assert!(r.create_rate > 0.0);
    }
}
