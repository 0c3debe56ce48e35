//! Matcher cost per Task change with 100, 10 000 and 100 000 subscriptions (the fixture is
//! `herald_benches::matcher`, shared with `herald-loadgen matcher`, which takes the same
//! measurement to 1 000 000 without criterion and adds memory and creation rate).
//!
//! Every subscription is on the built-in `cow-task-changed` topic and filters `owner` on its own
//! organization (`sub-<i>` has `owner=Organization/org-<i>`); the matcher holds all five built-in
//! topics, as a tenant does. Two changes are measured, both a Task update that changes `status`
//! and keeps its owner:
//!
//! * `match`: owner `Organization/org-<n/2>`, exactly one subscription matches;
//! * `no-match`: owner `Organization/org-nobody`, no subscription matches.
//!
//! Each (path, change, size) is timed by criterion with [`Matcher::matches`] (the index) and with
//! [`Matcher::matches_linear`] (a scan of every subscription, the baseline). Afterwards, in
//! bench mode only, a summary re-times the same cases in interleaved rounds in the same process
//! and prints the ratios against the targets, with PASS or MISS:
//!
//! * indexed cost at 100 000 subscriptions ≤ 1.2 × the cost at 100 (median of the per-round
//!   ratios, each round timing both sizes back to back, so that other load on the machine
//!   weighs on both alike);
//! * indexed ≥ 100 × faster than the linear scan at 100 000 (ratio of the medians).
//!
//! Run: `cargo bench -p herald-benches --bench matcher`. Under `cargo test --benches` every case
//! runs once and the results are checked (no timing).
#![allow(clippy::expect_used)] // a benchmark aborts on a broken fixture

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use herald_benches::matcher::{Case, Which, change, fmt_ns, median};
use herald_matcher::{Change, Matcher, NoRelated};

const SIZES: [usize; 3] = [100, 10_000, 100_000];

/// Target: indexed cost at the largest size over the smallest, at most this.
const FLAT_TARGET: f64 = herald_benches::matcher::FLAT_TARGET;
/// Target: linear over indexed at the largest size, at least this.
const SPEEDUP_TARGET: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Indexed,
    Linear,
}

impl Path {
    fn run(self, m: &Matcher, c: &Change<'_>) -> usize {
        let out = match self {
            Path::Indexed => m.matches(c, &NoRelated),
            Path::Linear => m.matches_linear(c, &NoRelated),
        };
        out.expect("matching succeeds").len()
    }
}

fn criterion_benches(c: &mut Criterion, cases: &[Case]) {
    for which in [Which::Match, Which::NoMatch] {
        let mut g = c.benchmark_group(format!("matcher/indexed/{}", which.name()));
        g.sample_size(50)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for case in cases {
            let ch = change(case.versions(which));
            g.bench_with_input(BenchmarkId::from_parameter(case.n), &ch, |b, ch| {
                b.iter(|| Path::Indexed.run(&case.matcher, black_box(ch)))
            });
        }
        g.finish();
    }
    for which in [Which::Match, Which::NoMatch] {
        // A scan of 100 000 subscriptions takes a good fraction of a second: flat sampling with
        // criterion's minimum of 10 samples keeps that to about 10 calls per case.
        let mut g = c.benchmark_group(format!("matcher/linear/{}", which.name()));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for case in cases {
            let ch = change(case.versions(which));
            g.bench_with_input(BenchmarkId::from_parameter(case.n), &ch, |b, ch| {
                b.iter(|| Path::Linear.run(&case.matcher, black_box(ch)))
            });
        }
        g.finish();
    }
}

/// One case of the summary: (path, change, size), calls per batch, and the time per call of
/// each round, in nanoseconds.
struct Timing {
    path: Path,
    which: Which,
    n: usize,
    batch: u32,
    samples: Vec<f64>,
}

impl Timing {
    fn new(path: Path, which: Which, case: &Case, target: Duration) -> Self {
        let ch = change(case.versions(which));
        Timing {
            path,
            which,
            n: case.n,
            batch: calibrate(path, &case.matcher, &ch, target),
            samples: Vec::new(),
        }
    }

    /// Times one batch.
    fn round(&mut self, cases: &[Case]) {
        let case = cases
            .iter()
            .find(|c| c.n == self.n)
            .expect("case of the timing");
        let ch = change(case.versions(self.which));
        let start = Instant::now();
        for _ in 0..self.batch {
            black_box(self.path.run(&case.matcher, black_box(&ch)));
        }
        self.samples
            .push(start.elapsed().as_secs_f64() * 1e9 / f64::from(self.batch));
    }

    fn median(&self) -> f64 {
        median(self.samples.clone())
    }
}

