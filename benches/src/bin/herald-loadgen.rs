//! `herald-loadgen`: load against the real `herald` binary on loopback, one subcommand per
//! scenario. `writes` measures Task creates per second and latency per durability mode;
//! `notify` measures end-to-end notifications per second and write→receipt latency (write →
//! matched → delivered to a local receiver) against a relay doing the same two HTTP hops, and a
//! durable relay that also appends and `fdatasync`s each body (group commit) before forwarding;
//! `ws` measures Herald's memory per bound websocket, the time to bind thousands, and the
//! fan-out of one change to 1, 100 and all of them (notifications/s, event→socket latency).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use herald_benches::latency::ms;
use herald_benches::notify::{self, NotifyConfig};
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
    /// Task creates/s and latency p50/p99 of one Herald node versus three on a three-server
    /// NATS JetStream cluster on loopback (log R3), with the embedded Herald as the baseline,
    /// alternated per round (docs/cluster.md). Needs nats-server (scripts/install-test-tools).
    Cluster(ClusterArgs),
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
