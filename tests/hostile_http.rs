//! Hostile and malformed HTTP against the real binary: slow request heads (slowloris), idle
//! kept-alive connections, trickled bodies, the connection cap, oversized request targets and
//! headers, unknown routes and methods. No request may hang Herald or be refused without an
//! OperationOutcome. Timeouts here are upper bounds for "eventually", never performance
//! thresholds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_tests::{Herald, client, task};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FHIR: &str = "application/fhir+json";

/// Upper bound for anything that should happen "soon" (a closed socket, an answer).
const EVENTUALLY: Duration = Duration::from_secs(20);

fn addr(h: &Herald) -> String {
    h.root.trim_start_matches("http://").to_string()
}

async fn connect(h: &Herald) -> TcpStream {
    TcpStream::connect(addr(h)).await.expect("connect")
}

/// Waits for the peer to close the connection (EOF or reset); panics on any data.
async fn closed(mut s: impl AsyncRead + Unpin) {
    let mut buf = [0u8; 1024];
    if let Ok(n) = s.read(&mut buf).await {
        assert_eq!(
            n,
            0,
            "expected the connection to be closed, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

/// A raw HTTP/1.1 response: status, lower-cased head, body.
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response with a `Content-Length` body.
async fn read_response(s: &mut (impl AsyncRead + Unpin)) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("content-length"))
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head[9..12].parse().expect("status");
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            return RawResponse { status, head, body };
        }
        let n = s.read(&mut chunk).await.expect("read head");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends a complete GET on a kept-alive connection and reads its answer.
async fn get_raw(s: &mut TcpStream, path: &str) -> RawResponse {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_response(s).await
}

/// Opens a connection that sends the start of a request head, then one more header byte every
/// 500 ms and never finishes. Returns the read half and the trickling task.
async fn slowloris(h: &Herald) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let s = connect(h).await;
    let (r, mut w) = s.into_split();
    w.write_all(b"GET /fhir/r4/metadata HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if w.write_all(b"X").await.is_err() {
                return;
            }
        }
    });
    (r, trickle)
}

async fn metadata_is_served(h: &Herald) {
    let r = client()
        .get(format!("{}/metadata", h.fhir("r4")))
        .send()
        .await
        .expect("metadata request");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Asserts an OperationOutcome answer with `status` whose diagnostics mention `needle`.
async fn assert_outcome(r: reqwest::Response, status: StatusCode, needle: &str) {
    assert_eq!(r.status(), status);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with(FHIR), "content-type {ct}");
    let body: Value = r.json().await.expect("json body");
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let diag = body["issue"][0]["diagnostics"].as_str().unwrap_or_default();
    assert!(diag.contains(needle), "'{diag}' should mention '{needle}'");
}

#[tokio::test]
async fn slowloris_connection_is_closed_after_the_header_timeout_while_others_are_served() {
    let h = Herald::start_with(&[("HERALD__SERVER__HEADER_READ_TIMEOUT_SECS", "1")]);
    let (read, trickle) = slowloris(&h).await;
    metadata_is_served(&h).await;
    tokio::time::timeout(EVENTUALLY, closed(read))
        .await
        .expect("the slow connection should be closed");
    trickle.abort();
    metadata_is_served(&h).await;
}

#[tokio::test]
async fn many_slowloris_connections_do_not_stop_a_normal_client() {
    let h = Herald::start_with(&[("HERALD__SERVER__HEADER_READ_TIMEOUT_SECS", "30")]);
    let mut attackers = Vec::new();
    for _ in 0..50 {
        attackers.push(slowloris(&h).await);
    }
    metadata_is_served(&h).await;
    // The attack was still under way while the client was served.
    let mut buf = [0u8; 16];
    for (read, _) in &attackers {
        match read.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a slow connection should still be open, got {other:?}"),
        }
    }
    for (_, trickle) in attackers {
        trickle.abort();
    }
}

#[tokio::test]
async fn idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let h = Herald::start_with(&[
        ("HERALD__SERVER__KEEP_ALIVE_TIMEOUT_SECS", "1"),
        // Far beyond EVENTUALLY: only the keep-alive timeout can close the connection in time.
        ("HERALD__SERVER__HEADER_READ_TIMEOUT_SECS", "120"),
    ]);
    let mut s = connect(&h).await;
    assert_eq!(get_raw(&mut s, "/healthz").await.status, 200);
    // Kept alive: a second request on the same connection is served.
    assert_eq!(get_raw(&mut s, "/healthz").await.status, 200);
    tokio::time::timeout(EVENTUALLY, closed(s))
        .await
        .expect("the idle connection should be closed");
}

#[tokio::test]
async fn body_trickled_slower_than_the_body_timeout_gets_408_outcome() {
    let h = Herald::start_with(&[("HERALD__SERVER__BODY_READ_TIMEOUT_SECS", "1")]);
    let s = connect(&h).await;
    let (mut r, mut w) = s.into_split();
    w.write_all(
        b"POST /fhir/r4/Task HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n\
          Content-Length: 1000\r\n\r\n{",
    )
    .await
    .expect("write");
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if w.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let resp = tokio::time::timeout(EVENTUALLY, read_response(&mut r))
        .await
        .expect("an answer to the trickled body");
    trickle.abort();
    assert_eq!(resp.status, 408, "{}", resp.head);
    assert!(resp.head.contains(FHIR), "{}", resp.head);
    let oo: Value = serde_json::from_str(&resp.body).expect("json");
    assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
    assert_eq!(oo["issue"][0]["code"], "timeout", "{oo}");
    metadata_is_served(&h).await;
}

