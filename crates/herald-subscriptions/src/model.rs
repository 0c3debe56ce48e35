//! The version-neutral model of `SubscriptionTopic` and `Subscription`.
//!
//! This module owns the shapes only. Reading and writing them as FHIR JSON is the job of the
//! [`crate::r4`] and [`crate::r5`] adapters; checking a request against a topic is
//! [`crate::validate`]. Everything here is serde-serialisable so that the store may keep it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Prefix of core StructureDefinition canonicals; `SubscriptionTopic.resourceTrigger.resource`
/// may be written either as `Task` or as `http://hl7.org/fhir/StructureDefinition/Task`.
pub const CORE_STRUCTURE_DEFINITION_BASE: &str = "http://hl7.org/fhir/StructureDefinition/";

/// Reduces a resource name written as a canonical (`http://hl7.org/fhir/StructureDefinition/Task`)
/// or as a plain type name (`Task`) to the plain type name.
pub fn resource_type_name(resource: &str) -> &str {
    resource
        .strip_prefix(CORE_STRUCTURE_DEFINITION_BASE)
        .unwrap_or(resource)
}

/// The `uri` form of a resource name for output: a plain type name (`Task`) becomes its core
/// canonical (`http://hl7.org/fhir/StructureDefinition/Task`); anything else is kept.
pub fn resource_uri(resource: &str) -> String {
    if resource.contains(':') {
        resource.to_owned()
    } else {
        format!("{CORE_STRUCTURE_DEFINITION_BASE}{resource}")
    }
}

/// A create, update or delete of a resource (`interaction-trigger` value set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interaction {
    /// The resource was created.
    Create,
    /// A new version of an existing resource was written.
    Update,
    /// The resource was deleted.
    Delete,
}

impl Interaction {
    /// All interactions, in code order.
    pub const ALL: [Interaction; 3] = [
        Interaction::Create,
        Interaction::Update,
        Interaction::Delete,
    ];

    /// The FHIR code (`create`, `update`, `delete`).
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Create => "create",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
        }
    }

    /// Parses a FHIR code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "create" => Some(Interaction::Create),
            "update" => Some(Interaction::Update),
            "delete" => Some(Interaction::Delete),
            _ => None,
        }
    }
}

/// The publication status of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TopicStatus {
    /// Under development.
    Draft,
    /// Ready for use.
    #[default]
    Active,
    /// Withdrawn.
    Retired,
    /// Not known.
    Unknown,
}

impl TopicStatus {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            TopicStatus::Draft => "draft",
            TopicStatus::Active => "active",
            TopicStatus::Retired => "retired",
            TopicStatus::Unknown => "unknown",
        }
    }

    /// Parses a FHIR code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "draft" => Some(TopicStatus::Draft),
            "active" => Some(TopicStatus::Active),
            "retired" => Some(TopicStatus::Retired),
            "unknown" => Some(TopicStatus::Unknown),
            _ => None,
        }
    }
}

/// The outcome a `queryCriteria` test is given when it cannot be run
/// (`previous` on a create, `current` on a delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestResult {
    /// The test counts as passed.
    TestPasses,
    /// The test counts as failed.
    TestFails,
}

impl TestResult {
    /// The FHIR code (`test-passes`, `test-fails`).
    pub fn code(self) -> &'static str {
        match self {
            TestResult::TestPasses => "test-passes",
            TestResult::TestFails => "test-fails",
        }
    }

    /// Parses a FHIR code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "test-passes" => Some(TestResult::TestPasses),
            "test-fails" => Some(TestResult::TestFails),
            _ => None,
        }
    }

    /// `true` for [`TestResult::TestPasses`].
    pub fn passed(self) -> bool {
        self == TestResult::TestPasses
    }
}

/// `SubscriptionTopic.resourceTrigger.queryCriteria`: search strings (no base, no leading `/`)
/// tested against the resource before and after the change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueryCriteria {
    /// Query tested against the previous version.
    pub previous: Option<String>,
    /// Query tested against the current version.
    pub current: Option<String>,
    /// Result of `previous` on a create.
    pub result_for_create: Option<TestResult>,
    /// Result of `current` on a delete.
    pub result_for_delete: Option<TestResult>,
    /// Both tests must pass (otherwise either is enough).
    pub require_both: bool,
}

