//! Herald's built-in Clinical Order Workflows topics (COW defines none, spec §3.4), the
//! topic-defined filter `task-owner`, and the [`RelatedLookup`] trait through which the matcher
//! asks the server for related resources without doing I/O itself.
//!
//! # Canonicals
//!
//! Every built-in topic has the canonical [`BUILTIN_BASE`]`<id>`, i.e.
//! `http://herald.example.org/fhir/SubscriptionTopic/<id>`. The base is fixed (not derived from
//! the public URL of a deployment) so that a subscription survives a change of host name; the
//! topics are broker-specific and have no standing in COW.
//!
//! | id | trigger | filters |
//! |---|---|---|
//! | `cow-task-changed` | Task create, update, delete | [`TASK_FILTERS`] |
//! | `cow-task-status-changed` | Task create, update where `status` or `businessStatus` changed | [`TASK_FILTERS`] |
//! | `cow-cancellation-requested` | Task create with `code=task-code\|abort&status=requested` | focus, owner, requester |
//! | `cow-servicerequest-for-owner` | ServiceRequest create, update | `task-owner` (topic-defined) |
//! | `cow-task-output-added` | Task update where `output` grew | [`TASK_FILTERS`] |
//! | `cow-servicerequest-changed` | ServiceRequest create, update | [`SERVICE_REQUEST_FILTERS`] |
//!
//! `cow-servicerequest-changed` serves the flows where the party to hear about a request is not
//! named by a Task: a fulfiller that performs a more specific service under its own authority
//! creates its own ServiceRequest `basedOn` the placer's order (the placer follows
//! `based-on:identifier=<its order system>|`), and an accepted alternative proposal, whose new
//! order `replaces` the old one.
//!
//! # `task-owner`
//!
//! `cow-servicerequest-for-owner` lets a Fulfiller hear about ServiceRequests that "have a Task
//! naming the Fulfiller as owner" (COW pattern (b)). That is `_has:Task:focus:owner=X` plus the
//! same through `basedOn`, which no single search parameter expresses. The filter value is what
//! `Task?owner=` takes (e.g. `Organization/fulfiller-1`). The matcher evaluates it as: *some Task
//! returned by [`RelatedLookup::tasks_for_service_request`] for the changed ServiceRequest
//! satisfies `owner=<value>`* (with the filter's modifier, if any). The Tasks are their current
//! versions as the server holds them. The matching Tasks are added to the notification's
//! additional context.

use herald_fhir::FhirVersion;
use herald_fhir::search::Registry;
use serde_json::Value;

use crate::model::{
    CanFilterBy, Interaction, NotificationShape, QueryCriteria, ResourceTrigger, Topic, TopicStatus,
};

/// How filters meet an update, said in every built-in topic's description (clients cannot
/// guess it): a filter matches when the previous or the current version matches, so a
/// subscriber hears the change that takes a resource out of its filter (an owner reassigned
/// away learns that the Task left it) as well as the one that brings it in.
pub const FILTER_TIMING: &str = "On an update, filters match when the previous or the current version matches, so the change that takes a resource out of a filter is notified too (a Task's old owner hears that it was reassigned).";

/// Base of the built-in topic canonicals.
pub const BUILTIN_BASE: &str = "http://herald.example.org/fhir/SubscriptionTopic/";
/// Base Herald uses for the definitions of topic-defined filters.
pub const SEARCH_PARAMETER_BASE: &str = "http://herald.example.org/fhir/SearchParameter/";

/// Id of the topic for any change to a Task.
pub const COW_TASK_CHANGED: &str = "cow-task-changed";
/// Id of the topic for Task status or business-status changes.
pub const COW_TASK_STATUS_CHANGED: &str = "cow-task-status-changed";
/// Id of the topic for new cancellation-request Tasks.
pub const COW_CANCELLATION_REQUESTED: &str = "cow-cancellation-requested";
/// Id of the topic for ServiceRequests that have a Task with a given owner.
pub const COW_SERVICEREQUEST_FOR_OWNER: &str = "cow-servicerequest-for-owner";
/// Id of the topic for Tasks that gained an output.
pub const COW_TASK_OUTPUT_ADDED: &str = "cow-task-output-added";

