//! R5 adapter: reads and writes R5 `Subscription` and `SubscriptionTopic` JSON (R4B topics read
//! too, their comparators-as-modifiers are sorted out) to and from the version-neutral model.
//!
//! Parsing is structural and lenient about what the model does not keep; the checks that refuse a
//! client request (topic exists, filters allowed, endpoint fits the channel, …) live in
//! [`crate::validate`].

use serde_json::{Map, Value, json};

use crate::SubscriptionError;
use crate::json::{
    array, as_u32, expect_resource_type, object, opt_str, opt_u32, req_str, str_array,
};
use crate::model::{
    CanFilterBy, Channel, ChannelType, Filter, Interaction, NotificationShape, PayloadContent,
    QueryCriteria, ResourceTrigger, Subscription, SubscriptionStatus, TestResult, Topic,
    TopicStatus, resource_type_name, resource_uri,
};

/// Default MIME type when a Subscription gives none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/fhir+json";

/// Search comparator codes (`search-comparator`); R4B topics list them among the modifiers.
pub const COMPARATORS: [&str; 9] = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

/// Parses an R5 `Subscription`.
///
/// `content` defaults to `empty` and `contentType` to `application/fhir+json` when absent (the
/// least revealing choice); [`crate::validate`] refuses a client request without `content`.
pub fn parse_subscription(body: &Value) -> Result<Subscription, SubscriptionError> {
    expect_resource_type(body, "Subscription")?;
    let obj = object(body, "Subscription")?;
    let el = "Subscription";
    let status_code = req_str(obj, "status", el)?;
    let status =
        SubscriptionStatus::from_code(&status_code).ok_or(SubscriptionError::UnknownStatus {
            status: status_code,
        })?;
    let topic = req_str(obj, "topic", el)?;

    let mut filters = Vec::new();
    for f in array(obj, "filterBy", el)? {
        let fo = object(f, "Subscription.filterBy")?;
        let fel = "Subscription.filterBy";
        filters.push(Filter {
            resource_type: opt_str(fo, "resourceType", fel)?
                .map(|r| resource_type_name(&r).to_owned()),
            parameter: req_str(fo, "filterParameter", fel)?,
            comparator: opt_str(fo, "comparator", fel)?,
            modifier: opt_str(fo, "modifier", fel)?,
            value: req_str(fo, "value", fel)?,
        });
    }

    let channel_type = obj.get("channelType").ok_or(SubscriptionError::Missing {
        element: "Subscription.channelType".to_owned(),
    })?;
    let co = object(channel_type, "Subscription.channelType")?;
    let code = opt_str(co, "code", "Subscription.channelType")?.unwrap_or_default();
    let system = opt_str(co, "system", "Subscription.channelType")?;
    let kind = match system.as_deref() {
        None => ChannelType::from_code(&code),
        Some(s) if s == ChannelType::SYSTEM => ChannelType::from_code(&code),
        Some(_) => None,
    }
    .ok_or_else(|| SubscriptionError::UnknownChannelType {
        channel: match &system {
            Some(s) => format!("{s}|{code}"),
            None => code.clone(),
        },
    })?;

    let mut headers = Vec::new();
    for p in array(obj, "parameter", el)? {
        let po = object(p, "Subscription.parameter")?;
        headers.push((
            req_str(po, "name", "Subscription.parameter")?,
            req_str(po, "value", "Subscription.parameter")?,
        ));
    }

    let content = match opt_str(obj, "content", el)? {
        None => PayloadContent::Empty,
        Some(c) => {
            PayloadContent::from_code(&c).ok_or(SubscriptionError::UnknownContent { content: c })?
        }
    };

    Ok(Subscription {
        id: opt_str(obj, "id", el)?.unwrap_or_default(),
        identifier: array(obj, "identifier", el)?.to_vec(),
        status,
        topic,
        filters,
        channel: Channel {
            kind,
            endpoint: opt_str(obj, "endpoint", el)?,
            headers,
            heartbeat_period: opt_u32(obj, "heartbeatPeriod", el)?,
            timeout: opt_u32(obj, "timeout", el)?,
            content_type: opt_str(obj, "contentType", el)?
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            content,
            max_count: opt_u32(obj, "maxCount", el)?,
        },
        end: opt_str(obj, "end", el)?,
        reason: opt_str(obj, "reason", el)?,
    })
}

