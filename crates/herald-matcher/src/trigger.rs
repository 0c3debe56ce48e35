//! Topic triggers compiled once per topic and evaluated per change: `supportedInteraction`,
//! `queryCriteria` and `fhirPathCriteria`, plus the no-op-update rule and the notificationShape
//! includes that become additional context.
//!
//! # queryCriteria
//!
//! Each of `previous` and `current` is a test only when its query is present:
//! * `previous` on a create takes `resultForCreate`; absent, it fails (there is no previous
//!   resource for the query to match). Otherwise it is run against the previous version.
//! * `current` on a delete takes `resultForDelete`; absent, it fails. Otherwise it is run
//!   against the current version.
//! * With both tests present, `requireBoth` asks for both to pass; otherwise either is enough.
//!   With one test present, it decides alone; with none, the criteria pass.
//!
//! # fhirPathCriteria
//!
//! Evaluated with `%previous` and `%current` bound to the two versions (empty on create and on
//! delete respectively) and the focus resource being the current version (previous on delete);
//! the trigger passes when the result is truthy (`herald_fhir::fhirpath::is_truthy`).

use std::collections::HashMap;

use herald_fhir::FhirVersion;
use herald_fhir::fhirpath::{self, Context, Expression};
use herald_fhir::search::{self, Criterion, ParamType, Registry, SearchParamDef};
use herald_subscriptions::{Interaction, Topic};
use serde_json::Value;

use crate::{Change, MatchError};

/// One compiled resource trigger.
#[derive(Debug, Clone)]
struct CompiledTrigger {
    resource: String,
    interactions: Vec<Interaction>,
    query: Option<CompiledQuery>,
    fhirpath: Option<(String, Expression)>,
}

#[derive(Debug, Clone)]
struct CompiledQuery {
    previous: Option<Vec<Criterion>>,
    current: Option<Vec<Criterion>>,
    result_for_create: Option<bool>,
    result_for_delete: Option<bool>,
    require_both: bool,
}

/// A topic with its triggers compiled and its include directives resolved to search
/// parameter definitions.
#[derive(Debug, Clone)]
pub struct CompiledTopic {
    /// The topic as given.
    pub topic: Topic,
    triggers: Vec<CompiledTrigger>,
    includes: HashMap<String, Vec<SearchParamDef>>,
}

fn compile_query(
    version: FhirVersion,
    topic: &str,
    resource_type: &str,
    element: &str,
    query: &str,
) -> Result<Vec<Criterion>, MatchError> {
    search::parse_query(version, resource_type, query)
        .map(|(criteria, _control)| criteria)
        .map_err(|e| MatchError::TopicCriteria {
            topic: topic.to_owned(),
            element: element.to_owned(),
            expression: query.to_owned(),
            reason: e.to_string(),
        })
}

/// `Task:focus`, `Task:patient&iterate=Patient.link`, `Task:focus:iterate` → (`Task`, `focus`).
fn include_target(directive: &str) -> Option<(&str, &str)> {
    let head = directive.split('&').next()?;
    let mut parts = head.split(':');
    let rt = parts.next()?.trim();
    let param = parts.next()?.trim();
    (!rt.is_empty() && !param.is_empty()).then_some((rt, param))
}

impl CompiledTopic {
    /// Compiles the topic's triggers for a tenant of `version`.
    pub fn compile(version: FhirVersion, topic: Topic) -> Result<Self, MatchError> {
        let mut triggers = Vec::new();
        for t in &topic.resource_triggers {
            let query = match &t.query_criteria {
                None => None,
                Some(q) => {
                    let compile = |element: &str, query: &Option<String>| {
                        query
                            .as_deref()
                            .map(|s| compile_query(version, &topic.url, &t.resource, element, s))
                            .transpose()
                    };
                    Some(CompiledQuery {
                        previous: compile("queryCriteria.previous", &q.previous)?,
                        current: compile("queryCriteria.current", &q.current)?,
                        result_for_create: q.result_for_create.map(|r| r.passed()),
                        result_for_delete: q.result_for_delete.map(|r| r.passed()),
                        require_both: q.require_both,
                    })
                }
            };
            let fhirpath = match &t.fhirpath_criteria {
                None => None,
                Some(text) => Some((
                    text.clone(),
                    fhirpath::parse(text).map_err(|e| MatchError::TopicCriteria {
                        topic: topic.url.clone(),
                        element: "fhirPathCriteria".to_owned(),
                        expression: text.clone(),
                        reason: e.to_string(),
                    })?,
                )),
            };
            triggers.push(CompiledTrigger {
                resource: t.resource.clone(),
                interactions: t.interactions.clone(),
                query,
                fhirpath,
            });
        }
        let registry = Registry::for_version(version);
        let mut includes: HashMap<String, Vec<SearchParamDef>> = HashMap::new();
        for shape in &topic.notification_shape {
            for directive in &shape.include {
                let Some((rt, param)) = include_target(directive) else {
                    continue;
                };
                if let Some(def) = registry.get(rt, param)
                    && def.kind == ParamType::Reference
                {
                    includes.entry(rt.to_owned()).or_default().push(def.clone());
                }
            }
        }
        Ok(CompiledTopic {
            topic,
            triggers,
            includes,
        })
    }

