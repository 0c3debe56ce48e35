//! Signed notifications end to end (Standard Webhooks), against the recording receiver: every
//! rest-hook request — handshake, heartbeat, event notification — carries `webhook-id`,
//! `webhook-timestamp` and `webhook-signature`, and the signature is checked here with an HMAC
//! written from SHA-256 alone (RFC 2104), over the bytes as received, with the secret from
//! `Subscription/{id}/$signing-secret`. A retry keeps its id; a rotation signs with both secrets
//! during the overlap (and with the new one only when the overlap is 0); a tampered body or
//! timestamp fails; the delivery log shows the id and timestamp but not the signature; a
//! Subscription deleted and created again gets a new secret, and secrets survive a kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use herald_subscriptions::notification::NotificationType;
use herald_tests::receiver::{Behaviour, Received, Receiver, delivered_events, of_kind, summary};
use herald_tests::{Herald, client, create, r4_subscription, r5_subscription, send, task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Upper bound of every wait: generous, so that a loaded machine does not fail the tests.
const WAIT: Duration = Duration::from_secs(20);

/// RFC 2104 HMAC-SHA256: H((K ⊕ opad) || H((K ⊕ ipad) || m)).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `v1,` + base64 HMAC of `{id}.{timestamp}.{body}` under the decoded `whsec_` secret.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1,{}", BASE64.encode(hmac_sha256(&key, &message)))
}

/// One header value (exactly one must be present).
fn one<'a>(r: &'a Received, name: &str) -> &'a str {
    let v = r.header(name);
    assert_eq!(v.len(), 1, "{name} once: {:?}", r.headers);
    v[0]
}

