//! The rest-hook channel: POST a notification bundle to the subscriber's endpoint with the
//! subscription's content type and headers and Herald's signature headers (`signing`), under
//! its timeout, without following redirects, through one shared connection-pooling client;
//! classify what came back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::channel::{Channel, Key, Notification, SendFuture, Sent};
use crate::egress;
use crate::policy::{Failure, parse_retry_after};
use crate::signing::{self, Signing};
use herald_subscriptions::{ChannelType, Subscription};

/// The shared HTTP client for deliveries.
#[derive(Clone)]
pub struct RestHook {
    client: reqwest::Client,
    /// One client per allow-listed `name:port`, whose resolver admits that name's internal
    /// addresses; used only for URLs with that host and port (reqwest's resolver does not see
    /// the port, so the port is fixed by the choice of client).
    named: Arc<HashMap<(String, u16), reqwest::Client>>,
    guard: egress::Guard,
    body_bytes: usize,
}

impl RestHook {
    /// Builds the client. Redirects are never followed: a subscriber's 3xx is a failure, not an
    /// instruction to call somewhere else.
    pub fn new(guard: &egress::Guard, body_bytes: usize) -> Result<Self, reqwest::Error> {
        let build = |port: Option<u16>| {
            let mut b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
                .no_proxy()
                .pool_max_idle_per_host(32);
            if let Some(r) = egress::resolver(guard, port) {
                b = b.dns_resolver(r);
            }
            b.build()
        };
        let mut named = HashMap::new();
        for (name, port) in egress::named_endpoints(guard) {
            named.insert((name, port), build(Some(port))?);
        }
        Ok(RestHook {
            client: build(None)?,
            named: Arc::new(named),
            guard: guard.clone(),
            body_bytes,
        })
    }

    /// The client for `url`: the one of its allow-listed `name:port`, else the general one.
    fn client_for(&self, url: &reqwest::Url) -> &reqwest::Client {
        if let (Some(url::Host::Domain(name)), Some(port)) =
            (url.host(), url.port_or_known_default())
            && let Some(c) = self.named.get(&(name.to_ascii_lowercase(), port))
        {
            return c;
        }
        &self.client
    }

    /// POSTs `bundle` to `endpoint`, signed with `signing` when given. The subscription's own
    /// headers named like the signature headers are not sent then: only Herald sets those.
    pub async fn post(
        &self,
        endpoint: &str,
        content_type: &str,
        headers: &[(String, String)],
        timeout: Duration,
        bundle: &Value,
        signing: Option<&Signing>,
    ) -> Sent {
        let mut sent_headers = vec![("content-type".to_owned(), content_type.to_owned())];
        let fail = |error: String, headers: Vec<(String, String)>| Sent {
            headers,
            endpoint: endpoint.to_owned(),
            ..Sent::failed(Failure::Transport, error)
        };
        let url = match reqwest::Url::parse(endpoint) {
            Ok(u) => u,
            Err(e) => return fail(format!("bad-endpoint: {e}"), sent_headers),
        };
        if let Some(e) = egress::literal_refused(&url, &self.guard) {
            return fail(format!("egress-refused: {e}"), sent_headers);
        }
        let mut map = HeaderMap::new();
        match HeaderValue::from_str(content_type) {
            Ok(v) => {
                map.insert(CONTENT_TYPE, v);
            }
            Err(_) => return fail("bad-header: content type".into(), sent_headers),
        }
        for (name, value) in headers {
            if signing.is_some() && is_signature_header(name) {
                continue;
            }
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) else {
                return fail(format!("bad-header: {name}"), sent_headers);
            };
            map.append(n, v);
            sent_headers.push((name.trim().to_ascii_lowercase(), redact(name, value)));
        }
        let body = bundle.to_string();
        if let Some(s) = signing {
            // Signed over exactly the bytes sent, at the moment they are sent.
            let timestamp = unix_secs();
            let signed = [
                (signing::ID_HEADER, s.id.clone()),
                (signing::TIMESTAMP_HEADER, timestamp.to_string()),
                (
                    signing::SIGNATURE_HEADER,
                    s.header(timestamp, body.as_bytes()),
                ),
            ];
            for (name, value) in signed {
                let Ok(v) = HeaderValue::from_str(&value) else {
                    return fail(format!("bad-header: {name}"), sent_headers);
                };
                map.insert(HeaderName::from_static(name), v);
                sent_headers.push((name.to_owned(), redact(name, &value)));
            }
        }
        let start = Instant::now();
        let result = self
            .client_for(&url)
            .post(url)
            .headers(map)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let class = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    if format!("{e:?}").contains("egress refused") {
                        "egress-refused"
                    } else {
                        "connect"
                    }
                } else {
                    "transport"
                };
                // The root of the chain ("connection refused"), not reqwest's outer
                // "error sending request for url".
                let cause = crate::cause::transport(&e, timeout);
                let mut s = fail(format!("{class}: {cause}"), sent_headers);
                s.latency = start.elapsed();
                return s;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = match tokio::time::timeout(timeout, resp.text()).await {
            Ok(Ok(t)) => Some(truncate(t, self.body_bytes)),
            _ => None,
        };
        let latency = start.elapsed();
        let ok = (200..300).contains(&status);
        Sent {
            failure: (!ok).then_some(Failure::Status(status)),
            status: Some(status),
            error: (!ok).then(|| format!("http-status: {}", crate::cause::status(status))),
            retry_after,
            latency,
            body: text,
            headers: sent_headers,
            endpoint: endpoint.to_owned(),
        }
    }
}

