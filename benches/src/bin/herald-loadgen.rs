//! `herald-loadgen`: load against the real `herald` binary on loopback, one subcommand per
//! scenario. `writes` measures Task creates per second and latency per durability mode;
//! `notify` measures end-to-end notifications per second and write→receipt latency (write →
//! matched → delivered to a local receiver) against a relay doing the same two HTTP hops, and a
//! durable relay that also appends and `fdatasync`s each body (group commit) before forwarding;
//! `ws` measures Herald's memory per bound websocket, the time to bind thousands, and the
//! fan-out of one change to 1, 100 and all of them (notifications/s, event→socket latency);
//! `search` measures search latency with the search index at 10 000 and 1 000 000 Tasks, the
//! index's rebuild time and disk use, and the write rate with the index against without.
//! `matcher` measures the matcher in process at 1 000 000 subscriptions (cost per change against
//! 100, memory per subscription, creation rate); `restart` times start-up and the drain with
//! a backlog of a million events against one of a thousand; `fanout` times the delivery of one
//! change matched by ten thousand subscriptions against ten thousand single-match writes.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use herald_benches::latency::ms;
use herald_benches::matcher::{self as matcher_scale, ScaleConfig};
use herald_benches::notify::{self, NotifyConfig};
use herald_benches::scale::fanout::{self, FanoutConfig};
use herald_benches::scale::restart::{self, RestartConfig};
use herald_benches::search::{self, SearchConfig};
use herald_benches::writes::{self, WritesConfig};
use herald_benches::ws::{self, WsConfig};
use herald_benches::{parse_duration, probe};

/// Load generator for Herald.
#[derive(Parser, Debug)]
#[command(name = "herald-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Task creates/s and latency p50/p99 for group-commit, flush-per-write and off durability
    /// (plus a bare-HTTP baseline), with the modes interleaved in one run; prints ratios and
    /// PASS/MISS against the targets. Exits 0 whatever the figures.
    Writes(WritesArgs),
    /// End-to-end notifications/s and write→receipt latency p50/p99 for S subscriptions (one
    /// matching) and C clients, against a relay that forwards each POST to the same receiver
    /// and a durable relay that also logs and fdatasyncs each body first; prints Herald/relay
    /// ratios and PASS/MISS against the targets, and Herald/durable relay and durable
    /// relay/relay ratios for context. Exits 0 whatever the figures.
    Notify(NotifyArgs),
    /// Websocket subscribers: Herald's RSS per bound socket (PASS/MISS against the target), the
    /// time to bind them all, then notifications/s and event→socket latency p50/p99 when one
    /// change has 1, 100 and all sockets as subscribers. Raises its open-file limit (and so
    /// Herald's). Exits 0 whatever the figures.
    Ws(WsArgs),
    /// Search with the search index: `Task?owner=X&status=requested` and `Task?identifier=S|V`
    /// p50/p99 at --small and --large Tasks (data directories built through herald-store, so
    /// the first start rebuilds the index: its time and the disk size are printed), the large/
    /// small p50 ratios, then the write rate with the index against without (alternated
    /// rounds); PASS/MISS against the targets. Exits 0 whatever the figures.
    Search(SearchArgs),
    /// The matcher in process: grows one to --large subscriptions (live heap bytes per
    /// subscription, inserts/s overall and of the last 10 000 before each power of ten), then
    /// times a matching and a non-matching Task change against --small and --large in
    /// interleaved rounds; PASS/MISS on the per-change cost ratio. Exits 0 whatever the figures.
    Matcher(MatcherArgs),
    /// Start-up with a backlog: S subscriptions whose receiver went away, a small and a large
    /// backlog of queued events, `kill -9`, receiver back, restart: spawn → /readyz and spawn →
    /// first notification for both (PASS/MISS at <= 1.5x), the drain's events/s against the
    /// steady state (PASS/MISS at >= 0.8x) and the per-subscription order (exits 1 if broken).
    Restart(RestartArgs),
    /// One write matched by S unfiltered subscriptions against S single-match writes: events/s
    /// of each (PASS/MISS at >= 0.8x), then `kill -9` right after a fan-out write's 201 and a
    /// check that all S events survived (exits 1 if not).
    Fanout(FanoutArgs),
    /// Task creates/s and latency p50/p99 of one Herald node versus three on a three-server
    /// NATS JetStream cluster on loopback (log R3), with the embedded Herald as the baseline,
    /// alternated per round (docs/cluster.md). Needs nats-server (scripts/install-test-tools).
    Cluster(ClusterArgs),
}