/// The signatures of a request, in header order.
fn signatures(r: &Received) -> Vec<String> {
    one(r, "webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// Whether `secret` signed `body` as sent with the request's id and timestamp.
fn signed_by(r: &Received, secret: &str, body: &[u8]) -> bool {
    let want = expected_signature(
        secret,
        one(r, "webhook-id"),
        one(r, "webhook-timestamp"),
        body,
    );
    signatures(r).contains(&want)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks the headers' form and that the timestamp lies between `since` and now.
fn assert_well_formed(r: &Received, since: u64) {
    let id = one(r, "webhook-id");
    assert!(id.starts_with("msg_") && id.len() > 4, "{id}");
    let ts: u64 = one(r, "webhook-timestamp").parse().expect("unix seconds");
    assert!(
        ts + 1 >= since && ts <= unix_now(),
        "timestamp {ts} not recent (since {since})"
    );
    for s in signatures(r) {
        assert!(s.starts_with("v1,"), "{s}");
    }
}

/// Herald reaching loopback, retrying after one second.
fn herald(extra: &[(&str, &str)]) -> Herald {
    let mut env = vec![
        ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
    ];
    env.extend_from_slice(extra);
    Herald::start_with(&env)
}

/// `$signing-secret` by GET with `query`; returns the Parameters.
async fn get_secret(c: &reqwest::Client, base: &str, id: &str, query: &str) -> Value {
    let r = c
        .get(format!("{base}/Subscription/{id}/$signing-secret{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers().get("cache-control").unwrap(),
        "no-store",
        "a secret is not cached on the way"
    );
    r.json().await.unwrap()
}

/// `$signing-secret` by POST with a Parameters body asking for a rotation.
async fn rotate(c: &reqwest::Client, base: &str, id: &str) -> Value {
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "rotate", "valueBoolean": true}
    ]});
    let url = format!("{base}/Subscription/{id}/$signing-secret");
    let (s, v) = send(c, Method::POST, &url, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn param<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["parameter"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == name)
}

fn secret_of(p: &Value) -> String {
    let s = param(p, "secret").unwrap()["valueString"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(s.starts_with("whsec_"), "{s}");
    s
}

async fn wait_status(c: &reqwest::Client, base: &str, id: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, s) = herald_tests::get(c, &format!("{base}/Subscription/{id}")).await;
        if s["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_notification_verifies_with_the_secret_a_retry_keeps_its_id_and_a_rotation_signs_with_both()
 {
    let started = unix_now();
    let rx = Receiver::start().await;
    let h = herald(&[]);
    let c = client();
    let base = h.fhir("r4");
    let sub = r4_subscription("cow-task-changed", &[], &rx.url("/hook"), "id-only");
    let id = create(&c, &base, "Subscription", &sub).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_status(&c, &base, &id, "active").await;

    // The secret was made for the handshake; reading it returns the same one every time.
    let secret = secret_of(&get_secret(&c, &base, &id, "").await);
    assert_eq!(secret, secret_of(&get_secret(&c, &base, &id, "").await));

    // A first attempt answered 500, then the retry: same id, each signed over its own bytes.
    rx.set(Behaviour::Status(500, None));
    create(&c, &base, "Task", &task("Organization/lab")).await;
    rx.wait_until("/hook", "a refused event notification", WAIT, |l| {
        l.iter()
            .any(|r| r.answered == 500 && r.kind() == Some(NotificationType::EventNotification))
    })
    .await;
    rx.set(Behaviour::Accept);
    let got = rx
        .wait_until("/hook", "event 1 delivered", WAIT, |l| {
            delivered_events(l) == [1]
        })
        .await;
    for r in &got {
        assert_well_formed(r, started);
        assert_eq!(signatures(r).len(), 1, "one secret, one signature");
        assert!(signed_by(r, &secret, &r.raw), "{}", summary(&got));
    }
    let events = of_kind(&got, NotificationType::EventNotification);
    assert!(events.len() >= 2, "{}", summary(&got));
    let ids: Vec<&str> = events.iter().map(|r| one(r, "webhook-id")).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "a retry keeps its id: {ids:?}"
    );
    let handshake = of_kind(&got, NotificationType::Handshake)[0];
    assert_ne!(one(handshake, "webhook-id"), ids[0]);

    // Tampering with the body or the timestamp breaks the signature.
    let sent = events[events.len() - 1];
    let mut tampered = sent.raw.clone();
    let at = tampered.iter().position(|b| *b == b'1').unwrap();
    tampered[at] = b'2';
    assert!(!signed_by(sent, &secret, &tampered));
    let ts: u64 = one(sent, "webhook-timestamp").parse().unwrap();
    let shifted = expected_signature(
        &secret,
        one(sent, "webhook-id"),
        &(ts + 1).to_string(),
        &sent.raw,
    );
    assert!(!signatures(sent).contains(&shifted));

    // Rotation: a new secret; during the overlap both sign, the new one first.
    let rotated = rotate(&c, &base, &id).await;
    let new = secret_of(&rotated);
    assert_ne!(new, secret);
    assert!(param(&rotated, "previous-expires").is_some(), "{rotated}");
    assert_eq!(secret_of(&get_secret(&c, &base, &id, "").await), new);
    create(&c, &base, "Task", &task("Organization/lab")).await;
    let got = rx
        .wait_until("/hook", "event 2 delivered", WAIT, |l| {
            delivered_events(l).contains(&2)
        })
        .await;
    let second = got
        .iter()
        .find(|r| r.accepted() && r.event_numbers() == [2])
        .unwrap();
    assert_well_formed(second, started);
    let sigs = signatures(second);
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    let (id2, ts2) = (one(second, "webhook-id"), one(second, "webhook-timestamp"));
    assert_eq!(sigs[0], expected_signature(&new, id2, ts2, &second.raw));
    assert_eq!(sigs[1], expected_signature(&secret, id2, ts2, &second.raw));
    let mut tampered = second.raw.clone();
    tampered.push(b' ');
    assert!(!signed_by(second, &new, &tampered) && !signed_by(second, &secret, &tampered));

    // The delivery log shows the id and timestamp, never the signature or the secret.
    let (_, log) = herald_tests::get(
        &c,
        &format!("{}/admin/deliveries?subscription={id}", h.root),
    )
    .await;
    let entries = log["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    for e in entries {
        let headers = e["request_headers"].as_array().unwrap();
        assert!(
            headers.contains(&json!(["webhook-signature", "[redacted]"])),
            "{e}"
        );
        assert!(
            headers
                .iter()
                .any(|h| h[0] == "webhook-id" && h[1].as_str().unwrap().starts_with("msg_")),
            "{e}"
        );
        assert!(headers.iter().any(|h| h[0] == "webhook-timestamp"), "{e}");
    }
    let everything = format!(
        "{log}{}",
        herald_tests::get(&c, &format!("{}/admin/subscriptions", h.root))
            .await
            .1
    );
    for s in [&secret, &new] {
        assert!(
            !everything.contains(&s[6..]),
            "a secret leaked into admin output"
        );
    }
    for r in rx.received() {
        for sig in signatures(&r) {
            assert!(!everything.contains(&sig[3..]), "a signature was logged");
        }
    }
}

#[tokio::test]
async fn handshakes_and_heartbeats_are_signed_too_each_heartbeat_with_its_own_id() {
    let started = unix_now();
    let rx = Receiver::start().await;
    let h = herald(&[]);
    let c = client();
    let base = h.fhir("r5");
    let mut sub = r5_subscription("cow-task-changed", &[], &rx.url("/beat"), "empty");
    sub["heartbeatPeriod"] = json!(1);
    let id = create(&c, &base, "Subscription", &sub).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = rx
        .wait_until("/beat", "a handshake and two heartbeats", WAIT, |l| {
            of_kind(l, NotificationType::Heartbeat).len() >= 2
        })
        .await;
    // POST with no body reads the secret too (R5 tenants alike).
    let (s, p) = send(
        &c,
        Method::POST,
        &format!("{base}/Subscription/{id}/$signing-secret"),
        &json!({"resourceType": "Parameters"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let secret = secret_of(&p);
    assert_eq!(of_kind(&got, NotificationType::Handshake).len(), 1);
    for r in &got {
        assert_well_formed(r, started);
        assert!(signed_by(r, &secret, &r.raw), "{}", summary(&got));
    }
    let beats = of_kind(&got, NotificationType::Heartbeat);
    assert_ne!(
        one(beats[0], "webhook-id"),
        one(beats[1], "webhook-id"),
        "two heartbeats are two notifications"
    );

    // Rotating is a change: not by GET. A websocket Subscription has nothing to sign.
    let r = c
        .get(format!(
            "{base}/Subscription/{id}/$signing-secret?rotate=true"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(secret_of(&get_secret(&c, &base, &id, "").await), secret);
    let ws = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "topic": herald_tests::topic("cow-task-changed"),
        "channelType": {"system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket"},
        "content": "id-only"
    });
    let ws_id = create(&c, &base, "Subscription", &ws).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .get(format!("{base}/Subscription/{ws_id}/$signing-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = c
        .get(format!("{base}/Subscription/nope/$signing-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_overlap_a_rotation_retires_the_old_secret_at_once_and_a_recreated_subscription_gets_a_new_one()
 {
    let rx = Receiver::start().await;
    let mut h = herald(&[("HERALD__DELIVERY__SIGNING_ROTATION_OVERLAP_SECS", "0")]);
    let c = client();
    let base = h.fhir("r4");
    let mut sub = r4_subscription("cow-task-changed", &[], &rx.url("/once"), "id-only");
    sub["id"] = json!("signed-1");
    let url = format!("{base}/Subscription/signed-1");
    let (s, v) = send(&c, Method::PUT, &url, &sub).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Read before any delivery needed it: made now, and the handshake is signed with it.
    let old = secret_of(&get_secret(&c, &base, "signed-1", "").await);
    wait_status(&c, &base, "signed-1", "active").await;
    let new = secret_of(&rotate(&c, &base, "signed-1").await);
    create(&c, &base, "Task", &task("Organization/lab")).await;
    let got = rx
        .wait_until("/once", "event 1", WAIT, |l| delivered_events(l) == [1])
        .await;
    let handshake = of_kind(&got, NotificationType::Handshake)[0];
    assert!(signed_by(handshake, &old, &handshake.raw));
    let event = of_kind(&got, NotificationType::EventNotification)[0];
    assert_eq!(
        signatures(event).len(),
        1,
        "no overlap: only the new secret"
    );
    assert!(signed_by(event, &new, &event.raw));
    assert!(!signed_by(event, &old, &event.raw));

    // Deleted and created again under the same id: a new secret, not the old one back.
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(format!("{url}/$signing-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    let (s, v) = send(&c, Method::PUT, &url, &sub).await;
    assert!(s.is_success(), "{v}");
    let reborn = secret_of(&get_secret(&c, &base, "signed-1", "").await);
    assert!(reborn != new && reborn != old);

    // Acknowledged means durable: a kill -9 keeps the secret.
    h.restart();
    let base = h.fhir("r4");
    assert_eq!(
        secret_of(&get_secret(&c, &base, "signed-1", "").await),
        reborn
    );
}
