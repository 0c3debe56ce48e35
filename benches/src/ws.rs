//! The `ws` scenario: many websocket subscribers on one Herald — what a bound socket costs in
//! Herald's memory, how long binding them all takes, and how fast one change fans out to them.
//!
//! * **Set-up**: one Herald process (its binding tokens made to outlast the run); `sockets` R5
//!   websocket Subscriptions on `cow-task-changed`, `id-only`, created `setup_concurrency` at a
//!   time. Subscription i filters on `Task?owner=` with the owners of every fan-out size S
//!   greater than i (`Organization/fanout-S`, comma-separated: any of them), so a Task owned by
//!   `fanout-S` matches exactly S subscriptions, all bound, while every write is matched against
//!   all of them.
//! * **Binding**: per socket, `$get-ws-binding-token` on its subscription (one token names the
//!   subscriptions one socket binds, so it cannot be shared), connect to the `websocket-url`,
//!   `bind-with-token TOKEN`, wait for the handshake; `bind_concurrency` at a time. Herald's
//!   VmRSS (`/proc/<pid>/status`) is read before the first socket and after the last handshake
//!   (and again once every subscription is `active`, the status writes the binds cause having
//!   landed): the difference over the socket count is the memory per bound socket.
//! * **Fan-out**: per S, a series of Task creates owned by `fanout-S`, at most `window` of them
//!   whose notifications have not all arrived. One task per socket reads frames and timestamps
//!   each on receipt; it finds the Task ids by searching the frame text for `/Task/` (no JSON
//!   parse) and hands them to one collector, which joins them with each create's send time
//!   (taken just before the POST). Latency is event→socket: POST sent → frame received.
//!   Notifications/s is every notification received over the time from the first POST to the
//!   last receipt. Herald's CPU time (`/proc/<pid>/stat`) over the series gives its cost per
//!   notification.
//!
//! Nothing here asserts on time; the figures are printed, with PASS/MISS against the memory
//! target.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::latency::{Latencies, ms};
use crate::notify::{TOPIC, task_id};
use crate::process::{HeraldProcess, cpu_time};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Settings of the `ws` scenario.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// The herald binary (a release build).
    pub herald_bin: PathBuf,
    /// `HERALD_DURABILITY` for Herald.
    pub durability: String,
    /// Sockets (and subscriptions) bound at once.
    pub sockets: usize,
    /// Fan-out sizes S (subscribers of one change); each at most `sockets`.
    pub fanout: Vec<usize>,
    /// Subscription creates in flight during set-up.
    pub setup_concurrency: usize,
    /// Binds (token + connect + bind + handshake) in flight.
    pub bind_concurrency: usize,
    /// Notifications to aim for per fan-out size (Task creates = this / S, clamped).
    pub notifications: usize,
    /// Fewest Task creates per fan-out size.
    pub min_tasks: usize,
    /// Most Task creates per fan-out size.
    pub max_tasks: usize,
    /// Task creates whose notifications may be outstanding at once.
    pub window: usize,
    /// Longest wait for one create's notifications.
    pub task_timeout: Duration,
    /// `delivery.ws_send_buffer` for Herald (its default when `None`).
    pub ws_send_buffer: Option<usize>,
    /// Memory target per bound socket, KiB.
    pub target_kib: f64,
}

/// Raises this process's open-file limit for `want` descriptors: the soft limit to the hard
/// limit, and the hard limit itself when that is too low and the process may (root). Children
/// (the herald it spawns) inherit it. Returns the limit in force.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    use rlimit::Resource;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).context("getrlimit(NOFILE)")?;
    if want > hard {
        match rlimit::setrlimit(Resource::NOFILE, want, want) {
            Ok(()) => {
                println!("open files: limit raised from {soft} (hard {hard}) to {want}");
                return Ok(want);
            }
            Err(e) => println!("open files: cannot raise the hard limit {hard} to {want}: {e}"),
        }
    }
    if soft < hard {
        rlimit::setrlimit(Resource::NOFILE, hard, hard).context("setrlimit(NOFILE)")?;
        println!("open files: soft limit raised from {soft} to {hard}");
    }
    Ok(hard)
}

