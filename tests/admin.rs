//! Operations end to end against the real binary: the admin API's live state, logs of failed
//! and recovered deliveries, attempt filters and cursor paging, operator actions with their
//! audit trail, the health summary and readiness, and the `herald admin` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use herald_tests::receiver::{Behaviour, Receiver, delivered_events};
use herald_tests::{Herald, client, create, r4_subscription, task};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn herald(extra: &[(&str, &str)]) -> Herald {
    let mut env = vec![
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
        ("HERALD__DELIVERY__ERROR_AFTER_FAILURES", "3"),
    ];
    env.extend_from_slice(extra);
    Herald::start_with(&env)
}

async fn get(c: &reqwest::Client, url: &str) -> Value {
    let (status, v) = herald_tests::get(c, url).await;
    assert!(status.is_success(), "GET {url}: {status} {v}");
    v
}

async fn post(c: &reqwest::Client, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = c.post(url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Creates an R4 rest-hook Subscription to `endpoint` and waits until its handshake was
/// accepted; returns its id.
async fn active_subscription(c: &reqwest::Client, h: &Herald, endpoint: &str) -> String {
    let base = h.fhir("r4");
    let id = create(
        c,
        &base,
        "Subscription",
        &r4_subscription("cow-task-changed", &[], endpoint, "id-only"),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    live_until(c, h, &id, "an accepted handshake", |r| {
        r["status"] == "active"
    })
    .await;
    id
}

/// Polls `/admin/subscriptions/r4/{id}` until `pred` holds; returns the row.
async fn live_until(
    c: &reqwest::Client,
    h: &Herald,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = get(c, &format!("{}/admin/subscriptions/r4/{id}", h.root)).await;
        let row = v["subscription"].clone();
        if pred(&row) {
            return row;
        }
        assert!(Instant::now() < deadline, "never {what}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_log(path: &std::path::Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the log never had {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stopped_receiver_shows_live_as_connection_refused_warns_per_attempt_and_logs_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("herald.log");
    let rx = Receiver::start().await;
    let h = herald(&[
        ("HERALD_LOG", "info"),
        ("HERALD_TEST_STDERR", log.to_str().unwrap()),
    ]);
    let c = client();
    let id = active_subscription(&c, &h, &rx.url("/hook")).await;
    rx.refuse().await;
    create(&c, &h.fhir("r4"), "Task", &task("Organization/lab")).await;
    // The live state says why, at once: no waiting for a status change or a stored copy.
    let row = live_until(&c, &h, &id, "a failure with its cause", |r| {
        r["consecutive_failures"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(
        row["last_error"], "connect: connection refused",
        "the root cause, not reqwest's outer message: {row}"
    );
    assert_eq!(row["health"], "failing", "{row}");
    assert_eq!(row["queue_depth"], 1, "{row}");
    assert!(row["next_attempt_at"].is_string(), "{row}");
    let port = rx.url("").trim_start_matches("http://").to_owned();
    let text = read_log(&log, "two failed attempts", |t| {
        t.matches("delivery attempt failed").count() >= 2
    })
    .await;
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("delivery attempt failed"))
        .collect();
    for w in &warns {
        assert!(w.contains(" WARN "), "{w}");
        assert!(w.contains(&format!("subscription={id}")), "{w}");
        assert!(w.contains("tenant=r4"), "{w}");
        assert!(w.contains("notification=event 1"), "{w}");
        assert!(w.contains(&format!("endpoint={port}")), "{w}");
        assert!(w.contains("cause=connect: connection refused"), "{w}");
        assert!(w.contains("next_attempt=20"), "an instant: {w}");
    }
    rx.recover().await;
    rx.wait_until("/hook", "event 1 after recovery", WAIT, |got| {
        delivered_events(got).contains(&1)
    })
    .await;
    let text = read_log(&log, "the recovery", |t| t.contains("delivery recovered")).await;
    let line = text
        .lines()
        .find(|l| l.contains("delivery recovered"))
        .unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&format!("subscription={id}")), "{line}");
    // A log file gets no colour codes and no Rust debug formatting.
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in a log file");
    assert!(
        !text.contains("Some("),
        "debug formatting in the log:\n{text}"
    );
    let row = live_until(&c, &h, &id, "recovered", |r| r["health"] == "ok").await;
    assert_eq!(row["last_error"], Value::Null, "{row}");
    assert_eq!(row["queue_depth"], 0, "{row}");
}

#[tokio::test]
async fn attempts_filter_by_subscription_outcome_status_and_time_and_page_by_cursor() {
    let rx = Receiver::start().await;
    let other_rx = Receiver::start().await;
    let h = herald(&[("HERALD__DELIVERY__ERROR_AFTER_FAILURES", "100")]);
    let c = client();
    let id = active_subscription(&c, &h, &rx.url("/hook")).await;
    let other = active_subscription(&c, &h, &other_rx.url("/other")).await;
    rx.set(Behaviour::Status(503, None));
    create(&c, &h.fhir("r4"), "Task", &task("Organization/lab")).await;
    rx.wait_until("/hook", "three refused attempts", WAIT, |got| {
        got.iter().filter(|r| r.answered == 503).count() >= 3
    })
    .await;
    rx.set(Behaviour::Accept);
    rx.wait_until("/hook", "the event delivered", WAIT, |got| {
        delivered_events(got).contains(&1)
    })
    .await;
    let list = |q: String| {
        let c = c.clone();
        let url = format!("{}/admin/attempts?{q}", h.root);
        async move { get(&c, &url).await }
    };
    // by subscription and outcome (an attempt joins the log with the next log sync: poll)
    let deadline = Instant::now() + WAIT;
    let failed = loop {
        let f = list(format!("subscription={id}&outcome=failed")).await;
        let delivered = list(format!("subscription={id}&outcome=delivered")).await;
        // handshake and the event delivered: everything before them is in the log too
        if f["count"].as_u64() >= Some(3) && delivered["count"] == 2 {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the log never caught up: {f} {delivered}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entries = failed["entries"].as_array().unwrap();
    for e in entries {
        assert_eq!(e["subscription"], id.as_str());
        assert_eq!(e["outcome"], "failed");
        assert_eq!(e["http_status"], 503);
        assert_eq!(
            e["error"], "http-status: HTTP 503 Service Unavailable",
            "{e}"
        );
    }
    // by HTTP status: only the refused ones, of any subscription
    let by_status = list("http_status=503".into()).await;
    assert_eq!(by_status["entries"], failed["entries"], "{by_status}");
    let ok = list(format!("subscription={other}&outcome=delivered")).await;
    // its handshake and the same event (the Task matches both)
    assert_eq!(ok["entries"].as_array().unwrap().len(), 2, "{ok}");
    // by time: nothing after a minute from now, everything since an hour ago
    let future = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(60));
    assert_eq!(list(format!("since={future}")).await["count"], 0);
    let past = humantime::format_rfc3339(std::time::SystemTime::now() - Duration::from_secs(3600));
    let all = list(format!("since={past}&_count=1000")).await;
    let all_ids: Vec<String> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        list(format!("until={past}")).await["count"],
        0,
        "nothing before the test"
    );
    // cursor paging: pages of 2 walk the same list, newest first, without repeats
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(cur) => format!("_count=2&cursor={cur}"),
            None => "_count=2".to_owned(),
        };
        let page = list(q).await;
        walked.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, all_ids);
    // one attempt in full
    let first_failed = entries[0]["id"].as_str().unwrap();
    let one = get(&c, &format!("{}/admin/attempts/{first_failed}", h.root)).await;
    assert_eq!(one["http_status"], 503, "{one}");
    assert!(one["latency_ms"].as_f64().is_some(), "{one}");
    assert!(
        one["response_body"].is_string() || one["response_body"].is_null(),
        "{one}"
    );
    let headers = one["request_headers"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|x| x["name"] == "content-type" && x["value"] == "application/fhir+json"),
        "{one}"
    );
    assert!(
        headers
            .iter()
            .all(|x| x["name"] != "webhook-signature" || x["value"] == "[redacted]"),
        "{one}"
    );
    // refusals say what is wrong
    for (q, needle) in [
        ("outcome=maybe", "outcome"),
        ("http_status=abc", "http_status"),
        ("cursor=zz", "cursor"),
        ("since=yesterday", "since"),
        ("colour=red", "unknown parameter"),
    ] {
        let (s, oo) = herald_tests::get(&c, &format!("{}/admin/attempts?{q}", h.root)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {oo}");
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{q}: {oo}"
        );
    }
    let (s, _) =
        herald_tests::get(&c, &format!("{}/admin/attempts/{}", h.root, "0".repeat(32))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // subscription filters: failing-first order, by status and tenant
    let subs = get(
        &c,
        &format!("{}/admin/subscriptions?status=active&tenant=r4", h.root),
    )
    .await;
    assert_eq!(subs["total"], 2, "{subs}");
    let (s, _) =
        herald_tests::get(&c, &format!("{}/admin/subscriptions?status=happy", h.root)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) =
        herald_tests::get(&c, &format!("{}/admin/subscriptions?tenant=nope", h.root)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn actions_are_carried_out_by_delivery_and_recorded_with_who_did_them() {
    let rx = Receiver::start().await;
    let h = herald(&[]);
    let c = client();
    let id = active_subscription(&c, &h, &rx.url("/hook")).await;
    let base = h.fhir("r4");
    let act = |action: &str| format!("{}/admin/subscriptions/r4/{id}/{action}", h.root);
    for _ in 0..3 {
        create(&c, &base, "Task", &task("Organization/lab")).await;
    }
    rx.wait_until("/hook", "events 1-3", WAIT, |got| {
        delivered_events(got) == [1, 2, 3]
    })
    .await;
    // pause: events are recorded and queued, not sent
    let (s, v) = post(&c, &act("pause"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["performed"]["by"], "anonymous", "{v}");
    assert_eq!(v["subscription"]["health"], "paused", "{v}");
    create(&c, &base, "Task", &task("Organization/lab")).await;
    let row = live_until(&c, &h, &id, "event 4 queued", |r| r["queue_depth"] == 1).await;
    assert_eq!(row["paused"], true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !delivered_events(&rx.on("/hook")).contains(&4),
        "sent while paused"
    );
    // resume: it goes
    assert_eq!(post(&c, &act("resume"), None).await.0, StatusCode::OK);
    rx.wait_until("/hook", "event 4", WAIT, |got| {
        delivered_events(got).contains(&4)
    })
    .await;
    // resend 2-3: sent again, cursor unchanged
    let before = rx.on("/hook").len();
    let (s, v) = post(&c, &act("resend"), Some(json!({"from": 2, "to": 3}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["performed"]["detail"], "events 2-3");
    let got = rx
        .wait_until("/hook", "events 2-3 again", WAIT, |got| got.len() > before)
        .await;
    assert_eq!(got[before].event_numbers(), vec![2, 3]);
    let row = live_until(&c, &h, &id, "resend done", |r| r["resend"].is_null()).await;
    assert_eq!(row["last_delivered_event"], 4, "{row}");
    // refusals
    let (s, v) = post(&c, &format!("{}?from=3&to=9", act("resend")), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("delivered up to event 4"),
        "{v}"
    );
    let (s, v) = post(&c, &act("resend"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = post(&c, &act("activate"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "active is not error: {v}");
    let (s, _) = post(&c, &act("explode"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = post(
        &c,
        &format!("{}/admin/subscriptions/r4/nope/retry", h.root),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // retry, then off through the write path
    assert_eq!(post(&c, &act("retry"), None).await.0, StatusCode::OK);
    let (s, v) = post(&c, &act("off"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stored = get(&c, &format!("{base}/Subscription/{id}")).await;
    assert_eq!(stored["status"], "off", "{stored}");
    // every action, newest first, with who did it
    let audit = get(&c, &format!("{}/admin/audit?subscription={id}", h.root)).await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("off", "anonymous"),
            ("retry", "anonymous"),
            ("resend", "anonymous"),
            ("resume", "anonymous"),
            ("pause", "anonymous"),
        ]
    );
    let one = get(&c, &format!("{}/admin/subscriptions/r4/{id}", h.root)).await;
    assert_eq!(one["actions"][2]["detail"], "events 2-3", "{one}");
}

#[tokio::test]
async fn an_error_subscription_is_set_active_by_an_operator_and_health_says_degraded_until_then() {
    let rx = Receiver::start().await;
    let h = herald(&[("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[3600]")]);
    let c = client();
    assert_eq!(
        c.get(format!("{}/readyz", h.root))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let id = active_subscription(&c, &h, &rx.url("/hook")).await;
    let healthy = get(&c, &format!("{}/admin/health", h.root)).await;
    assert_eq!(healthy["status"], "ok", "{healthy}");
    rx.set(Behaviour::Status(500, None));
    create(&c, &h.fhir("r4"), "Task", &task("Organization/lab")).await;
    let row = live_until(&c, &h, &id, "a failure", |r| r["consecutive_failures"] == 1).await;
    assert!(row["next_attempt_at_ms"].as_u64().is_some(), "{row}");
    let health = get(&c, &format!("{}/admin/health", h.root)).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["failing"], 1, "{health}");
    assert_eq!(health["backlog"], 1, "{health}");
    assert!(
        health["oldest_pending_age_secs"].as_f64().is_some(),
        "{health}"
    );
    assert!(health["disk_bytes"].as_u64().unwrap() > 0, "{health}");
    // two more tries on the operator's word make three failures: `error`
    for n in 2..=3 {
        let (s, v) = post(
            &c,
            &format!("{}/admin/subscriptions/r4/{id}/retry", h.root),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        live_until(&c, &h, &id, "one more failure", |r| {
            r["consecutive_failures"].as_u64() == Some(n)
        })
        .await;
    }
    live_until(&c, &h, &id, "error", |r| r["status"] == "error").await;
    // the receiver is fixed; the operator sets it active, which also tries at once
    rx.set(Behaviour::Accept);
    let (s, v) = post(
        &c,
        &format!("{}/admin/subscriptions/r4/{id}/activate", h.root),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stored = get(&c, &format!("{}/Subscription/{id}", h.fhir("r4"))).await;
    assert_eq!(stored["status"], "active", "{stored}");
    rx.wait_until("/hook", "event 1", WAIT, |got| {
        delivered_events(got).contains(&1)
    })
    .await;
    let row = live_until(&c, &h, &id, "recovered", |r| r["health"] == "ok").await;
    assert_eq!(row["status"], "active", "{row}");
    assert_eq!(
        get(&c, &format!("{}/admin/health", h.root)).await["status"],
        "ok"
    );
}

#[tokio::test]
async fn the_admin_cli_prints_tables_by_default_and_json_on_request() {
    let rx = Receiver::start().await;
    let h = herald(&[]);
    let c = client();
    let id = active_subscription(&c, &h, &rx.url("/hook")).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(herald_tests::herald_bin())
            .arg("admin")
            .args(["--url", &h.root])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, table, err) = cli(&["subscriptions"]);
    assert!(ok, "{err}");
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("TENANT"), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.contains(&id) && row.contains("active") && row.contains("ok"),
        "{table}"
    );
    let (ok, json, err) = cli(&["--json", "subscriptions"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["subscriptions"][0]["id"], id.as_str());
    let (ok, out, err) = cli(&["pause", "r4", &id]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("pause r4/{id} (by anonymous)")),
        "{out}"
    );
    let (ok, out, err) = cli(&["attempts", "--subscription", &id]);
    assert!(ok, "{err}");
    assert!(
        out.lines().nth(1).is_some_and(|l| l.contains("handshake")),
        "{out}"
    );
    let (ok, _, err) = cli(&["resend", "r4", &id, "--from", "5"]);
    assert!(!ok);
    assert!(
        err.contains("422") && err.contains("delivered up to event 0"),
        "{err}"
    );
    let (ok, out, err) = cli(&["health"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("paused") && out.contains("disk_bytes"),
        "{out}"
    );
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn with_auth_on_only_the_admin_role_operates_and_the_audit_names_the_client() {
    let (admin_key, lab_key) = ("admin-key-0123456789abcdef", "lab-key-0123456789abcdef");
    let toml = format!(
        "[[auth.api_keys]]\nclient_id = \"ops\"\nkey_sha256 = \"{}\"\nroles = [\"admin\"]\nscopes = \"system/*.cruds\"\n\n[[auth.api_keys]]\nclient_id = \"lab\"\nkey_sha256 = \"{}\"\nidentity = \"Organization/lab\"\nroles = [\"fulfiller\"]\nscopes = \"system/*.cruds\"\n",
        sha256_hex(admin_key),
        sha256_hex(lab_key)
    );
    let rx = Receiver::start().await;
    let h = Herald::start_with_config(&toml, &[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    let r = c
        .post(format!("{}/Subscription", h.fhir("r4")))
        .bearer_auth(admin_key)
        .header("content-type", "application/fhir+json")
        .body(r4_subscription("cow-task-changed", &[], &rx.url("/hook"), "id-only").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pause = format!("{}/admin/subscriptions/r4/{id}/pause", h.root);
    for (method, url) in [
        ("GET", format!("{}/admin", h.root)),
        ("GET", format!("{}/admin/health", h.root)),
        ("GET", format!("{}/admin/attempts", h.root)),
        ("GET", format!("{}/metrics", h.root)),
        ("POST", pause.clone()),
        (
            "POST",
            format!("{}/admin/ui/subscriptions/r4/{id}/pause", h.root),
        ),
    ] {
        let req = |key: Option<&str>| {
            let r = if method == "GET" {
                c.get(&url)
            } else {
                c.post(&url)
            };
            match key {
                Some(k) => r.bearer_auth(k),
                None => r,
            }
        };
        assert_eq!(req(None).send().await.unwrap().status(), 401, "{url}");
        assert_eq!(
            req(Some(lab_key)).send().await.unwrap().status(),
            403,
            "{url}"
        );
    }
    let r = c.post(&pause).bearer_auth(admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let audit: Value = c
        .get(format!("{}/admin/audit", h.root))
        .bearer_auth(admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["actor"], "ops", "{audit}");
    assert_eq!(
        audit["count"], 1,
        "the refused attempts did nothing: {audit}"
    );
    // the key never shows up in what the admin sees
    let page = c
        .get(format!("{}/admin/ui/subscriptions/r4/{id}", h.root))
        .bearer_auth(admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<b>pause</b> by ops"), "{page}");
    assert!(!page.contains(admin_key));
}
