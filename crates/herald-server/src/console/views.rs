//! What the console's templates see: every value pre-formatted as text here (ages, instants,
//! event ranges, links), so the templates only place strings and never compute.

use std::collections::HashMap;

use herald_store::{AttemptFilter, AttemptPage, AttemptRecord, AuditRecord};
use serde::Serialize;

use super::spark::{self, Activity};
use crate::admin::Health;
use crate::admin::rows::Row;

/// A path segment, percent-encoded (ids and tenants are FHIR ids, but never trust that in a URL).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn age(secs: Option<f64>) -> String {
    match secs {
        None => "-".to_owned(),
        Some(s) if s < 1.0 => "< 1 s".to_owned(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) if s < 7200.0 => format!("{:.0} min", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} d", s / 86400.0),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn when(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".to_owned() };
    let now = herald_delivery::timers::unix_ms();
    if ms > now {
        format!("in {}", age(Some((ms - now) as f64 / 1000.0)))
    } else {
        format!("{} ago", age(Some((now - ms) as f64 / 1000.0)))
    }
}

/// When the next attempt goes, as an operator needs to read it: a paused or parked
/// subscription sends nothing whatever its retry time says.
fn next_attempt(r: &Row) -> String {
    if r.paused {
        "paused".to_owned()
    } else if r.parked {
        "parked: retry to resume".to_owned()
    } else {
        when(r.next_attempt_at_ms)
    }
}

fn events(list: &[u64]) -> String {
    match (list.first(), list.last()) {
        (Some(a), Some(b)) if a == b => format!("event {a}"),
        (Some(a), Some(b)) => format!("events {a}-{b}"),
        _ => String::new(),
    }
}

fn sub_link(tenant: &str, id: &str) -> String {
    format!(
        "/admin/ui/subscriptions/{}/{}",
        path_segment(tenant),
        path_segment(id)
    )
}

#[derive(Serialize)]
pub struct HealthView {
    status: String,
    class: String,
    subscriptions: usize,
    backlog: u64,
    failing: usize,
    failing_bad: bool,
    parked: usize,
    paused: usize,
    oldest: String,
    disk: String,
}

#[derive(Serialize)]
pub struct RowView {
    tenant: String,
    id: String,
    link: String,
    status: String,
    health: String,
    channel: String,
    topic: String,
    queue: u64,
    oldest: String,
    failures: u32,
    last_error: String,
    next_attempt: String,
    in_flight: Option<String>,
    spark: String,
}

#[derive(Serialize)]
pub struct IndexView {
    health: HealthView,
    heading: String,
    explain: String,
    rows: Vec<RowView>,
}

/// The subscriptions page.
pub fn index(
    rows: &[Row],
    h: &Health,
    activity: &HashMap<(String, String), Activity>,
    view: &str,
) -> IndexView {
    let empty = Activity::default();
    IndexView {
        health: HealthView {
            status: h.status.clone(),
            class: h.status.clone(),
            subscriptions: h.subscriptions,
            backlog: h.backlog,
            failing: h.failing,
            failing_bad: h.failing > 0,
            parked: h.parked,
            paused: h.paused,
            oldest: age(h.oldest_pending_age_secs),
            disk: bytes(h.disk_bytes),
        },
        heading: match view {
            "failing" => "Failing subscriptions",
            _ => "Subscriptions",
        }
        .to_owned(),
        explain: match view {
            "failing" => "Only subscriptions whose deliveries fail or stopped.",
            "id" => "All subscriptions by tenant and id.",
            _ => "Failing subscriptions first.",
        }
        .to_owned(),
        rows: rows
            .iter()
            .map(|r| RowView {
                tenant: r.tenant.clone(),
                id: r.id.clone(),
                link: sub_link(&r.tenant, &r.id),
                status: r.status.clone(),
                health: r.health.clone(),
                channel: r.channel.clone(),
                topic: r.topic.rsplit('/').next().unwrap_or(&r.topic).to_owned(),
                queue: r.queue_depth,
                oldest: age(r.oldest_pending_age_secs),
                failures: r.consecutive_failures,
                last_error: r.last_error.clone().unwrap_or_default(),
                next_attempt: next_attempt(r),
                in_flight: r.in_flight.clone(),
                spark: spark::svg(
                    activity
                        .get(&(r.tenant.clone(), r.id.clone()))
                        .unwrap_or(&empty),
                    120,
                    24,
                ),
            })
            .collect(),
    }
}

#[derive(Serialize)]
pub struct DetailRow {
    tenant: String,
    id: String,
    status: String,
    health: String,
    channel: String,
    endpoint: String,
    topic: String,
    events: u64,
    delivered: u64,
    queue: u64,
    oldest: String,
    failures: u32,
    failures_bad: bool,
    next_attempt: String,
    pruned: u64,
    last_error: Option<String>,
    in_flight: Option<String>,
    paused: bool,
    is_error: bool,
    is_off: bool,
}

#[derive(Serialize)]
pub struct AttemptView {
    link: String,
    at: String,
    tenant: String,
    subscription: String,
    kind: String,
    events: String,
    outcome: String,
    http: String,
    latency: String,
    error: Option<String>,
    endpoint: String,
}

