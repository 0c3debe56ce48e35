//! `MatchError`: the one error type of the matcher.

use thiserror::Error;

/// Why a topic or subscription could not be compiled, or a change could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatchError {
    /// A topic criterion (query or FHIRPath) does not compile.
    #[error("topic '{topic}': {element} '{expression}' cannot be compiled: {reason}")]
    TopicCriteria {
        /// Topic canonical.
        topic: String,
        /// Which criterion.
        element: String,
        /// The expression or query.
        expression: String,
        /// herald-fhir's message.
        reason: String,
    },
    /// A subscription filter does not compile for any resource type of its topic.
    #[error(
        "subscription '{subscription}': filter '{parameter}={value}' cannot be compiled: {reason}"
    )]
    SubscriptionFilter {
        /// Subscription id.
        subscription: String,
        /// Filter parameter.
        parameter: String,
        /// Filter value.
        value: String,
        /// herald-fhir's message.
        reason: String,
    },
    /// Evaluating a topic trigger on a change failed.
    #[error("topic '{topic}': evaluating {element} on {resource} failed: {reason}")]
    TriggerEvaluation {
        /// Topic canonical.
        topic: String,
        /// Which criterion.
        element: String,
        /// `Type/id` of the changed resource.
        resource: String,
        /// herald-fhir's message.
        reason: String,
    },
    /// Evaluating a subscription filter on a change failed.
    #[error(
        "subscription '{subscription}': evaluating filter '{parameter}' on {resource} failed: {reason}"
    )]
    FilterEvaluation {
        /// Subscription id.
        subscription: String,
        /// Filter parameter.
        parameter: String,
        /// `Type/id` of the changed resource.
        resource: String,
        /// herald-fhir's message.
        reason: String,
    },
}