/// Id of the topic for any change to a ServiceRequest, filtered by its own search parameters.
pub const COW_SERVICEREQUEST_CHANGED: &str = "cow-servicerequest-changed";

/// All built-in topic ids.
pub const BUILTIN_IDS: [&str; 6] = [
    COW_TASK_CHANGED,
    COW_TASK_STATUS_CHANGED,
    COW_CANCELLATION_REQUESTED,
    COW_SERVICEREQUEST_FOR_OWNER,
    COW_TASK_OUTPUT_ADDED,
    COW_SERVICEREQUEST_CHANGED,
];

/// The filter parameter name of the topic-defined filter on ServiceRequest.
pub const TASK_OWNER_FILTER: &str = "task-owner";
/// The `filterDefinition` of [`TASK_OWNER_FILTER`].
pub const TASK_OWNER_DEFINITION: &str =
    "http://herald.example.org/fhir/SearchParameter/ServiceRequest-task-owner";

/// The Task filters of the Task topics: (search parameter code, is a reference parameter).
pub const TASK_FILTERS: [(&str, bool); 11] = [
    ("owner", true),
    ("requester", true),
    ("status", false),
    ("business-status", false),
    ("code", false),
    ("focus", true),
    ("based-on", true),
    ("part-of", true),
    ("identifier", false),
    ("patient", true),
    ("intent", false),
];

/// The ServiceRequest filters of `cow-servicerequest-changed`: (search parameter code, is a
/// reference parameter).
pub const SERVICE_REQUEST_FILTERS: [(&str, bool); 10] = [
    ("based-on", true),
    ("replaces", true),
    ("requester", true),
    ("performer", true),
    ("identifier", false),
    ("status", false),
    ("intent", false),
    ("code", false),
    ("patient", true),
    ("requisition", false),
];

/// Modifiers allowed on reference filters of the built-in topics.
pub const REFERENCE_MODIFIERS: [&str; 2] = ["identifier", "missing"];
/// Modifiers allowed on token filters of the built-in topics.
pub const TOKEN_MODIFIERS: [&str; 2] = ["not", "missing"];

/// FHIRPath of `cow-task-status-changed`: fires on create, and on an update that changes
/// `status` or `businessStatus` (`~` treats two empties as equal, so a business status appearing
/// or disappearing counts as a change).
pub const STATUS_CHANGED_FHIRPATH: &str = "%previous.empty() or %previous.status != %current.status or (%previous.businessStatus ~ %current.businessStatus).not()";
/// FHIRPath of `cow-task-output-added`.
pub const OUTPUT_ADDED_FHIRPATH: &str = "%current.output.count() > %previous.output.count()";
/// Current-state query of `cow-cancellation-requested`.
pub const CANCELLATION_QUERY: &str =
    "code=http://hl7.org/fhir/CodeSystem/task-code|abort&status=requested";

/// A topic-defined filter the matcher must evaluate specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicDefinedFilter {
    /// [`TASK_OWNER_FILTER`]: a related Task (focus or basedOn = the ServiceRequest) has this owner.
    TaskOwner,
}

impl TopicDefinedFilter {
    /// Recognises a topic-defined filter from its `canFilterBy` entry (by definition URI, or by
    /// name on a ServiceRequest filter without definition).
    pub fn of(can_filter_by: &CanFilterBy) -> Option<Self> {
        match can_filter_by.filter_definition.as_deref() {
            Some(TASK_OWNER_DEFINITION) => Some(TopicDefinedFilter::TaskOwner),
            Some(_) => None,
            None if can_filter_by.filter_parameter == TASK_OWNER_FILTER
                && can_filter_by.resource.as_deref() == Some("ServiceRequest") =>
            {
                Some(TopicDefinedFilter::TaskOwner)
            }
            None => None,
        }
    }

