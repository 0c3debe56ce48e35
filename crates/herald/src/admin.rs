//! `herald admin …`: the admin API from a shell, against a running server (its URL and a bearer
//! credential from flags or `HERALD_URL` / `HERALD_TOKEN`). Human-readable tables by default,
//! the API's JSON with `--json` for scripts. Errors print the server's OperationOutcome text.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where and as whom.
#[derive(Args, Debug)]
pub struct Target {
    /// Herald's root URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer credential (an API key or access token with the admin role); not needed when
    /// authentication is off.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The admin commands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Subscriptions with their live delivery state (failing first).
    Subscriptions {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this status (requested, active, error, off).
        #[arg(long)]
        status: Option<String>,
        /// Only failing or parked ones.
        #[arg(long)]
        failing: bool,
    },
    /// Delivery attempts, newest first.
    Attempts {
        /// Only this subscription.
        #[arg(long)]
        subscription: Option<String>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only `delivered` or `failed`.
        #[arg(long)]
        outcome: Option<String>,
        /// Only this HTTP status.
        #[arg(long)]
        http_status: Option<u16>,
        /// Only at or after (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only before (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// The `next` cursor of an earlier page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Try a subscription's delivery now (forgets the retry wait and a parking).
    Retry(Sub),
    /// Start over: try now and forget the failure streak too.
    Redrive(Sub),
    /// Send delivered events again.
    Resend {
        #[command(flatten)]
        sub: Sub,
        /// First event number.
        #[arg(long)]
        from: u64,
        /// Last event number (default: `from`).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Stop sending (events keep being recorded).
    Pause(Sub),
    /// Send again after a pause.
    Resume(Sub),
    /// Move a subscription from `error` back to `active`.
    Activate(Sub),
    /// Turn a subscription off.
    Off(Sub),
    /// The health summary.
    Health,
}

/// A subscription.
#[derive(Args, Debug)]
pub struct Sub {
    /// Tenant (e.g. r4).
    tenant: String,
    /// Subscription id.
    id: String,
}

/// Runs one command.
pub fn run(target: &Target, cmd: AdminCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run_async(target, cmd))
}

async fn run_async(t: &Target, cmd: AdminCommand) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let root = t.url.trim_end_matches('/');
    let (method, path, query): (reqwest::Method, String, Vec<(&str, String)>) = match &cmd {
        AdminCommand::Subscriptions {
            tenant,
            status,
            failing,
        } => {
            let mut q = vec![("sort", "failing-first".to_owned())];
            push(&mut q, "tenant", tenant.clone());
            push(&mut q, "status", status.clone());
            if *failing {
                q.push(("failing", "true".to_owned()));
            }
            (reqwest::Method::GET, "/admin/subscriptions".into(), q)
        }
        AdminCommand::Attempts {
            subscription,
            tenant,
            outcome,
            http_status,
            since,
            until,
            count,
            cursor,
        } => {
            let mut q = vec![("_count", count.to_string())];
            push(&mut q, "subscription", subscription.clone());
            push(&mut q, "tenant", tenant.clone());
            push(&mut q, "outcome", outcome.clone());
            push(&mut q, "http_status", http_status.map(|h| h.to_string()));
            push(&mut q, "since", since.clone());
            push(&mut q, "until", until.clone());
            push(&mut q, "cursor", cursor.clone());
            (reqwest::Method::GET, "/admin/attempts".into(), q)
        }
        AdminCommand::Retry(s) => action(s, "retry"),
        AdminCommand::Redrive(s) => action(s, "redrive"),
        AdminCommand::Pause(s) => action(s, "pause"),
        AdminCommand::Resume(s) => action(s, "resume"),
        AdminCommand::Activate(s) => action(s, "activate"),
        AdminCommand::Off(s) => action(s, "off"),
        AdminCommand::Resend { sub, from, to } => {
            let (m, p, _) = action(sub, "resend");
            (
                m,
                p,
                vec![
                    ("from", from.to_string()),
                    ("to", to.unwrap_or(*from).to_string()),
                ],
            )
        }
        AdminCommand::Health => (reqwest::Method::GET, "/admin/health".into(), Vec::new()),
    };
    let mut req = client
        .request(method, format!("{root}{path}"))
        .query(&query);
    if let Some(token) = &t.token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach Herald at {root}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let why = body["issue"][0]["diagnostics"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        bail!("{status}: {why}");
    }
    if t.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let text = match cmd {
        AdminCommand::Subscriptions { .. } => subscriptions_table(&body),
        AdminCommand::Attempts { .. } => attempts_table(&body),
        AdminCommand::Health => health_table(&body),
        _ => {
            let p = &body["performed"];
            let s = &body["subscription"];
            format!(
                "{} {}/{}{} (by {}): now {}, health {}, queue {}",
                p["action"].as_str().unwrap_or("?"),
                p["tenant"].as_str().unwrap_or("?"),
                p["subscription"].as_str().unwrap_or("?"),
                p["detail"]
                    .as_str()
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default(),
                p["by"].as_str().unwrap_or("?"),
                s["status"].as_str().unwrap_or("?"),
                s["health"].as_str().unwrap_or("?"),
                s["queue_depth"],
            )
        }
    };
    println!("{text}");
    Ok(())
}