/// Renders a Subscription as R5 JSON (without `meta`; the store adds it).
pub fn subscription_to_json(sub: &Subscription) -> Value {
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Subscription"));
    if !sub.id.is_empty() {
        m.insert("id".into(), json!(sub.id));
    }
    if !sub.identifier.is_empty() {
        m.insert("identifier".into(), Value::Array(sub.identifier.clone()));
    }
    m.insert("status".into(), json!(sub.status.code()));
    m.insert("topic".into(), json!(sub.topic));
    if let Some(end) = &sub.end {
        m.insert("end".into(), json!(end));
    }
    if let Some(reason) = &sub.reason {
        m.insert("reason".into(), json!(reason));
    }
    if !sub.filters.is_empty() {
        let filters = sub
            .filters
            .iter()
            .map(|f| {
                let mut fm = Map::new();
                if let Some(rt) = &f.resource_type {
                    fm.insert("resourceType".into(), json!(rt));
                }
                fm.insert("filterParameter".into(), json!(f.parameter));
                if let Some(c) = &f.comparator {
                    fm.insert("comparator".into(), json!(c));
                }
                if let Some(md) = &f.modifier {
                    fm.insert("modifier".into(), json!(md));
                }
                fm.insert("value".into(), json!(f.value));
                Value::Object(fm)
            })
            .collect();
        m.insert("filterBy".into(), Value::Array(filters));
    }
    let ch = &sub.channel;
    m.insert(
        "channelType".into(),
        json!({ "system": ChannelType::SYSTEM, "code": ch.kind.code() }),
    );
    if let Some(e) = &ch.endpoint {
        m.insert("endpoint".into(), json!(e));
    }
    if !ch.headers.is_empty() {
        let params = ch
            .headers
            .iter()
            .map(|(n, v)| json!({ "name": n, "value": v }))
            .collect();
        m.insert("parameter".into(), Value::Array(params));
    }
    if let Some(h) = ch.heartbeat_period {
        m.insert("heartbeatPeriod".into(), json!(h));
    }
    if let Some(t) = ch.timeout {
        m.insert("timeout".into(), json!(t));
    }
    m.insert("contentType".into(), json!(ch.content_type));
    m.insert("content".into(), json!(ch.content.code()));
    if let Some(mc) = ch.max_count {
        m.insert("maxCount".into(), json!(mc));
    }
    Value::Object(m)
}

/// Writes `status` into a stored R5 Subscription. R5 has no `Subscription.error`: errors are
/// reported through `SubscriptionStatus`, so nothing else is touched.
pub fn set_status(body: &mut Value, status: SubscriptionStatus) -> Result<(), SubscriptionError> {
    let obj = body.as_object_mut().ok_or(SubscriptionError::Invalid {
        element: "Subscription".to_owned(),
        reason: "expected a JSON object".to_owned(),
    })?;
    obj.insert("status".into(), json!(status.code()));
    Ok(())
}

fn test_result(
    obj: &Map<String, Value>,
    key: &str,
    el: &str,
) -> Result<Option<TestResult>, SubscriptionError> {
    match opt_str(obj, key, el)? {
        None => Ok(None),
        Some(c) => TestResult::from_code(&c)
            .map(Some)
            .ok_or_else(|| SubscriptionError::Invalid {
                element: format!("{el}.{key}"),
                reason: format!("'{c}' is not test-passes or test-fails"),
            }),
    }
}

/// Splits R4B-style modifier lists (which carry comparators and `=`) into comparators and
/// modifiers.
pub(crate) fn split_comparators(
    comparators: Vec<String>,
    modifiers: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let mut comps = comparators;
    let mut mods = Vec::new();
    for m in modifiers {
        if COMPARATORS.contains(&m.as_str()) {
            if !comps.contains(&m) {
                comps.push(m);
            }
        } else if m != "=" {
            mods.push(m);
        }
    }
    (comps, mods)
}

