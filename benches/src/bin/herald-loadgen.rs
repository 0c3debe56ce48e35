//! `herald-loadgen`: load against the real `herald` binary on loopback, one subcommand per
//! scenario. `writes` measures Task creates per second and latency per durability mode; an
//! end-to-end `notify` scenario (write → matched → delivered) is to come.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use herald_benches::latency::ms;
use herald_benches::writes::{self, WritesConfig};
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