#[derive(Args, Debug)]
struct SearchArgs {
    /// The herald binary (build it with `cargo build --release -p herald`).
    #[arg(long, default_value = "target/release/herald")]
    herald_bin: PathBuf,
    /// Where the data directories are built, and reused on the next run.
    #[arg(long, default_value = "target/loadgen-search")]
    data_root: PathBuf,
    /// Tasks in the small store.
    #[arg(long, default_value_t = 10_000)]
    small: usize,
    /// Tasks in the large store.
    #[arg(long, default_value_t = 1_000_000)]
    large: usize,
    /// Requests per query and size.
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Concurrent writers in the write-rate rounds.
    #[arg(long, default_value_t = 16)]
    write_clients: usize,
    /// Write-rate rounds per side.
    #[arg(long, default_value_t = 3)]
    write_rounds: usize,
    /// Length of one write-rate round.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    write_round: Duration,
}

#[derive(Args, Debug)]
struct RestartArgs {
    /// The herald binary (build it with `cargo build --release -p herald`).
    #[arg(long, default_value = "target/release/herald")]
    herald_bin: PathBuf,
    /// Herald's durability mode (HERALD_DURABILITY).
    #[arg(long, default_value = "group-commit")]
    durability: String,
    /// Subscriptions with a backlog.
    #[arg(long, default_value_t = 10_000)]
    subs: usize,
    /// Owner groups: a Task is matched by subs/groups subscriptions (the small backlog is one
    /// Task's worth).
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Events of the large backlog.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Subscription creates and Task writes in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Wait between the last acknowledged write and the kill (Herald checkpoints every 10 s).
    #[arg(long, value_parser = parse_duration, default_value = "12s")]
    settle: Duration,
    /// Steady-state measurement time.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    steady: Duration,
    /// Clients of the steady-state writes.
    #[arg(long, default_value_t = 16)]
    steady_clients: usize,
    /// Longest wait for a drain.
    #[arg(long, value_parser = parse_duration, default_value = "15m")]
    drain_timeout: Duration,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    /// The herald binary (build it with `cargo build --release -p herald`).
    #[arg(long, default_value = "target/release/herald")]
    herald_bin: PathBuf,
    /// Herald's durability mode (HERALD_DURABILITY).
    #[arg(long, default_value = "group-commit")]
    durability: String,
    /// Subscriptions matched by the one write (and single-match writes to compare with).
    #[arg(long, default_value_t = 10_000)]
    subs: usize,
    /// Clients of the single-match writes.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Alternating rounds of both measurements.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Longest wait for one measurement's notifications.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct MatcherArgs {
    /// The baseline size.
    #[arg(long, default_value_t = 100)]
    small: usize,
    /// The size to grow to.
    #[arg(long, default_value_t = 1_000_000)]
    large: usize,
    /// Interleaved timing rounds.
    #[arg(long, default_value_t = 101)]
    rounds: usize,
    /// Time per batch of calls in a round.
    #[arg(long, value_parser = parse_duration, default_value = "2ms")]
    batch: Duration,
}

#[derive(Args, Debug)]
struct ClusterArgs {
    /// The herald binary (build it with `cargo build --release -p herald`).
    #[arg(long, default_value = "target/release/herald")]
    herald_bin: PathBuf,
    /// Concurrent clients in total, spread evenly over the nodes.
    #[arg(long, default_value_t = 48)]
    clients: usize,
    /// Rounds of (embedded, 1 node, 3 nodes).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Warm-up per run.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Measured time per run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
}

