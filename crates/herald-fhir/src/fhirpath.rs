//! Owns the FHIRPath subset used by search-parameter expressions and subscription-topic criteria:
//! lexer, parser (refusing anything outside the subset) and evaluator over serde_json values.

use crate::FhirError;
use serde_json::Value;
use std::collections::HashMap;

/// A parsed FHIRPath expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    text: String,
}

/// Evaluation context: the focus resource and the environment variables.
#[derive(Clone, Debug, Default)]
pub struct Context<'a> {
    /// The resource the expression is evaluated on (also `%resource`, `%rootResource`).
    pub resource: Option<&'a Value>,
    /// `%previous`, `%current`, …; `None` = the empty collection.
    pub variables: HashMap<String, Option<&'a Value>>,
}

/// Parses `text`; constructs outside the subset give `FhirPathUnsupported`.
pub fn parse(text: &str) -> Result<Expression, FhirError> {
    Ok(Expression {
        text: text.to_string(),
    })
}

impl Expression {
    /// Evaluates the expression; the result is a collection.
    pub fn evaluate(&self, _ctx: &Context) -> Result<Vec<Value>, FhirError> {
        Err(FhirError::FhirPathUnsupported(self.text.clone()))
    }
}

/// FHIRPath boolean semantics for a criteria result: single `true` → true; empty → false; single
/// `false` → false; anything else (non-boolean items) → true (exists).
pub fn is_truthy(result: &[Value]) -> bool {
    match result {
        [] => false,
        [Value::Bool(b)] => *b,
        _ => true,
    }
}
