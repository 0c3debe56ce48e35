//! The per-tenant [`Matcher`]: compiled topics indexed by (resource type, interaction),
//! subscriptions indexed by topic and by the keys of one equality filter, and the two matching
//! paths (indexed and linear) that share every evaluation function.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use herald_fhir::FhirVersion;
use herald_fhir::search::{self, Criterion, SearchParamDef};
use herald_subscriptions::builtin::TopicDefinedFilter;
use herald_subscriptions::catalog::canonical_url;
use herald_subscriptions::{Filter, Interaction, RelatedLookup, Subscription, Topic};
use serde_json::Value;

use crate::trigger::{CompiledTopic, is_noop_update};
use crate::{Change, Match, MatchError};

type SubId = Arc<str>;
/// Index slot of a subscription for one resource type: parameter, its definition, keys.
type Slot<'a> = (IndexParam, &'a SearchParamDef, Vec<String>);

/// How one filter is evaluated on one resource type.
#[derive(Debug, Clone)]
enum FilterEval {
    /// A search criterion on the changed resource.
    Search(Criterion),
    /// A plain equality on a token or reference parameter, kept as its index keys: it matches a
    /// version exactly when `index_keys(def, version)` shares a key with `keys` (herald-fhir's
    /// contract). Cheaper to hold than a criterion, and the definition is shared.
    Keys {
        /// Shared definition.
        def: Arc<SearchParamDef>,
        /// Sorted keys of the criterion.
        keys: Vec<String>,
    },
    /// `task-owner`: a `Task?owner=` criterion on the related Tasks.
    TaskOwner(Criterion),
}

impl FilterEval {
    /// Does the changed resource version `v` satisfy this filter? (`TaskOwner` is evaluated on
    /// the related Tasks instead and passes here.)
    fn matches(&self, v: &Value) -> Result<bool, herald_fhir::FhirError> {
        match self {
            FilterEval::Search(c) => search::matches(c, v),
            FilterEval::Keys { def, keys } => Ok(search::index_keys(def, v)
                .iter()
                .any(|k| keys.binary_search(k).is_ok())),
            FilterEval::TaskOwner(_) => Ok(true),
        }
    }
}

/// Shared search parameter definitions, by (resource type, code).
type DefCache = HashMap<(String, String), Arc<SearchParamDef>>;

#[derive(Debug, Clone)]
struct CompiledFilter {
    parameter: String,
    /// Resource type → evaluation. A filter with no entry for a type does not apply to it.
    per_type: Vec<(String, FilterEval)>,
    plain_equality: bool,
}

impl CompiledFilter {
    fn for_type(&self, rt: &str) -> Option<&FilterEval> {
        self.per_type.iter().find(|(t, _)| t == rt).map(|(_, e)| e)
    }
}

/// What a subscription is indexed under for one resource type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IndexParam {
    /// Keys of a search parameter of the changed resource.
    Search(String),
    /// Keys of `Task.owner` of the related Tasks.
    TaskOwner,
}

#[derive(Debug)]
struct SubEntry {
    sub: Subscription,
    topic: String,
    /// `None` until the topic is known, or when a filter failed to compile.
    filters: Option<Vec<CompiledFilter>>,
    error: Option<MatchError>,
    /// Where the subscription sits in its topic's index (empty when not indexed), so that
    /// removal touches only its own buckets.
    placed: Vec<String>,
}

#[derive(Debug)]
struct ParamIndex {
    def: SearchParamDef,
    buckets: HashMap<String, Vec<SubId>>,
}

#[derive(Debug, Default)]
struct TypeIndex {
    params: HashMap<IndexParam, ParamIndex>,
    scanned: HashSet<SubId>,
}

#[derive(Debug, Default)]
struct TopicSubs {
    /// Every subscription pointing at the topic (whether or not it receives events).
    members: HashSet<SubId>,
    /// Index of receiving, compiled subscriptions, per resource type.
    types: HashMap<String, TypeIndex>,
}

