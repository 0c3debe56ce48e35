//! Per-tenant subscription state: the topic catalog and the [`Matcher`] built from the stored
//! topics and Subscriptions, their loading at start-up (seeding the built-in topics), the
//! classification and validation of writes that change them, and the write hook that turns a
//! resource change into event drafts while the store applies the write.

use herald_fhir::FhirVersion;
use herald_matcher::{Change as MatchChange, Matcher};
use herald_store::{
    Change, EventDraft, Interaction as StoreInteraction, Store, StoreError, WriteKind, WriteRequest,
};
use herald_subscriptions::{
    Interaction, RelatedLookup, Subscription, SubscriptionError, Topic, TopicCatalog, builtin,
    check_subscription, parse_topic, validate_topic,
};
use serde_json::Value;
use std::collections::HashMap;

/// Topics and subscriptions of one tenant, in memory.
pub struct Engine {
    /// Topics by canonical URL (validation looks them up here).
    pub catalog: TopicCatalog,
    /// The index the write hook matches against.
    pub matcher: Matcher,
    /// Stored topics refused at start-up, by canonical URL, with the reason (so that their
    /// Subscriptions can say why they are not loaded).
    refused_topics: HashMap<String, String>,
}

/// What [`Engine::load`] found in the store.
pub struct Loaded {
    /// The tenant's engine.
    pub engine: Engine,
    /// The Subscriptions it loaded (for the dispatcher).
    pub subscriptions: Vec<Subscription>,
    /// Stored Subscriptions it refused, to be set to `error` with the reason.
    pub refused: Vec<Refused>,
}

/// A stored Subscription that may not be loaded.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Its id.
    pub id: String,
    /// Why, for its `error` status and the log.
    pub reason: String,
}

/// What a write touches, as far as subscription state is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `Subscription`.
    Subscription,
    /// A topic: R4B or R5 `SubscriptionTopic`, or an R4 `Basic` carrying one.
    Topic,
    /// Anything else.
    Other,
}

/// Is `body` (of `resource_type`) a topic in this version?
pub fn is_topic(version: FhirVersion, resource_type: &str, body: Option<&Value>) -> bool {
    match (version, resource_type) {
        (_, "SubscriptionTopic") => true,
        (FhirVersion::R4, "Basic") => body.is_some_and(is_basic_topic),
        _ => false,
    }
}

fn is_basic_topic(body: &Value) -> bool {
    body.pointer("/code/coding")
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings
                .iter()
                .any(|c| c.get("code").and_then(Value::as_str) == Some("SubscriptionTopic"))
        })
}

/// Classifies a write (for deletes, `existing` is the stored body).
pub fn classify(version: FhirVersion, resource_type: &str, body: Option<&Value>) -> Kind {
    if resource_type == "Subscription" {
        Kind::Subscription
    } else if is_topic(version, resource_type, body) {
        Kind::Topic
    } else {
        Kind::Other
    }
}

impl Engine {
    /// Seeds the built-in topics into the store (a no-op when unchanged) and loads every stored
    /// topic and Subscription of the tenant. Also returns the loaded Subscriptions (for the
    /// dispatcher).
    pub async fn load(
        store: &Store,
        tenant: &str,
        version: FhirVersion,
    ) -> Result<Loaded, StoreError> {
        let topic_type = match version {
            FhirVersion::R4 => "Basic",
            FhirVersion::R4B | FhirVersion::R5 => "SubscriptionTopic",
        };
        for topic in builtin::topics(version) {
            let id = topic.url.rsplit('/').next().unwrap_or_default().to_owned();
            let body = herald_subscriptions::topic_to_json(version, &topic, Some(&id));
            store
                .write(
                    WriteRequest {
                        tenant,
                        resource_type: topic_type,
                        id: &id,
                        kind: WriteKind::Upsert,
                        body: Some(body),
                        if_match: None,
                    },
                    &mut |_| Ok(Vec::new()),
                )
                .await?;
        }
        let mut engine = Engine {
            catalog: TopicCatalog::new(),
            matcher: Matcher::new(version),
            refused_topics: HashMap::new(),
        };
        let mut loaded = Vec::new();
        let mut refused = Vec::new();
        // Every stored topic and Subscription is held to today's acceptance rules and limits
        // before the engine loads it: a body an older Herald accepted, or one written around
        // the API, must not be able to stop start-up or every later write.
        for item in store.live_of_type(tenant, topic_type) {
            let stored = item?;
            let Some(body) = &stored.resource else {
                continue;
            };
            if !is_topic(version, topic_type, Some(body)) {
                continue;
            }
            match validate_topic(version, body) {
                Ok(t) => engine.add_topic(t),
                Err(e) => {
                    tracing::warn!(tenant, id = %stored.id, reason = %e, "stored topic refused at start-up: not loaded");
                    if let Ok(t) = parse_topic(version, body) {
                        engine.refused_topics.insert(t.url, e.to_string());
                    }
                }
            }
        }
        for item in store.live_of_type(tenant, "Subscription") {
            let stored = item?;
            let Some(body) = &stored.resource else {
                continue;
            };
            match engine.admit(version, body) {
                Ok(mut s) => {
                    s.id = stored.id.clone();
                    loaded.push(s.clone());
                    engine.upsert_subscription(s);
                }
                Err(reason) => {
                    tracing::warn!(tenant, id = %stored.id, %reason, "stored Subscription refused at start-up: not loaded");
                    refused.push(Refused {
                        id: stored.id.clone(),
                        reason,
                    });
                }
            }
        }
        tracing::info!(
            tenant,
            topics = engine.catalog.len(),
            subscriptions = engine.matcher.subscription_count(),
            "subscription engine loaded"
        );
        Ok(Loaded {
            engine,
            subscriptions: loaded,
            refused,
        })
    }

