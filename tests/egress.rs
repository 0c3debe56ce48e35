//! The egress allow-list end to end, against the real binary and loopback receivers: Herald
//! starts with `HERALD_PRIVATE_ENDPOINT_ALLOWLIST` naming one receiver's exact
//! `127.0.0.1:<port>`; a Subscription to it is accepted, handshaken and notified, while every
//! other internal endpoint — the same address on another port, `localhost` on the same port,
//! the other loopback spellings, private, link-local and unspecified addresses — is refused at
//! creation (422) and nothing is stored. (Loopback is the only internal address a test can
//! listen on, which is why the allow-list names a `host:port` rather than a CIDR: a CIDR
//! covering loopback would leave nothing internal to prove refused.)
//!
//! Also here: R4 filters are never silently dropped — a Subscription whose filter sits in an
//! extension Herald does not understand (Inferno's cross-version shape, the 5.0 `filterBy`
//! extension, a typo) is refused naming the URL, and nothing is stored or delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_subscriptions::notification::NotificationType;
use herald_tests::receiver::Receiver;
use herald_tests::{
    Herald, client, create, get, post_refused, r4_subscription, r5_subscription, task,
};
use reqwest::StatusCode;
use serde_json::Value;

const UNPROCESSABLE: [StatusCode; 1] = [StatusCode::UNPROCESSABLE_ENTITY];
const WAIT: Duration = Duration::from_secs(20);

/// `host:port` of a receiver URL.
fn authority(r: &Receiver) -> String {
    r.url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// The Subscriptions stored on `base`.
async fn stored_subscriptions(c: &reqwest::Client, base: &str) -> Vec<Value> {
    let (s, b) = get(c, &format!("{base}/Subscription")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

#[tokio::test]
async fn an_allowlisted_receiver_is_notified_and_every_other_internal_endpoint_is_refused() {
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    let allowed = authority(&receiver);
    let port = allowed.rsplit_once(':').unwrap().1.to_owned();
    let h = Herald::start_with(&[("HERALD_PRIVATE_ENDPOINT_ALLOWLIST", allowed.as_str())]);
    let c = client();

    // Refused at creation, in both versions, with nothing stored.
    let refused = [
        other.url("/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://127.0.0.2:{port}/hook"),
        format!("http://0.0.0.0:{port}/hook"),
        format!("http://[::]:{port}/hook"),
        "http://127.0.0.1/hook".to_owned(),
        "http://2130706433/hook".to_owned(),
        "http://0177.0.0.1/hook".to_owned(),
        "http://0x7f.0.0.1/hook".to_owned(),
        "http://127.1/hook".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
        "http://172.16.0.1/hook".to_owned(),
        "http://192.168.1.1/hook".to_owned(),
        "http://100.64.0.1/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[fe80::1]/hook".to_owned(),
        "http://[fd00::1]/hook".to_owned(),
        "http://[::ffff:10.0.0.1]/hook".to_owned(),
    ];
    for endpoint in &refused {
        for (base, sub) in [
            (
                h.fhir("r4"),
                r4_subscription("cow-task-changed", &[], endpoint, "id-only"),
            ),
            (
                h.fhir("r5"),
                r5_subscription("cow-task-changed", &[], endpoint, "id-only"),
            ),
        ] {
            post_refused(
                &c,
                &format!("{base}/Subscription"),
                &sub,
                &UNPROCESSABLE,
                "internal",
            )
            .await;
        }
    }
    for tenant in ["r4", "r5"] {
        assert!(
            stored_subscriptions(&c, &h.fhir(tenant)).await.is_empty(),
            "{tenant}: refused Subscriptions must not be stored"
        );
    }

    // The allow-listed receiver is accepted and gets its handshake, then the notification.
    let base = h.fhir("r4");
    let sub = r4_subscription("cow-task-changed", &[], &receiver.url("/r4"), "id-only");
    let id = create(&c, &base, "Subscription", &sub).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver
        .wait_until("/r4", "the handshake", WAIT, |l| {
            l.iter()
                .any(|r| r.kind() == Some(NotificationType::Handshake))
        })
        .await;
    create(&c, &base, "Task", &task("Organization/o1")).await;
    receiver
        .wait_until("/r4", "an event notification", WAIT, |l| {
            l.iter()
                .any(|r| r.kind() == Some(NotificationType::EventNotification))
        })
        .await;
    let stored = stored_subscriptions(&c, &base).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["id"], id.as_str());
    assert!(other.received().is_empty(), "the other receiver was called");
}

#[tokio::test]
async fn r4_filters_in_extensions_herald_does_not_understand_are_refused_not_dropped() {
    let receiver = Receiver::start().await;
    let allowed = authority(&receiver);
    let h = Herald::start_with(&[("HERALD_PRIVATE_ENDPOINT_ALLOWLIST", allowed.as_str())]);
    let c = client();
    let base = h.fhir("r4");
    for url in [
        // Inferno Subscriptions R4 server suite, reject_subscription_cross_version_extension_test.
        "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria",
        "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.filterBy",
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-critera",
    ] {
        let mut sub = r4_subscription("cow-task-changed", &[], &receiver.url("/r4"), "id-only");
        sub["_criteria"] = serde_json::json!({"extension": [{
            "url": url,
            "valueString": "Task?owner=Organization/o1"
        }]});
        let oo = post_refused(
            &c,
            &format!("{base}/Subscription"),
            &sub,
            &UNPROCESSABLE,
            url,
        )
        .await;
        let diag = oo["issue"][0]["diagnostics"].as_str().unwrap_or_default();
        assert!(diag.contains("Subscription.criteria"), "{diag}");
    }
    assert!(stored_subscriptions(&c, &base).await.is_empty());
    create(&c, &base, "Task", &task("Organization/o2")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty(), "nothing may be delivered");
}