/// Herald's resident set size, KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The Task owner whose creates match exactly `s` subscriptions.
fn owner(s: usize) -> String {
    format!("Organization/fanout-{s}")
}

/// The i-th subscription: R5 websocket, `id-only`, matching the Tasks of every fan-out size
/// larger than `i`.
pub fn subscription(i: usize, fanout: &[usize]) -> Value {
    let owners: Vec<String> = fanout
        .iter()
        .filter(|&&s| i < s)
        .map(|&s| owner(s))
        .collect();
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "herald-loadgen ws",
        "topic": TOPIC,
        "channelType": {
            "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type",
            "code": "websocket"
        },
        "contentType": "application/fhir+json",
        "content": "id-only",
        "filterBy": [{"resourceType": "Task", "filterParameter": "owner", "value": owners.join(",")}]
    })
}

/// The distinct Task ids referenced in a notification's text (`…/Task/{id}…`).
pub fn task_ids(text: &str) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for (at, _) in text.match_indices("/Task/") {
        let rest = &text[at + "/Task/".len()..];
        let end = rest.find(['/', '"']).unwrap_or(rest.len());
        let id = &rest[..end];
        if !id.is_empty() && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Client sockets keep small buffers too: 20 000 of tungstenite's defaults (128 KiB each way)
/// would cost the client gigabytes.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

fn http_client(pool: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pool.max(1))
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")
}

/// What the readers report to the collector.
enum Event {
    /// A create was sent at `at` and answered with `id`; `expected` receipts will follow; the
    /// permit is released when they are in.
    Sent {
        id: String,
        at: Instant,
        expected: usize,
        permit: OwnedSemaphorePermit,
    },
    /// A frame naming these Task ids arrived at `at`.
    Got { ids: Vec<String>, at: Instant },
    /// The series is over: hand back what was collected and start afresh.
    Finish(oneshot::Sender<Collected>),
}

/// One fan-out series as the collector saw it.
#[derive(Default)]
struct Collected {
    latencies: Latencies,
    /// Per completed create: send → last receipt.
    fanout_times: Latencies,
    received: u64,
    first_sent: Option<Instant>,
    last_received: Option<Instant>,
    incomplete: usize,
    missing: u64,
    extra: u64,
}

struct Pending {
    sent: Option<Instant>,
    expected: usize,
    early: Vec<Instant>,
    count: usize,
    last: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
}

async fn collector(mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut c = Collected::default();
    let blank = || Pending {
        sent: None,
        expected: usize::MAX,
        early: Vec::new(),
        count: 0,
        last: None,
        permit: None,
    };
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Sent {
                id,
                at,
                expected,
                permit,
            } => {
                c.first_sent = Some(c.first_sent.map_or(at, |f| f.min(at)));
                let p = pending.entry(id).or_insert_with(blank);
                p.sent = Some(at);
                p.expected = expected;
                for r in p.early.drain(..) {
                    c.latencies.record(r.saturating_duration_since(at));
                }
                if p.count >= expected {
                    if let Some(last) = p.last {
                        c.fanout_times.record(last.saturating_duration_since(at));
                    }
                } else {
                    p.permit = Some(permit);
                }
            }
            Event::Got { ids, at } => {
                for id in ids {
                    let p = pending.entry(id).or_insert_with(blank);
                    p.count += 1;
                    c.received += 1;
                    c.last_received = Some(at);
                    p.last = Some(at);
                    if p.count > p.expected {
                        c.extra += 1;
                    }
                    match p.sent {
                        Some(sent) => {
                            c.latencies.record(at.saturating_duration_since(sent));
                            if p.count == p.expected {
                                c.fanout_times.record(at.saturating_duration_since(sent));
                                p.permit = None;
                            }
                        }
                        None => p.early.push(at),
                    }
                }
            }
            Event::Finish(reply) => {
                for p in pending.values() {
                    if p.sent.is_some() && p.count < p.expected {
                        c.incomplete += 1;
                        c.missing += (p.expected - p.count) as u64;
                    }
                }
                pending.clear();
                let _ = reply.send(std::mem::take(&mut c));
            }
        }
    }
}

