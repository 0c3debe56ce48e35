//! Acceptance checks for a client's Subscription or SubscriptionTopic request (spec §1.C): each
//! refusal is a [`SubscriptionError`] variant that the server turns into a 4xx OperationOutcome.
//!
//! Search and FHIRPath semantics are `herald_fhir`'s: a filter value is accepted when
//! `herald_fhir::search::parse_filter` accepts it, a topic criterion when
//! `herald_fhir::fhirpath::parse` / `herald_fhir::search::parse_query` accept it.

use herald_fhir::search::{ParamType, Registry, parse_filter, parse_query};
use herald_fhir::{FhirVersion, fhirpath, is_resource_type};
use serde_json::Value;

use crate::SubscriptionError;
use crate::adapter;
use crate::builtin::TopicDefinedFilter;
use crate::catalog::TopicLookup;
use crate::json::{extensions, with_url};
use crate::model::{
    CanFilterBy, Channel, ChannelType, Filter, PayloadContent, Subscription, SubscriptionStatus,
    Topic,
};
use crate::r4::{
    EXT_CHANNEL_TYPE, EXT_FILTER_CRITERIA, EXT_HEARTBEAT_PERIOD, EXT_MAX_COUNT,
    EXT_PAYLOAD_CONTENT, EXT_SUBSCRIPTION_IDENTIFIER, EXT_TIMEOUT, XVER_REPLACED,
    XVER_SUBSCRIPTION_PREFIX,
};
use crate::r5::COMPARATORS;

/// MIME types Herald can emit (JSON only).
pub const ACCEPTED_MIME_TYPES: [&str; 2] = ["application/fhir+json", "application/json"];

/// Parses and checks a Subscription submitted by a client to a tenant of `version`.
///
/// Refuses: on R4 and R4B, an extension Herald does not understand where the backport puts filters,
/// payload content or other delivery settings (including 5.0 cross-version extensions where the
/// backport has its own); a missing content
/// level; a status other than `requested` or `off`; an unknown topic; a filter the topic's
/// `canFilterBy` does not allow (parameter, comparator, modifier, both together (scr-1)); a filter
/// value `parse_filter` rejects; an unknown channel type; an endpoint that does not fit the
/// channel; a MIME type other than FHIR JSON or one for another FHIR version.
pub fn validate_subscription(
    version: FhirVersion,
    body: &Value,
    topics: &impl TopicLookup,
) -> Result<Subscription, SubscriptionError> {
    let sub = check_subscription(version, body, topics)?;
    if !matches!(
        sub.status,
        SubscriptionStatus::Requested | SubscriptionStatus::Off
    ) {
        return Err(SubscriptionError::StatusNotAllowed {
            status: sub.status.code().to_owned(),
        });
    }
    Ok(sub)
}

/// Filters per Subscription. Each is evaluated on every change of its topic's resource types,
/// so the count bounds what one subscriber can make every write cost.
pub const MAX_FILTERS: usize = 32;

/// Every rule of [`validate_subscription`] except which statuses a client may submit: the check
/// a stored Subscription (which may be `active` or `error`) must pass before the engine and the
/// dispatcher load it, at start-up and after each write. A body an older Herald accepted, or
/// one written around the API, is held to today's limits here.
pub fn check_subscription(
    version: FhirVersion,
    body: &Value,
    topics: &impl TopicLookup,
) -> Result<Subscription, SubscriptionError> {
    match version {
        FhirVersion::R4 | FhirVersion::R4B => check_r4_extensions(body)?,
        FhirVersion::R5 => {
            if body.get("content").is_none() && body.get("resourceType").is_some() {
                return Err(SubscriptionError::MissingContent {
                    element: "Subscription.content".to_owned(),
                });
            }
        }
    }
    let sub = adapter::parse_subscription(version, body)?;
    if sub.filters.len() > MAX_FILTERS {
        return Err(SubscriptionError::TooMany {
            element: match version {
                FhirVersion::R4 | FhirVersion::R4B => "Subscription.criteria filters".to_owned(),
                FhirVersion::R5 => "Subscription.filterBy".to_owned(),
            },
            count: sub.filters.len(),
            limit: MAX_FILTERS,
        });
    }
    let topic = topics
        .topic(&sub.topic)
        .ok_or_else(|| SubscriptionError::UnknownTopic {
            topic: sub.topic.clone(),
        })?;
    for f in &sub.filters {
        check_filter(version, topic, f)?;
    }
    check_channel(version, &sub.channel)?;
    if let Some(end) = &sub.end
        && sub.end_ms().is_none()
    {
        return Err(SubscriptionError::Invalid {
            element: "Subscription.end".to_owned(),
            reason: format!("'{end}' is not an instant"),
        });
    }
    Ok(sub)
}

