//! Owns the construction of OperationOutcome resources.

use serde_json::{Value, json};

/// OperationOutcome issue severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The issue caused the action to fail and no further checking could be performed.
    Fatal,
    /// The issue is sufficiently important to cause the action to fail.
    Error,
    /// The issue is not important enough to cause the action to fail.
    Warning,
    /// The issue has no relation to the degree of success of the action.
    Information,
}

impl Severity {
    /// The FHIR code: fatal, error, warning, information.
    pub fn code(&self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// Builds an OperationOutcome JSON value with one issue. `code` is a FHIR issue-type code such as
/// "invalid", "not-found", "processing", "conflict", "not-supported". An empty `diagnostics` is
/// omitted (FHIR JSON forbids empty strings).
pub fn operation_outcome(severity: Severity, code: &str, diagnostics: &str) -> Value {
    operation_outcome_at(severity, code, diagnostics, None)
}

/// [`operation_outcome`] whose issue names the element it is about (`issue.expression`, a
/// FHIRPath such as `Task.status`).
pub fn operation_outcome_at(
    severity: Severity,
    code: &str,
    diagnostics: &str,
    expression: Option<&str>,
) -> Value {
    let mut issue = json!({ "severity": severity.code(), "code": code });
    if !diagnostics.is_empty()
        && let Some(obj) = issue.as_object_mut()
    {
        obj.insert("diagnostics".into(), Value::String(diagnostics.into()));
    }
    if let (Some(e), Some(obj)) = (expression.filter(|e| !e.is_empty()), issue.as_object_mut()) {
        obj.insert("expression".into(), json!([e]));
    }
    json!({ "resourceType": "OperationOutcome", "issue": [issue] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_has_one_issue_with_severity_code_and_diagnostics() {
        let oo = operation_outcome(Severity::Error, "not-found", "Task/1 is gone");
        assert_eq!(
            oo,
            json!({"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"Task/1 is gone"}]})
        );
    }

    #[test]
    fn outcome_names_the_element_in_expression() {
        let oo = operation_outcome_at(Severity::Error, "invalid", "bad", Some("Task.status"));
        assert_eq!(oo["issue"][0]["expression"], json!(["Task.status"]));
        assert!(
            operation_outcome(Severity::Error, "invalid", "x")["issue"][0]
                .get("expression")
                .is_none()
        );
    }

    #[test]
    fn outcome_omits_empty_diagnostics() {
        let oo = operation_outcome(Severity::Information, "informational", "");
        assert!(oo["issue"][0].get("diagnostics").is_none());
        assert_eq!(oo["issue"][0]["severity"], "information");
    }
}