/// Reads one bound socket until it closes; reports the Task ids of every notification.
async fn reader(mut ws: Ws, tx: mpsc::UnboundedSender<Event>, closed: Arc<AtomicUsize>) {
    while let Some(msg) = ws.next().await {
        let at = Instant::now();
        match msg {
            Ok(Message::Text(t)) => {
                let text = t.as_str();
                if !text.contains("event-notification") {
                    continue; // heartbeat, or a control message
                }
                let ids = task_ids(text).into_iter().map(str::to_owned).collect();
                if tx.send(Event::Got { ids, at }).is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    closed.fetch_add(1, Ordering::Relaxed);
}

/// `$get-ws-binding-token` for one subscription, connect, bind, wait for the handshake.
async fn bind_one(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<Ws> {
    let p: Value = http
        .post(format!("{base}/Subscription/{id}/$get-ws-binding-token"))
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Parameters"}"#)
        .send()
        .await
        .context("$get-ws-binding-token")?
        .error_for_status()
        .context("$get-ws-binding-token")?
        .json()
        .await
        .context("reading the binding token")?;
    let param = |name: &str, key: &str| -> anyhow::Result<String> {
        p.get("parameter")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|x| x.get("name") == Some(&json!(name))))
            .and_then(|x| x.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no {name} in {p}"))
    };
    let token = param("token", "valueString")?;
    let url = param("websocket-url", "valueUrl")?;
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(client_config()), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
    ws.send(Message::Text(format!("bind-with-token {token}").into()))
        .await
        .context("sending bind-with-token")?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .context("no handshake within 60 s")?
            .context("closed before the handshake")?
            .context("reading the handshake")?;
        if let Message::Text(t) = msg {
            if t.as_str().contains("\"handshake\"") {
                return Ok(ws);
            }
            bail!("expected a handshake, got {}", t.as_str());
        }
    }
}

/// What binding all sockets cost.
#[derive(Debug, Clone, Default)]
pub struct BindReport {
    /// Sockets bound.
    pub sockets: usize,
    /// VmRSS before the first socket, KiB.
    pub rss_before: u64,
    /// VmRSS right after the last handshake, KiB.
    pub rss_bound: u64,
    /// VmRSS once every subscription was active, KiB.
    pub rss_settled: u64,
    /// Time to bind them all.
    pub time: Duration,
    /// Per-socket bind time (token + connect + bind + handshake).
    pub each: Latencies,
}

impl BindReport {
    /// KiB per socket between `before` and `after`.
    fn per_socket(&self, after: u64) -> f64 {
        (after as f64 - self.rss_before as f64) / self.sockets.max(1) as f64
    }
}

/// One fan-out size's figures.
struct FanoutReport {
    s: usize,
    tasks: usize,
    collected: Collected,
    herald_cpu: Duration,
}

/// Runs the scenario; prints progress and the tables.
pub async fn run(cfg: &WsConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.herald_bin.exists(),
        "{} not found: build it with `cargo build --release -p herald` or pass --herald-bin",
        cfg.herald_bin.display()
    );
    let n = cfg.sockets;
    let mut fanout: Vec<usize> = cfg.fanout.iter().map(|&s| s.clamp(1, n)).collect();
    fanout.sort_unstable();
    fanout.dedup();

    let mut env: Vec<(&str, String)> = vec![
        // Bindings must outlast set-up and measurement (the default token lasts 300 s).
        ("HERALD__DELIVERY__WS_TOKEN_TTL_SECS", "86400".to_owned()),
    ];
    if let Some(b) = cfg.ws_send_buffer {
        env.push(("HERALD__DELIVERY__WS_SEND_BUFFER", b.to_string()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let herald = HeraldProcess::start_with_env(&cfg.herald_bin, &cfg.durability, &env_refs)?;
    let pid = herald.pid();
    let base = herald.fhir("r5");
    println!(
        "herald pid {pid} at {} ({}), send buffer {}",
        herald.root,
        cfg.durability,
        cfg.ws_send_buffer
            .map_or_else(|| "default".to_owned(), |b| b.to_string())
    );

    let ids = create_subscriptions(cfg, &base, &fanout).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(collector(rx));
    let closed = Arc::new(AtomicUsize::new(0));
    let bind = bind_all(cfg, &herald, &base, &ids, &tx, &closed).await?;

    let http = http_client(cfg.window + 2)?;
    let mut results = Vec::new();
    for &s in &fanout {
        let tasks = (cfg.notifications / s).clamp(cfg.min_tasks.max(1), cfg.max_tasks.max(1));
        println!(
            "fan-out S={s}: {tasks} Task create(s), window {}",
            cfg.window
        );
        let cpu0 = cpu_time(pid)?;
        let collected = fan_out(cfg, &http, &base, s, tasks, &tx).await?;
        let herald_cpu = cpu_time(pid)?.saturating_sub(cpu0);
        results.push(FanoutReport {
            s,
            tasks,
            collected,
            herald_cpu,
        });
        let c = closed.load(Ordering::Relaxed);
        if c > 0 {
            println!("  {c} socket(s) closed so far");
        }
    }
    let rss_end = rss_kib(pid)?;
    let hwm = status_field(pid, "VmHWM:")?;
    report(
        cfg,
        &bind,
        &mut results,
        rss_end,
        hwm,
        closed.load(Ordering::Relaxed),
    );
    Ok(())
}

async fn create_subscriptions(
    cfg: &WsConfig,
    base: &str,
    fanout: &[usize],
) -> anyhow::Result<Vec<String>> {
    let n = cfg.sockets;
    let http = http_client(cfg.setup_concurrency)?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); n]));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.setup_concurrency.max(1) {
        let (http, url) = (http.clone(), format!("{base}/Subscription"));
        let (next, created, ids) = (next.clone(), created.clone(), ids.clone());
        let fanout = fanout.to_vec();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let r = http
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .json(&subscription(i, &fanout))
                    .send()
                    .await
                    .context("creating a subscription")?;
                let status = r.status();
                let body: Value = r.json().await.unwrap_or_default();
                if status != reqwest::StatusCode::CREATED {
                    bail!("creating subscription {i}: {status}: {body}");
                }
                let id = body
                    .get("id")
                    .and_then(Value::as_str)
                    .context("a created subscription without id")?;
                if let Ok(mut v) = ids.lock()
                    && let Some(slot) = v.get_mut(i)
                {
                    *slot = id.to_owned();
                }
                created.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            done = workers.join_next() => match done {
                Some(r) => r.context("a set-up worker panicked")??,
                None => break,
            },
            _ = tick.tick() => {
                let c = created.load(Ordering::Relaxed);
                println!(
                    "  subscriptions: {c}/{n} created in {:.0} s ({:.0}/s)",
                    started.elapsed().as_secs_f64(),
                    c as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let t = started.elapsed();
    println!(
        "subscriptions: {n} created in {:.1} s ({:.0}/s, {} in flight)",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64(),
        cfg.setup_concurrency
    );
    let ids = ids
        .lock()
        .map_err(|_| anyhow::anyhow!("ids lock poisoned"))?
        .clone();
    Ok(ids)
}

async fn bind_all(
    cfg: &WsConfig,
    herald: &HeraldProcess,
    base: &str,
    ids: &[String],
    tx: &mpsc::UnboundedSender<Event>,
    closed: &Arc<AtomicUsize>,
) -> anyhow::Result<BindReport> {
    let pid = herald.pid();
    let n = ids.len();
    let http = http_client(cfg.bind_concurrency)?;
    let rss_before = rss_kib(pid)?;
    println!(
        "binding {n} sockets, {} at a time; herald VmRSS {rss_before} KiB",
        cfg.bind_concurrency
    );
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let bound = Arc::new(AtomicU64::new(0));
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.bind_concurrency.max(1) {
        let (http, base, ids) = (http.clone(), base.to_owned(), ids.clone());
        let (next, bound, tx, closed) = (next.clone(), bound.clone(), tx.clone(), closed.clone());
        workers.spawn(async move {
            let mut each = Latencies::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<Latencies, anyhow::Error>(each);
                };
                let t = Instant::now();
                let ws = bind_one(&http, &base, id)
                    .await
                    .with_context(|| format!("binding socket {i} (Subscription/{id})"))?;
                each.record(t.elapsed());
                bound.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(reader(ws, tx.clone(), closed.clone()));
            }
        });
    }
    let mut each = Latencies::default();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            done = workers.join_next() => match done {
                Some(r) => each.merge(&r.context("a bind worker panicked")??),
                None => break,
            },
            _ = tick.tick() => {
                let b = bound.load(Ordering::Relaxed);
                println!(
                    "  sockets: {b}/{n} bound in {:.0} s ({:.0}/s), herald VmRSS {} KiB",
                    started.elapsed().as_secs_f64(),
                    b as f64 / started.elapsed().as_secs_f64(),
                    rss_kib(pid).unwrap_or(0)
                );
            }
        }
    }
    let time = started.elapsed();
    let rss_bound = rss_kib(pid)?;
    println!(
        "bound {n} sockets in {:.1} s ({:.0}/s); herald VmRSS {rss_bound} KiB",
        time.as_secs_f64(),
        n as f64 / time.as_secs_f64()
    );
    // Each first bind asks for requested → active, a durable write; wait for those to land.
    let admin = format!("{}/admin/subscriptions", herald.root);
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let active = count_active(&http, &admin).await?;
        if active >= n || settle.elapsed() > Duration::from_secs(300) {
            println!(
                "{active}/{n} subscriptions active {:.1} s after the last bind",
                settle.elapsed().as_secs_f64()
            );
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_settled = rss_kib(pid)?;
    println!("herald VmRSS settled: {rss_settled} KiB");
    Ok(BindReport {
        sockets: n,
        rss_before,
        rss_bound,
        rss_settled,
        time,
        each,
    })
}