/// Where an R4 backport Subscription carries what shapes delivery, as (FHIRPath-like element,
/// JSON path from the resource, extension URLs Herald understands there). Every extension at
/// these places must be one of those: a filter in a mistyped or cross-version extension
/// (`extension-Subscription.filterBy` on `_criteria`) would otherwise be ignored and its owner
/// would receive every resource on the topic. Elsewhere (`meta`, `text`, `_reason`, …)
/// extensions do not change what is delivered and are left alone.
const R4_DELIVERY_PLACES: [(&str, &[&str], &[&str]); 8] = [
    ("Subscription", &[], &[EXT_SUBSCRIPTION_IDENTIFIER]),
    (
        "Subscription.criteria",
        &["_criteria"],
        &[EXT_FILTER_CRITERIA],
    ),
    ("Subscription.end", &["_end"], &[]),
    (
        "Subscription.channel",
        &["channel"],
        &[EXT_HEARTBEAT_PERIOD, EXT_TIMEOUT, EXT_MAX_COUNT],
    ),
    (
        "Subscription.channel.type",
        &["channel", "_type"],
        &[EXT_CHANNEL_TYPE],
    ),
    (
        "Subscription.channel.endpoint",
        &["channel", "_endpoint"],
        &[],
    ),
    (
        "Subscription.channel.payload",
        &["channel", "_payload"],
        &[EXT_PAYLOAD_CONTENT],
    ),
    ("Subscription.channel.header", &["channel", "_header"], &[]),
];

/// R4: every extension where the backport puts delivery-shaping elements must be one Herald
/// understands there ([`R4_DELIVERY_PLACES`]); a 5.0 cross-version extension the backport
/// replaces is refused naming the replacement; no `modifierExtension` is understood. Then a
/// missing `channel.payload` (1..1 in the backport profile) and content level are refused.
fn check_r4_extensions(body: &Value) -> Result<(), SubscriptionError> {
    check_r4_delivery_extensions(body)?;
    let channel = body.get("channel");
    if let Some(c) = channel {
        if c.get("payload").is_none() {
            return Err(SubscriptionError::Missing {
                element: "Subscription.channel.payload".to_owned(),
            });
        }
        let has_content = c
            .get("_payload")
            .map(|p| {
                with_url(extensions(p), EXT_PAYLOAD_CONTENT)
                    .next()
                    .is_some()
            })
            .unwrap_or(false);
        if !has_content {
            return Err(SubscriptionError::MissingContent {
                element: "Subscription.channel.payload.extension(backport-payload-content)"
                    .to_owned(),
            });
        }
    }
    Ok(())
}

/// The extension rule of [`check_r4_extensions`] alone: every extension at the places of
/// [`R4_DELIVERY_PLACES`] is one Herald understands there.
pub(crate) fn check_r4_delivery_extensions(body: &Value) -> Result<(), SubscriptionError> {
    for (element, path, understood) in R4_DELIVERY_PLACES {
        let Some(node) = path.iter().try_fold(body, |v, key| v.get(*key)) else {
            continue;
        };
        // `_header` parallels the `header` array: one (possibly null) object per header.
        let nodes: Vec<&Value> = match node {
            Value::Array(items) if element == "Subscription.channel.header" => {
                items.iter().collect()
            }
            other => vec![other],
        };
        for node in nodes {
            check_extensions_at(node, element, understood)?;
        }
    }
    Ok(())
}