impl Channel for RestHook {
    fn kind(&self) -> ChannelType {
        ChannelType::RestHook
    }

    fn verifies_endpoint(&self) -> bool {
        true
    }

    fn signs(&self) -> bool {
        true
    }

    fn ready(&self, _key: &Key) -> bool {
        true
    }

    fn send(&self, sub: &Subscription, n: Notification) -> SendFuture {
        let hook = self.clone();
        let endpoint = sub.channel.endpoint.clone().unwrap_or_default();
        let content_type = sub.channel.content_type.clone();
        let headers = sub.channel.headers.clone();
        Box::pin(async move {
            hook.post(
                &endpoint,
                &content_type,
                &headers,
                n.timeout,
                &n.bundle,
                n.signing.as_ref(),
            )
            .await
        })
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_signature_header(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    [
        signing::ID_HEADER,
        signing::TIMESTAMP_HEADER,
        signing::SIGNATURE_HEADER,
    ]
    .contains(&n.as_str())
}

/// `s` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Header names whose values are shown in the delivery log. Every other header a subscriber
/// configures is shown as `[redacted]`: names do not tell secrets apart (`X-Auth`, `Bearer`,
/// `X-Client-Credential` all carry them), so only names known to be harmless are shown.
/// Herald's `webhook-id` and `webhook-timestamp` are shown; `webhook-signature` is not (it is
/// not needed to debug a delivery, and the log is no place to collect signatures).
pub const SHOWN_HEADERS: [&str; 11] = [
    "content-type",
    "accept",
    "accept-language",
    "content-language",
    "user-agent",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
    "webhook-id",
    "webhook-timestamp",
];

/// The value of a header as the delivery log and admin API may show it.
pub fn redact(name: &str, value: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if SHOWN_HEADERS.contains(&n.as_str()) {
        value.trim().to_owned()
    } else {
        "[redacted]".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_value_is_redacted_unless_its_name_is_known_harmless() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "x-auth",
            "X-Client-Credential",
            "bearer",
            "X-Trace",
        ] {
            assert_eq!(redact(name, "secret"), "[redacted]", "{name}");
        }
        assert_eq!(redact("X-Correlation-Id", " c1 "), "c1");
        assert_eq!(
            redact("Content-Type", "application/fhir+json"),
            "application/fhir+json"
        );
        assert_eq!(redact(" TraceParent ", "00-ab"), "00-ab");
    }

    /// A loopback server answering every request with `status` and `location`, counting hits.
    async fn server(
        status: u16,
        location: Option<String>,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            let location = location.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut r = axum::http::Response::builder().status(status);
                if let Some(l) = location {
                    r = r.header("location", l);
                }
                r.body(axum::body::Body::empty()).expect("response")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, hits)
    }

