//! Owns the crate's single error type, `FhirError`.

use thiserror::Error;

/// Every error produced by herald-fhir.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FhirError {
    /// The body is not a structurally valid FHIR resource (message names the JSON path).
    #[error("invalid resource: {0}")]
    InvalidResource(String),
    /// An element of the body breaks its definition (unknown, wrong type or format, wrong
    /// cardinality, code outside a required value set).
    #[error("invalid resource: {expression}: {message}")]
    InvalidElement {
        /// FHIRPath-style location of the element, e.g. `Task.input[0].type`.
        expression: String,
        /// What is wrong with it.
        message: String,
    },
    /// A PATCH body that is not a valid JSON Patch document or FHIRPath Patch `Parameters`.
    #[error("invalid patch: {0}")]
    InvalidPatch(String),
    /// A well-formed patch that cannot be applied to the resource (a failed `test`, a path that
    /// selects nothing or too much).
    #[error("patch cannot be applied: {0}")]
    PatchFailed(String),
    /// `resourceType` (or a type name in a query) is not a resource type of the version.
    #[error("unknown resource type: {0}")]
    UnknownResourceType(String),
    /// No search parameter `code` is defined for `resource_type`.
    #[error("unknown search parameter '{code}' for {resource_type}")]
    UnknownSearchParameter {
        /// The resource type searched.
        resource_type: String,
        /// The parameter code as given.
        code: String,
    },
    /// A search value could not be parsed for the parameter's type.
    #[error("invalid value '{value}' for search parameter '{param}': {reason}")]
    InvalidSearchValue {
        /// The parameter code.
        param: String,
        /// The offending value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The modifier (or comparator) is unknown or not valid for the parameter's type.
    #[error("modifier '{modifier}' is not supported for search parameter '{param}'")]
    UnsupportedModifier {
        /// The parameter code.
        param: String,
        /// The modifier as given.
        modifier: String,
    },
    /// The parameter exists but Herald cannot evaluate it (no expression, composite, special,
    /// chained, terminology-dependent...).
    #[error("search parameter '{param}' is not supported: {reason}")]
    UnsupportedSearchParameter {
        /// The parameter code.
        param: String,
        /// Why it is not supported.
        reason: String,
    },
    /// FHIRPath syntax error (or evaluation error such as a non-singleton comparison).
    #[error("FHIRPath error: {0}")]
    FhirPath(String),
    /// FHIRPath construct outside Herald's supported subset (names the function/operator).
    #[error("FHIRPath construct not supported: {0}")]
    FhirPathUnsupported(String),
    /// FHIRPath expression over one of Herald's limits (length, nesting, evaluation steps); the
    /// message names the limit.
    #[error("FHIRPath limit exceeded: {0}")]
    FhirPathLimit(String),
}
