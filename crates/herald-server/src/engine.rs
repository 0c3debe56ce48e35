//! Per-tenant subscription state: the topic catalog and the [`Matcher`] built from the stored
//! topics and Subscriptions, their loading at start-up (seeding the built-in topics), the
//! classification and validation of writes that change them, and the write hook that turns a
//! resource change into event drafts while the store applies the write.

use herald_fhir::FhirVersion;
use herald_matcher::{Change as MatchChange, Matcher};
use herald_store::{
    Change, EventDraft, EventFocus, Interaction as StoreInteraction, ResourceStore, StoreError,
    StoredVersion, WriteKind, WriteRequest,
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
        store: &dyn ResourceStore,
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
        related: &Related,
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
        let mut drafts: Vec<EventDraft> = matches
            .into_iter()
            .map(|m| EventDraft {
                subscription_id: m.subscription_id,
                topic: m.topic_url,
                additional_context: m.additional_context,
                focus: None,
            })
            .collect();
        drafts.extend(self.linked_request_events(&mc, related));
        Ok(drafts)
    }

    /// News about ServiceRequests that a Task write brings: when a Task starts pointing at a
    /// ServiceRequest, or names a new owner, the request now "has a Task owned by" that owner,
    /// so `cow-servicerequest-for-owner` subscriptions whose `task-owner` filter the Task
    /// satisfies hear about the ServiceRequest (at its current version, the Task as additional
    /// context). Without this a fulfiller would never hear of a ServiceRequest written before
    /// the Task that assigns it, which is the usual order. An owner the Task leaves hears
    /// nothing more: the filter only looks at the Tasks as they are now.
    fn linked_request_events(
        &self,
        change: &MatchChange<'_>,
        related: &Related,
    ) -> Vec<EventDraft> {
        let (Some(task), "Task") = (change.current, change.resource_type) else {
            return Vec::new();
        };
        let before = change.previous;
        let owner = |t: &Value| t.get("owner").cloned();
        let mut out = Vec::new();
        for sr in &related.linked_requests {
            let Some(body) = &sr.resource else { continue };
            let newly = match before {
                None => true,
                Some(prev) => owner(prev) != owner(task) || !task_points_at(prev, &sr.id),
            };
            if !newly || !task_points_at(task, &sr.id) {
                continue;
            }
            let lookup = OneTask {
                service_request: format!("ServiceRequest/{}", sr.id),
                task,
            };
            let news = MatchChange {
                resource_type: "ServiceRequest",
                id: &sr.id,
                interaction: Interaction::Update,
                previous: None,
                current: Some(body),
                at_ms: change.at_ms,
            };
            let (matches, errors) = self.matcher.matches_isolated(&news, &lookup);
            for e in errors {
                tracing::warn!(resource = %news.reference(), error = %e, "subscription matching failed for one topic or subscription");
            }
            let owner_topic = owner_topic_url();
            out.extend(
                matches
                    .into_iter()
                    .filter(|m| m.topic_url == owner_topic)
                    .map(|m| EventDraft {
                        subscription_id: m.subscription_id,
                        topic: m.topic_url,
                        additional_context: m.additional_context,
                        focus: Some(EventFocus {
                            resource_type: "ServiceRequest".to_owned(),
                            id: sr.id.clone(),
                            version: sr.version,
                        }),
                    }),
            );
        }
        out
    }
}

/// Related resources for topic-defined filters, read from the store **before** the write is
/// applied: the hook runs under the store's log lock, which every writer waits for, so it only
/// looks at what it is handed.
#[derive(Default)]
pub struct Related {
    /// For a ServiceRequest change: `ServiceRequest/<id>` and the Tasks pointing at it.
    service_request: Option<String>,
    tasks: Vec<Value>,
    /// For a Task change: the current versions of the ServiceRequests it points at (`focus`,
    /// `basedOn`), for news about them (see [`Engine::linked_request_events`]).
    linked_requests: Vec<StoredVersion>,
}