/// Parses an R5 (or R4B) `SubscriptionTopic`.
pub fn parse_topic(body: &Value) -> Result<Topic, SubscriptionError> {
    expect_resource_type(body, "SubscriptionTopic")?;
    let obj = object(body, "SubscriptionTopic")?;
    let el = "SubscriptionTopic";
    let status_code = req_str(obj, "status", el)?;
    let status =
        TopicStatus::from_code(&status_code).ok_or_else(|| SubscriptionError::Invalid {
            element: "SubscriptionTopic.status".to_owned(),
            reason: format!("unknown status '{status_code}'"),
        })?;

    let mut resource_triggers = Vec::new();
    for t in array(obj, "resourceTrigger", el)? {
        let tel = "SubscriptionTopic.resourceTrigger";
        let to = object(t, tel)?;
        let mut interactions = Vec::new();
        for code in str_array(to, "supportedInteraction", tel)? {
            interactions.push(Interaction::from_code(&code).ok_or_else(|| {
                SubscriptionError::Invalid {
                    element: format!("{tel}.supportedInteraction"),
                    reason: format!("unknown interaction '{code}'"),
                }
            })?);
        }
        let query_criteria = match to.get("queryCriteria") {
            None | Some(Value::Null) => None,
            Some(q) => {
                let qel = "SubscriptionTopic.resourceTrigger.queryCriteria";
                let qo = object(q, qel)?;
                Some(QueryCriteria {
                    previous: opt_str(qo, "previous", qel)?,
                    current: opt_str(qo, "current", qel)?,
                    result_for_create: test_result(qo, "resultForCreate", qel)?,
                    result_for_delete: test_result(qo, "resultForDelete", qel)?,
                    require_both: match qo.get("requireBoth") {
                        None | Some(Value::Null) => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => {
                            return Err(SubscriptionError::Invalid {
                                element: format!("{qel}.requireBoth"),
                                reason: "expected a boolean".to_owned(),
                            });
                        }
                    },
                })
            }
        };
        resource_triggers.push(ResourceTrigger {
            description: opt_str(to, "description", tel)?,
            resource: resource_type_name(&req_str(to, "resource", tel)?).to_owned(),
            interactions,
            query_criteria,
            fhirpath_criteria: opt_str(to, "fhirPathCriteria", tel)?,
        });
    }

    let mut can_filter_by = Vec::new();
    for c in array(obj, "canFilterBy", el)? {
        let cel = "SubscriptionTopic.canFilterBy";
        let co = object(c, cel)?;
        let (comparators, modifiers) = split_comparators(
            str_array(co, "comparator", cel)?,
            str_array(co, "modifier", cel)?,
        );
        can_filter_by.push(CanFilterBy {
            description: opt_str(co, "description", cel)?,
            resource: opt_str(co, "resource", cel)?.map(|r| resource_type_name(&r).to_owned()),
            filter_parameter: req_str(co, "filterParameter", cel)?,
            filter_definition: opt_str(co, "filterDefinition", cel)?,
            comparators,
            modifiers,
        });
    }

    let mut notification_shape = Vec::new();
    for s in array(obj, "notificationShape", el)? {
        let sel = "SubscriptionTopic.notificationShape";
        let so = object(s, sel)?;
        notification_shape.push(NotificationShape {
            resource: resource_type_name(&req_str(so, "resource", sel)?).to_owned(),
            include: str_array(so, "include", sel)?,
            rev_include: str_array(so, "revInclude", sel)?,
        });
    }

    Ok(Topic {
        url: req_str(obj, "url", el)?,
        version: opt_str(obj, "version", el)?,
        name: opt_str(obj, "name", el)?,
        title: opt_str(obj, "title", el)?,
        status,
        date: opt_str(obj, "date", el)?,
        description: opt_str(obj, "description", el)?,
        resource_triggers,
        can_filter_by,
        notification_shape,
    })
}

