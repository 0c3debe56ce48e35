//! R4 adapter (Subscriptions Backport): reads and writes backport `Subscription` JSON and
//! Basic-wrapped topics (`Basic.code = fhir-types#SubscriptionTopic`, cross-version extensions).
//!
//! Where the backport puts things: the topic canonical in `criteria`; filters in
//! `_criteria.extension` (backport-filter-criteria); custom channel types in `channel._type`;
//! the content level in `channel._payload`; heartbeat, timeout and max-count in
//! `channel.extension`; business identifiers in the 5.0 cross-version extension.

use serde_json::{Map, Value, json};

use crate::SubscriptionError;
use crate::json::{
    array, complex_ext, expect_resource_type, ext, ext_value, extensions, object, opt_str,
    primitive_extensions, req_str, str_array, with_url,
};
use crate::model::{
    CanFilterBy, Channel, ChannelType, Filter, Interaction, NotificationShape, PayloadContent,
    QueryCriteria, ResourceTrigger, Subscription, SubscriptionStatus, TestResult, Topic,
    TopicStatus, resource_type_name, resource_uri,
};
use crate::r5::{DEFAULT_CONTENT_TYPE, lenient_u32, split_comparators};

/// Base of the Subscriptions Backport extension canonicals.
pub const BACKPORT_BASE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
/// `backport-filter-criteria` (valueString on `_criteria`).
pub const EXT_FILTER_CRITERIA: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
/// `backport-payload-content` (valueCode on `channel._payload`).
pub const EXT_PAYLOAD_CONTENT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
/// `backport-heartbeat-period` (valueUnsignedInt on `channel`).
pub const EXT_HEARTBEAT_PERIOD: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";
/// `backport-timeout` (valueUnsignedInt on `channel`).
pub const EXT_TIMEOUT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout";
/// `backport-max-count` (valuePositiveInt on `channel`).
pub const EXT_MAX_COUNT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count";
/// `backport-channel-type` (valueCoding on `channel._type`).
pub const EXT_CHANNEL_TYPE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-channel-type";
/// The backport Subscription profile.
pub const PROFILE_BACKPORT_SUBSCRIPTION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
/// Cross-version extension carrying `Subscription.identifier` (valueIdentifier).
pub const EXT_SUBSCRIPTION_IDENTIFIER: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.identifier";
/// Prefix of the 5.0 cross-version Subscription extensions.
pub const XVER_SUBSCRIPTION_PREFIX: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.";
/// Prefix of the 5.0 cross-version SubscriptionTopic extensions (Herald writes these).
pub const XVER_TOPIC_PREFIX_50: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.";
/// Prefix of the 4.3 cross-version SubscriptionTopic extensions (backport IG HEAD; read too).
pub const XVER_TOPIC_PREFIX_43: &str =
    "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic.";
/// `Basic.code` system for a wrapped topic.
pub const FHIR_TYPES_SYSTEM: &str = "http://hl7.org/fhir/fhir-types";

/// For each 5.0 cross-version Subscription extension the backport replaces, the extension (or
/// element) to use instead (spec §1.A item 9).
pub const XVER_REPLACED: [(&str, &str); 9] = [
    ("heartbeatPeriod", EXT_HEARTBEAT_PERIOD),
    ("timeout", EXT_TIMEOUT),
    ("maxCount", EXT_MAX_COUNT),
    ("content", EXT_PAYLOAD_CONTENT),
    ("filterBy", EXT_FILTER_CRITERIA),
    ("channelType", EXT_CHANNEL_TYPE),
    ("topic", "Subscription.criteria"),
    ("contentType", "Subscription.channel.payload"),
    ("parameter", "Subscription.channel.header"),
];