/// Calls per batch so that one batch lasts about `target`.
fn calibrate(path: Path, m: &Matcher, c: &Change<'_>, target: Duration) -> u32 {
    let mut batch: u32 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            black_box(path.run(m, black_box(c)));
        }
        let took = start.elapsed();
        if took >= target || batch >= 1 << 24 {
            let per_call = took.as_secs_f64() / f64::from(batch);
            return ((target.as_secs_f64() / per_call).ceil() as u32).max(1);
        }
        batch = batch.saturating_mul(2);
    }
}

/// Runs `rounds` rounds, each timing one batch of every case back to back (starting from a
/// different case each round), so that whatever else loads the machine weighs on all cases alike.
fn interleave(timings: &mut [Timing], cases: &[Case], rounds: usize) {
    for r in 0..rounds {
        for j in 0..timings.len() {
            let i = (r + j) % timings.len();
            timings[i].round(cases);
        }
    }
}

/// Re-times every case in interleaved rounds and prints the ratios and PASS/MISS per target.
fn summary(cases: &[Case]) {
    // Indexed: many short rounds; the flatness ratio is the median of the per-round ratios
    // (largest size over smallest, timed moments apart), which cancels slow swings in load.
    const INDEXED_ROUNDS: usize = 101;
    // Linear: a batch at 100 000 is a single scan of about half a second; few rounds suffice
    // for a ratio whose target is orders of magnitude away.
    const LINEAR_ROUNDS: usize = 7;
    let mut indexed = Vec::new();
    let mut linear = Vec::new();
    for case in cases {
        for which in [Which::Match, Which::NoMatch] {
            indexed.push(Timing::new(
                Path::Indexed,
                which,
                case,
                Duration::from_millis(2),
            ));
            linear.push(Timing::new(
                Path::Linear,
                which,
                case,
                Duration::from_millis(10),
            ));
        }
    }
    interleave(&mut indexed, cases, INDEXED_ROUNDS);
    interleave(&mut linear, cases, LINEAR_ROUNDS);
    let find = |ts: &[Timing], which: Which, n: usize| -> usize {
        ts.iter()
            .position(|t| t.which == which && t.n == n)
            .expect("timed case")
    };
    let at = |ts: &[Timing], which: Which, n: usize| ts[find(ts, which, n)].median();

    println!();
    println!(
        "== Matcher summary: median time per change; indexed over {INDEXED_ROUNDS} rounds, \
         linear over {LINEAR_ROUNDS}, interleaved, same run =="
    );
    println!(
        "{:>9}  {:>15}  {:>15}  {:>15}  {:>15}",
        "subs", "indexed match", "indexed none", "linear match", "linear none"
    );
    for case in cases {
        println!(
            "{:>9}  {:>15}  {:>15}  {:>15}  {:>15}",
            case.n,
            fmt_ns(at(&indexed, Which::Match, case.n)),
            fmt_ns(at(&indexed, Which::NoMatch, case.n)),
            fmt_ns(at(&linear, Which::Match, case.n)),
            fmt_ns(at(&linear, Which::NoMatch, case.n)),
        );
    }
    let small = SIZES[0];
    let large = SIZES[SIZES.len() - 1];
    println!();
    for which in [Which::Match, Which::NoMatch] {
        let l = &indexed[find(&indexed, which, large)].samples;
        let s = &indexed[find(&indexed, which, small)].samples;
        let flat = median(l.iter().zip(s).map(|(l, s)| l / s).collect());
        println!(
            "indexed {large}/{small} ({:<8}) = {flat:>7.3}x   target <= {FLAT_TARGET}x   {}",
            which.name(),
            verdict(flat <= FLAT_TARGET)
        );
    }
    for which in [Which::Match, Which::NoMatch] {
        for n in [large, SIZES[1]] {
            let speedup = at(&linear, which, n) / at(&indexed, which, n);
            if n == large {
                println!(
                    "linear/indexed at {n:>6} ({:<8}) = {speedup:>9.0}x   target >= {SPEEDUP_TARGET}x   {}",
                    which.name(),
                    verdict(speedup >= SPEEDUP_TARGET)
                );
            } else {
                println!(
                    "linear/indexed at {n:>6} ({:<8}) = {speedup:>9.0}x   (no target)",
                    which.name()
                );
            }
        }
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // Criterion's own rule: without `--bench` (i.e. under `cargo test --benches`) it only runs
    // each benchmark once as a test; the summary is for real benchmark runs only.
    let bench_mode = has("--bench")
        && !has("--test")
        && !has("--list")
        && !args.iter().any(|a| a.starts_with("--profile-time"));

    let cases: Vec<Case> = SIZES
        .iter()
        .map(|&n| {
            let case = Case::new(n).expect("fixture builds");
            case.check(true).expect("both paths agree");
            case
        })
        .collect();
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &cases);
    c.final_summary();
    if bench_mode {
        summary(&cases);
    }
}