    /// The resource type and search parameter the filter value is read as (`Task`, `owner`).
    pub fn search_parameter(self) -> (&'static str, &'static str) {
        match self {
            TopicDefinedFilter::TaskOwner => ("Task", "owner"),
        }
    }
}

/// Related resources the matcher may need, provided by the server (a pure trait object: the
/// matcher never does I/O itself).
pub trait RelatedLookup {
    /// Current versions of the Tasks whose `focus` or `basedOn` references the ServiceRequest
    /// `service_request` (given as `ServiceRequest/<id>`).
    fn tasks_for_service_request(&self, service_request: &str) -> Vec<Value>;
}

/// A [`RelatedLookup`] that knows nothing (for tests and for topics that need no related data).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRelated;

impl RelatedLookup for NoRelated {
    fn tasks_for_service_request(&self, _service_request: &str) -> Vec<Value> {
        Vec::new()
    }
}

/// Canonical of a built-in topic id.
pub fn canonical(id: &str) -> String {
    format!("{BUILTIN_BASE}{id}")
}

/// The core SearchParameter canonical of `resource_type`.`code` in `version` (from the
/// registry; `http://hl7.org/fhir/SearchParameter/<Type>-<code>` if the registry lacks it).
fn definition(version: FhirVersion, resource_type: &str, code: &str) -> String {
    Registry::for_version(version)
        .get(resource_type, code)
        .map(|d| d.url.clone())
        .unwrap_or_else(|| format!("http://hl7.org/fhir/SearchParameter/{resource_type}-{code}"))
}

fn core_filter(
    version: FhirVersion,
    resource_type: &str,
    code: &str,
    is_reference: bool,
) -> CanFilterBy {
    let modifiers: &[&str] = if is_reference {
        &REFERENCE_MODIFIERS
    } else {
        &TOKEN_MODIFIERS
    };
    CanFilterBy {
        description: Some(format!("{resource_type} search parameter '{code}'")),
        resource: Some(resource_type.to_owned()),
        filter_parameter: code.to_owned(),
        filter_definition: Some(definition(version, resource_type, code)),
        comparators: Vec::new(),
        modifiers: modifiers.iter().map(|m| (*m).to_owned()).collect(),
    }
}

fn task_filters(version: FhirVersion, only: Option<&[&str]>) -> Vec<CanFilterBy> {
    TASK_FILTERS
        .iter()
        .filter(|(code, _)| only.is_none_or(|o| o.contains(code)))
        .map(|(code, is_ref)| core_filter(version, "Task", code, *is_ref))
        .collect()
}

fn service_request_filters(version: FhirVersion) -> Vec<CanFilterBy> {
    SERVICE_REQUEST_FILTERS
        .iter()
        .map(|(code, is_ref)| core_filter(version, "ServiceRequest", code, *is_ref))
        .collect()
}