/// Parses one backport filter-criteria string. Accepted forms: `Type?param=value`,
/// `Type.param=value`, `param=value`, each with an optional `:modifier` after the parameter;
/// several `&`-joined pairs give several (ANDed) filters. A leading comparator prefix stays in
/// the value (`le1950`), as in search syntax.
pub fn parse_filter_criteria(criteria: &str) -> Result<Vec<Filter>, SubscriptionError> {
    let bad = || SubscriptionError::InvalidFilterCriteria {
        criteria: criteria.to_owned(),
    };
    let text = criteria.trim();
    let (type_from_query, rest) = match text.split_once('?') {
        Some((t, rest)) => (Some(t.trim()), rest),
        None => (None, text),
    };
    if type_from_query.is_some_and(|t| t.is_empty() || !is_type_name(t)) {
        return Err(bad());
    }
    let mut out = Vec::new();
    for pair in rest.split('&').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        let (resource_type, name) = match (type_from_query, name.split_once('.')) {
            (Some(t), _) => (Some(t.to_owned()), name),
            (None, Some((t, p))) if is_type_name(t) => (Some(t.to_owned()), p),
            (None, _) => (None, name),
        };
        let (parameter, modifier) = match name.split_once(':') {
            Some((p, m)) => (p, Some(m.to_owned())),
            None => (name, None),
        };
        if parameter.is_empty() || modifier.as_deref() == Some("") || value.is_empty() {
            return Err(bad());
        }
        out.push(Filter {
            resource_type,
            parameter: parameter.to_owned(),
            comparator: None,
            modifier,
            value: percent_decode(value),
        });
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

fn is_type_name(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Decodes `%XX` escapes (criteria may or may not be URL-encoded; be defensive).
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Renders a filter in the `Type?param[:modifier]=value` form the backport examples use.
pub fn filter_to_criteria(f: &Filter) -> String {
    let mut s = String::new();
    if let Some(rt) = &f.resource_type {
        s.push_str(rt);
        s.push('?');
    }
    s.push_str(&f.parameter);
    if let Some(m) = &f.modifier {
        s.push(':');
        s.push_str(m);
    }
    s.push('=');
    if let Some(c) = &f.comparator {
        s.push_str(c);
    }
    s.push_str(&f.value);
    s
}

/// Whether an R4 `criteria` looks like a topic canonical rather than a classic query.
fn looks_like_canonical(criteria: &str) -> bool {
    let lower = criteria.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("urn:"))
        && !criteria.contains('?')
}

/// Parses an R4 backport `Subscription`.
///
/// Lenient where real servers deviate (heartbeat as `valueInteger`, numbers as strings). The
/// content level is 1..1 in the backport profile, so its absence is refused here.
pub fn parse_subscription(body: &Value) -> Result<Subscription, SubscriptionError> {
    expect_resource_type(body, "Subscription")?;
    let obj = object(body, "Subscription")?;
    let el = "Subscription";
    let status_code = req_str(obj, "status", el)?;
    let status = match SubscriptionStatus::from_code(&status_code) {
        Some(SubscriptionStatus::EnteredInError) | None => {
            return Err(SubscriptionError::UnknownStatus {
                status: status_code,
            });
        }
        Some(s) => s,
    };
    let criteria = req_str(obj, "criteria", el)?;
    if !looks_like_canonical(&criteria) {
        return Err(SubscriptionError::NotTopicBased { criteria });
    }

    let mut filters = Vec::new();
    for e in with_url(primitive_extensions(obj, "criteria"), EXT_FILTER_CRITERIA) {
        let s = ext_value(e)
            .and_then(Value::as_str)
            .ok_or_else(|| SubscriptionError::Invalid {
                element: "Subscription.criteria.extension(backport-filter-criteria)".to_owned(),
                reason: "expected valueString".to_owned(),
            })?;
        filters.extend(parse_filter_criteria(s)?);
    }

    let identifier: Vec<Value> = with_url(extensions(body), EXT_SUBSCRIPTION_IDENTIFIER)
        .filter_map(|e| ext_value(e).cloned())
        .collect();

    let channel = obj.get("channel").ok_or(SubscriptionError::Missing {
        element: "Subscription.channel".to_owned(),
    })?;
    let cel = "Subscription.channel";
    let co = object(channel, cel)?;
    let type_code = req_str(co, "type", cel)?;
    let kind = match with_url(primitive_extensions(co, "type"), EXT_CHANNEL_TYPE).next() {
        Some(e) => {
            let coding = ext_value(e).and_then(Value::as_object);
            let system = coding.and_then(|c| c.get("system")).and_then(Value::as_str);
            let code = coding
                .and_then(|c| c.get("code"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let known = match system {
                None => ChannelType::from_code(code),
                Some(s) if s == ChannelType::SYSTEM => ChannelType::from_code(code),
                Some(_) => None,
            };
            known.ok_or_else(|| SubscriptionError::UnknownChannelType {
                channel: match system {
                    Some(s) => format!("{s}|{code}"),
                    None => code.to_owned(),
                },
            })?
        }
        None => ChannelType::from_code(&type_code)
            .ok_or(SubscriptionError::UnknownChannelType { channel: type_code })?,
    };

    let mut headers = Vec::new();
    for h in str_array(co, "header", cel)? {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| SubscriptionError::Invalid {
                element: "Subscription.channel.header".to_owned(),
                reason: format!("'{h}' is not of the form 'Name: value'"),
            })?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }

    let channel_ext = extensions(channel);
    let ext_u32 = |url: &str, name: &str| -> Result<Option<u32>, SubscriptionError> {
        match with_url(channel_ext, url).next() {
            None => Ok(None),
            Some(e) => {
                let v = ext_value(e).ok_or_else(|| SubscriptionError::Invalid {
                    element: format!("Subscription.channel.extension({name})"),
                    reason: "missing value".to_owned(),
                })?;
                lenient_u32(v, &format!("Subscription.channel.extension({name})")).map(Some)
            }
        }
    };

    let content_code = with_url(primitive_extensions(co, "payload"), EXT_PAYLOAD_CONTENT)
        .next()
        .and_then(ext_value)
        .and_then(Value::as_str)
        .ok_or(SubscriptionError::MissingContent {
            element: "Subscription.channel.payload.extension(backport-payload-content)".to_owned(),
        })?;
    let content = PayloadContent::from_code(content_code).ok_or_else(|| {
        SubscriptionError::UnknownContent {
            content: content_code.to_owned(),
        }
    })?;

    Ok(Subscription {
        id: opt_str(obj, "id", el)?.unwrap_or_default(),
        identifier,
        status,
        topic: criteria,
        filters,
        channel: Channel {
            kind,
            endpoint: opt_str(co, "endpoint", cel)?,
            headers,
            heartbeat_period: ext_u32(EXT_HEARTBEAT_PERIOD, "backport-heartbeat-period")?,
            timeout: ext_u32(EXT_TIMEOUT, "backport-timeout")?,
            content_type: opt_str(co, "payload", cel)?
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            content,
            max_count: ext_u32(EXT_MAX_COUNT, "backport-max-count")?,
        },
        end: opt_str(obj, "end", el)?,
        reason: opt_str(obj, "reason", el)?,
    })
}

/// Renders a Subscription as an R4 backport Subscription (without `meta.versionId` etc.; the
/// backport profile is listed in `meta.profile`). Entered-in-error, which R4 lacks, is written
/// as `off`.
pub fn subscription_to_json(sub: &Subscription) -> Value {
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Subscription"));
    if !sub.id.is_empty() {
        m.insert("id".into(), json!(sub.id));
    }
    m.insert(
        "meta".into(),
        json!({ "profile": [PROFILE_BACKPORT_SUBSCRIPTION] }),
    );
    if !sub.identifier.is_empty() {
        let exts: Vec<Value> = sub
            .identifier
            .iter()
            .map(|i| ext(EXT_SUBSCRIPTION_IDENTIFIER, "valueIdentifier", i.clone()))
            .collect();
        m.insert("extension".into(), Value::Array(exts));
    }
    let status = match sub.status {
        SubscriptionStatus::EnteredInError => SubscriptionStatus::Off,
        s => s,
    };
    m.insert("status".into(), json!(status.code()));
    if let Some(end) = &sub.end {
        m.insert("end".into(), json!(end));
    }
    // reason is 1..1 in R4 core.
    m.insert(
        "reason".into(),
        json!(sub.reason.clone().unwrap_or_default()),
    );
    m.insert("criteria".into(), json!(sub.topic));
    if !sub.filters.is_empty() {
        let exts: Vec<Value> = sub
            .filters
            .iter()
            .map(|f| {
                ext(
                    EXT_FILTER_CRITERIA,
                    "valueString",
                    json!(filter_to_criteria(f)),
                )
            })
            .collect();
        m.insert("_criteria".into(), json!({ "extension": exts }));
    }
    let ch = &sub.channel;
    let mut cm = Map::new();
    let mut cexts = Vec::new();
    if let Some(h) = ch.heartbeat_period {
        cexts.push(ext(EXT_HEARTBEAT_PERIOD, "valueUnsignedInt", json!(h)));
    }
    if let Some(t) = ch.timeout {
        cexts.push(ext(EXT_TIMEOUT, "valueUnsignedInt", json!(t)));
    }
    if let Some(mc) = ch.max_count {
        cexts.push(ext(EXT_MAX_COUNT, "valuePositiveInt", json!(mc)));
    }
    if !cexts.is_empty() {
        cm.insert("extension".into(), Value::Array(cexts));
    }
    cm.insert("type".into(), json!(ch.kind.code()));
    if let Some(e) = &ch.endpoint {
        cm.insert("endpoint".into(), json!(e));
    }
    cm.insert("payload".into(), json!(ch.content_type));
    cm.insert(
        "_payload".into(),
        json!({ "extension": [ext(EXT_PAYLOAD_CONTENT, "valueCode", json!(ch.content.code()))] }),
    );
    if !ch.headers.is_empty() {
        let hs: Vec<String> = ch
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        cm.insert("header".into(), json!(hs));
    }
    m.insert("channel".into(), Value::Object(cm));
    Value::Object(m)
}

/// Writes `status` and `Subscription.error` into a stored R4 Subscription. `error` is set when
/// given and removed otherwise (an active subscription carries no stale error). R4 has no
/// `entered-in-error`, which is refused.
pub fn set_status(
    body: &mut Value,
    status: SubscriptionStatus,
    error: Option<&str>,
) -> Result<(), SubscriptionError> {
    if status == SubscriptionStatus::EnteredInError {
        return Err(SubscriptionError::StatusNotInVersion {
            status: status.code().to_owned(),
            version: "R4".to_owned(),
        });
    }
    let obj = body.as_object_mut().ok_or(SubscriptionError::Invalid {
        element: "Subscription".to_owned(),
        reason: "expected a JSON object".to_owned(),
    })?;
    obj.insert("status".into(), json!(status.code()));
    match error {
        Some(e) => {
            obj.insert("error".into(), json!(e));
        }
        None => {
            obj.remove("error");
        }
    }
    Ok(())
}

/// Whether a Basic resource wraps a SubscriptionTopic (`code` = fhir-types#SubscriptionTopic).
pub fn is_basic_topic(body: &Value) -> bool {
    body.get("resourceType").and_then(Value::as_str) == Some("Basic")
        && body
            .get("code")
            .and_then(|c| c.get("coding"))
            .and_then(Value::as_array)
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c.get("system").and_then(Value::as_str) == Some(FHIR_TYPES_SYSTEM)
                        && c.get("code").and_then(Value::as_str) == Some("SubscriptionTopic")
                })
            })
}