#[tokio::test]
async fn client_beyond_max_connections_waits_for_a_free_slot() {
    let h = Herald::start_with(&[
        ("HERALD__SERVER__MAX_CONNECTIONS", "4"),
        ("HERALD__SERVER__HEADER_READ_TIMEOUT_SECS", "120"),
        ("HERALD__SERVER__KEEP_ALIVE_TIMEOUT_SECS", "120"),
    ]);
    // Four kept-alive connections, each proven to be served, hold every slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect(&h).await;
        assert_eq!(get_raw(&mut s, "/healthz").await.status, 200);
        held.push(s);
    }
    // A fifth client connects (the kernel completes the handshake) but is not served...
    let mut fifth = connect(&h).await;
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let waiting = tokio::time::timeout(Duration::from_millis(500), read_response(&mut fifth)).await;
    assert!(
        waiting.is_err(),
        "the fifth connection was served while four were held"
    );
    // ...until a slot frees.
    drop(held.pop());
    let resp = tokio::time::timeout(EVENTUALLY, read_response(&mut fifth))
        .await
        .expect("the fifth client should be served once a connection closes");
    assert_eq!(resp.status, 200);
    drop(held);
    drop(fifth);
    metadata_is_served(&h).await;
}

#[tokio::test]
async fn uri_longer_than_the_limit_gets_414_outcome_naming_the_limit() {
    let h = Herald::start();
    let long = "a".repeat(9000);
    let r = client()
        .get(format!("{}/Task?_id={long}", h.fhir("r4")))
        .send()
        .await
        .expect("request");
    assert_outcome(r, StatusCode::URI_TOO_LONG, "8192").await;
    metadata_is_served(&h).await;
}

#[tokio::test]
async fn configured_uri_limit_is_the_one_enforced() {
    let h = Herald::start_with(&[("HERALD__SERVER__MAX_URI_BYTES", "100")]);
    let r = client()
        .get(format!("{}/Task?_id={}", h.fhir("r4"), "a".repeat(100)))
        .send()
        .await
        .expect("request");
    assert_outcome(r, StatusCode::URI_TOO_LONG, "100 bytes").await;
}

#[tokio::test]
async fn headers_larger_than_the_limit_get_431_outcome_naming_the_limit() {
    let h = Herald::start();
    // Just over the limit, and far over it (still below hyper's backstop): both answered by
    // Herald with an OperationOutcome, not by hyper with an empty body.
    for size in [17 * 1024, 60 * 1024] {
        let r = client()
            .get(format!("{}/metadata", h.fhir("r4")))
            .header("x-big", "a".repeat(size))
            .send()
            .await
            .expect("request");
        assert_outcome(r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "16384").await;
    }
    metadata_is_served(&h).await;
}

#[tokio::test]
async fn unknown_route_and_unrouted_method_get_outcomes() {
    let h = Herald::start();
    let c = client();
    let r = c
        .get(format!("{}/no/such/endpoint/here/at/all", h.root))
        .send()
        .await
        .expect("request");
    assert_outcome(r, StatusCode::NOT_FOUND, "no such endpoint").await;
    let r = c
        .patch(format!("{}/metadata", h.fhir("r4")))
        .send()
        .await
        .expect("request");
    assert_outcome(r, StatusCode::METHOD_NOT_ALLOWED, "PATCH").await;
    let r = c
        .delete(format!("{}/healthz", h.root))
        .send()
        .await
        .expect("request");
    assert_outcome(r, StatusCode::METHOD_NOT_ALLOWED, "DELETE").await;
}

#[tokio::test]
async fn axum_path_rejection_gets_an_outcome() {
    let h = Herald::start();
    // %FF is not UTF-8: axum's Path extractor rejects it with plain text of its own.
    let r = client()
        .get(format!("{}/Task/%FF", h.fhir("r4")))
        .send()
        .await
        .expect("request");
    assert_outcome(r, StatusCode::BAD_REQUEST, "UTF-8").await;
}

#[tokio::test]
async fn sigterm_exits_gracefully_while_a_slowloris_connection_is_open() {
    let mut h = Herald::start_with(&[("HERALD__SERVER__HEADER_READ_TIMEOUT_SECS", "120")]);
    let (read, trickle) = slowloris(&h).await;
    let exited = tokio::time::timeout(
        EVENTUALLY,
        tokio::task::spawn_blocking(move || h.terminate()),
    )
    .await
    .expect("herald should exit without waiting for the slow client")
    .expect("join");
    assert!(exited, "herald should exit successfully");
    trickle.abort();
    tokio::time::timeout(EVENTUALLY, closed(read))
        .await
        .expect("the slow connection should be closed");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let mut h = Herald::start();
    let address = addr(&h);
    let body = serde_json::to_vec(&task("Practitioner/1")).unwrap();
    let mut s = connect(&h).await;
    s.write_all(
        format!(
            "POST /fhir/r4/Task HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n\
             Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    // hyper sends 100 Continue once the handler reads the body: the request is in flight.
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(EVENTUALLY, s.read(&mut byte))
            .await
            .expect("100 Continue")
            .expect("read");
        assert!(n > 0, "closed before 100 Continue");
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{interim:?}");
    let stop = tokio::task::spawn_blocking(move || h.terminate());
    // Shutdown has begun once the listener is gone.
    tokio::time::timeout(EVENTUALLY, async {
        while TcpStream::connect(&address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("herald should stop accepting connections");
    s.write_all(&body).await.expect("write body");
    let resp = tokio::time::timeout(EVENTUALLY, read_response(&mut s))
        .await
        .expect("an answer to the in-flight request");
    assert_eq!(resp.status, 201, "{} {}", resp.head, resp.body);
    let exited = tokio::time::timeout(EVENTUALLY, stop)
        .await
        .expect("herald should exit once the request is answered")
        .expect("join");
    assert!(exited, "herald should exit successfully");
}