/// Per-tenant in-memory matcher. Upsert topics first, then subscriptions (a subscription whose
/// topic is not known yet is kept and compiled when the topic arrives).
#[derive(Debug)]
pub struct Matcher {
    version: FhirVersion,
    topics: HashMap<String, CompiledTopic>,
    topics_by_key: HashMap<(String, Interaction), Vec<String>>,
    subs: HashMap<SubId, SubEntry>,
    by_topic: HashMap<String, TopicSubs>,
    defs: DefCache,
}

/// Which versions filters are evaluated on (see the crate docs, "Filter timing").
fn filter_versions<'a>(change: &Change<'a>) -> [Option<&'a Value>; 2] {
    match change.interaction {
        Interaction::Create => [change.current, None],
        Interaction::Delete => [change.previous, None],
        Interaction::Update => [change.current, change.previous],
    }
}

fn compile_filter(
    version: FhirVersion,
    defs: &mut DefCache,
    sub_id: &str,
    topic: &Topic,
    f: &Filter,
) -> Result<CompiledFilter, MatchError> {
    let allowed: Vec<_> = topic
        .can_filter_by_for(f.resource_type.as_deref(), &f.parameter)
        .collect();
    let topic_defined = allowed.iter().find_map(|c| TopicDefinedFilter::of(c));
    let topic_types = topic.resource_types();
    let mut types: Vec<String> = Vec::new();
    let mut push = |t: &str| {
        if !types.iter().any(|x| x == t) {
            types.push(t.to_owned());
        }
    };
    match &f.resource_type {
        Some(rt) => push(rt),
        None if allowed.is_empty() => topic_types.iter().for_each(|t| push(t)),
        None => {
            for c in &allowed {
                match &c.resource {
                    Some(r) => push(r),
                    None => topic_types.iter().for_each(|t| push(t)),
                }
            }
        }
    }
    let mut per_type = Vec::new();
    let mut first_error = None;
    for rt in types {
        let parsed = match topic_defined {
            Some(d) => {
                let (target, param) = d.search_parameter();
                search::parse_filter(
                    version,
                    target,
                    param,
                    f.comparator.as_deref(),
                    f.modifier.as_deref(),
                    &f.value,
                )
                .map(FilterEval::TaskOwner)
            }
            None => search::parse_filter(
                version,
                &rt,
                &f.parameter,
                f.comparator.as_deref(),
                f.modifier.as_deref(),
                &f.value,
            )
            .map(|c| {
                let plain = f.comparator.is_none() && f.modifier.is_none() && c.modifier.is_none();
                match search::index_keys_of_criterion(&c).filter(|k| plain && !k.is_empty()) {
                    Some(mut keys) => {
                        keys.sort();
                        keys.dedup();
                        let def = defs
                            .entry((rt.clone(), c.param.code.clone()))
                            .or_insert_with(|| Arc::new(c.param.clone()))
                            .clone();
                        FilterEval::Keys { def, keys }
                    }
                    None => FilterEval::Search(c),
                }
            }),
        };
        match parsed {
            Ok(e) => per_type.push((rt, e)),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if per_type.is_empty() {
        return Err(MatchError::SubscriptionFilter {
            subscription: sub_id.to_owned(),
            parameter: f.parameter.clone(),
            value: f.value.clone(),
            reason: first_error.unwrap_or_else(|| "no resource type of the topic".to_owned()),
        });
    }
    Ok(CompiledFilter {
        parameter: f.parameter.clone(),
        per_type,
        plain_equality: f.comparator.is_none() && f.modifier.is_none(),
    })
}

/// The index slot of a subscription for one resource type: the first plain-equality filter
/// whose criterion has index keys.
fn index_slot<'a>(filters: &'a [CompiledFilter], rt: &str) -> Option<Slot<'a>> {
    filters.iter().find_map(|f| {
        if !f.plain_equality {
            return None;
        }
        match f.for_type(rt)? {
            FilterEval::Keys { def, keys } => {
                Some((IndexParam::Search(def.code.clone()), &**def, keys.clone()))
            }
            FilterEval::TaskOwner(c) if c.modifier.is_none() => {
                let keys = search::index_keys_of_criterion(c).filter(|k| !k.is_empty())?;
                Some((IndexParam::TaskOwner, &c.param, keys))
            }
            _ => None,
        }
    })
}