impl Related {
    /// Collects what a change of `resource_type`/`id` (new body `body`) may need: for a
    /// ServiceRequest, the Tasks whose `focus` or `basedOn` point at it (through the search
    /// index, see [`tasks_pointing_at`]); for a Task, the ServiceRequests it points at.
    pub fn prefetch(
        engine: &Engine,
        store: &dyn ResourceStore,
        tenant: &str,
        resource_type: &str,
        id: &str,
        body: Option<&Value>,
    ) -> Related {
        match resource_type {
            "ServiceRequest" => {
                let target = format!("ServiceRequest/{id}");
                let tasks = tasks_pointing_at(store, tenant, id);
                Related {
                    service_request: Some(target),
                    tasks,
                    linked_requests: Vec::new(),
                }
            }
            // Only `cow-servicerequest-for-owner` subscriptions use them: without any, a Task
            // write reads nothing more.
            "Task" if engine.matcher.has_subscriptions(&owner_topic_url()) => Related {
                linked_requests: body
                    .map(linked_service_requests)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|sr| store.current(tenant, "ServiceRequest", &sr).ok().flatten())
                    .filter(|v| !v.is_deleted())
                    .collect(),
                ..Related::default()
            },
            _ => Related::default(),
        }
    }

    /// Adds Tasks written in the same transaction (after the stored ones they replace), so a
    /// ServiceRequest and the Task naming its owner can arrive together.
    pub fn with_tasks(mut self, written: &[(&str, &Value)]) -> Related {
        let Some(target) = &self.service_request else {
            return self;
        };
        let sr_id = target.trim_start_matches("ServiceRequest/").to_owned();
        for (id, body) in written {
            self.tasks
                .retain(|t| t.get("id").and_then(Value::as_str) != Some(*id));
            if task_points_at(body, &sr_id) {
                self.tasks.push((*body).clone());
            }
        }
        self
    }

    /// Drops the linked ServiceRequests written in the same transaction: their own write is
    /// matched with this Task as related data, so news about them here would repeat it.
    pub fn without_requests(mut self, written: &[&str]) -> Related {
        self.linked_requests
            .retain(|v| !written.contains(&v.id.as_str()));
        self
    }
}

/// Canonical of the built-in topic news about ServiceRequests is for.
fn owner_topic_url() -> String {
    format!(
        "{}{}",
        builtin::BUILTIN_BASE,
        builtin::COW_SERVICEREQUEST_FOR_OWNER
    )
}

/// Whether Task `t` points at `ServiceRequest/<sr_id>` through `focus` or `basedOn`.
/// The live Tasks whose `focus` or `basedOn` point at ServiceRequest `sr_id`: read through the
/// search index's `focus` and `based-on` entries when it is kept (references to that id of any
/// type or server, judged here), else a scan of the tenant's Tasks.
fn tasks_pointing_at(store: &dyn ResourceStore, tenant: &str, sr_id: &str) -> Vec<Value> {
    use herald_fhir::search::index::reference_id_range;
    const CODES: [&str; 2] = ["focus", "based-on"];
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = CODES
        .into_iter()
        .map(|code| reference_id_range(code, sr_id))
        .map(|r| (r.start, r.end))
        .collect();
    let indexed = CODES
        .iter()
        .all(|code| store.search_index_covers(tenant, "Task", code));
    let lookup = if indexed {
        store.search_index(tenant, "Task", &ranges, None)
    } else {
        Ok(herald_store::IndexLookup::Off)
    };
    match lookup {
        Ok(herald_store::IndexLookup::Ids(ids)) => ids
            .iter()
            .filter_map(|task| store.current(tenant, "Task", task).ok().flatten())
            .filter_map(|s| s.resource)
            .filter(|t| task_points_at(t, sr_id))
            .collect(),
        _ => store
            .live_of_type(tenant, "Task")
            .filter_map(Result::ok)
            .filter_map(|s| s.resource)
            .filter(|t| task_points_at(t, sr_id))
            .collect(),
    }
}

fn task_points_at(t: &Value, sr_id: &str) -> bool {
    linked_service_requests(t).iter().any(|s| s == sr_id)
}

/// The ids of the local ServiceRequests a Task points at through `focus` and `basedOn`
/// (relative references, or absolute ones ending in `ServiceRequest/<id>`).
pub fn linked_service_requests(task: &Value) -> Vec<String> {
    let refs = task
        .get("focus")
        .into_iter()
        .chain(
            task.get("basedOn")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .filter_map(|r| r.get("reference").and_then(Value::as_str));
    let mut out: Vec<String> = Vec::new();
    for r in refs {
        let mut parts = r.rsplit('/');
        let (Some(id), Some("ServiceRequest")) = (parts.next(), parts.next()) else {
            continue;
        };
        if herald_fhir::is_valid_id(id) && !out.iter().any(|o| o == id) {
            out.push(id.to_owned());
        }
    }
    out
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

/// A lookup that answers for one ServiceRequest with one Task (the Task just written).
struct OneTask<'a> {
    service_request: String,
    task: &'a Value,
}

impl RelatedLookup for OneTask<'_> {
    fn tasks_for_service_request(&self, service_request: &str) -> Vec<Value> {
        if service_request == self.service_request {
            vec![self.task.clone()]
        } else {
            Vec::new()
        }
    }
}