fn push(q: &mut Vec<(&'static str, String)>, name: &'static str, v: Option<String>) {
    if let Some(v) = v {
        q.push((name, v));
    }
}

fn action(s: &Sub, name: &str) -> (reqwest::Method, String, Vec<(&'static str, String)>) {
    (
        reqwest::Method::POST,
        format!("/admin/subscriptions/{}/{}/{name}", s.tenant, s.id),
        Vec::new(),
    )
}

/// A cell's text: strings as they are, null as `-`, anything else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligns columns; long cells are cut so a row stays on one line.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    const MAX: usize = 48;
    let cut = |s: &str| -> String {
        if s.chars().count() > MAX {
            let mut t: String = s.chars().take(MAX - 1).collect();
            t.push('…');
            t
        } else {
            s.to_owned()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

fn subscriptions_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["subscriptions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                cell(&s["tenant"]),
                cell(&s["id"]),
                cell(&s["status"]),
                cell(&s["health"]),
                cell(&s["queue_depth"]),
                cell(&s["consecutive_failures"]),
                cell(&s["next_attempt_at"]),
                cell(&s["last_error"]),
            ]
        })
        .collect();
    table(
        &[
            "TENANT",
            "ID",
            "STATUS",
            "HEALTH",
            "QUEUE",
            "FAILS",
            "NEXT ATTEMPT",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn attempts_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let events = a["events"]
                .as_array()
                .filter(|e| !e.is_empty())
                .map(|e| match (e.first(), e.last()) {
                    (Some(f), Some(l)) if f == l => f.to_string(),
                    (Some(f), Some(l)) => format!("{f}-{l}"),
                    _ => "-".to_owned(),
                })
                .unwrap_or_else(|| "-".to_owned());
            vec![
                cell(&a["at"]),
                format!("{}/{}", cell(&a["tenant"]), cell(&a["subscription"])),
                cell(&a["notification_type"]),
                events,
                cell(&a["outcome"]),
                cell(&a["http_status"]),
                format!("{:.0} ms", a["latency_ms"].as_f64().unwrap_or(0.0)),
                cell(&a["error"]),
                cell(&a["id"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "AT",
            "SUBSCRIPTION",
            "TYPE",
            "EVENTS",
            "OUTCOME",
            "HTTP",
            "LATENCY",
            "ERROR",
            "ID",
        ],
        &rows,
    );
    if let Some(next) = body["next"].as_str() {
        out.push_str(&format!("\nmore: --cursor {next}"));
    }
    out
}

fn health_table(body: &Value) -> String {
    let keys = [
        "status",
        "subscriptions",
        "backlog",
        "failing",
        "parked",
        "paused",
        "oldest_pending_age_secs",
        "disk_bytes",
    ];
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec![(*k).to_owned(), cell(&body[*k])])
        .collect();
    table(&["", ""], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_show_missing_values_as_a_dash() {
        let body = serde_json::json!({"subscriptions": [
            {"tenant": "r4", "id": "a", "status": "active", "health": "ok", "queue_depth": 0,
             "consecutive_failures": 0, "next_attempt_at": null, "last_error": null},
            {"tenant": "r4", "id": "long-id", "status": "error", "health": "failing",
             "queue_depth": 12, "consecutive_failures": 3,
             "next_attempt_at": "2026-12-03T14:00:00Z", "last_error": "connect: connection refused"},
        ]});
        let t = subscriptions_table(&body);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("TENANT  ID       STATUS"), "{t}");
        assert!(lines[1].contains("active  ok"), "{t}");
        assert!(lines[1].ends_with('-'), "{t}");
        assert!(lines[2].ends_with("connect: connection refused"), "{t}");
    }
}
