//! The `herald` binary: command line, configuration loading (defaults → `config/herald.toml` →
//! `HERALD_*` environment), tracing set-up, and wiring of store and server with graceful
//! shutdown on SIGTERM/SIGINT; `herald admin …` talks to a running server (`admin`).
#![forbid(unsafe_code)]

mod admin;
mod config;

use std::io::IsTerminal;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_store::{Store, StoreOptions};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Herald: a FHIR subscription notification broker (R4 Subscriptions Backport and R5).
#[derive(Parser, Debug)]
#[command(name = "herald", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve {
        /// Configuration file (TOML). Default: `config/herald.toml` when it exists.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (after file and environment) as TOML-like JSON and exit.
    Config {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Operate a running server through its admin API.
    Admin {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let cfg = config::load(config.as_deref())?;
            init_tracing(&cfg.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(serve(cfg))
        }
        Command::Config { config } => {
            let cfg = config::load(config.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(())
        }
        Command::Admin { target, command } => admin::run(&target, command),
    }
}

fn init_tracing(log: &config::LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&log.filter)
        .with_context(|| format!("invalid log filter '{}'", log.filter))?;
    // Colour codes only for a person at a terminal: in a file or a log collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn serve(cfg: config::Config) -> anyhow::Result<()> {
    cfg.server
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    std::fs::create_dir_all(&cfg.storage.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.storage.data_dir.display()))?;
    // Accept connections first: while the log is replayed `/healthz` answers and `/readyz`
    // says not ready (herald_server::boot).
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let local = listener.local_addr()?;
    let boot = herald_server::boot::Boot::new();
    let limits = herald_server::listener::Limits::from_config(&cfg.server);
    let shutdown = shutdown_signal();
    let server = tokio::spawn(herald_server::listener::serve(
        listener,
        boot.router(),
        limits,
        shutdown,
    ));
    tracing::info!(listen = %local, "accepting connections; not ready until start-up replay ends");
    let scope = cfg.search.scope();
    let (dir, options) = (
        cfg.storage.data_dir.clone(),
        StoreOptions {
            cache_capacity_bytes: cfg.storage.cache_capacity_mb * 1024 * 1024,
            engine: cfg.storage.engine,
            durability: cfg.storage.durability,
            // FHIR's id and meta: the server's knowledge, called back by the store.
            stamp: herald_server::meta::stamp(),
            indexer: cfg.search.index.then(|| {
                Arc::new(herald_server::search::indexer::FhirIndexer::scoped(
                    &cfg.server.tenants,
                    scope,
                )) as Arc<dyn herald_store::Indexer>
            }),
        },
    );
    let cluster_cfg = cfg.cluster.clone();
    let (store, node) =
        tokio::task::spawn_blocking(move || open_store(&dir, &options, cluster_cfg))
            .await
            .context("the store's start-up task failed")?
            .with_context(|| format!("opening the store in {}", cfg.storage.data_dir.display()))?;
    let store = Arc::new(store);
    // The embedded backend; everything past this wiring sees only its surfaces.
    let surfaces = herald_store::Surfaces::embedded(Arc::clone(&store));
    let loading = std::time::Instant::now();
    // Notifications name resources by absolute URL: the configured public base, else the bound
    // address.
    let root = cfg
        .server
        .public_base_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{local}"));
    let base_urls = cfg
        .server
        .tenants
        .iter()
        .map(|t| (t.name.clone(), format!("{root}/fhir/{}", t.name)))
        .collect();
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    let (dispatcher, _delivery) = herald_delivery::Dispatcher::start(
        surfaces.clone(),
        cfg.delivery.clone(),
        base_urls,
        status_tx,
    )
    .context("starting delivery")?;
    let auth = herald_server::auth::Auth::new(&cfg.auth).map_err(anyhow::Error::msg)?;
    let leases = match (&node, &cfg.cluster) {
        (Some(n), Some(c)) => {
            let (nats, replicas) = (Arc::clone(&n.nats), c.replicas);
            let ttl = std::time::Duration::from_secs(c.lease_ttl_secs.max(1));
            let leases = tokio::task::spawn_blocking(move || {
                herald_cluster::KvLeases::open(nats, replicas, ttl)
            })
            .await
            .context("the lease start-up task failed")?
            .context("opening the delivery lease bucket")?;
            Some(Arc::new(leases) as Arc<dyn herald_server::cluster::Leases>)
        }
        _ => None,
    };
    let state = herald_server::AppState::new_node(
        surfaces,
        cfg.server.clone(),
        cfg.delivery.clone(),
        dispatcher,
        auth,
        leases.clone(),
    )
    .await
    .context("loading topics and subscriptions")?;
    tracing::info!(
        ms = loading.elapsed().as_millis() as u64,
        "topics and subscriptions loaded"
    );
    if let Some(n) = node {
        tokio::spawn(herald_server::cluster::run_applied(
            state.clone(),
            n.applied,
        ));
        herald_cluster::follow(&n.nats, store.clone()).context("starting the log follower")?;
        if let Some(l) = leases {
            tokio::spawn(herald_server::cluster::run_leases(state.clone(), l));
        }
    }
    tokio::spawn(herald_server::status::apply_status_changes(
        state.clone(),
        status_rx,
    ));
    tokio::spawn(herald_server::retention::run(
        state.clone(),
        cfg.retention.clone(),
    ));
    let app = herald_server::router(state);
    if cfg.delivery.allow_private_endpoints {
        tracing::warn!(
            "delivery.allow_private_endpoints is on: subscribers may target internal addresses"
        );
        if !cfg.delivery.private_endpoint_allowlist.is_empty() {
            tracing::warn!(
                "delivery.private_endpoint_allowlist has no effect while allow_private_endpoints is on"
            );
        }
    } else if !cfg.delivery.private_endpoint_allowlist.is_empty() {
        tracing::info!(
            allowlist = %cfg.delivery.private_endpoint_allowlist.entries().join(", "),
            "delivery.private_endpoint_allowlist: these internal endpoints may be targeted"
        );
    }
    boot.ready(app);
    tracing::info!(
        listen = %local,
        data_dir = %cfg.storage.data_dir.display(),
        durability = %serde_json::to_value(cfg.storage.durability).map(|v| v.as_str().unwrap_or_default().to_owned()).unwrap_or_default(),
        "herald ready"
    );
    // A line on stdout that tests and scripts can wait for (the port may be ephemeral): printed
    // once ready, so whoever waits for it can use every endpoint.
    println!("herald listening on {local}");
    // Connection limits, timeouts, TCP_NODELAY and graceful shutdown: see listener.rs.
    server
        .await
        .context("the HTTP server task failed")?
        .context("serving HTTP")?;
    tracing::info!("shutting down: flushing the store");
    store.close().context("closing the store")?;
    Ok(())
}

