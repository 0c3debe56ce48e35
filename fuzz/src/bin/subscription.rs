//! Fuzz target `subscription`: bytes → JSON → what Herald's write path does with a Subscription
//! or topic body, for R4 (Subscriptions Backport, Basic-wrapped topics) and R5 (Subscription,
//! SubscriptionTopic):
//!
//! - `herald_fhir::validate::check_resource` (every body, before anything else);
//! - `validate_subscription` against the built-in topic catalog (the client path), and
//!   `parse_subscription` (Herald's own status writes, and every stored body at start-up);
//! - `validate_topic` and `parse_topic`;
//! - on what parses: rendering back (`subscription_to_json`, `topic_to_json`), re-parsing the
//!   rendering, `set_subscription_status` and `Subscription::end_ms`;
//! - `parse_notification` / `parse_status_bundle`, which read the same kind of untrusted JSON.
//!
//! Only panics, aborts, stack overflows and hangs count: a refusal is a normal outcome.
#![forbid(unsafe_code)]

use std::hint::black_box;

use herald_fhir::validate::check_resource;
use herald_fuzz::{VERSIONS, consume, warm_up};
use herald_subscriptions::notification::{parse_notification, parse_status_bundle};
use herald_subscriptions::{
    SubscriptionStatus, TopicCatalog, parse_subscription, parse_topic, set_subscription_status,
    subscription_to_json, topic_to_json, validate_subscription, validate_topic,
};
use serde_json::Value;

fn main() {
    warm_up();
    // Built once, before the fuzz loop: the server keeps its catalog across requests too.
    let catalogs = VERSIONS.map(|v| (v, TopicCatalog::with_builtins(v)));
    afl::fuzz!(|data: &[u8]| {
        let Ok(body) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        for (version, catalog) in &catalogs {
            let version = *version;
            consume(check_resource(version, &body));

            consume(validate_subscription(version, &body, catalog));
            if let Ok(sub) = parse_subscription(version, &body) {
                black_box(sub.end_ms());
                let rendered = subscription_to_json(version, &sub);
                consume(parse_subscription(version, &rendered));
                let mut stored = body.clone();
                consume(set_subscription_status(
                    version,
                    &mut stored,
                    SubscriptionStatus::Error,
                    Some("fuzz"),
                ));
            }

            consume(validate_topic(version, &body));
            if let Ok(topic) = parse_topic(version, &body) {
                let rendered = topic_to_json(version, &topic, Some("fuzz-topic"));
                consume(parse_topic(version, &rendered));
            }
        }
        consume(parse_notification(&body));
        consume(parse_status_bundle(&body));
    });
}
