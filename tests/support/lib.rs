//! Test kit for the end-to-end tests: spawns the real `herald` binary on an ephemeral loopback
//! port with its own sled directory, kills it with SIGKILL for crash tests, and restarts it on
//! the same data.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Path of the `herald` binary: `$HERALD_BIN`, else next to the test executable's `deps/`.
pub fn herald_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HERALD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = dir.join("herald");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` (which builds it) or set HERALD_BIN",
        bin.display()
    );
    bin
}

/// A running herald process.
pub struct Herald {
    child: Option<Child>,
    /// `http://127.0.0.1:port`.
    pub root: String,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    config: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

impl Herald {
    /// Starts herald on a fresh temporary data directory.
    pub fn start() -> Herald {
        Self::start_with(&[])
    }

    /// Starts herald with extra environment variables on a fresh data directory.
    pub fn start_with(env: &[(&str, &str)]) -> Herald {
        Self::start_with_config("", env)
    }

    /// Starts herald with a configuration file holding `toml` (when not empty) and extra
    /// environment variables, on a fresh data directory.
    pub fn start_with_config(toml: &str, env: &[(&str, &str)]) -> Herald {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let config = (!toml.is_empty()).then(|| {
            let path = tmp.path().join("herald.toml");
            std::fs::write(&path, toml).expect("write config");
            path
        });
        let mut h = Herald {
            child: None,
            root: String::new(),
            data_dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config,
            _tmp: Some(tmp),
        };
        h.spawn();
        h
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Base URL of a tenant, e.g. `http://127.0.0.1:1234/fhir/r4`.
    pub fn fhir(&self, tenant: &str) -> String {
        format!("{}/fhir/{tenant}", self.root)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(herald_bin());
        cmd.arg("serve");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_DATA_DIR", &self.data_dir)
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            // Not Herald's: the kit's own knob to collect the log in a file (appended, so a
            // restart keeps what came before).
            if k == "HERALD_TEST_STDERR" {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(v)
                    .expect("log file");
                cmd.stderr(f);
                continue;
            }
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.strip_prefix("herald listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("herald did not report its listening address");
        self.root = format!("http://{addr}");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            return c.wait().map(|s| s.success()).unwrap_or(false);
        }
        false
    }

    /// Sets (or, with `None`, removes) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Starts the process again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A reqwest client for tests (no proxy, short timeouts).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A minimal valid R4/R5 Task body.
pub fn task(owner: &str) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "owner": {"reference": owner},
    })
}

/// Canonical of a built-in topic.
pub fn topic(id: &str) -> String {
    format!("http://herald.example.org/fhir/SubscriptionTopic/{id}")
}

/// An R4 Subscriptions Backport rest-hook Subscription on `topic` with `_criteria` filters.
pub fn r4_subscription(
    topic_id: &str,
    filters: &[&str],
    endpoint: &str,
    content: &str,
) -> serde_json::Value {
    let mut s = serde_json::json!({
        "resourceType": "Subscription",
        "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"]},
        "status": "requested",
        "reason": "test",
        "criteria": topic(topic_id),
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": content
            }]}
        }
    });
    if !filters.is_empty() {
        s["_criteria"] = serde_json::json!({"extension": filters.iter().map(|f| serde_json::json!({
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
            "valueString": f
        })).collect::<Vec<_>>()});
    }
    s
}

/// An R5 rest-hook Subscription on `topic` with `filterBy` (parameter, value) pairs.
pub fn r5_subscription(
    topic_id: &str,
    filters: &[(&str, &str)],
    endpoint: &str,
    content: &str,
) -> serde_json::Value {
    let mut s = serde_json::json!({
        "resourceType": "Subscription",
        "status": "requested",
        "topic": topic(topic_id),
        "channelType": {"system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook"},
        "endpoint": endpoint,
        "contentType": "application/fhir+json",
        "content": content
    });
    if !filters.is_empty() {
        s["filterBy"] = serde_json::Value::Array(
            filters
                .iter()
                .map(|(p, v)| serde_json::json!({"resourceType": "Task", "filterParameter": p, "value": v}))
                .collect(),
        );
    }
    s
}

/// A recording rest-hook receiver with controllable answers.
pub mod receiver;

/// Clinical Order Workflows builders, the two-Herald fixture and the notification view.
pub mod cow;

/// Subscription bodies, `$status`/`$events` and notification shapes for any FHIR version.
pub mod versions;

/// The Subscription scenarios every FHIR version runs.
pub mod suite;

/// A NATS JetStream cluster on loopback and Herald nodes joined to it.
pub mod cluster;

/// Sends a FHIR JSON body; returns the status and the parsed answer (`Null` when there is none).
pub async fn send(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let r = c
        .request(method, url)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs `body` to `url` and insists on a refusal: one of `statuses`, answered with an
/// OperationOutcome whose diagnostics mention `needle` (case-insensitive). Returns the outcome.
pub async fn post_refused(
    c: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    statuses: &[reqwest::StatusCode],
    needle: &str,
) -> serde_json::Value {
    let (s, oo) = send(c, reqwest::Method::POST, url, body).await;
    assert!(statuses.contains(&s), "POST {url}: {s} {oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
    let diag = oo["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        diag.contains(&needle.to_lowercase()),
        "'{diag}' should mention '{needle}'"
    );
    oo
}

/// GET; returns the status and the parsed answer (`Null` when it is not JSON).
pub async fn get(c: &reqwest::Client, url: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let r = c.get(url).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// POST `body` to `{base}/{rtype}` and insist on 201; returns the stored resource.
pub async fn create(
    c: &reqwest::Client,
    base: &str,
    rtype: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let (s, v) = send(c, reqwest::Method::POST, &format!("{base}/{rtype}"), body).await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    v
}

/// splitmix64: the seeded PRNG of the crash tests, so a failing run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// The crash tests' seed: `$HERALD_CRASH_SEED`, else the clock.
pub fn crash_seed() -> u64 {
    std::env::var("HERALD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}