#[derive(Args, Debug)]
struct WsArgs {
    /// The herald binary (build it with `cargo build --release -p herald`).
    #[arg(long, default_value = "target/release/herald")]
    herald_bin: PathBuf,
    /// Herald's durability mode (HERALD_DURABILITY).
    #[arg(long, default_value = "group-commit")]
    durability: String,
    /// Bound sockets, one subscription each.
    #[arg(long, default_value_t = 20_000)]
    sockets: usize,
    /// Fan-out sizes: subscribers of one change, comma-separated (each at most --sockets).
    #[arg(long, value_delimiter = ',', default_value = "1,100,20000")]
    fanout: Vec<usize>,
    /// Subscription creates in flight during set-up.
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
    /// Binds (token, connect, bind, handshake) in flight.
    #[arg(long, default_value_t = 64)]
    bind_concurrency: usize,
    /// Notifications to aim for per fan-out size (Task creates = this / S, clamped to
    /// --min-tasks..=--max-tasks).
    #[arg(long, default_value_t = 100_000)]
    notifications: usize,
    /// Fewest Task creates per fan-out size.
    #[arg(long, default_value_t = 5)]
    min_tasks: usize,
    /// Most Task creates per fan-out size.
    #[arg(long, default_value_t = 1000)]
    max_tasks: usize,
    /// Task creates whose notifications may be outstanding at once (1: one change at a time).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Longest wait for one create's notifications.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    task_timeout: Duration,
    /// Herald's `delivery.ws_send_buffer` (frames queued per socket); Herald's default if unset.
    #[arg(long)]
    ws_send_buffer: Option<usize>,
    /// Target for Herald's memory per bound socket, KiB.
    #[arg(long, default_value_t = 30.0)]
    target_kib: f64,
}

#[derive(Args, Debug)]
struct NotifyArgs {
    /// The herald binary (build it with `cargo build --release -p herald`).
    #[arg(long, default_value = "target/release/herald")]
    herald_bin: PathBuf,
    /// Herald's durability mode (HERALD_DURABILITY).
    #[arg(long, default_value = "group-commit")]
    durability: String,
    /// Subscription counts, comma-separated (one Herald process each; exactly one matches).
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    subs: Vec<usize>,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,
    /// Measured time per run, e.g. 5s.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    duration: Duration,
    /// Unmeasured load before each run, e.g. 1s.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Longest wait after each run for notifications still on their way.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    drain: Duration,
    /// Subscription creates in flight during set-up.
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// Longest set-up per subscription count (creates + handshakes until all active); an
    /// incomplete set-up is reported with its progress and not measured.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    setup_timeout: Duration,
    /// Skip the relay baseline.
    #[arg(long)]
    no_relay: bool,
    /// Skip the durable relay baseline (the relay plus a group-committed, fdatasynced log).
    #[arg(long)]
    no_durable_relay: bool,
    /// How many times to measure every (S, C) pair (interleaved; merged in the summary).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Durable 4 KiB appends for the disk probe (0 to skip).
    #[arg(long, default_value_t = 200)]
    fsync_probe: usize,
    /// An older herald binary to run in the same rounds (one more process per S): the CPU
    /// target becomes new/base CPU per notification <= 0.50 at the highest client count.
    #[arg(long)]
    base_herald_bin: Option<PathBuf>,
    /// Herald CPU per notification (µs) to halve, when no --base-herald-bin is given
    /// (e.g. 140: PASS at <= 70).
    #[arg(long)]
    cpu_baseline_us: Option<f64>,
}

#[derive(Args, Debug)]
struct WritesArgs {
    /// The herald binary (build it with `cargo build --release -p herald`).
    #[arg(long, default_value = "target/release/herald")]
    herald_bin: PathBuf,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Measured time per run, e.g. 5s.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    duration: Duration,
    /// Unmeasured load before each run, e.g. 1s.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    warmup: Duration,
    /// How many times to run every (mode, clients) pair; the mode order alternates.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Skip the bare-HTTP baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Durable 4 KiB appends for the disk probe (0 to skip).
    #[arg(long, default_value_t = 200)]
    fsync_probe: usize,
}