fn attempt_view(id: &str, a: &AttemptRecord) -> AttemptView {
    AttemptView {
        link: format!("/admin/ui/attempts/{}", path_segment(id)),
        at: a.at.clone(),
        tenant: a.tenant.clone(),
        subscription: a.subscription.clone(),
        kind: a.notification_type.clone(),
        events: events(&a.events),
        outcome: a.outcome.clone(),
        http: a
            .http_status
            .map(|s| format!("HTTP {s}"))
            .unwrap_or_default(),
        latency: format!("{:.0} ms", a.latency_ms),
        error: a.error.clone(),
        endpoint: a.endpoint.clone(),
    }
}

#[derive(Serialize)]
pub struct AuditView {
    at: String,
    action: String,
    actor: String,
    detail: String,
}

#[derive(Serialize)]
pub struct SubscriptionView {
    row: DetailRow,
    base: String,
    spark: String,
    spark_max: u64,
    latency_max: String,
    attempts: Vec<AttemptView>,
    audit: Vec<AuditView>,
}

/// A subscription's page.
pub fn subscription(
    r: &Row,
    attempts: &[(String, AttemptRecord)],
    audit: &[AuditRecord],
    pruned: u64,
    activity: &HashMap<(String, String), Activity>,
) -> SubscriptionView {
    let act = activity
        .get(&(r.tenant.clone(), r.id.clone()))
        .copied()
        .unwrap_or_default();
    let (max_d, max_l) = spark::maxima(&act);
    SubscriptionView {
        row: DetailRow {
            tenant: r.tenant.clone(),
            id: r.id.clone(),
            status: r.status.clone(),
            health: r.health.clone(),
            channel: r.channel.clone(),
            endpoint: r.endpoint.clone().unwrap_or_else(|| "-".to_owned()),
            topic: r.topic.clone(),
            events: r.events_since_start,
            delivered: r.last_delivered_event,
            queue: r.queue_depth,
            oldest: age(r.oldest_pending_age_secs),
            failures: r.consecutive_failures,
            failures_bad: r.consecutive_failures > 0,
            next_attempt: next_attempt(r),
            pruned,
            last_error: r.last_error.clone(),
            in_flight: r.in_flight.clone(),
            paused: r.paused,
            is_error: r.status == "error",
            is_off: r.status == "off",
        },
        base: format!(
            "/admin/ui/subscriptions/{}/{}",
            path_segment(&r.tenant),
            path_segment(&r.id)
        ),
        spark: spark::svg(&act, 480, 80),
        spark_max: max_d,
        latency_max: format!("{max_l:.0} ms"),
        attempts: attempts.iter().map(|(id, a)| attempt_view(id, a)).collect(),
        audit: audit
            .iter()
            .map(|x| AuditView {
                at: x.at.clone(),
                action: x.action.clone(),
                actor: x.actor.clone(),
                detail: x.detail.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

#[derive(Serialize)]
pub struct HeaderView {
    name: String,
    value: String,
}

#[derive(Serialize)]
pub struct OneAttemptView {
    id: String,
    a: AttemptView,
    sub_link: String,
    headers: Vec<HeaderView>,
    body: String,
}

/// One attempt's page.
pub fn attempt(id: &str, a: &AttemptRecord) -> OneAttemptView {
    OneAttemptView {
        id: id.to_owned(),
        a: attempt_view(id, a),
        sub_link: sub_link(&a.tenant, &a.subscription),
        headers: a
            .request_headers
            .iter()
            .map(|(n, v)| HeaderView {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
        body: a
            .response_body
            .clone()
            .unwrap_or_else(|| "(none)".to_owned()),
    }
}

#[derive(Serialize)]
pub struct FilterView {
    subscription: String,
    delivered: String,
    failed: String,
    http_status: String,
}

#[derive(Serialize)]
pub struct AttemptsView {
    f: FilterView,
    attempts: Vec<AttemptView>,
    next: Option<String>,
}

/// The attempt log page.
pub fn attempts(f: &AttemptFilter, p: &AttemptPage) -> AttemptsView {
    let selected = |o: &str| {
        if f.outcome.as_deref() == Some(o) {
            "selected".to_owned()
        } else {
            String::new()
        }
    };
    let mut q: Vec<(String, String)> = Vec::new();
    if let Some(s) = &f.subscription {
        q.push(("subscription".into(), s.clone()));
    }
    if let Some(o) = &f.outcome {
        q.push(("outcome".into(), o.clone()));
    }
    if let Some(h) = f.http_status {
        q.push(("http_status".into(), h.to_string()));
    }
    AttemptsView {
        f: FilterView {
            subscription: f.subscription.clone().unwrap_or_default(),
            delivered: selected("delivered"),
            failed: selected("failed"),
            http_status: f.http_status.map(|h| h.to_string()).unwrap_or_default(),
        },
        attempts: p
            .entries
            .iter()
            .map(|(id, a)| attempt_view(id, a))
            .collect(),
        next: p.next.as_ref().map(|c| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &q {
                s.append_pair(k, v);
            }
            s.append_pair("cursor", c);
            format!("/admin/ui/attempts?{}", s.finish())
        }),
    }
}