/// A node's connection to the cluster and the records of other nodes to react to.
struct Node {
    nats: Arc<herald_cluster::Nats>,
    applied: tokio::sync::mpsc::UnboundedReceiver<herald_store::Applied>,
}

/// Opens the store: embedded, or as one replica of the cluster's JetStream log.
fn open_store(
    dir: &std::path::Path,
    options: &StoreOptions,
    cluster: Option<config::ClusterConfig>,
) -> anyhow::Result<(Store, Option<Node>)> {
    let Some(c) = cluster else {
        return Ok((Store::open(dir, options)?, None));
    };
    let nats = Arc::new(herald_cluster::Nats::connect(&c.nats_url, &c.node_id)?);
    let log = herald_cluster::JetStreamLog::open(Arc::clone(&nats), c.replicas)?;
    let (store, applied) = Store::open_replicated(dir, options, Arc::new(log))?;
    tracing::info!(node = %c.node_id, nats = %c.nats_url, position = store.log_position().unwrap_or(0), "cluster node: the store is a replica of the JetStream log");
    Ok((store, Some(Node { nats, applied })))
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on either.
/// Installing them before the "listening" line matters: a signal arriving between that line and
/// the future's first poll would otherwise take the default action and kill the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(term, "SIGTERM") => {},
                () = wait(int, "SIGINT") => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