/// Counts the heap bytes in use, for `matcher`'s memory per subscription. (The counters are
/// relaxed atomics: the other subcommands' figures are about Herald, a separate process.)
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn live_heap_bytes() -> i64 {
    let s = GLOBAL.stats();
    // A realloc is already counted in these two (growth as allocated, shrinking as freed).
    let held = s.bytes_allocated as i128 - s.bytes_deallocated as i128;
    i64::try_from(held).unwrap_or(i64::MAX)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Writes(a) => {
            anyhow::ensure!(!a.clients.is_empty(), "--clients needs at least one count");
            anyhow::ensure!(
                a.clients.iter().all(|&c| (1..=1024).contains(&c)),
                "client counts must be between 1 and 1024"
            );
            machine(a.fsync_probe)?;
            writes::run(&WritesConfig {
                herald_bin: a.herald_bin,
                clients: a.clients,
                duration: a.duration,
                warmup: a.warmup,
                rounds: a.rounds.max(1),
                baseline: !a.no_baseline,
            })
            .await?;
            println!("load average after: {}", loadavg());
        }
        Command::Notify(a) => {
            anyhow::ensure!(!a.subs.is_empty(), "--subs needs at least one count");
            anyhow::ensure!(
                a.subs.iter().all(|&s| (1..=1_000_000).contains(&s)),
                "subscription counts must be between 1 and 1000000"
            );
            anyhow::ensure!(!a.clients.is_empty(), "--clients needs at least one count");
            anyhow::ensure!(
                a.clients.iter().all(|&c| (1..=1024).contains(&c)),
                "client counts must be between 1 and 1024"
            );
            machine(a.fsync_probe)?;
            notify::run(&NotifyConfig {
                herald_bin: a.herald_bin,
                durability: a.durability,
                subs: a.subs,
                clients: a.clients,
                duration: a.duration,
                warmup: a.warmup,
                drain: a.drain,
                setup_concurrency: a.setup_concurrency.clamp(1, 256),
                setup_timeout: a.setup_timeout,
                relay: !a.no_relay,
                durable_relay: !a.no_durable_relay,
                rounds: a.rounds.max(1),
                base_herald_bin: a.base_herald_bin,
                cpu_baseline_us: a.cpu_baseline_us,
            })
            .await?;
            println!("load average after: {}", loadavg());
        }
        Command::Search(a) => {
            anyhow::ensure!(
                a.small >= 5 && a.large >= a.small,
                "--small must be at least 5 and --large at least --small"
            );
            machine(0)?;
            search::run(&SearchConfig {
                herald_bin: a.herald_bin,
                data_root: a.data_root,
                small: a.small,
                large: a.large,
                queries: a.queries.max(1),
                write_clients: a.write_clients.clamp(1, 1024),
                write_rounds: a.write_rounds.max(1),
                write_round: a.write_round,
            })
            .await?;
            println!("load average after: {}", loadavg());
        }
        Command::Matcher(a) => {
            anyhow::ensure!(
                a.small >= 2 && a.large > a.small && a.large <= 10_000_000,
                "need 2 <= --small < --large <= 10000000"
            );
            machine(0)?;
            let cfg = ScaleConfig {
                small: a.small,
                large: a.large,
                rounds: a.rounds.max(1),
                batch: a.batch,
            };
            // Pure CPU work: off the async runtime.
            let report = tokio::task::spawn_blocking(move || {
                matcher_scale::run_scale(&cfg, &live_heap_bytes).map(|r| (cfg, r))
            })
            .await
            .context("the matcher run panicked")??;
            matcher_scale::print_scale(&report.0, &report.1);
            println!("load average after: {}", loadavg());
        }
        Command::Restart(a) => {
            anyhow::ensure!(
                (1..=100_000).contains(&a.subs),
                "--subs must be between 1 and 100000"
            );
            // Every subscription's attempt is held open by the receiver while it is down.
            ws::raise_nofile(u64::try_from(a.subs).unwrap_or(u64::MAX) + 1024)?;
            machine(0)?;
            restart::run(&RestartConfig {
                herald_bin: a.herald_bin,
                durability: a.durability,
                subs: a.subs,
                groups: a.groups,
                events: a.events,
                concurrency: a.concurrency.clamp(1, 256),
                settle: a.settle,
                steady: a.steady,
                steady_clients: a.steady_clients.clamp(1, 256),
                drain_timeout: a.drain_timeout,
            })
            .await?;
            println!("load average after: {}", loadavg());
        }
        Command::Fanout(a) => {
            anyhow::ensure!(
                (1..=100_000).contains(&a.subs),
                "--subs must be between 1 and 100000"
            );
            ws::raise_nofile(u64::try_from(a.subs).unwrap_or(u64::MAX) + 1024)?;
            machine(0)?;
            fanout::run(&FanoutConfig {
                herald_bin: a.herald_bin,
                durability: a.durability,
                subs: a.subs,
                clients: a.clients.clamp(1, 256),
                rounds: a.rounds.max(1),
                timeout: a.timeout,
            })
            .await?;
            println!("load average after: {}", loadavg());
        }
        Command::Cluster(a) => {
            anyhow::ensure!(
                (1..=1024).contains(&a.clients) && a.rounds >= 1,
                "--clients must be between 1 and 1024 and --rounds at least 1"
            );
            herald_benches::cluster::run(&herald_benches::cluster::ClusterConfig {
                herald_bin: a.herald_bin,
                clients: a.clients,
                rounds: a.rounds,
                warmup: a.warmup,
                duration: a.duration,
            })
            .await?;
        }
        Command::Ws(a) => {
            anyhow::ensure!(
                (1..=200_000).contains(&a.sockets),
                "--sockets must be between 1 and 200000"
            );
            anyhow::ensure!(!a.fanout.is_empty(), "--fanout needs at least one size");
            anyhow::ensure!(
                a.fanout.iter().all(|&s| s >= 1),
                "fan-out sizes must be at least 1"
            );
            // This process holds every client socket, Herald every server one; both need room
            // for their other files and connections too (Herald: sled, its log, the REST
            // connections; about 60 at idle).
            const HEADROOM: u64 = 256;
            let want = u64::try_from(a.sockets).unwrap_or(u64::MAX) + HEADROOM;
            let limit = ws::raise_nofile(want)?;
            anyhow::ensure!(
                limit >= want,
                "the open-file limit {limit} is below the {want} needed for {} sockets (and Herald inherits it): use --sockets {} or less, or raise `ulimit -Hn` (needs CAP_SYS_RESOURCE)",
                a.sockets,
                limit.saturating_sub(HEADROOM)
            );
            machine(0)?;
            ws::run(&WsConfig {
                herald_bin: a.herald_bin,
                durability: a.durability,
                sockets: a.sockets,
                fanout: a.fanout,
                setup_concurrency: a.setup_concurrency.clamp(1, 256),
                bind_concurrency: a.bind_concurrency.clamp(1, 1024),
                notifications: a.notifications,
                min_tasks: a.min_tasks,
                max_tasks: a.max_tasks,
                window: a.window.clamp(1, 1024),
                task_timeout: a.task_timeout,
                ws_send_buffer: a.ws_send_buffer,
                target_kib: a.target_kib,
            })
            .await?;
            println!("load average after: {}", loadavg());
        }
    }
    Ok(())
}

/// Prints what the figures depend on: cores, load, and the cost of one durable append on the
/// filesystem holding the temporary data directories.
fn machine(probe_count: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} core(s), load average before: {}",
        loadavg()
    );
    if probe_count > 0 {
        let dir = tempfile::tempdir().context("temporary directory for the fsync probe")?;
        let mut lat =
            probe::fdatasync_appends(dir.path(), probe_count).context("running the fsync probe")?;
        println!(
            "fsync probe ({} x 4 KiB append + fdatasync in {}): p50 {} ms, p99 {} ms",
            lat.len(),
            dir.path()
                .parent()
                .map_or_else(String::new, |p| p.display().to_string()),
            ms(lat.quantile(0.50)),
            ms(lat.quantile(0.99))
        );
    }
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