    /// A 302 from an allow-listed receiver to an internal address is a failed delivery; the
    /// internal address is never called — not even when the guard would admit it.
    #[tokio::test]
    async fn a_redirect_to_an_internal_address_is_a_failure_not_followed() {
        use std::sync::atomic::Ordering;
        let (internal, internal_hits) = server(200, None).await;
        let (receiver, receiver_hits) = server(302, Some(format!("http://{internal}/admin"))).await;
        let allowlisted = egress::Guard::new(
            false,
            egress::Allowlist::parse(&[receiver.to_string()]).expect("allow-list"),
        );
        for guard in [allowlisted, egress::Guard::allow_all()] {
            let hook = RestHook::new(&guard, 64).expect("client");
            let sent = hook
                .post(
                    &format!("http://{receiver}/hook"),
                    "application/fhir+json",
                    &[],
                    Duration::from_secs(5),
                    &serde_json::json!({}),
                    None,
                )
                .await;
            assert_eq!(sent.failure, Some(Failure::Status(302)), "{:?}", sent.error);
        }
        assert_eq!(receiver_hits.load(Ordering::SeqCst), 2);
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_allowlisted_address_is_delivered_to_and_its_neighbours_are_refused() {
        use std::sync::atomic::Ordering;
        let (receiver, hits) = server(200, None).await;
        let (other, other_hits) = server(200, None).await;
        let guard = egress::Guard::new(
            false,
            egress::Allowlist::parse(&[receiver.to_string()]).expect("allow-list"),
        );
        let hook = RestHook::new(&guard, 64).expect("client");
        let post = |url: String| {
            let hook = hook.clone();
            async move {
                hook.post(
                    &url,
                    "application/fhir+json",
                    &[],
                    Duration::from_secs(5),
                    &serde_json::json!({}),
                    None,
                )
                .await
            }
        };
        let ok = post(format!("http://{receiver}/hook")).await;
        assert_eq!(ok.status, Some(200), "{:?}", ok.error);
        for url in [
            format!("http://{other}/hook"),
            format!("http://localhost:{}/hook", receiver.port()),
        ] {
            let sent = post(url.clone()).await;
            assert_eq!(sent.failure, Some(Failure::Transport), "{url}");
            assert!(
                sent.error
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("egress-refused"),
                "{url}: {:?}",
                sent.error
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_signed_post_carries_the_signature_of_the_bytes_sent_and_logs_it_redacted() {
        use std::sync::{Arc, Mutex};
        type Seen = Arc<Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>>;
        let seen: Seen = Arc::default();
        let app = axum::Router::new().fallback({
            let seen = seen.clone();
            move |h: axum::http::HeaderMap, b: axum::body::Bytes| async move {
                seen.lock().expect("lock").push((h, b));
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let secret = signing::new_secret(0).expect("secret");
        let s = Signing::new("msg_test".into(), &[&secret]).expect("signing");
        let hook = RestHook::new(&egress::Guard::allow_all(), 1024).expect("client");
        let forged = vec![("Webhook-Signature".to_owned(), "v1,forged".to_owned())];
        let bundle = serde_json::json!({"resourceType": "Bundle", "id": "b1"});
        let before = unix_secs();
        let sent = hook
            .post(
                &format!("http://{addr}/hook"),
                "application/fhir+json",
                &forged,
                Duration::from_secs(5),
                &bundle,
                Some(&s),
            )
            .await;
        server.abort();
        assert!(sent.failure.is_none(), "{:?}", sent.error);

        let (headers, body) = seen.lock().expect("lock").pop().expect("one request");
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(get("webhook-id"), "msg_test");
        let ts: u64 = get("webhook-timestamp").parse().expect("timestamp");
        assert!(ts >= before && ts <= unix_secs());
        assert_eq!(headers.get_all("webhook-signature").iter().count(), 1);
        let key = signing::secret_key(&secret.secret).expect("key");
        let expected = signing::sign(&key, "msg_test", ts, &body).expect("sign");
        assert_eq!(get("webhook-signature"), format!("v1,{expected}"));

        let logged: Vec<(&str, &str)> = sent
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert!(logged.contains(&("webhook-id", "msg_test")));
        assert!(logged.contains(&("webhook-timestamp", ts.to_string().as_str())));
        assert!(logged.contains(&("webhook-signature", "[redacted]")));
        assert_eq!(
            logged
                .iter()
                .filter(|(n, _)| *n == "webhook-signature")
                .count(),
            1,
            "the subscription's own signature header is not sent: {logged:?}"
        );
        assert!(!format!("{logged:?}").contains(&expected));
    }

    #[test]
    fn long_bodies_are_truncated_on_char_boundaries() {
        assert_eq!(truncate("ééé".into(), 3), "é…");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
