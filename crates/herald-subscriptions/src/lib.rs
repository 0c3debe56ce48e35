//! Version-neutral model of `SubscriptionTopic` and `Subscription`, the adapters that read and
//! write them as R4 (Subscriptions Backport) and R5 JSON, validation of a Subscription request,
//! the built-in Clinical Order Workflows topics, and the notification bundles per FHIR version
//! and payload level.
//!
//! Pure: no I/O, no async. The server stores resources; this crate only interprets them.
#![forbid(unsafe_code)]

pub mod notification;
