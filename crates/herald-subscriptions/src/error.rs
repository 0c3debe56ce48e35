//! `SubscriptionError`: the one error type of this crate. Every refusal of a Subscription or
//! SubscriptionTopic request is a variant with a message fit to show a client; the server maps
//! them to 4xx OperationOutcomes using [`SubscriptionError::issue_code`].

use thiserror::Error;

/// Why a Subscription or SubscriptionTopic could not be read, accepted or written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubscriptionError {
    /// The body is not the expected resource type.
    #[error("expected a {expected} resource, found {found}")]
    WrongResourceType {
        /// Expected `resourceType`.
        expected: String,
        /// Found `resourceType` (or `nothing`).
        found: String,
    },
    /// A required element is absent.
    #[error("{element} is required")]
    Missing {
        /// FHIRPath-like location of the element.
        element: String,
    },
    /// An element has the wrong JSON shape or an unreadable value.
    #[error("{element} is invalid: {reason}")]
    Invalid {
        /// FHIRPath-like location of the element.
        element: String,
        /// What is wrong.
        reason: String,
    },
    /// The topic canonical is not one this tenant knows.
    #[error("unknown SubscriptionTopic '{topic}'")]
    UnknownTopic {
        /// Requested canonical.
        topic: String,
    },
    /// The R4 `criteria` is a classic query, not a topic canonical.
    #[error(
        "Subscription.criteria '{criteria}' is not a SubscriptionTopic canonical; only topic-based subscriptions (Subscriptions Backport) are supported"
    )]
    NotTopicBased {
        /// The criteria string.
        criteria: String,
    },
    /// The filter names a parameter the topic does not list in `canFilterBy`.
    #[error("topic '{topic}' does not allow filtering {resource_type} by '{parameter}'")]
    FilterNotAllowed {
        /// Topic canonical.
        topic: String,
        /// Resource type (or `any resource`).
        resource_type: String,
        /// Filter parameter.
        parameter: String,
    },
    /// The comparator is not allowed for that filter.
    #[error("comparator '{comparator}' is not allowed on filter '{parameter}'")]
    ComparatorNotAllowed {
        /// Filter parameter.
        parameter: String,
        /// Requested comparator.
        comparator: String,
    },
    /// The modifier is not allowed for that filter.
    #[error("modifier '{modifier}' is not allowed on filter '{parameter}'")]
    ModifierNotAllowed {
        /// Filter parameter.
        parameter: String,
        /// Requested modifier.
        modifier: String,
    },
    /// scr-1: a filter with both a comparator and a modifier.
    #[error("filter '{parameter}' has both a comparator and a modifier (scr-1)")]
    ComparatorAndModifier {
        /// Filter parameter.
        parameter: String,
    },
    /// The filter value does not parse for the parameter's search type.
    #[error("filter '{parameter}' value '{value}' is invalid: {reason}")]
    InvalidFilterValue {
        /// Filter parameter.
        parameter: String,
        /// Value given.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// The backport filter-criteria string is not in any accepted syntax.
    #[error(
        "filter criteria '{criteria}' is not of the form Type?param=value, Type.param=value or param[:modifier]=value"
    )]
    InvalidFilterCriteria {
        /// The string given.
        criteria: String,
    },
    /// Channel type not implemented (including custom backport channel types).
    #[error(
        "channel type '{channel}' is not supported (supported: rest-hook, websocket, email, message)"
    )]
    UnknownChannelType {
        /// The code or `system|code` given.
        channel: String,
    },
    /// Endpoint does not fit the channel.
    #[error("endpoint '{endpoint}' is not valid for a {channel} channel: {reason}")]
    InvalidEndpoint {
        /// Channel code.
        channel: String,
        /// Endpoint given.
        endpoint: String,
        /// What is expected.
        reason: String,
    },
    /// MIME type not producible.
    #[error(
        "content type '{content_type}' is not supported: Herald sends application/fhir+json or application/json"
    )]
    UnsupportedContentType {
        /// MIME type given.
        content_type: String,
    },
    /// `;fhirVersion=` names another FHIR version than the tenant's.
    #[error("content type asks for FHIR version {requested} but this endpoint serves {tenant}")]
    FhirVersionMismatch {
        /// Version requested in the MIME parameter.
        requested: String,
        /// Tenant's version.
        tenant: String,
    },
    /// Content level absent.
    #[error("the payload content level is required ({element})")]
    MissingContent {
        /// Where it was expected.
        element: String,
    },
    /// Content level not one of empty, id-only, full-resource.
    #[error("payload content '{content}' is not supported (use empty, id-only or full-resource)")]
    UnknownContent {
        /// Code given.
        content: String,
    },
    /// A 5.0 cross-version extension used on R4 or R4B where the backport defines its own.
    #[error(
        "extension '{url}' on {element} must not be used on a Subscriptions Backport (R4 or R4B) Subscription; use '{use_instead}'"
    )]
    CrossVersionExtension {
        /// Extension URL found.
        url: String,
        /// Where it was found (FHIRPath-like).
        element: String,
        /// Backport replacement.
        use_instead: String,
    },
    /// An extension Herald does not understand, on an R4 element that shapes delivery (filters,
    /// payload content, channel, end): ignoring it could widen what the subscriber receives.
    #[error(
        "extension '{url}' on {element} is not understood by Herald, which refuses it rather than ignore what it may say about filters or delivery (understood there: {understood})"
    )]
    UnsupportedExtension {
        /// Extension URL found.
        url: String,
        /// Where it was found (FHIRPath-like).
        element: String,
        /// The extension URLs Herald understands there, or `none`.
        understood: String,
    },
    /// Unknown status code.
    #[error("unknown Subscription status '{status}'")]
    UnknownStatus {
        /// Code given.
        status: String,
    },
    /// A client may only submit `requested` or `off`.
    #[error("a client may only submit status 'requested' or 'off', not '{status}'")]
    StatusNotAllowed {
        /// Code given.
        status: String,
    },
    /// The status cannot be written in this FHIR version (R4 has no entered-in-error).
    #[error("status '{status}' does not exist in FHIR {version}")]
    StatusNotInVersion {
        /// Status code.
        status: String,
        /// FHIR version label.
        version: String,
    },
    /// Resource type not known in this FHIR version.
    #[error("unknown resource type '{resource_type}' in {element}")]
    UnknownResourceType {
        /// Name given.
        resource_type: String,
        /// Where.
        element: String,
    },
    /// A topic trigger criterion Herald cannot compute.
    #[error("{element} '{}' cannot be used: {reason}", clip(.expression))]
    UnsupportedCriteria {
        /// Where.
        element: String,
        /// Expression or query.
        expression: String,
        /// Parser message.
        reason: String,
    },
    /// A header the subscriber asks Herald to send cannot be sent.
    #[error("header '{header}' in {element} is refused: {reason}")]
    InvalidHeader {
        /// Where.
        element: String,
        /// The header name (control characters escaped).
        header: String,
        /// Why.
        reason: String,
    },
    /// More repetitions of an element than Herald accepts.
    #[error("{element} has {count} entries; at most {limit} are accepted")]
    TooMany {
        /// Where.
        element: String,
        /// How many were sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// A client's expression as an error message quotes it: bounded, since an expression refused for
/// its length would otherwise fill the OperationOutcome and the log.
fn clip(expression: &str) -> String {
    const SHOWN: usize = 200;
    match expression.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}… ({} bytes)", &expression[..cut], expression.len()),
        None => expression.to_owned(),
    }
}

