//! `herald-loadgen cluster`: Task creates/s and latency p50/p99 of one Herald node versus three,
//! on a three-server NATS JetStream cluster on loopback (log replicated 3 times), with the
//! embedded single-process Herald (group commit) measured in the same sitting as the baseline.
//! Each round starts fresh servers and nodes, and the rounds alternate, since the machine is
//! shared (docs/cluster.md, "Benchmark").

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::latency::ms;
use crate::process::HeraldProcess;
use crate::writes::{Sample, load};

/// What to run.
pub struct ClusterConfig {
    /// The herald binary.
    pub herald_bin: PathBuf,
    /// Concurrent clients in total (spread evenly over the nodes).
    pub clients: usize,
    /// Rounds of (embedded, 1 node, 3 nodes).
    pub rounds: usize,
    /// Warm-up per run.
    pub warmup: Duration,
    /// Measured time per run.
    pub duration: Duration,
}

/// Three nats-servers with JetStream and routes, on free loopback ports; killed on drop.
struct Nats {
    children: Vec<Child>,
    url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Nats {
    async fn start() -> anyhow::Result<Nats> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let routes = ports
            .iter()
            .map(|(_, c, _)| format!("nats://127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (i, (client, cluster, monitor)) in ports.iter().enumerate() {
            let sd = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&sd)?;
            let child = Command::new("nats-server")
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &client.to_string(),
                    "-m",
                    &monitor.to_string(),
                ])
                .args([
                    "-js",
                    "-sd",
                    &sd.display().to_string(),
                    "-n",
                    &format!("n{i}"),
                ])
                .args([
                    "--cluster_name",
                    "herald",
                    "--cluster",
                    &format!("nats://127.0.0.1:{cluster}"),
                ])
                .args(["--routes", &routes])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting nats-server (run scripts/install-test-tools)")?;
            children.push(child);
        }
        let url = ports
            .iter()
            .map(|(c, _, _)| format!("nats://127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let nats = Nats {
            children,
            url,
            _dir: dir,
        };
        let http = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        for (_, _, monitor) in &ports {
            loop {
                let ready = match http
                    .get(format!("http://127.0.0.1:{monitor}/jsz"))
                    .send()
                    .await
                {
                    Ok(r) => r.json::<serde_json::Value>().await.is_ok_and(|v| {
                        v["meta_cluster"]["leader"]
                            .as_str()
                            .is_some_and(|l| !l.is_empty())
                    }),
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the NATS cluster did not elect a JetStream leader");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(nats)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Loads every URL with `clients / urls` clients at once and merges the samples.
async fn load_all(urls: &[String], clients: usize, cfg: &ClusterConfig) -> anyhow::Result<Sample> {
    let per = (clients / urls.len()).max(1);
    let mut runs = tokio::task::JoinSet::new();
    for u in urls {
        let (u, warmup, duration) = (u.clone(), cfg.warmup, cfg.duration);
        runs.spawn(async move { load(&u, per, warmup, duration).await });
    }
    let mut merged = Sample::default();
    while let Some(s) = runs.join_next().await {
        let s = s.context("a load task failed")??;
        merged.completed += s.completed;
        merged.errors += s.errors;
        merged.abandoned += s.abandoned;
        merged.measured = merged.measured.max(s.measured);
        merged.latencies.merge(&s.latencies);
    }
    Ok(merged)
}

async fn nodes(cfg: &ClusterConfig, n: usize) -> anyhow::Result<Sample> {
    let nats = Nats::start().await?;
    let mut procs = Vec::new();
    for i in 0..n {
        let id = format!("node{i}");
        procs.push(HeraldProcess::start_with_env(
            &cfg.herald_bin,
            "group-commit",
            &[
                ("HERALD_NATS_URL", nats.url.as_str()),
                ("HERALD_NODE_ID", id.as_str()),
            ],
        )?);
    }
    let urls: Vec<String> = procs
        .iter()
        .map(|p| format!("{}/Task", p.fhir("r4")))
        .collect();
    let s = load_all(&urls, cfg.clients, cfg).await;
    drop(procs);
    drop(nats);
    s
}

async fn embedded(cfg: &ClusterConfig) -> anyhow::Result<Sample> {
    let p = HeraldProcess::start(&cfg.herald_bin, "group-commit")?;
    load_all(&[format!("{}/Task", p.fhir("r4"))], cfg.clients, cfg).await
}

fn line(name: &str, s: &mut Sample) -> (f64, String) {
    let rate = s.completed as f64 / s.measured.as_secs_f64().max(1e-9);
    let text = format!(
        "{name:<22} {rate:>9.0} creates/s  p50 {:>8}  p99 {:>8}  errors {}",
        ms(s.latencies.quantile(0.5)),
        ms(s.latencies.quantile(0.99)),
        s.errors
    );
    (rate, text)
}

/// Runs the comparison and prints one line per run and the ratios per round.
pub async fn run(cfg: &ClusterConfig) -> anyhow::Result<()> {
    println!(
        "cluster: {} clients, {} rounds, {:?} measured per run (uptime before: {})",
        cfg.clients,
        cfg.rounds,
        cfg.duration,
        uptime()
    );
    for round in 1..=cfg.rounds {
        let (e, e_text) = line("embedded (1 process)", &mut embedded(cfg).await?);
        let (one, one_text) = line("cluster, 1 node", &mut nodes(cfg, 1).await?);
        let (three, three_text) = line("cluster, 3 nodes", &mut nodes(cfg, 3).await?);
        println!("round {round}\n  {e_text}\n  {one_text}\n  {three_text}");
        println!(
            "  ratios: 3 nodes / 1 node {:.2}; 1 node / embedded {:.2}",
            three / one.max(1e-9),
            one / e.max(1e-9)
        );
    }
    println!("uptime after: {}", uptime());
    Ok(())
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