/// The element name of a topic cross-version extension URL (either prefix), e.g. `url`.
fn topic_element(url: &str) -> Option<&str> {
    url.strip_prefix(XVER_TOPIC_PREFIX_50)
        .or_else(|| url.strip_prefix(XVER_TOPIC_PREFIX_43))
}

fn sub_str(children: &[Value], name: &str) -> Option<String> {
    with_url(children, name)
        .next()
        .and_then(ext_value)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn sub_strs(children: &[Value], name: &str) -> Vec<String> {
    with_url(children, name)
        .filter_map(ext_value)
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn test_result(children: &[Value], name: &str) -> Result<Option<TestResult>, SubscriptionError> {
    match sub_str(children, name) {
        None => Ok(None),
        Some(c) => TestResult::from_code(&c)
            .map(Some)
            .ok_or_else(|| SubscriptionError::Invalid {
                element: format!("Basic.extension(queryCriteria).{name}"),
                reason: format!("'{c}' is not test-passes or test-fails"),
            }),
    }
}

/// Parses a Basic-wrapped topic. Accepts both the `5.0` and the `4.3` cross-version prefixes;
/// `status` may be a modifierExtension (as the IG does) or a plain extension.
pub fn parse_basic_topic(body: &Value) -> Result<Topic, SubscriptionError> {
    expect_resource_type(body, "Basic")?;
    if !is_basic_topic(body) {
        return Err(SubscriptionError::Invalid {
            element: "Basic.code".to_owned(),
            reason: format!("expected {FHIR_TYPES_SYSTEM}#SubscriptionTopic"),
        });
    }
    let obj = object(body, "Basic")?;
    let mut all: Vec<&Value> = extensions(body).iter().collect();
    all.extend(array(obj, "modifierExtension", "Basic")?.iter());

    let mut url = None;
    let mut topic = Topic {
        url: String::new(),
        version: None,
        name: None,
        title: None,
        status: TopicStatus::Active,
        date: None,
        description: None,
        resource_triggers: Vec::new(),
        can_filter_by: Vec::new(),
        notification_shape: Vec::new(),
    };
    let mut status_seen = false;
    for e in all {
        let Some(element) = e.get("url").and_then(Value::as_str).and_then(topic_element) else {
            continue;
        };
        let s = ext_value(e).and_then(Value::as_str).map(str::to_owned);
        let children = extensions(e);
        match element {
            "url" => url = s,
            "version" => topic.version = s,
            "name" => topic.name = s,
            "title" => topic.title = s,
            "date" => topic.date = s,
            "description" => topic.description = s,
            "status" => {
                let code = s.unwrap_or_default();
                topic.status =
                    TopicStatus::from_code(&code).ok_or_else(|| SubscriptionError::Invalid {
                        element: "Basic.modifierExtension(SubscriptionTopic.status)".to_owned(),
                        reason: format!("unknown status '{code}'"),
                    })?;
                status_seen = true;
            }
            "resourceTrigger" => {
                let mut interactions = Vec::new();
                for code in sub_strs(children, "supportedInteraction") {
                    interactions.push(Interaction::from_code(&code).ok_or_else(|| {
                        SubscriptionError::Invalid {
                            element: "Basic.extension(resourceTrigger).supportedInteraction"
                                .to_owned(),
                            reason: format!("unknown interaction '{code}'"),
                        }
                    })?);
                }
                let query_criteria = match with_url(children, "queryCriteria").next() {
                    None => None,
                    Some(q) => {
                        let qc = extensions(q);
                        Some(QueryCriteria {
                            previous: sub_str(qc, "previous"),
                            current: sub_str(qc, "current"),
                            result_for_create: test_result(qc, "resultForCreate")?,
                            result_for_delete: test_result(qc, "resultForDelete")?,
                            require_both: with_url(qc, "requireBoth")
                                .next()
                                .and_then(ext_value)
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                        })
                    }
                };
                let resource = sub_str(children, "resource").ok_or(SubscriptionError::Missing {
                    element: "Basic.extension(resourceTrigger).resource".to_owned(),
                })?;
                topic.resource_triggers.push(ResourceTrigger {
                    description: sub_str(children, "description"),
                    resource: resource_type_name(&resource).to_owned(),
                    interactions,
                    query_criteria,
                    fhirpath_criteria: sub_str(children, "fhirPathCriteria"),
                });
            }
            "canFilterBy" => {
                let (comparators, modifiers) = split_comparators(
                    sub_strs(children, "comparator"),
                    sub_strs(children, "modifier"),
                );
                topic.can_filter_by.push(CanFilterBy {
                    description: sub_str(children, "description"),
                    resource: sub_str(children, "resource")
                        .map(|r| resource_type_name(&r).to_owned()),
                    filter_parameter: sub_str(children, "filterParameter").ok_or(
                        SubscriptionError::Missing {
                            element: "Basic.extension(canFilterBy).filterParameter".to_owned(),
                        },
                    )?,
                    filter_definition: sub_str(children, "filterDefinition"),
                    comparators,
                    modifiers,
                });
            }
            "notificationShape" => {
                let resource = sub_str(children, "resource").ok_or(SubscriptionError::Missing {
                    element: "Basic.extension(notificationShape).resource".to_owned(),
                })?;
                topic.notification_shape.push(NotificationShape {
                    resource: resource_type_name(&resource).to_owned(),
                    include: sub_strs(children, "include"),
                    rev_include: sub_strs(children, "revInclude"),
                });
            }
            _ => {}
        }
    }
    if !status_seen {
        return Err(SubscriptionError::Missing {
            element: "Basic.modifierExtension(SubscriptionTopic.status)".to_owned(),
        });
    }
    topic.url = url.ok_or(SubscriptionError::Missing {
        element: "Basic.extension(SubscriptionTopic.url)".to_owned(),
    })?;
    Ok(topic)
}

fn x(element: &str) -> String {
    format!("{XVER_TOPIC_PREFIX_50}{element}")
}

/// Renders a Topic as an R4 `Basic` with `code` fhir-types#SubscriptionTopic and the 5.0
/// cross-version extensions (`status` as a modifierExtension).
pub fn topic_to_basic(topic: &Topic, id: Option<&str>) -> Value {
    let mut exts = vec![ext(&x("url"), "valueUri", json!(topic.url))];
    let strings = [
        ("version", "valueString", &topic.version),
        ("name", "valueString", &topic.name),
        ("title", "valueString", &topic.title),
        ("date", "valueDateTime", &topic.date),
        ("description", "valueMarkdown", &topic.description),
    ];
    for (element, key, v) in strings {
        if let Some(v) = v {
            exts.push(ext(&x(element), key, json!(v)));
        }
    }
    for t in &topic.resource_triggers {
        let mut c = Vec::new();
        if let Some(d) = &t.description {
            c.push(ext("description", "valueMarkdown", json!(d)));
        }
        c.push(ext(
            "resource",
            "valueUri",
            json!(resource_uri(&t.resource)),
        ));
        for i in &t.interactions {
            c.push(ext("supportedInteraction", "valueCode", json!(i.code())));
        }
        if let Some(q) = &t.query_criteria {
            let mut qc = Vec::new();
            if let Some(p) = &q.previous {
                qc.push(ext("previous", "valueString", json!(p)));
            }
            if let Some(r) = q.result_for_create {
                qc.push(ext("resultForCreate", "valueCode", json!(r.code())));
            }
            if let Some(cur) = &q.current {
                qc.push(ext("current", "valueString", json!(cur)));
            }
            if let Some(r) = q.result_for_delete {
                qc.push(ext("resultForDelete", "valueCode", json!(r.code())));
            }
            qc.push(ext("requireBoth", "valueBoolean", json!(q.require_both)));
            c.push(complex_ext("queryCriteria", qc));
        }
        if let Some(f) = &t.fhirpath_criteria {
            c.push(ext("fhirPathCriteria", "valueString", json!(f)));
        }
        exts.push(complex_ext(&x("resourceTrigger"), c));
    }
    for f in &topic.can_filter_by {
        let mut c = Vec::new();
        if let Some(d) = &f.description {
            c.push(ext("description", "valueMarkdown", json!(d)));
        }
        if let Some(r) = &f.resource {
            c.push(ext("resource", "valueUri", json!(resource_uri(r))));
        }
        c.push(ext(
            "filterParameter",
            "valueString",
            json!(f.filter_parameter),
        ));
        if let Some(d) = &f.filter_definition {
            c.push(ext("filterDefinition", "valueUri", json!(d)));
        }
        for cmp in &f.comparators {
            c.push(ext("comparator", "valueCode", json!(cmp)));
        }
        for md in &f.modifiers {
            c.push(ext("modifier", "valueCode", json!(md)));
        }
        exts.push(complex_ext(&x("canFilterBy"), c));
    }
    for s in &topic.notification_shape {
        let mut c = vec![ext(
            "resource",
            "valueUri",
            json!(resource_uri(&s.resource)),
        )];
        for i in &s.include {
            c.push(ext("include", "valueString", json!(i)));
        }
        for r in &s.rev_include {
            c.push(ext("revInclude", "valueString", json!(r)));
        }
        exts.push(complex_ext(&x("notificationShape"), c));
    }
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Basic"));
    if let Some(id) = id {
        m.insert("id".into(), json!(id));
    }
    m.insert("extension".into(), Value::Array(exts));
    m.insert(
        "modifierExtension".into(),
        json!([ext(&x("status"), "valueCode", json!(topic.status.code()))]),
    );
    m.insert(
        "code".into(),
        json!({ "coding": [{ "system": FHIR_TYPES_SYSTEM, "code": "SubscriptionTopic" }] }),
    );
    Value::Object(m)
}
