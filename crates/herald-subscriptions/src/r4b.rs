//! R4B adapter (FHIR 4.3.0 with the Subscriptions Backport's R4B profile).
//!
//! R4B sits between the other two: `Subscription` kept R4's shape, so the backport carries the
//! topic and delivery settings in the same extensions as on R4 (this adapter defers to
//! [`crate::r4`] for it), while `SubscriptionTopic` and `SubscriptionStatus` are native resources
//! (as in R5, with differences this module owns):
//! - `SubscriptionTopic` has no `name`: Herald keeps a topic's name in the 5.0 cross-version
//!   extension `extension-SubscriptionTopic.name`, so it survives a round trip;
//! - `canFilterBy` has no `comparator`: R4B lists comparators among the `modifier` codes
//!   (`subscription-search-modifier`: `=`, `eq`, `ne`, …), so they are written there and read
//!   back from there;
//! - `subscription-status` has no `entered-in-error`.
//!
//! Notifications are `history` Bundles whose first entry is a `SubscriptionStatus`
//! ([`crate::notification`]).

use serde_json::{Value, json};

use crate::SubscriptionError;
use crate::json::{ext, ext_value, extensions, with_url};
use crate::model::{Subscription, SubscriptionStatus, Topic};
use crate::r4::XVER_TOPIC_PREFIX_50;
use crate::{r4, r5};

/// Cross-version extension that carries `SubscriptionTopic.name`, an element R4B lacks.
pub fn name_extension_url() -> String {
    format!("{XVER_TOPIC_PREFIX_50}name")
}

/// Parses an R4B backport `Subscription` (R4's shape and extensions).
pub fn parse_subscription(body: &Value) -> Result<Subscription, SubscriptionError> {
    r4::parse_subscription(body)
}

/// Renders a Subscription as an R4B backport Subscription (R4's shape and extensions).
pub fn subscription_to_json(sub: &Subscription) -> Value {
    r4::subscription_to_json(sub)
}

/// Writes `status` and `Subscription.error` into a stored R4B Subscription; `entered-in-error`,
/// which R4B's `subscription-status` lacks, is refused.
pub fn set_status(
    body: &mut Value,
    status: SubscriptionStatus,
    error: Option<&str>,
) -> Result<(), SubscriptionError> {
    if status == SubscriptionStatus::EnteredInError {
        return Err(SubscriptionError::StatusNotInVersion {
            status: status.code().to_owned(),
            version: "R4B".to_owned(),
        });
    }
    r4::set_status(body, status, error)
}

/// Parses an R4B `SubscriptionTopic`: comparators found among the modifiers are sorted out, the
/// name is read from its cross-version extension.
pub fn parse_topic(body: &Value) -> Result<Topic, SubscriptionError> {
    let mut topic = r5::parse_topic(body)?;
    let filters = body.get("canFilterBy").and_then(Value::as_array);
    for (c, json) in topic
        .can_filter_by
        .iter_mut()
        .zip(filters.into_iter().flatten())
    {
        for code in with_url(extensions(json), MODIFIER_EXTENSION)
            .filter_map(ext_value)
            .filter_map(Value::as_str)
        {
            if !c.modifiers.iter().any(|m| m == code) {
                c.modifiers.push(code.to_owned());
            }
        }
    }
    if topic.name.is_none() {
        topic.name = with_url(extensions(body), &name_extension_url())
            .next()
            .and_then(ext_value)
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    Ok(topic)
}

/// Refuses the R5 elements R4B's `SubscriptionTopic` does not define (`name`,
/// `canFilterBy.comparator`) in a client's topic: accepting them would store a body no R4B client
/// can read back as written.
pub fn check_topic_elements(body: &Value) -> Result<(), SubscriptionError> {
    let refuse = |element: &str| SubscriptionError::Invalid {
        element: element.to_owned(),
        reason: "not an element of the R4B SubscriptionTopic (R4B lists comparators under \
                 canFilterBy.modifier and has no name)"
            .to_owned(),
    };
    if body.get("name").is_some() {
        return Err(refuse("SubscriptionTopic.name"));
    }
    let filters = body.get("canFilterBy").and_then(Value::as_array);
    if filters
        .into_iter()
        .flatten()
        .any(|c| c.get("comparator").is_some())
    {
        return Err(refuse("SubscriptionTopic.canFilterBy.comparator"));
    }
    Ok(())
}

/// Renders a Topic as an R4B `SubscriptionTopic` (with `id` when given).
pub fn topic_to_json(topic: &Topic, id: Option<&str>) -> Value {
    let mut value = r5::topic_to_json(topic, id);
    let Some(m) = value.as_object_mut() else {
        return value;
    };
    if let Some(name) = m.remove("name") {
        m.insert(
            "extension".into(),
            json!([ext(&name_extension_url(), "valueString", name)]),
        );
    }
    if let Some(list) = m.get_mut("canFilterBy").and_then(Value::as_array_mut) {
        for c in list.iter_mut().filter_map(Value::as_object_mut) {
            let mut codes = match c.remove("comparator") {
                Some(Value::Array(comparators)) => comparators,
                _ => Vec::new(),
            };
            if let Some(Value::Array(modifiers)) = c.remove("modifier") {
                codes.extend(modifiers);
            }
            // The binding is required: search modifiers R4B's value set lacks (`missing`,
            // `not`, `identifier`, …) go in the R5 element's cross-version extension instead.
            let (listed, other): (Vec<Value>, Vec<Value>) = codes
                .into_iter()
                .partition(|v| v.as_str().is_some_and(|s| R4B_MODIFIERS.contains(&s)));
            if !listed.is_empty() {
                c.insert("modifier".into(), Value::Array(listed));
            }
            if !other.is_empty() {
                let exts: Vec<Value> = other
                    .into_iter()
                    .map(|v| json!({"url": MODIFIER_EXTENSION, "valueCode": v}))
                    .collect();
                c.insert("extension".into(), Value::Array(exts));
            }
        }
    }
    value
}

/// Cross-version extension for R5's `SubscriptionTopic.canFilterBy.modifier` (search modifiers
/// outside R4B's value set).
const MODIFIER_EXTENSION: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.canFilterBy.modifier";

/// R4B's `subscription-search-modifier` value set (required on `canFilterBy.modifier`).
const R4B_MODIFIERS: [&str; 15] = [
    "=", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "above", "below", "in", "not-in",
    "of-type",
];