/// Checks `extension` and `modifierExtension` of one element against the URLs understood there.
fn check_extensions_at(
    node: &Value,
    element: &str,
    understood: &[&str],
) -> Result<(), SubscriptionError> {
    let Some(obj) = node.as_object() else {
        return match node {
            Value::Null => Ok(()),
            // The resource's and the channel's shapes are checked when they are read.
            _ if matches!(element, "Subscription" | "Subscription.channel") => Ok(()),
            _ => Err(SubscriptionError::Invalid {
                element: element.to_owned(),
                reason: "expected a JSON object".to_owned(),
            }),
        };
    };
    for (key, allowed) in [("extension", understood), ("modifierExtension", &[][..])] {
        let list = match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list,
            Some(_) => {
                return Err(SubscriptionError::Invalid {
                    element: format!("{element}.{key}"),
                    reason: "expected an array".to_owned(),
                });
            }
        };
        let place = format!("{element}.{key}");
        for e in list {
            let Some(url) = e.get("url").and_then(Value::as_str) else {
                return Err(SubscriptionError::Invalid {
                    element: place,
                    reason: "every extension needs a url".to_owned(),
                });
            };
            if allowed.contains(&url) {
                continue;
            }
            if let Some(name) = url.strip_prefix(XVER_SUBSCRIPTION_PREFIX)
                && let Some((_, instead)) = XVER_REPLACED.iter().find(|(el, _)| *el == name)
            {
                return Err(SubscriptionError::CrossVersionExtension {
                    url: url.to_owned(),
                    element: place,
                    use_instead: (*instead).to_owned(),
                });
            }
            return Err(SubscriptionError::UnsupportedExtension {
                url: url.to_owned(),
                element: place,
                understood: if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// The comparator a filter uses: the explicit one, or a prefix inside the value of a
/// date/number/quantity parameter (`le1950`).
fn effective_comparator(
    version: FhirVersion,
    resource_types: &[&str],
    f: &Filter,
) -> Option<String> {
    if let Some(c) = &f.comparator {
        return Some(c.clone());
    }
    let prefix = f.value.get(..2)?;
    if !COMPARATORS.contains(&prefix) {
        return None;
    }
    let registry = Registry::for_version(version);
    let prefixed_type = resource_types.iter().any(|rt| {
        registry.get(rt, &f.parameter).is_some_and(|d| {
            matches!(
                d.kind,
                ParamType::Date | ParamType::Number | ParamType::Quantity
            )
        })
    });
    prefixed_type.then(|| prefix.to_owned())
}

fn check_filter(version: FhirVersion, topic: &Topic, f: &Filter) -> Result<(), SubscriptionError> {
    if f.comparator.is_some() && f.modifier.is_some() {
        return Err(SubscriptionError::ComparatorAndModifier {
            parameter: f.parameter.clone(),
        });
    }
    if let Some(rt) = &f.resource_type
        && !is_resource_type(version, rt)
    {
        return Err(SubscriptionError::UnknownResourceType {
            resource_type: rt.clone(),
            element: "Subscription filter".to_owned(),
        });
    }
    let allowed: Vec<&CanFilterBy> = topic
        .can_filter_by_for(f.resource_type.as_deref(), &f.parameter)
        .collect();
    if allowed.is_empty() {
        return Err(SubscriptionError::FilterNotAllowed {
            topic: topic.url.clone(),
            resource_type: f
                .resource_type
                .clone()
                .unwrap_or_else(|| "any resource".to_owned()),
            parameter: f.parameter.clone(),
        });
    }
    // The resource types the filter will be evaluated on.
    let topic_types = topic.resource_types();
    let mut types: Vec<&str> = Vec::new();
    for c in &allowed {
        let candidates: Vec<&str> = match (f.resource_type.as_deref(), c.resource.as_deref()) {
            (Some(rt), _) => vec![rt],
            (None, Some(r)) => vec![r],
            (None, None) => topic_types.clone(),
        };
        for t in candidates {
            if !types.contains(&t) {
                types.push(t);
            }
        }
    }
    if let Some(cmp) = effective_comparator(version, &types, f)
        && !allowed.iter().any(|c| c.comparators.contains(&cmp))
    {
        return Err(SubscriptionError::ComparatorNotAllowed {
            parameter: f.parameter.clone(),
            comparator: cmp,
        });
    }
    if let Some(m) = &f.modifier
        && !allowed.iter().any(|c| c.modifiers.contains(m))
    {
        return Err(SubscriptionError::ModifierNotAllowed {
            parameter: f.parameter.clone(),
            modifier: m.clone(),
        });
    }
    // The value must parse for at least one resource type in scope.
    let topic_defined = allowed.iter().find_map(|c| TopicDefinedFilter::of(c));
    let mut first_error = None;
    let attempts: Vec<(&str, &str)> = match topic_defined {
        Some(d) => vec![d.search_parameter()],
        None => types.iter().map(|t| (*t, f.parameter.as_str())).collect(),
    };
    for (rt, param) in attempts {
        match parse_filter(
            version,
            rt,
            param,
            f.comparator.as_deref(),
            f.modifier.as_deref(),
            &f.value,
        ) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    Err(SubscriptionError::InvalidFilterValue {
        parameter: f.parameter.clone(),
        value: f.value.clone(),
        reason: first_error.unwrap_or_else(|| "no resource type in scope".to_owned()),
    })
}

/// Splits `scheme:rest`, lower-casing the scheme.
fn scheme(url: &str) -> Option<(String, &str)> {
    let (s, rest) = url.split_once(':')?;
    let valid = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && !rest.is_empty()).then(|| (s.to_ascii_lowercase(), rest))
}

/// `//host...` with a non-empty host and no whitespace.
fn has_host(rest: &str) -> bool {
    rest.strip_prefix("//")
        .map(|r| r.split(['/', '?', '#']).next().unwrap_or_default())
        .is_some_and(|authority| !authority.is_empty())
        && !rest.chars().any(char::is_whitespace)
}

fn check_endpoint(channel: &Channel) -> Result<(), SubscriptionError> {
    let kind = channel.kind;
    let bad = |endpoint: &str, reason: &str| SubscriptionError::InvalidEndpoint {
        channel: kind.code().to_owned(),
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let endpoint = channel.endpoint.as_deref().map(str::trim);
    match (kind, endpoint) {
        (ChannelType::Websocket, None) => Ok(()),
        (ChannelType::RestHook, None)
        | (ChannelType::Email, None)
        | (ChannelType::Message, None) => Err(SubscriptionError::Missing {
            element: "Subscription.endpoint".to_owned(),
        }),
        (ChannelType::RestHook, Some(e)) => match scheme(e) {
            Some((s, rest)) if (s == "http" || s == "https") && has_host(rest) => Ok(()),
            _ => Err(bad(e, "expected an absolute http:// or https:// URL")),
        },
        (ChannelType::Websocket, Some(e)) => match scheme(e) {
            Some((s, rest)) if (s == "ws" || s == "wss") && has_host(rest) => Ok(()),
            _ => Err(bad(e, "expected no endpoint, or a ws:// or wss:// URL")),
        },
        (ChannelType::Email, Some(e)) => match scheme(e) {
            Some((s, rest)) if s == "mailto" && rest.contains('@') => Ok(()),
            _ => Err(bad(e, "expected a mailto: address")),
        },
        // Herald delivers messages by POSTing them to the counterpart's `$process-message`.
        (ChannelType::Message, Some(e)) => match scheme(e) {
            Some((s, rest))
                if (s == "http" || s == "https")
                    && has_host(rest)
                    && !e.chars().any(char::is_whitespace) =>
            {
                Ok(())
            }
            _ => Err(bad(
                e,
                "expected the absolute http:// or https:// URL of the counterpart's $process-message",
            )),
        },
    }
}

/// Checks a MIME type (`application/fhir+json` or `application/json`, optional
/// `;fhirVersion=` matching the tenant).
pub fn check_content_type(
    version: FhirVersion,
    content_type: &str,
) -> Result<(), SubscriptionError> {
    let mut parts = content_type.split(';');
    let base = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    if !ACCEPTED_MIME_TYPES.contains(&base.as_str()) {
        return Err(SubscriptionError::UnsupportedContentType {
            content_type: content_type.to_owned(),
        });
    }
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("fhirVersion") {
            let requested = v.trim().trim_matches('"');
            if FhirVersion::parse(requested) != Some(version) {
                return Err(SubscriptionError::FhirVersionMismatch {
                    requested: requested.to_owned(),
                    tenant: version.fhir_version().to_owned(),
                });
            }
        }
    }
    Ok(())
}

fn check_channel(version: FhirVersion, channel: &Channel) -> Result<(), SubscriptionError> {
    check_endpoint(channel)?;
    // A message carries the resources themselves: the counterpart applies them by identifier.
    if channel.kind == ChannelType::Message && channel.content != PayloadContent::FullResource {
        return Err(SubscriptionError::Invalid {
            element: match version {
                FhirVersion::R4 | FhirVersion::R4B => "Subscription.channel.payload",
                FhirVersion::R5 => "Subscription.content",
            }
            .to_owned(),
            reason: format!(
                "the message channel carries the resources themselves: use full-resource, not {}",
                channel.content.code()
            ),
        });
    }
    let element = match version {
        FhirVersion::R4 | FhirVersion::R4B => "Subscription.channel.header",
        FhirVersion::R5 => "Subscription.parameter",
    };
    crate::headers::check_headers(&channel.headers, element)?;
    check_content_type(version, &channel.content_type)
}

/// Resource triggers per topic: every change of a trigger's resource type evaluates its
/// criteria, so the count bounds what one topic can make every write cost.
pub const MAX_TRIGGERS: usize = 16;

/// Parses and checks a topic submitted to a tenant of `version` (R5 or R4B `SubscriptionTopic`
/// (without R5-only elements on R4B), or an R4 Basic-wrapped topic): resource types known, FHIRPath criteria within the supported subset,
/// query criteria parseable.
pub fn validate_topic(version: FhirVersion, body: &Value) -> Result<Topic, SubscriptionError> {
    if version == FhirVersion::R4B {
        crate::r4b::check_topic_elements(body)?;
    }
    let topic = adapter::parse_topic(version, body)?;
    if topic.resource_triggers.len() > MAX_TRIGGERS {
        return Err(SubscriptionError::TooMany {
            element: "SubscriptionTopic.resourceTrigger".to_owned(),
            count: topic.resource_triggers.len(),
            limit: MAX_TRIGGERS,
        });
    }
    if topic.url.trim().is_empty() {
        return Err(SubscriptionError::Missing {
            element: "SubscriptionTopic.url".to_owned(),
        });
    }
    for t in &topic.resource_triggers {
        if !is_resource_type(version, &t.resource) {
            return Err(SubscriptionError::UnknownResourceType {
                resource_type: t.resource.clone(),
                element: "SubscriptionTopic.resourceTrigger.resource".to_owned(),
            });
        }
        if let Some(expr) = &t.fhirpath_criteria {
            fhirpath::parse(expr).map_err(|e| SubscriptionError::UnsupportedCriteria {
                element: "SubscriptionTopic.resourceTrigger.fhirPathCriteria".to_owned(),
                expression: expr.clone(),
                reason: e.to_string(),
            })?;
        }
        if let Some(q) = &t.query_criteria {
            for (name, query) in [("previous", &q.previous), ("current", &q.current)] {
                if let Some(query) = query {
                    parse_query(version, &t.resource, query).map_err(|e| {
                        SubscriptionError::UnsupportedCriteria {
                            element: format!(
                                "SubscriptionTopic.resourceTrigger.queryCriteria.{name}"
                            ),
                            expression: query.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                }
            }
        }
    }
    for c in &topic.can_filter_by {
        if let Some(rt) = &c.resource
            && !is_resource_type(version, rt)
        {
            return Err(SubscriptionError::UnknownResourceType {
                resource_type: rt.clone(),
                element: "SubscriptionTopic.canFilterBy.resource".to_owned(),
            });
        }
        if c.filter_parameter.contains(':') {
            return Err(SubscriptionError::Invalid {
                element: "SubscriptionTopic.canFilterBy.filterParameter".to_owned(),
                reason: format!("'{}' must not carry a modifier", c.filter_parameter),
            });
        }
    }
    for s in &topic.notification_shape {
        if !is_resource_type(version, &s.resource) {
            return Err(SubscriptionError::UnknownResourceType {
                resource_type: s.resource.clone(),
                element: "SubscriptionTopic.notificationShape.resource".to_owned(),
            });
        }
    }
    Ok(topic)
}