async fn count_active(http: &reqwest::Client, admin: &str) -> anyhow::Result<usize> {
    let v: Value = http
        .get(admin)
        .send()
        .await
        .context("GET /admin/subscriptions")?
        .error_for_status()?
        .json()
        .await
        .context("reading /admin/subscriptions")?;
    Ok(v.get("subscriptions")
        .and_then(Value::as_array)
        .map_or(0, |rows| {
            rows.iter()
                .filter(|r| r.get("status").and_then(Value::as_str) == Some("active"))
                .count()
        }))
}

/// Creates `tasks` Tasks that match `s` subscriptions each, at most `window` outstanding.
async fn fan_out(
    cfg: &WsConfig,
    http: &reqwest::Client,
    base: &str,
    s: usize,
    tasks: usize,
    tx: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<Collected> {
    let window = cfg.window.max(1);
    let sem = Arc::new(Semaphore::new(window));
    let body = json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "owner": {"reference": owner(s)}
    });
    let url = format!("{base}/Task");
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut stalled = false;
    for k in 0..tasks {
        let Ok(Ok(permit)) =
            tokio::time::timeout(cfg.task_timeout, sem.clone().acquire_owned()).await
        else {
            println!(
                "  S={s}: a create's notifications did not all arrive within {:?}; stopping",
                cfg.task_timeout
            );
            stalled = true;
            break;
        };
        let at = Instant::now();
        let r = http
            .post(&url)
            .header("content-type", "application/fhir+json")
            .json(&body)
            .send()
            .await
            .context("creating a Task")?;
        if r.status() != reqwest::StatusCode::CREATED {
            bail!("creating a Task: {}", r.status());
        }
        let id = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(task_id)
            .context("a created Task without Location")?
            .to_owned();
        let _ = tx.send(Event::Sent {
            id,
            at,
            expected: s,
            permit,
        });
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            println!(
                "  S={s}: {}/{tasks} created in {:.0} s",
                k + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if !stalled {
        let all = u32::try_from(window).unwrap_or(u32::MAX);
        if tokio::time::timeout(cfg.task_timeout, sem.acquire_many(all))
            .await
            .is_err()
        {
            println!("  S={s}: the last creates' notifications did not all arrive in time");
        }
    }
    let (reply, got) = oneshot::channel();
    tx.send(Event::Finish(reply))
        .map_err(|_| anyhow::anyhow!("the collector stopped"))?;
    got.await.context("the collector stopped")
}

fn report(
    cfg: &WsConfig,
    bind: &BindReport,
    results: &mut [FanoutReport],
    rss_end: u64,
    hwm: u64,
    closed: usize,
) {
    let mut each = bind.each.clone();
    let kib = bind.per_socket(bind.rss_bound);
    let kib_settled = bind.per_socket(bind.rss_settled);
    let verdict = |k: f64| if k <= cfg.target_kib { "PASS" } else { "MISS" };
    println!();
    println!("## websocket sockets");
    println!(
        "| sockets | RSS before (MiB) | RSS bound (MiB) | KiB/socket | RSS settled (MiB) | KiB/socket settled | bind all (s) | binds/s | bind p50 (ms) | bind p99 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} |",
        bind.sockets,
        bind.rss_before as f64 / 1024.0,
        bind.rss_bound as f64 / 1024.0,
        kib,
        bind.rss_settled as f64 / 1024.0,
        kib_settled,
        bind.time.as_secs_f64(),
        bind.sockets as f64 / bind.time.as_secs_f64().max(1e-9),
        ms(each.quantile(0.50)),
        ms(each.quantile(0.99)),
    );
    println!(
        "RSS per bound socket: {kib:.1} KiB right after binding ({}), {kib_settled:.1} KiB once all active ({}); target <= {} KiB",
        verdict(kib),
        verdict(kib_settled),
        cfg.target_kib
    );
    println!();
    println!("## fan-out (window {})", cfg.window.max(1));
    println!(
        "| S | creates | notifications | notifications/s | p50 (ms) | p99 (ms) | one change to all S, p50 (ms) | herald CPU µs/notification | missing |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in results.iter_mut() {
        let c = &mut r.collected;
        let span = match (c.first_sent, c.last_received) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        let rate = if span.is_zero() {
            0.0
        } else {
            c.received as f64 / span.as_secs_f64()
        };
        let cpu_per = if c.received == 0 {
            0.0
        } else {
            r.herald_cpu.as_secs_f64() * 1e6 / c.received as f64
        };
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {}{} |",
            r.s,
            r.tasks,
            c.received,
            rate,
            ms(c.latencies.quantile(0.50)),
            ms(c.latencies.quantile(0.99)),
            ms(c.fanout_times.quantile(0.50)),
            cpu_per,
            c.missing,
            if c.extra > 0 {
                format!(" ({} extra)", c.extra)
            } else {
                String::new()
            },
        );
    }
    println!();
    println!(
        "herald VmRSS at the end {:.1} MiB, peak (VmHWM) {:.1} MiB; sockets closed by the server: {closed}",
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_found_in_the_frame_text() {
        let text = r#"{"entry":[{"fullUrl":"http://h/fhir/r5/Task/abc/_history/1"},{"resource":{"notificationEvent":[{"focus":{"reference":"http://h/fhir/r5/Task/abc/_history/1"}},{"focus":{"reference":"http://h/fhir/r5/Task/def"}}]}}]}"#;
        assert_eq!(task_ids(text), vec!["abc", "def"]);
        assert_eq!(task_ids(r#"{"reference":"x/Task/def"}"#), vec!["def"]);
        assert!(task_ids(r#"{"type":"handshake"}"#).is_empty());
    }

    #[test]
    fn subscription_i_matches_the_fanout_sizes_above_it() {
        let v = |i| subscription(i, &[1, 100, 20_000])["filterBy"][0]["value"].clone();
        assert_eq!(
            v(0),
            "Organization/fanout-1,Organization/fanout-100,Organization/fanout-20000"
        );
        assert_eq!(v(1), "Organization/fanout-100,Organization/fanout-20000");
        assert_eq!(v(19_999), "Organization/fanout-20000");
    }
}