/// `SubscriptionTopic.resourceTrigger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceTrigger {
    /// Human description of the trigger.
    pub description: Option<String>,
    /// Plain resource type name (`Task`), canonical prefix removed.
    pub resource: String,
    /// Interactions that fire; empty means all of them.
    pub interactions: Vec<Interaction>,
    /// Query-based test, if any.
    pub query_criteria: Option<QueryCriteria>,
    /// FHIRPath test using `%previous` and `%current`, if any.
    pub fhirpath_criteria: Option<String>,
}

impl ResourceTrigger {
    /// Whether this trigger considers `interaction` (an empty list means every interaction).
    pub fn supports(&self, interaction: Interaction) -> bool {
        self.interactions.is_empty() || self.interactions.contains(&interaction)
    }
}

/// `SubscriptionTopic.canFilterBy`: a filter a subscriber may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanFilterBy {
    /// Human description.
    pub description: Option<String>,
    /// Plain resource type the filter applies to; `None` means every type in the topic.
    pub resource: Option<String>,
    /// Name of the filter, meaningful inside the topic (a search parameter code or topic-defined).
    pub filter_parameter: String,
    /// Canonical of the SearchParameter (or other definition) behind the filter.
    pub filter_definition: Option<String>,
    /// Allowed comparators (`eq`, `gt`, …). R4B topics carry them among the modifiers.
    pub comparators: Vec<String>,
    /// Allowed modifiers (`not`, `in`, `identifier`, …).
    pub modifiers: Vec<String>,
}

/// `SubscriptionTopic.notificationShape`: what a notification about `resource` should include.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationShape {
    /// Plain resource type.
    pub resource: String,
    /// `_include` style directives (`Task:focus`).
    pub include: Vec<String>,
    /// `_revinclude` style directives (`Task:part-of`).
    pub rev_include: Vec<String>,
}

/// A version-neutral `SubscriptionTopic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Canonical URL: the identity subscriptions point at.
    pub url: String,
    /// Business version.
    pub version: Option<String>,
    /// Computer-friendly name.
    pub name: Option<String>,
    /// Human title.
    pub title: Option<String>,
    /// Publication status.
    pub status: TopicStatus,
    /// Publication date.
    pub date: Option<String>,
    /// Markdown description.
    pub description: Option<String>,
    /// Resource triggers.
    pub resource_triggers: Vec<ResourceTrigger>,
    /// Filters subscribers may use.
    pub can_filter_by: Vec<CanFilterBy>,
    /// Notification shapes.
    pub notification_shape: Vec<NotificationShape>,
}

impl Topic {
    /// The distinct resource types this topic triggers on, in first-seen order.
    pub fn resource_types(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in &self.resource_triggers {
            if !out.contains(&t.resource.as_str()) {
                out.push(t.resource.as_str());
            }
        }
        out
    }

    /// The `canFilterBy` entries named `parameter` that apply to `resource_type`
    /// (entries with no resource apply to every type).
    pub fn can_filter_by_for<'a>(
        &'a self,
        resource_type: Option<&'a str>,
        parameter: &'a str,
    ) -> impl Iterator<Item = &'a CanFilterBy> + 'a {
        self.can_filter_by.iter().filter(move |c| {
            c.filter_parameter == parameter
                && match (resource_type, c.resource.as_deref()) {
                    (Some(rt), Some(r)) => rt == r,
                    _ => true,
                }
        })
    }
}

/// `Subscription.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionStatus {
    /// Submitted by the client, not yet active (rest-hook: awaiting the handshake).
    Requested,
    /// Delivering.
    Active,
    /// Delivery is failing; events keep being counted.
    Error,
    /// Turned off; no events.
    Off,
    /// Created by mistake (R5 only); no events.
    EnteredInError,
}

impl SubscriptionStatus {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            SubscriptionStatus::Requested => "requested",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Error => "error",
            SubscriptionStatus::Off => "off",
            SubscriptionStatus::EnteredInError => "entered-in-error",
        }
    }

    /// Parses a FHIR code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "requested" => Some(SubscriptionStatus::Requested),
            "active" => Some(SubscriptionStatus::Active),
            "error" => Some(SubscriptionStatus::Error),
            "off" => Some(SubscriptionStatus::Off),
            "entered-in-error" => Some(SubscriptionStatus::EnteredInError),
            _ => None,
        }
    }

    /// Whether a subscription in this status gets events generated for it (and counted).
    ///
    /// Herald's rule: `requested` (a rest-hook awaiting its handshake), `active` and `error`
    /// (which keeps counting, spec §5.5) receive events; `off` and `entered-in-error` get nothing.
    pub fn receives_events(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Requested | SubscriptionStatus::Active | SubscriptionStatus::Error
        )
    }
}