    /// Whether a stored Subscription body may be matched and delivered: the client's rules
    /// except which statuses it may submit ([`check_subscription`]), against the topics loaded.
    /// The reason names the topic's own refusal when that is why its topic is missing.
    pub fn admit(&self, version: FhirVersion, body: &Value) -> Result<Subscription, String> {
        check_subscription(version, body, &self.catalog).map_err(|e| match &e {
            SubscriptionError::UnknownTopic { topic } => match self.refused_topics.get(topic) {
                Some(why) => format!("its topic '{topic}' cannot be loaded: {why}"),
                None => e.to_string(),
            },
            _ => e.to_string(),
        })
    }

    /// Adds or replaces a topic.
    pub fn add_topic(&mut self, topic: Topic) {
        self.refused_topics.remove(&topic.url);
        if let Err(e) = self.matcher.upsert_topic(topic.clone()) {
            tracing::warn!(url = %topic.url, error = %e, "topic cannot be matched");
        }
        self.catalog.insert(topic);
    }

    /// Removes a topic.
    pub fn remove_topic(&mut self, url: &str) {
        self.matcher.remove_topic(url);
        self.catalog.remove(url);
    }

    /// Adds or replaces a subscription in the index.
    pub fn upsert_subscription(&mut self, sub: Subscription) {
        let id = sub.id.clone();
        if let Err(e) = self.matcher.upsert_subscription(sub) {
            tracing::warn!(subscription = %id, error = %e, "subscription cannot be matched");
        }
    }

    /// The write hook: the subscriptions a change notifies, as event drafts.
    pub fn events_for(
        &self,
        change: &Change<'_>,
        related: &dyn RelatedLookup,
    ) -> Result<Vec<EventDraft>, String> {
        let interaction = match change.interaction {
            StoreInteraction::Create => Interaction::Create,
            StoreInteraction::Update => Interaction::Update,
            StoreInteraction::Delete => Interaction::Delete,
        };
        let mc = MatchChange {
            resource_type: change.resource_type,
            id: change.id,
            interaction,
            previous: change.previous,
            current: change.current,
            at_ms: Some(change.at_ms),
        };
        let (matches, errors) = self.matcher.matches_isolated(&mc, related);
        for e in errors {
            // A criterion that fails to evaluate on this resource must not block the clinical
            // write nor the other subscriptions: that topic or subscription misses this change.
            tracing::warn!(resource = %mc.reference(), error = %e, "subscription matching failed for one topic or subscription");
        }
        Ok(matches
            .into_iter()
            .map(|m| EventDraft {
                subscription_id: m.subscription_id,
                topic: m.topic_url,
                additional_context: m.additional_context,
            })
            .collect())
    }
}

/// Related resources for topic-defined filters, read from the store **before** the write is
/// applied: the hook runs under the store's log lock, which every writer waits for, so it only
/// looks at what it is handed.
pub struct Related {
    service_request: Option<String>,
    tasks: Vec<Value>,
}

impl Related {
    /// Collects what a change of `resource_type`/`id` may need. Only a ServiceRequest change needs
    /// anything: the Tasks whose `focus` or `basedOn` point at it (a scan of the tenant's Tasks;
    /// an index on those references is the remedy if ServiceRequest writes become frequent).
    pub fn prefetch(store: &Store, tenant: &str, resource_type: &str, id: &str) -> Related {
        if resource_type != "ServiceRequest" {
            return Related {
                service_request: None,
                tasks: Vec::new(),
            };
        }
        let target = format!("ServiceRequest/{id}");
        let refers = |v: &Value| {
            v.get("reference")
                .and_then(Value::as_str)
                .is_some_and(|r| r == target || r.ends_with(&format!("/{target}")))
        };
        let tasks = store
            .live_of_type(tenant, "Task")
            .filter_map(Result::ok)
            .filter_map(|s| s.resource)
            .filter(|t| {
                t.get("focus").is_some_and(refers)
                    || t.get("basedOn")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(refers))
            })
            .collect();
        Related {
            service_request: Some(target),
            tasks,
        }
    }
}

impl RelatedLookup for Related {
    fn tasks_for_service_request(&self, service_request: &str) -> Vec<Value> {
        if self.service_request.as_deref() == Some(service_request) {
            self.tasks.clone()
        } else {
            Vec::new()
        }
    }
}
