//! Per-subscription activity over the last hour from the attempt log — events delivered and
//! mean attempt latency per five minutes — and its inline SVG sparkline (bars: throughput,
//! line: latency). Numbers only go into the SVG, so nothing needs escaping.

use std::collections::HashMap;

use herald_store::{AttemptFilter, AttemptLog};

use crate::error::ApiResult;

/// Buckets per hour.
pub const BUCKETS: usize = 12;
const BUCKET_MS: u64 = 5 * 60 * 1000;
/// Attempts read at most per page view.
const MAX_ATTEMPTS: usize = 20_000;

/// One bucket: events delivered, attempts, summed latency (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// Events carried by delivered notifications.
    pub delivered: u64,
    /// Attempts of any outcome.
    pub attempts: u64,
    /// Sum of their latencies (ms).
    pub latency_ms: f64,
    /// Attempts that failed.
    pub failed: u64,
}

/// The last hour, oldest bucket first.
pub type Activity = [Bucket; BUCKETS];

/// Activity per `(tenant, subscription)` (of one subscription when `only` is given).
pub fn activity(
    store: &dyn AttemptLog,
    only: Option<(&str, &str)>,
) -> ApiResult<HashMap<(String, String), Activity>> {
    let now = herald_delivery::timers::unix_ms();
    let start = now.saturating_sub(BUCKET_MS * BUCKETS as u64);
    let filter = AttemptFilter {
        tenant: only.map(|o| o.0.to_owned()),
        subscription: only.map(|o| o.1.to_owned()),
        since_ms: Some(start),
        ..AttemptFilter::default()
    };
    let page = store
        .attempt_page(&filter, None, MAX_ATTEMPTS)?
        .unwrap_or_default();
    let mut out: HashMap<(String, String), Activity> = HashMap::new();
    for (_, a) in page.entries {
        let i = usize::try_from(a.at_ms.saturating_sub(start) / BUCKET_MS)
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1);
        let b = &mut out.entry((a.tenant, a.subscription)).or_default()[i];
        b.attempts += 1;
        b.latency_ms += a.latency_ms;
        if a.outcome == "delivered" {
            b.delivered += a.events.len() as u64;
        } else {
            b.failed += 1;
        }
    }
    Ok(out)
}

/// The largest throughput and mean latency of an hour.
pub fn maxima(a: &Activity) -> (u64, f64) {
    let delivered = a.iter().map(|b| b.delivered).max().unwrap_or(0);
    let latency = a
        .iter()
        .filter(|b| b.attempts > 0)
        .map(|b| b.latency_ms / b.attempts as f64)
        .fold(0.0, f64::max);
    (delivered, latency)
}

/// An inline SVG of `a`, `w`×`h` pixels.
pub fn svg(a: &Activity, w: u32, h: u32) -> String {
    let (max_d, max_l) = maxima(a);
    let (wf, hf) = (f64::from(w), f64::from(h));
    let slot = wf / BUCKETS as f64;
    let mut bars = String::new();
    let mut line = Vec::new();
    for (i, b) in a.iter().enumerate() {
        let x = i as f64 * slot;
        if max_d > 0 && b.delivered > 0 {
            let bh = (b.delivered as f64 / max_d as f64 * (hf - 2.0)).max(1.0);
            bars.push_str(&format!(
                r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
                x + 1.0,
                hf - bh,
                (slot - 2.0).max(1.0),
                bh
            ));
        }
        if b.failed > 0 {
            // A red mark along the bottom: this bucket had failures.
            bars.push_str(&format!(
                r#"<rect class="fail" x="{:.1}" y="{:.1}" width="{:.1}" height="3"/>"#,
                x + 1.0,
                hf - 3.0,
                (slot - 2.0).max(1.0)
            ));
        }
        if b.attempts > 0 {
            let mean = b.latency_ms / b.attempts as f64;
            let y = if max_l > 0.0 {
                hf - 1.0 - mean / max_l * (hf - 2.0)
            } else {
                hf - 1.0
            };
            line.push(format!("{:.1},{y:.1}", x + slot / 2.0));
            // a dot too, so a single bucket's latency shows
            bars.push_str(&format!(
                r#"<circle class="dot" cx="{:.1}" cy="{y:.1}" r="1.5"/>"#,
                x + slot / 2.0
            ));
        }
    }
    let total: u64 = a.iter().map(|b| b.delivered).sum();
    let attempts: u64 = a.iter().map(|b| b.attempts).sum();
    let failed: u64 = a.iter().map(|b| b.failed).sum();
    format!(
        r#"<svg class="spark" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><title>last hour: {total} events delivered in {attempts} attempts ({failed} failed); peak {max_d} per 5 min; slowest mean latency {max_l:.0} ms</title>{bars}<polyline class="lat" points="{}"/></svg>"#,
        line.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sparkline_scales_bars_to_the_busiest_bucket_and_says_what_it_shows() {
        let mut a: Activity = Default::default();
        a[0] = Bucket {
            delivered: 10,
            attempts: 2,
            latency_ms: 40.0,
            failed: 0,
        };
        a[11] = Bucket {
            delivered: 5,
            attempts: 1,
            latency_ms: 5.0,
            failed: 0,
        };
        a[5] = Bucket {
            delivered: 0,
            attempts: 1,
            latency_ms: 1.0,
            failed: 1,
        };
        let s = svg(&a, 120, 24);
        assert_eq!(s.matches(r#"<rect class="bar""#).count(), 2, "{s}");
        // the failing bucket is marked, and every bucket with attempts has a latency dot
        assert_eq!(s.matches(r#"<rect class="fail""#).count(), 1, "{s}");
        assert_eq!(s.matches("<circle").count(), 3, "{s}");
        // the busiest bucket fills the height (less the margin)
        assert!(s.contains(r#"y="2.0" width="8.0" height="22.0""#), "{s}");
        assert!(
            s.contains("15 events delivered in 4 attempts (1 failed)"),
            "{s}"
        );
        assert_eq!(maxima(&a), (10, 20.0));
    }
}
