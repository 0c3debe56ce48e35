//! Version-neutral model of `SubscriptionTopic` and `Subscription`, the adapters that read and
//! write them as R4 and R4B (Subscriptions Backport) and R5 JSON, validation of a Subscription request,
//! the built-in Clinical Order Workflows topics, and the notification bundles per FHIR version
//! and payload level.
//!
//! Pure: no I/O, no async. The server stores resources; this crate only interprets them.
#![forbid(unsafe_code)]

mod adapter;
pub mod builtin;
pub mod catalog;
mod error;
pub mod headers;
mod json;
pub mod model;
pub mod notification;
pub mod r4;
pub mod r4b;
pub mod r5;
pub mod validate;

pub use adapter::{
    parse_subscription, parse_topic, set_subscription_status, subscription_to_json, topic_to_json,
};
pub use builtin::{NoRelated, RelatedLookup};
pub use catalog::{TopicCatalog, TopicLookup};
pub use error::SubscriptionError;
pub use model::{
    CanFilterBy, Channel, ChannelType, Filter, Interaction, NotificationShape, PayloadContent,
    QueryCriteria, ResourceTrigger, Subscription, SubscriptionStatus, TestResult, Topic,
    TopicStatus,
};
pub use validate::{check_subscription, validate_subscription, validate_topic};

#[cfg(test)]
mod tests;
