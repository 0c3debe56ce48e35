//! Delivery settings (`[delivery]` in `config/herald.toml`).

use serde::{Deserialize, Serialize};

use crate::egress::{Allowlist, Guard};

/// How Herald delivers notifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Allow endpoints on loopback, private, link-local or unspecified addresses (local set-ups
    /// and tests). Off by default: a subscriber must not be able to make Herald call into the
    /// network it runs in.
    pub allow_private_endpoints: bool,
    /// Internal endpoints subscribers may target while the guard is on: CIDRs (`10.20.0.0/16`,
    /// `fd00:1::/64`) and `host:port` entries (`receiver.internal:8443`, `10.1.2.3:9000`).
    /// Every other internal address stays refused. See [`crate::egress`] for the rules.
    pub private_endpoint_allowlist: Allowlist,
    /// Request timeout when the Subscription sets none (`timeout`), in seconds.
    pub default_timeout_secs: u64,
    /// Delays before each retry, in seconds; the last one repeats until `retry_horizon_secs`
    /// has passed since the first failure of the streak. Each delay gets ±20 % jitter.
    pub retry_schedule_secs: Vec<u64>,
    /// How long a failing subscription is retried before it is parked (attempts stop until an
    /// operator redrives it or the client re-requests it). Default: 3 days.
    pub retry_horizon_secs: u64,
    /// Bounds applied to a `Retry-After` answer, in seconds.
    pub retry_after_min_secs: u64,
    /// See `retry_after_min_secs`.
    pub retry_after_max_secs: u64,
    /// Consecutive failures after which the subscription's status becomes `error`.
    pub error_after_failures: u32,
    /// Events per notification when the Subscription sets no `maxCount` (a backlog is sent in
    /// batches of this size).
    pub default_max_count: u32,
    /// Delivery-log entries kept (oldest dropped first).
    pub attempt_log_max: usize,
    /// Response-body bytes kept per logged attempt.
    pub attempt_log_body_bytes: usize,
    /// How long a `$get-ws-binding-token` token may be used, and how long the binding made with
    /// it lasts unless the client binds again with a fresh token, in seconds.
    pub ws_token_ttl_secs: u64,
    /// Notifications buffered per websocket; a socket whose buffer fills (a client that does not
    /// read) is disconnected with a reason.
    pub ws_send_buffer: usize,
    /// After `Subscription/{id}/$signing-secret?rotate=true`, how long the replaced secret keeps
    /// signing alongside the new one (both signatures in `webhook-signature`), in seconds: the
    /// time a receiver has to switch. 0 ends the old secret at once.
    pub signing_rotation_overlap_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            allow_private_endpoints: false,
            private_endpoint_allowlist: Allowlist::default(),
            default_timeout_secs: 10,
            retry_schedule_secs: vec![5, 30, 120, 600, 1800, 3600],
            retry_horizon_secs: 3 * 24 * 3600,
            retry_after_min_secs: 1,
            retry_after_max_secs: 3600,
            error_after_failures: 5,
            default_max_count: 100,
            attempt_log_max: 100_000,
            attempt_log_body_bytes: 1024,
            ws_token_ttl_secs: 300,
            ws_send_buffer: 64,
            signing_rotation_overlap_secs: 24 * 3600,
        }
    }
}

impl DeliveryConfig {
    /// The egress guard these settings describe.
    pub fn guard(&self) -> Guard {
        Guard::new(
            self.allow_private_endpoints,
            self.private_endpoint_allowlist.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<DeliveryConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn the_allowlist_is_empty_by_default() {
        assert!(
            DeliveryConfig::default()
                .private_endpoint_allowlist
                .is_empty()
        );
    }

    #[test]
    fn the_allowlist_reads_a_list_or_a_comma_separated_string() {
        let list = parse(serde_json::json!({
            "private_endpoint_allowlist": ["10.20.0.0/16", "receiver.internal:8443"]
        }))
        .expect("list");
        let text = parse(serde_json::json!({
            "private_endpoint_allowlist": "10.20.0.0/16, receiver.internal:8443"
        }))
        .expect("text");
        assert_eq!(
            list.private_endpoint_allowlist,
            text.private_endpoint_allowlist
        );
        assert_eq!(
            serde_json::to_value(&list).expect("json")["private_endpoint_allowlist"],
            serde_json::json!(["10.20.0.0/16", "receiver.internal:8443"])
        );
    }

    #[test]
    fn an_invalid_allowlist_entry_refuses_the_configuration() {
        let err = parse(serde_json::json!({
            "private_endpoint_allowlist": ["10.20.0.0/16", "10.1.2.3"]
        }))
        .expect_err("bare address");
        assert!(err.contains("'10.1.2.3'"), "{err}");
        let err =
            parse(serde_json::json!({ "private_endpoint_allowlist": 5 })).expect_err("number");
        assert!(err.contains("private_endpoint_allowlist"), "{err}");
    }
}
