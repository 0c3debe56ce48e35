//! Version dispatch over the [`crate::r4`], [`crate::r4b`] and [`crate::r5`] adapters: one entry
//! point per operation taking the tenant's [`FhirVersion`].

use herald_fhir::FhirVersion;
use serde_json::Value;

use crate::SubscriptionError;
use crate::model::{Subscription, SubscriptionStatus, Topic};
use crate::{r4, r4b, r5};

/// Parses a stored or submitted Subscription of the tenant's version (no policy checks; see
/// [`crate::validate_subscription`] for those).
pub fn parse_subscription(
    version: FhirVersion,
    body: &Value,
) -> Result<Subscription, SubscriptionError> {
    match version {
        FhirVersion::R4 => r4::parse_subscription(body),
        FhirVersion::R4B => r4b::parse_subscription(body),
        FhirVersion::R5 => r5::parse_subscription(body),
    }
}

/// Renders a Subscription in the tenant's version.
pub fn subscription_to_json(version: FhirVersion, sub: &Subscription) -> Value {
    match version {
        FhirVersion::R4 => r4::subscription_to_json(sub),
        FhirVersion::R4B => r4b::subscription_to_json(sub),
        FhirVersion::R5 => r5::subscription_to_json(sub),
    }
}

/// Parses a topic: an R5 or R4B `SubscriptionTopic`, or on R4 a Basic-wrapped topic (an
/// R4B-shaped `SubscriptionTopic` body is read too).
pub fn parse_topic(version: FhirVersion, body: &Value) -> Result<Topic, SubscriptionError> {
    match version {
        FhirVersion::R4 if body.get("resourceType").and_then(Value::as_str) == Some("Basic") => {
            r4::parse_basic_topic(body)
        }
        FhirVersion::R4B => r4b::parse_topic(body),
        _ => r5::parse_topic(body),
    }
}

/// Renders a topic in the tenant's version: R5 or R4B `SubscriptionTopic`, or R4 `Basic`.
pub fn topic_to_json(version: FhirVersion, topic: &Topic, id: Option<&str>) -> Value {
    match version {
        FhirVersion::R4 => r4::topic_to_basic(topic, id),
        FhirVersion::R4B => r4b::topic_to_json(topic, id),
        FhirVersion::R5 => r5::topic_to_json(topic, id),
    }
}

/// Writes a status (and, on R4 and R4B, `Subscription.error`; R5 has no such element and ignores it)
/// into a stored Subscription body.
pub fn set_subscription_status(
    version: FhirVersion,
    body: &mut Value,
    status: SubscriptionStatus,
    error: Option<&str>,
) -> Result<(), SubscriptionError> {
    match version {
        FhirVersion::R4 => r4::set_status(body, status, error),
        FhirVersion::R4B => r4b::set_status(body, status, error),
        FhirVersion::R5 => r5::set_status(body, status),
    }
}