/// Renders a Topic as an R5 `SubscriptionTopic` (with `id` when given).
pub fn topic_to_json(topic: &Topic, id: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("SubscriptionTopic"));
    if let Some(id) = id {
        m.insert("id".into(), json!(id));
    }
    m.insert("url".into(), json!(topic.url));
    let optional = [
        ("version", &topic.version),
        ("name", &topic.name),
        ("title", &topic.title),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("status".into(), json!(topic.status.code()));
    if let Some(d) = &topic.date {
        m.insert("date".into(), json!(d));
    }
    if let Some(d) = &topic.description {
        m.insert("description".into(), json!(d));
    }
    if !topic.resource_triggers.is_empty() {
        let triggers = topic
            .resource_triggers
            .iter()
            .map(|t| {
                let mut tm = Map::new();
                if let Some(d) = &t.description {
                    tm.insert("description".into(), json!(d));
                }
                tm.insert("resource".into(), json!(resource_uri(&t.resource)));
                if !t.interactions.is_empty() {
                    let codes: Vec<&str> = t.interactions.iter().map(|i| i.code()).collect();
                    tm.insert("supportedInteraction".into(), json!(codes));
                }
                if let Some(q) = &t.query_criteria {
                    let mut qm = Map::new();
                    if let Some(p) = &q.previous {
                        qm.insert("previous".into(), json!(p));
                    }
                    if let Some(r) = q.result_for_create {
                        qm.insert("resultForCreate".into(), json!(r.code()));
                    }
                    if let Some(c) = &q.current {
                        qm.insert("current".into(), json!(c));
                    }
                    if let Some(r) = q.result_for_delete {
                        qm.insert("resultForDelete".into(), json!(r.code()));
                    }
                    qm.insert("requireBoth".into(), json!(q.require_both));
                    tm.insert("queryCriteria".into(), Value::Object(qm));
                }
                if let Some(f) = &t.fhirpath_criteria {
                    tm.insert("fhirPathCriteria".into(), json!(f));
                }
                Value::Object(tm)
            })
            .collect();
        m.insert("resourceTrigger".into(), Value::Array(triggers));
    }
    if !topic.can_filter_by.is_empty() {
        let list = topic
            .can_filter_by
            .iter()
            .map(|c| {
                let mut cm = Map::new();
                if let Some(d) = &c.description {
                    cm.insert("description".into(), json!(d));
                }
                if let Some(r) = &c.resource {
                    cm.insert("resource".into(), json!(resource_uri(r)));
                }
                cm.insert("filterParameter".into(), json!(c.filter_parameter));
                if let Some(d) = &c.filter_definition {
                    cm.insert("filterDefinition".into(), json!(d));
                }
                if !c.comparators.is_empty() {
                    cm.insert("comparator".into(), json!(c.comparators));
                }
                if !c.modifiers.is_empty() {
                    cm.insert("modifier".into(), json!(c.modifiers));
                }
                Value::Object(cm)
            })
            .collect();
        m.insert("canFilterBy".into(), Value::Array(list));
    }
    if !topic.notification_shape.is_empty() {
        let list = topic
            .notification_shape
            .iter()
            .map(|s| {
                let mut sm = Map::new();
                sm.insert("resource".into(), json!(resource_uri(&s.resource)));
                if !s.include.is_empty() {
                    sm.insert("include".into(), json!(s.include));
                }
                if !s.rev_include.is_empty() {
                    sm.insert("revInclude".into(), json!(s.rev_include));
                }
                Value::Object(sm)
            })
            .collect();
        m.insert("notificationShape".into(), Value::Array(list));
    }
    Value::Object(m)
}

/// Reads an unsignedInt given leniently (number or numeric string); used by the R4 adapter too.
pub(crate) fn lenient_u32(v: &Value, element: &str) -> Result<u32, SubscriptionError> {
    as_u32(v, element)
}
