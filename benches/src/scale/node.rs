//! A `herald` process that can be killed and started again on the same data directory and
//! port, for the scenarios that time a restart: the start instant is the spawn, readiness is
//! `/readyz` answering 200 (polled, since the port is fixed and known before the process is
//! ready).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A herald that outlives its processes: its data directory and port stay.
pub struct Node {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    durability: String,
    child: Option<Child>,
    /// `http://127.0.0.1:port`.
    pub root: String,
}

impl Node {
    /// A node on a fresh data directory and a free loopback port; nothing runs yet.
    pub fn new(bin: &Path, durability: &str) -> anyhow::Result<Node> {
        let bin =
            std::fs::canonicalize(bin).with_context(|| format!("{} not found", bin.display()))?;
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        // A port the kernel just handed out and nobody holds; Herald binds it itself.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        Ok(Node {
            bin,
            dir,
            port,
            durability: durability.to_owned(),
            child: None,
            root: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Spawns the process and returns the instant of the spawn (the start of "start → ready").
    pub fn spawn(&mut self) -> anyhow::Result<Instant> {
        if self.child.is_some() {
            bail!("herald is already running");
        }
        let data = self.dir.path().join("data");
        let started = Instant::now();
        let child = Command::new(&self.bin)
            .arg("serve")
            .current_dir(self.dir.path())
            .env("HERALD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("HERALD_DATA_DIR", &data)
            .env("HERALD_DURABILITY", &self.durability)
            // HERALD_LOG of the loadgen's environment passes through (e.g. `info` for
            // Herald's start-up timings).
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(started)
    }

    /// Polls `/readyz` until it answers 200; returns the time since `started`.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        started: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let url = format!("{}/readyz", self.root);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                return Ok(started.elapsed());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("herald exited while starting: {status}");
            }
            if started.elapsed() >= timeout {
                bail!("herald not ready after {:.0} s", timeout.as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `kill -9`: nothing is flushed or closed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Base URL of a tenant.
    pub fn fhir(&self, tenant: &str) -> String {
        format!("{}/fhir/{tenant}", self.root)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