impl Matcher {
    /// An empty matcher for a tenant of `version`.
    pub fn new(version: FhirVersion) -> Self {
        Matcher {
            version,
            topics: HashMap::new(),
            topics_by_key: HashMap::new(),
            subs: HashMap::new(),
            by_topic: HashMap::new(),
            defs: HashMap::new(),
        }
    }

    /// The tenant's FHIR version.
    pub fn version(&self) -> FhirVersion {
        self.version
    }

    /// Number of subscriptions held (whatever their status).
    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    /// Whether any subscription is held for the topic with canonical `url` (whatever its
    /// status): lets the server skip reading data that only such subscriptions would need.
    pub fn has_subscriptions(&self, url: &str) -> bool {
        self.by_topic
            .get(canonical_url(url))
            .is_some_and(|t| !t.members.is_empty())
    }

    /// The topic with canonical `url`, if held.
    pub fn topic(&self, url: &str) -> Option<&Topic> {
        self.topics.get(canonical_url(url)).map(|t| &t.topic)
    }

    /// Subscriptions that match nothing because a filter failed to compile against their
    /// topic, with the reason.
    pub fn broken_subscriptions(&self) -> Vec<(&str, &MatchError)> {
        let mut out: Vec<_> = self
            .subs
            .iter()
            .filter_map(|(id, e)| e.error.as_ref().map(|err| (&**id, err)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Adds or replaces a topic. Its criteria must compile (else nothing changes); its
    /// subscriptions are recompiled and re-indexed.
    pub fn upsert_topic(&mut self, topic: Topic) -> Result<(), MatchError> {
        let compiled = CompiledTopic::compile(self.version, topic)?;
        let url = canonical_url(&compiled.topic.url).to_owned();
        self.unregister_topic_keys(&url);
        for key in compiled.keys() {
            self.topics_by_key.entry(key).or_default().push(url.clone());
        }
        self.topics.insert(url.clone(), compiled);
        self.reindex_topic(&url);
        Ok(())
    }

    /// Removes a topic; its subscriptions stay held but match nothing until it comes back.
    pub fn remove_topic(&mut self, url: &str) -> Option<Topic> {
        let url = canonical_url(url).to_owned();
        self.unregister_topic_keys(&url);
        let removed = self.topics.remove(&url).map(|t| t.topic);
        self.reindex_topic(&url);
        removed
    }

    fn unregister_topic_keys(&mut self, url: &str) {
        self.topics_by_key.retain(|_, urls| {
            urls.retain(|u| u != url);
            !urls.is_empty()
        });
    }

    /// Recompiles and re-indexes every subscription of topic `url`.
    fn reindex_topic(&mut self, url: &str) {
        let members: Vec<SubId> = match self.by_topic.get_mut(url) {
            Some(ts) => {
                ts.types.clear();
                ts.members.iter().cloned().collect()
            }
            None => return,
        };
        for id in members {
            self.compile_and_index(&id);
        }
    }

    /// Adds or replaces a subscription. Fails (and leaves the subscription out) when one of its
    /// filters does not compile against a known topic.
    pub fn upsert_subscription(&mut self, sub: Subscription) -> Result<(), MatchError> {
        let id: SubId = Arc::from(sub.id.as_str());
        self.remove_subscription(&id);
        let topic = canonical_url(&sub.topic).to_owned();
        self.subs.insert(
            id.clone(),
            SubEntry {
                sub,
                topic: topic.clone(),
                filters: None,
                error: None,
                placed: Vec::new(),
            },
        );
        self.by_topic
            .entry(topic)
            .or_default()
            .members
            .insert(id.clone());
        self.compile_and_index(&id);
        match self.subs.get(&id).and_then(|e| e.error.clone()) {
            Some(err) => {
                self.remove_subscription(&id);
                Err(err)
            }
            None => Ok(()),
        }
    }

    /// Compiles the filters of subscription `id` against its topic (if known) and indexes it
    /// when it receives events.
    fn compile_and_index(&mut self, id: &SubId) {
        let Some(entry) = self.subs.get_mut(id) else {
            return;
        };
        entry.filters = None;
        entry.error = None;
        entry.placed.clear();
        let Some(topic) = self.topics.get(&entry.topic) else {
            return;
        };
        let compiled: Result<Vec<CompiledFilter>, MatchError> = entry
            .sub
            .filters
            .iter()
            .map(|f| compile_filter(self.version, &mut self.defs, &entry.sub.id, &topic.topic, f))
            .collect();
        let filters = match compiled {
            Ok(f) => f,
            Err(e) => {
                entry.error = Some(e);
                return;
            }
        };
        if entry.sub.status.receives_events() {
            let ts = self.by_topic.entry(entry.topic.clone()).or_default();
            for rt in topic.topic.resource_types() {
                let ti = ts.types.entry(rt.to_owned()).or_default();
                match index_slot(&filters, rt) {
                    None => {
                        ti.scanned.insert(id.clone());
                        entry.placed.push(rt.to_owned());
                    }
                    Some((param, def, keys)) => {
                        let pi = match ti.params.get_mut(&param) {
                            Some(pi) => pi,
                            None => ti.params.entry(param.clone()).or_insert(ParamIndex {
                                def: def.clone(),
                                buckets: HashMap::new(),
                            }),
                        };
                        for k in &keys {
                            let bucket = pi.buckets.entry(k.clone()).or_default();
                            if !bucket.contains(id) {
                                bucket.push(id.clone());
                            }
                        }
                        entry.placed.push(rt.to_owned());
                    }
                }
            }
        }
        entry.filters = Some(filters);
    }

    /// Removes a subscription; returns it when it was held.
    pub fn remove_subscription(&mut self, id: &str) -> Option<Subscription> {
        let entry = self.subs.remove(id)?;
        if let Some(ts) = self.by_topic.get_mut(&entry.topic) {
            ts.members.remove(id);
            let filters = entry.filters.as_deref().unwrap_or_default();
            for rt in &entry.placed {
                let Some(ti) = ts.types.get_mut(rt) else {
                    continue;
                };
                match index_slot(filters, rt) {
                    None => {
                        ti.scanned.remove(id);
                    }
                    Some((param, _, keys)) => {
                        let Some(pi) = ti.params.get_mut(&param) else {
                            continue;
                        };
                        for k in &keys {
                            if let Some(bucket) = pi.buckets.get_mut(k) {
                                bucket.retain(|s| &**s != id);
                                if bucket.is_empty() {
                                    pi.buckets.remove(k);
                                }
                            }
                        }
                    }
                }
            }
            if ts.members.is_empty() {
                self.by_topic.remove(&entry.topic);
            }
        }
        Some(entry.sub)
    }

    /// The subscriptions `change` notifies, using the index. Sorted by (subscription id, topic).
    ///
    /// Strict: any error from evaluating a topic criterion or a filter is returned (the first
    /// one). The server uses [`Matcher::matches_isolated`] instead.
    pub fn matches(
        &self,
        change: &Change<'_>,
        related: &dyn RelatedLookup,
    ) -> Result<Vec<Match>, MatchError> {
        let (matches, mut errors) = self.matches_isolated(change, related);
        if errors.is_empty() {
            Ok(matches)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// Like [`Matcher::matches`], but a topic or subscription whose criterion or filter fails to
    /// evaluate on this change is left out and its error reported, while every other one is
    /// still matched: one broken client-created topic must not silence the others.
    pub fn matches_isolated(
        &self,
        change: &Change<'_>,
        related: &dyn RelatedLookup,
    ) -> (Vec<Match>, Vec<MatchError>) {
        let mut errors = Vec::new();
        if is_noop(change) {
            return (Vec::new(), errors);
        }
        let tasks = OnceCell::new();
        let mut out = Vec::new();
        let key = (change.resource_type.to_owned(), change.interaction);
        let Some(urls) = self.topics_by_key.get(&key) else {
            return (out, errors);
        };
        for url in urls {
            let Some(topic) = self.topics.get(url) else {
                continue;
            };
            let Some(ti) = self
                .by_topic
                .get(url)
                .and_then(|ts| ts.types.get(change.resource_type))
            else {
                continue;
            };
            match topic.fires(change) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
            let context = topic.additional_context(change);
            let mut seen: HashSet<&SubId> = HashSet::new();
            let mut candidates: Vec<&SubId> = Vec::new();
            for id in &ti.scanned {
                if seen.insert(id) {
                    candidates.push(id);
                }
            }
            for (param, pi) in &ti.params {
                let keys = self.change_keys(param, &pi.def, change, related, &tasks);
                for k in keys {
                    if let Some(bucket) = pi.buckets.get(&k) {
                        for id in bucket {
                            if seen.insert(id) {
                                candidates.push(id);
                            }
                        }
                    }
                }
            }
            for id in candidates {
                match self.evaluate(id, url, change, related, &tasks, &context) {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        out.sort();
        (out, errors)
    }

    /// How many subscriptions the indexed path would evaluate for `change` (candidates from the
    /// index buckets plus the scanned remainder, over every topic that fires). For tests and
    /// metrics: it shows that matching cost follows the matching subscriptions, not all of them.
    pub fn candidate_count(
        &self,
        change: &Change<'_>,
        related: &dyn RelatedLookup,
    ) -> Result<usize, MatchError> {
        if is_noop(change) {
            return Ok(0);
        }
        let tasks = OnceCell::new();
        let key = (change.resource_type.to_owned(), change.interaction);
        let mut total = 0;
        for url in self.topics_by_key.get(&key).into_iter().flatten() {
            let (Some(topic), Some(ti)) = (
                self.topics.get(url),
                self.by_topic
                    .get(url)
                    .and_then(|ts| ts.types.get(change.resource_type)),
            ) else {
                continue;
            };
            if !topic.fires(change)? {
                continue;
            }
            let mut seen: HashSet<&SubId> = ti.scanned.iter().collect();
            for (param, pi) in &ti.params {
                for k in self.change_keys(param, &pi.def, change, related, &tasks) {
                    seen.extend(pi.buckets.get(&k).into_iter().flatten());
                }
            }
            total += seen.len();
        }
        Ok(total)
    }

    /// Same result as [`Matcher::matches`], scanning every subscription without the index (the
    /// benchmark baseline).
    pub fn matches_linear(
        &self,
        change: &Change<'_>,
        related: &dyn RelatedLookup,
    ) -> Result<Vec<Match>, MatchError> {
        if is_noop(change) {
            return Ok(Vec::new());
        }
        let tasks = OnceCell::new();
        let mut fired: HashMap<&str, Option<Vec<String>>> = HashMap::new();
        let mut out = Vec::new();
        for (id, entry) in &self.subs {
            let Some(topic) = self.topics.get(&entry.topic) else {
                continue;
            };
            let context = match fired.get(entry.topic.as_str()) {
                Some(c) => c.clone(),
                None => {
                    let c = if topic.fires(change)? {
                        Some(topic.additional_context(change))
                    } else {
                        None
                    };
                    fired.insert(entry.topic.as_str(), c.clone());
                    c
                }
            };
            let Some(context) = context else {
                continue;
            };
            if let Some(m) = self.evaluate(id, &entry.topic, change, related, &tasks, &context)? {
                out.push(m);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The index keys a change offers for one indexed parameter: keys of the previous and
    /// current versions, or of the related Tasks' owners.
    fn change_keys(
        &self,
        param: &IndexParam,
        def: &SearchParamDef,
        change: &Change<'_>,
        related: &dyn RelatedLookup,
        tasks: &OnceCell<Vec<Value>>,
    ) -> Vec<String> {
        let mut keys = Vec::new();
        match param {
            IndexParam::Search(_) => {
                for v in [change.previous, change.current].into_iter().flatten() {
                    keys.extend(search::index_keys(def, v));
                }
            }
            IndexParam::TaskOwner => {
                for t in related_tasks(change, related, tasks) {
                    keys.extend(search::index_keys(def, t));
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Evaluates one subscription's status and filters on a change whose topic fired.
    fn evaluate(
        &self,
        id: &SubId,
        topic_url: &str,
        change: &Change<'_>,
        related: &dyn RelatedLookup,
        tasks: &OnceCell<Vec<Value>>,
        topic_context: &[String],
    ) -> Result<Option<Match>, MatchError> {
        let Some(entry) = self.subs.get(id) else {
            return Ok(None);
        };
        if !entry.sub.status.receives_events() {
            return Ok(None);
        }
        if let (Some(at), Some(end)) = (change.at_ms, entry.sub.end_ms())
            && end <= at
        {
            return Ok(None);
        }
        let Some(filters) = &entry.filters else {
            return Ok(None);
        };
        let rt = change.resource_type;
        let err = |f: &CompiledFilter, e: herald_fhir::FhirError| MatchError::FilterEvaluation {
            subscription: entry.sub.id.clone(),
            parameter: f.parameter.clone(),
            resource: change.reference(),
            reason: e.to_string(),
        };
        let mut context: Vec<String> = topic_context.to_vec();
        // Related-resource filters: independent of the version.
        for f in filters {
            if let Some(FilterEval::TaskOwner(c)) = f.for_type(rt) {
                let mut any = false;
                for t in related_tasks(change, related, tasks) {
                    if search::matches(c, t).map_err(|e| err(f, e))? {
                        any = true;
                        if let Some(r) = resource_reference(t)
                            && !context.contains(&r)
                        {
                            context.push(r);
                        }
                    }
                }
                if !any {
                    return Ok(None);
                }
            }
        }
        // Resource filters: all on the same version; current or previous per filter timing.
        let search_filters: Vec<(&CompiledFilter, &FilterEval)> = filters
            .iter()
            .filter_map(|f| match f.for_type(rt) {
                Some(e @ (FilterEval::Search(_) | FilterEval::Keys { .. })) => Some((f, e)),
                _ => None,
            })
            .collect();
        let mut passed = search_filters.is_empty();
        if !passed {
            for version in filter_versions(change).into_iter().flatten() {
                let mut all = true;
                for (f, e) in &search_filters {
                    if !e.matches(version).map_err(|e| err(f, e))? {
                        all = false;
                        break;
                    }
                }
                if all {
                    passed = true;
                    break;
                }
            }
        }
        Ok(passed.then(|| Match {
            subscription_id: entry.sub.id.clone(),
            topic_url: topic_url.to_owned(),
            additional_context: context,
        }))
    }
}

fn is_noop(change: &Change<'_>) -> bool {
    change.interaction == Interaction::Update
        && matches!((change.previous, change.current), (Some(p), Some(c)) if is_noop_update(p, c))
}

/// The Tasks related to a changed ServiceRequest, fetched once per change.
fn related_tasks<'c>(
    change: &Change<'_>,
    related: &dyn RelatedLookup,
    tasks: &'c OnceCell<Vec<Value>>,
) -> &'c [Value] {
    tasks.get_or_init(|| {
        if change.resource_type == "ServiceRequest" {
            related.tasks_for_service_request(&change.reference())
        } else {
            Vec::new()
        }
    })
}

/// `Type/id` of a resource body.
fn resource_reference(resource: &Value) -> Option<String> {
    let rt = resource.get("resourceType")?.as_str()?;
    let id = resource.get("id")?.as_str()?;
    Some(format!("{rt}/{id}"))
}
