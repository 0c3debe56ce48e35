//! The admin console in a real browser: Debian's headless Chromium, driven over the DevTools
//! protocol (a websocket, with the tests' tokio-tungstenite), against a live Herald with real
//! deliveries and real failures. It checks what an operator reads (failing first, the cause,
//! sparklines, the timeline), carries out one action through the page's own form, and saves a
//! screenshot to `target/admin-console.png`. Chromium comes from `scripts/install-test-tools`;
//! where it is missing the test says so and skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use herald_tests::receiver::{Receiver, delivered_events};
use herald_tests::{Herald, client, create, r4_subscription, task};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// A headless browser and a websocket to one of its pages.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
    events: Vec<Value>,
}

impl Browser {
    async fn start(bin: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(WAIT)
            .expect("chromium did not report its DevTools address");
        let port = browser_ws
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .unwrap()
            .to_owned();
        // A page target of our own, and its websocket.
        let page: Value = client()
            .put(format!("http://127.0.0.1:{port}/json/new?about:blank"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut b = Browser {
            child,
            _profile: profile,
            ws,
            next: 0,
            events: Vec::new(),
        };
        b.call("Page.enable", json!({})).await;
        b.call("Runtime.enable", json!({})).await;
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        b
    }

    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the browser went quiet")
                .expect("the browser closed the socket")
                .unwrap();
            if let Message::Text(t) = msg {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg.into())).await.unwrap();
        loop {
            let v = self.recv().await;
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    async fn wait_event(&mut self, method: &str) {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            self.events.drain(..=i);
            return;
        }
        loop {
            let v = self.recv().await;
            if v["method"] == method {
                return;
            }
        }
    }

    async fn goto(&mut self, url: &str) {
        self.events.clear();
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_event("Page.loadEventFired").await;
    }

    /// Evaluates `js` in the page and returns its value.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Clicks what `selector` finds and waits for the page it leads to.
    async fn click_and_wait(&mut self, selector: &str) {
        self.events.clear();
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
                serde_json::to_string(selector).unwrap()
            ))
            .await;
        assert_eq!(found, true, "nothing matches {selector}");
        self.wait_event("Page.loadEventFired").await;
    }

    async fn screenshot(&mut self, path: &std::path::Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn subscribe(c: &reqwest::Client, base: &str, endpoint: &str) -> String {
    create(
        c,
        base,
        "Subscription",
        &r4_subscription("cow-task-changed", &[], endpoint, "id-only"),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_console_shows_failures_first_with_their_cause_and_pauses_a_subscription_from_its_page()
{
    let Some(bin) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on PATH (scripts/install-test-tools installs Debian's chromium; set CHROMIUM to use another)"
        );
        return;
    };
    let good_rx = Receiver::start().await;
    let bad_rx = Receiver::start().await;
    let h = Herald::start_with(&[
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
    ]);
    let c = client();
    let base = h.fhir("r4");
    let good = subscribe(&c, &base, &good_rx.url("/good")).await;
    let bad = subscribe(&c, &base, &bad_rx.url("/bad")).await;
    good_rx
        .wait_until("/good", "the handshake", WAIT, |g| !g.is_empty())
        .await;
    bad_rx
        .wait_until("/bad", "the handshake", WAIT, |g| !g.is_empty())
        .await;
    bad_rx.refuse().await;
    for _ in 0..3 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    good_rx
        .wait_until("/good", "events 1-3", WAIT, |g| {
            delivered_events(g).len() == 3
        })
        .await;
    // wait until the failing one has failed twice (its cause is known)
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) =
            herald_tests::get(&c, &format!("{}/admin/subscriptions/r4/{bad}", h.root)).await;
        if v["subscription"]["consecutive_failures"].as_u64() >= Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "never failed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut b = Browser::start(&bin).await;
    b.goto(&format!("{}/admin", h.root)).await;
    assert_eq!(
        b.eval("document.title").await,
        "Subscriptions · Herald admin"
    );
    // failing first, with its cause in words; the healthy one after it
    let order = b
        .eval("[...document.querySelectorAll('#subscriptions tbody tr')].map(r => r.dataset.id)")
        .await;
    assert_eq!(order, json!([format!("r4/{bad}"), format!("r4/{good}")]));
    let first = b
        .eval("document.querySelector('#subscriptions tbody tr').innerText")
        .await;
    let first = first.as_str().unwrap();
    assert!(first.contains("connection refused"), "{first}");
    assert!(first.contains("failing"), "{first}");
    let health = b.eval("document.querySelector('#health').innerText").await;
    assert!(health.as_str().unwrap().contains("degraded"), "{health}");
    // a sparkline per subscription, the healthy one with its delivered events
    assert_eq!(
        b.eval("document.querySelectorAll('svg.spark').length")
            .await,
        2
    );
    let title = b
        .eval("document.querySelectorAll('svg.spark title')[1].textContent")
        .await;
    assert!(
        title.as_str().unwrap().contains("3 events delivered"),
        "{title}"
    );
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    b.screenshot(&target.join("admin-console.png")).await;

    // the failing subscription's page: cause, timeline, actions
    b.click_and_wait(&format!("tr[data-id='r4/{bad}'] a")).await;
    let err = b
        .eval("document.querySelector('#last-error').innerText")
        .await;
    assert!(
        err.as_str()
            .unwrap()
            .contains("connect: connection refused"),
        "{err}"
    );
    let failed = b
        .eval("document.querySelectorAll('#timeline li.failed').length")
        .await;
    assert!(failed.as_u64() >= Some(2), "{failed}");
    // one action through the page's own form: pause
    b.click_and_wait("#action-pause").await;
    let notice = b.eval("document.querySelector('#notice').innerText").await;
    assert_eq!(notice, "Done: pause.");
    let audit = b.eval("document.querySelector('#audit').innerText").await;
    assert!(
        audit.as_str().unwrap().contains("pause by anonymous"),
        "{audit}"
    );
    assert_eq!(
        b.eval("!!document.querySelector('#action-resume')").await,
        true
    );
    let (_, v) = herald_tests::get(&c, &format!("{}/admin/subscriptions/r4/{bad}", h.root)).await;
    assert_eq!(v["subscription"]["paused"], true, "{v}");
    b.screenshot(&target.join("admin-console-subscription.png"))
        .await;
    // an attempt in full from the timeline
    b.click_and_wait("#timeline li.failed a").await;
    let detail = b.eval("document.querySelector('#attempt').innerText").await;
    assert!(
        detail.as_str().unwrap().contains("connection refused"),
        "{detail}"
    );
}
