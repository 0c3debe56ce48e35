//! A NATS JetStream cluster on loopback for the cluster tests: three `nats-server` processes
//! (Debian's package, installed by `scripts/install-test-tools`) with JetStream, routes between
//! them, their own store directories and free ports; each can be killed and started again on
//! its data. And Herald nodes joined to it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Herald;

/// One nats-server of the cluster.
struct Server {
    name: String,
    client_port: u16,
    monitor_port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

/// A running NATS cluster.
pub struct NatsCluster {
    servers: Vec<Server>,
    _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Fails with the instruction to install the server when it is missing: nothing is skipped.
fn nats_server() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.exists())
    });
    found.expect("nats-server is not installed: run scripts/install-test-tools (it installs Debian's nats-server)")
}

impl NatsCluster {
    /// Starts `n` servers with JetStream and routes, and waits until JetStream has a leader.
    pub async fn start(n: usize) -> NatsCluster {
        let bin = nats_server();
        let tmp = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats://127.0.0.1:{cluster}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, (client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let dir = tmp.path().join(&name);
            std::fs::create_dir_all(&dir).expect("store dir");
            let mut args = vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client.to_string(),
                "-m".into(),
                monitor.to_string(),
                "-js".into(),
                "-sd".into(),
                dir.display().to_string(),
                "-n".into(),
                name.clone(),
            ];
            if n > 1 {
                args.extend([
                    "--cluster_name".into(),
                    "herald".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{cluster}"),
                    "--routes".into(),
                    routes.clone(),
                ]);
            }
            let mut s = Server {
                name,
                client_port: *client,
                monitor_port: *monitor,
                args,
                child: None,
            };
            s.spawn(&bin);
            servers.push(s);
        }
        let c = NatsCluster { servers, _tmp: tmp };
        c.wait_ready().await;
        c
    }

    /// Every server's client URL, comma-separated (what a Herald node is given).
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL one server.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed server again on its data.
    pub async fn restart(&mut self, i: usize) {
        self.servers[i].spawn(&nats_server());
        self.wait_ready().await;
    }

    /// Waits until every running server answers its JetStream health check and the cluster has
    /// a JetStream meta leader.
    async fn wait_ready(&self) {
        let c = crate::client();
        let deadline = Instant::now() + Duration::from_secs(60);
        'servers: for s in self.servers.iter().filter(|s| s.child.is_some()) {
            loop {
                let url = format!("http://127.0.0.1:{}/jsz", s.monitor_port);
                if let Ok(r) = c.get(&url).send().await
                    && let Ok(v) = r.json::<serde_json::Value>().await
                    && (self.servers.len() == 1
                        || v["meta_cluster"]["leader"]
                            .as_str()
                            .is_some_and(|l| !l.is_empty()))
                {
                    continue 'servers;
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server {} did not become ready",
                    s.name
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Server {
    fn spawn(&mut self, bin: &PathBuf) {
        let child = Command::new(bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill9(i);
        }
    }
}

/// Starts a Herald node `node_id` of the cluster (log and leases with `replicas` copies, a short
/// lease so that a dead node's subscriptions move quickly), allowed to deliver to loopback.
pub fn node(nats: &NatsCluster, node_id: &str, replicas: usize) -> Herald {
    let toml = format!(
        "[cluster]\nnats_url = \"{}\"\nnode_id = \"{node_id}\"\nreplicas = {replicas}\nlease_ttl_secs = 3\n",
        nats.url()
    );
    Herald::start_with_config(&toml, &[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")])
}