    /// The (resource type, interaction) pairs this topic can fire on.
    pub fn keys(&self) -> Vec<(String, Interaction)> {
        let mut out = Vec::new();
        for t in &self.triggers {
            let interactions: &[Interaction] = if t.interactions.is_empty() {
                &Interaction::ALL
            } else {
                &t.interactions
            };
            for i in interactions {
                let key = (t.resource.clone(), *i);
                if !out.contains(&key) {
                    out.push(key);
                }
            }
        }
        out
    }

    /// Whether the topic fires on `change` (no-op updates excluded by the caller).
    pub fn fires(&self, change: &Change<'_>) -> Result<bool, MatchError> {
        for t in &self.triggers {
            if t.resource != change.resource_type
                || !(t.interactions.is_empty() || t.interactions.contains(&change.interaction))
            {
                continue;
            }
            if self.trigger_fires(t, change)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn eval_error(&self, element: &str, change: &Change<'_>, e: impl ToString) -> MatchError {
        MatchError::TriggerEvaluation {
            topic: self.topic.url.clone(),
            element: element.to_owned(),
            resource: change.reference(),
            reason: e.to_string(),
        }
    }

    fn all_match(
        &self,
        criteria: &[Criterion],
        resource: Option<&Value>,
        element: &str,
        change: &Change<'_>,
    ) -> Result<bool, MatchError> {
        let Some(resource) = resource else {
            return Ok(false);
        };
        for c in criteria {
            if !search::matches(c, resource).map_err(|e| self.eval_error(element, change, e))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn trigger_fires(&self, t: &CompiledTrigger, change: &Change<'_>) -> Result<bool, MatchError> {
        if let Some(q) = &t.query {
            let previous = match &q.previous {
                None => None,
                Some(_) if change.interaction == Interaction::Create => {
                    Some(q.result_for_create.unwrap_or(false))
                }
                Some(c) => {
                    Some(self.all_match(c, change.previous, "queryCriteria.previous", change)?)
                }
            };
            let current = match &q.current {
                None => None,
                Some(_) if change.interaction == Interaction::Delete => {
                    Some(q.result_for_delete.unwrap_or(false))
                }
                Some(c) => {
                    Some(self.all_match(c, change.current, "queryCriteria.current", change)?)
                }
            };
            let pass = match (previous, current) {
                (None, None) => true,
                (Some(p), None) => p,
                (None, Some(c)) => c,
                (Some(p), Some(c)) if q.require_both => p && c,
                (Some(p), Some(c)) => p || c,
            };
            if !pass {
                return Ok(false);
            }
        }
        if let Some((_, expr)) = &t.fhirpath {
            let mut ctx = Context {
                resource: change.focus(),
                variables: HashMap::new(),
            };
            ctx.variables.insert("previous".to_owned(), change.previous);
            ctx.variables.insert("current".to_owned(), change.current);
            let result = expr
                .evaluate(&ctx)
                .map_err(|e| self.eval_error("fhirPathCriteria", change, e))?;
            if !fhirpath::is_truthy(&result) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// References named by the topic's notificationShape includes for the changed resource
    /// (read from the current version, previous on delete), without duplicates.
    pub fn additional_context(&self, change: &Change<'_>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let (Some(defs), Some(resource)) =
            (self.includes.get(change.resource_type), change.focus())
        else {
            return out;
        };
        let own = change.reference();
        for def in defs {
            for key in search::index_keys(def, resource) {
                let reference = herald_fhir::reference::parse(&key);
                if let Some(rel) = reference.relative()
                    && rel != own
                    && !out.contains(&rel)
                {
                    out.push(rel);
                }
            }
        }
        out
    }
}

/// Whether an update changed nothing but `meta` (such an update triggers nothing).
pub fn is_noop_update(previous: &Value, current: &Value) -> bool {
    match (previous.as_object(), current.as_object()) {
        (Some(p), Some(c)) => {
            let p_len = p.keys().filter(|k| *k != "meta").count();
            let c_len = c.keys().filter(|k| *k != "meta").count();
            p_len == c_len
                && p.iter()
                    .filter(|(k, _)| *k != "meta")
                    .all(|(k, v)| c.get(k) == Some(v))
        }
        _ => previous == current,
    }
}