/// One `Subscription.filterBy` (or backport `filter-criteria`) entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Filter {
    /// Plain resource type the filter applies to, when given.
    pub resource_type: Option<String>,
    /// Filter name; one of the topic's `canFilterBy.filterParameter`.
    pub parameter: String,
    /// Search comparator (`eq`, `gt`, …), when given as a separate element.
    pub comparator: Option<String>,
    /// Search modifier (`not`, `identifier`, …).
    pub modifier: Option<String>,
    /// Search-style literal value (may carry a prefix such as `le1950`).
    pub value: String,
}

/// Channel types Herald implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelType {
    /// HTTP POST of the notification bundle.
    RestHook,
    /// Delivery over a bound websocket.
    Websocket,
    /// E-mail (`mailto:` endpoint).
    Email,
    /// FHIR messaging.
    Message,
}

impl ChannelType {
    /// System of the channel type codes.
    pub const SYSTEM: &'static str =
        "http://terminology.hl7.org/CodeSystem/subscription-channel-type";

    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            ChannelType::RestHook => "rest-hook",
            ChannelType::Websocket => "websocket",
            ChannelType::Email => "email",
            ChannelType::Message => "message",
        }
    }

    /// Parses a FHIR code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "rest-hook" => Some(ChannelType::RestHook),
            "websocket" => Some(ChannelType::Websocket),
            "email" => Some(ChannelType::Email),
            "message" => Some(ChannelType::Message),
            _ => None,
        }
    }
}

/// Payload content level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadContent {
    /// No focus, no topic, no extra entries.
    Empty,
    /// Entries without `resource`.
    IdOnly,
    /// Full resources.
    FullResource,
}

impl PayloadContent {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            PayloadContent::Empty => "empty",
            PayloadContent::IdOnly => "id-only",
            PayloadContent::FullResource => "full-resource",
        }
    }

    /// Parses a FHIR code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "empty" => Some(PayloadContent::Empty),
            "id-only" => Some(PayloadContent::IdOnly),
            "full-resource" => Some(PayloadContent::FullResource),
            _ => None,
        }
    }
}

/// How and where notifications are delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Channel type.
    pub kind: ChannelType,
    /// Endpoint URL (`None` for a websocket).
    pub endpoint: Option<String>,
    /// HTTP headers (R5 `parameter`, R4 `channel.header` split on the first `:`).
    pub headers: Vec<(String, String)>,
    /// Heartbeat period in seconds; `None` means no heartbeats.
    pub heartbeat_period: Option<u32>,
    /// Delivery timeout in seconds.
    pub timeout: Option<u32>,
    /// MIME type, possibly with `;fhirVersion=`.
    pub content_type: String,
    /// Payload content level.
    pub content: PayloadContent,
    /// Maximum events per notification bundle.
    pub max_count: Option<u32>,
}

/// A version-neutral `Subscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Logical id; empty until the server assigns one.
    pub id: String,
    /// Business identifiers (FHIR `Identifier` JSON, kept as is).
    pub identifier: Vec<Value>,
    /// Status.
    pub status: SubscriptionStatus,
    /// Canonical URL of the topic.
    pub topic: String,
    /// Filters, ANDed.
    pub filters: Vec<Filter>,
    /// Delivery channel.
    pub channel: Channel,
    /// When the server should turn the subscription off (instant).
    pub end: Option<String>,
    /// Why the subscription exists.
    pub reason: Option<String>,
}

impl Subscription {
    /// `end` as milliseconds since the Unix epoch (`None` when absent or not a date/time).
    /// A change at or after it notifies nothing (and the dispatcher turns the subscription off).
    pub fn end_ms(&self) -> Option<i64> {
        self.end
            .as_deref()
            .and_then(herald_fhir::date::parse_range)
            .map(|(range, _)| range.start)
    }
}
