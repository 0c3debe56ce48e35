//! The `herald` binary as a child process for a benchmark run: its own temporary data directory
//! (and working directory, so no `config/herald.toml` is picked up), an ephemeral loopback port
//! read from its `herald listening on ADDR` line, a chosen durability mode, and SIGKILL on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

/// A running herald.
pub struct HeraldProcess {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub root: String,
    _dir: tempfile::TempDir,
}

impl HeraldProcess {
    /// Starts `bin serve` with `HERALD_DURABILITY=durability` on a fresh data directory.
    pub fn start(bin: &Path, durability: &str) -> anyhow::Result<HeraldProcess> {
        Self::start_with_env(bin, durability, &[])
    }

    /// Like [`HeraldProcess::start`], with extra environment variables (e.g.
    /// `HERALD_ALLOW_PRIVATE_ENDPOINTS=true` for a loopback subscriber).
    pub fn start_with_env(
        bin: &Path,
        durability: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<HeraldProcess> {
        Self::spawn(bin, None, durability, env, Duration::from_secs(30))
    }

    /// Starts `bin serve` on an existing data directory and waits up to `ready_within` for it
    /// to be ready (start-up may replay a log or rebuild the search index).
    pub fn start_on(
        bin: &Path,
        data: &Path,
        durability: &str,
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> anyhow::Result<HeraldProcess> {
        let data =
            std::fs::canonicalize(data).with_context(|| format!("{} not found", data.display()))?;
        Self::spawn(bin, Some(&data), durability, env, ready_within)
    }

    fn spawn(
        bin: &Path,
        data: Option<&Path>,
        durability: &str,
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> anyhow::Result<HeraldProcess> {
        // The child runs in its temporary directory, so a relative path must be resolved here.
        let bin =
            std::fs::canonicalize(bin).with_context(|| format!("{} not found", bin.display()))?;
        let bin = bin.as_path();
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        let data: PathBuf = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let mut child = Command::new(bin)
            .arg("serve")
            .current_dir(dir.path())
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_DATA_DIR", &data)
            .env("HERALD_DURABILITY", durability)
            .env("HERALD_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            bail!("no stdout from herald");
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            // Keep draining stdout so the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.strip_prefix("herald listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(ready_within) {
            Ok(addr) => Ok(HeraldProcess {
                child,
                root: format!("http://{addr}"),
                _dir: dir,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not report its listening address", bin.display())
            }
        }
    }

    /// The child's process id (to attach a profiler).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Base URL of a tenant.
    pub fn fhir(&self, tenant: &str) -> String {
        format!("{}/fhir/{tenant}", self.root)
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of a process so far (`/proc/<pid>/stat`, at 100 ticks/s, Linux's
/// `USER_HZ` everywhere it runs): what a benchmark divides by the work done to get Herald's own
/// cost, whatever else shares the cores.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .context("malformed stat")
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_this_process_spinning() {
        let before = cpu_time(std::process::id()).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the kernel has charged at least 50 ms (5 ticks) more; on a loaded machine
        // this may take longer in wall time, hence the generous bound.
        while cpu_time(std::process::id()).unwrap() < before + Duration::from_millis(50) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no CPU time charged after 2 minutes of spinning"
            );
        }
        std::hint::black_box(x);
        assert!(cpu_time(u32::MAX).is_err(), "no such process");
    }
}