impl SubscriptionError {
    /// The OperationOutcome `issue.code` that fits this error
    /// (`required`, `structure`, `value`, `not-found`, `not-supported`, `business-rule`, `invariant`).
    pub fn issue_code(&self) -> &'static str {
        match self {
            SubscriptionError::Missing { .. } | SubscriptionError::MissingContent { .. } => {
                "required"
            }
            SubscriptionError::WrongResourceType { .. } | SubscriptionError::Invalid { .. } => {
                "structure"
            }
            SubscriptionError::UnknownTopic { .. } => "not-found",
            SubscriptionError::ComparatorAndModifier { .. } => "invariant",
            SubscriptionError::StatusNotAllowed { .. } => "business-rule",
            SubscriptionError::NotTopicBased { .. }
            | SubscriptionError::FilterNotAllowed { .. }
            | SubscriptionError::ComparatorNotAllowed { .. }
            | SubscriptionError::ModifierNotAllowed { .. }
            | SubscriptionError::UnknownChannelType { .. }
            | SubscriptionError::UnsupportedContentType { .. }
            | SubscriptionError::FhirVersionMismatch { .. }
            | SubscriptionError::UnknownContent { .. }
            | SubscriptionError::UnsupportedExtension { .. }
            | SubscriptionError::UnsupportedCriteria { .. }
            | SubscriptionError::StatusNotInVersion { .. } => "not-supported",
            SubscriptionError::InvalidFilterValue { .. }
            | SubscriptionError::InvalidFilterCriteria { .. }
            | SubscriptionError::InvalidEndpoint { .. }
            | SubscriptionError::CrossVersionExtension { .. }
            | SubscriptionError::UnknownStatus { .. }
            | SubscriptionError::UnknownResourceType { .. }
            | SubscriptionError::InvalidHeader { .. } => "value",
            SubscriptionError::TooMany { .. } => "too-costly",
        }
    }
}