fn task_shape() -> Vec<NotificationShape> {
    vec![NotificationShape {
        resource: "Task".to_owned(),
        include: [
            "Task:focus",
            "Task:based-on",
            "Task:patient",
            "Task:owner",
            "Task:requester",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        rev_include: vec!["Task:part-of".to_owned()],
    }]
}

fn trigger(
    resource: &str,
    description: &str,
    interactions: &[Interaction],
    query_criteria: Option<QueryCriteria>,
    fhirpath: Option<&str>,
) -> ResourceTrigger {
    ResourceTrigger {
        description: Some(description.to_owned()),
        resource: resource.to_owned(),
        interactions: interactions.to_vec(),
        query_criteria,
        fhirpath_criteria: fhirpath.map(str::to_owned),
    }
}

fn topic(
    id: &str,
    title: &str,
    description: &str,
    resource_triggers: Vec<ResourceTrigger>,
    can_filter_by: Vec<CanFilterBy>,
    notification_shape: Vec<NotificationShape>,
) -> Topic {
    Topic {
        url: canonical(id),
        version: Some("1.0.0".to_owned()),
        name: Some(id.replace('-', "_")),
        title: Some(title.to_owned()),
        status: TopicStatus::Active,
        date: Some("2025-01-01".to_owned()),
        description: Some(format!(
            "{description} {FILTER_TIMING} Herald broker-specific topic for Clinical Order Workflows (COW defines no topics)."
        )),
        resource_triggers,
        can_filter_by,
        notification_shape,
    }
}

/// The built-in topics ([`BUILTIN_IDS`], in that order) for a tenant of `version` (filter definitions are the version's core
/// SearchParameter canonicals).
pub fn topics(version: FhirVersion) -> Vec<Topic> {
    use Interaction::{Create, Delete, Update};
    vec![
        topic(
            COW_TASK_CHANGED,
            "COW: Task changed",
            "Any create, update or delete of a Task (no-op updates excepted).",
            vec![trigger("Task", "A Task was created, updated or deleted", &[Create, Update, Delete], None, None)],
            task_filters(version, None),
            task_shape(),
        ),
        topic(
            COW_TASK_STATUS_CHANGED,
            "COW: Task status changed",
            "A Task was created or its status or business status changed.",
            vec![trigger(
                "Task",
                "Task created, or status / businessStatus changed",
                &[Create, Update],
                None,
                Some(STATUS_CHANGED_FHIRPATH),
            )],
            task_filters(version, None),
            task_shape(),
        ),
        topic(
            COW_CANCELLATION_REQUESTED,
            "COW: cancellation requested",
            "A Cancellation Request Task (code abort, status requested) was created.",
            vec![trigger(
                "Task",
                "Cancellation Request Task created",
                &[Create],
                Some(QueryCriteria {
                    previous: None,
                    current: Some(CANCELLATION_QUERY.to_owned()),
                    result_for_create: None,
                    result_for_delete: None,
                    require_both: false,
                }),
                None,
            )],
            task_filters(version, Some(&["focus", "owner", "requester"])),
            task_shape(),
        ),
        topic(
            COW_SERVICEREQUEST_FOR_OWNER,
            "COW: ServiceRequest changed for a Task owner",
            "A ServiceRequest that a Task (through focus or basedOn) assigns to a given owner was created or changed.",
            vec![trigger(
                "ServiceRequest",
                "ServiceRequest created or updated",
                &[Create, Update],
                None,
                None,
            )],
            vec![CanFilterBy {
                description: Some(
                    "Some Task whose focus or basedOn is this ServiceRequest has this owner (value as for Task?owner=)."
                        .to_owned(),
                ),
                resource: Some("ServiceRequest".to_owned()),
                filter_parameter: TASK_OWNER_FILTER.to_owned(),
                filter_definition: Some(TASK_OWNER_DEFINITION.to_owned()),
                comparators: Vec::new(),
                modifiers: REFERENCE_MODIFIERS.iter().map(|m| (*m).to_owned()).collect(),
            }],
            vec![NotificationShape {
                resource: "ServiceRequest".to_owned(),
                include: vec![
                    "ServiceRequest:patient".to_owned(),
                    "ServiceRequest:requester".to_owned(),
                ],
                rev_include: vec!["Task:focus".to_owned(), "Task:based-on".to_owned()],
            }],
        ),
        topic(
            COW_TASK_OUTPUT_ADDED,
            "COW: Task output added",
            "A Task gained an output.",
            vec![trigger("Task", "Task.output grew", &[Update], None, Some(OUTPUT_ADDED_FHIRPATH))],
            task_filters(version, None),
            task_shape(),
        ),
        topic(
            COW_SERVICEREQUEST_CHANGED,
            "COW: ServiceRequest changed",
            "A ServiceRequest was created or changed (no-op updates excepted); filter by what it is based on, replaces, who requested or performs it.",
            vec![trigger(
                "ServiceRequest",
                "ServiceRequest created or updated",
                &[Create, Update],
                None,
                None,
            )],
            service_request_filters(version),
            vec![NotificationShape {
                resource: "ServiceRequest".to_owned(),
                include: vec![
                    "ServiceRequest:based-on".to_owned(),
                    "ServiceRequest:replaces".to_owned(),
                    "ServiceRequest:patient".to_owned(),
                ],
                rev_include: Vec::new(),
            }],
        ),
    ]
}
