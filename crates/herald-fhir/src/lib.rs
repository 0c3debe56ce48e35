//! Herald's FHIR toolbox: versions, resource type lists, ids, references, OperationOutcome,
//! validation against the core definitions, search-parameter definitions and search semantics, and a FHIRPath
//! subset. Pure: no I/O, no async.
#![forbid(unsafe_code)]

pub mod date;
pub mod definitions;
mod error;
pub mod fhirpath;
pub mod outcome;
pub mod patch;
pub mod reference;
pub mod search;
pub mod summary;
mod types;
pub mod validate;

pub use error::FhirError;
pub use types::{is_resource_type, resource_types};

use serde::{Deserialize, Serialize};

/// A FHIR release supported by Herald.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FhirVersion {
    /// FHIR R4 (4.0.1).
    R4,
    /// FHIR R4B (4.3.0): R4's Subscription (with the Subscriptions Backport) next to native
    /// SubscriptionTopic and SubscriptionStatus resources.
    R4B,
    /// FHIR R5 (5.0.0).
    R5,
}

impl FhirVersion {
    /// The `fhirVersion` string: "4.0.1", "4.3.0" or "5.0.0".
    pub fn fhir_version(&self) -> &'static str {
        match self {
            FhirVersion::R4 => "4.0.1",
            FhirVersion::R4B => "4.3.0",
            FhirVersion::R5 => "5.0.0",
        }
    }

    /// The short label: "r4", "r4b" or "r5".
    pub fn label(&self) -> &'static str {
        match self {
            FhirVersion::R4 => "r4",
            FhirVersion::R4B => "r4b",
            FhirVersion::R5 => "r5",
        }
    }

    /// Parses r4, R4, 4.0, 4.0.1, r4b, R4B, 4.3, 4.3.0, r5, R5, 5.0, 5.0.0 (surrounding
    /// whitespace ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "r4" | "R4" | "4.0" | "4.0.1" => Some(FhirVersion::R4),
            "r4b" | "R4B" | "4.3" | "4.3.0" => Some(FhirVersion::R4B),
            "r5" | "R5" | "5.0" | "5.0.0" => Some(FhirVersion::R5),
            _ => None,
        }
    }
}

impl std::fmt::Display for FhirVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Is `id` a valid FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`, and not `.` or `..`? (Those two
/// match the pattern, but as a path segment they name the parent or the collection itself:
/// `Location: …/Task/../_history/1` resolves elsewhere in every URL library.)
pub fn is_valid_id(id: &str) -> bool {
    id != "."
        && id != ".."
        && !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parse_accepts_labels_and_numbers() {
        for s in ["r4", "R4", "4.0", "4.0.1"] {
            assert_eq!(FhirVersion::parse(s), Some(FhirVersion::R4));
        }
        for s in ["r5", "R5", "5.0", "5.0.0"] {
            assert_eq!(FhirVersion::parse(s), Some(FhirVersion::R5));
        }
        for s in ["r4b", "R4B", "4.3", "4.3.0"] {
            assert_eq!(FhirVersion::parse(s), Some(FhirVersion::R4B));
        }
        assert_eq!(FhirVersion::parse("4.1.0"), None);
        assert_eq!(FhirVersion::R4B.fhir_version(), "4.3.0");
        assert_eq!(FhirVersion::R4B.label(), "r4b");
        assert_eq!(FhirVersion::R4.fhir_version(), "4.0.1");
        assert_eq!(FhirVersion::R5.label(), "r5");
    }

    #[test]
    fn version_serializes_as_lowercase_label() {
        assert_eq!(
            serde_json::to_string(&FhirVersion::R4).ok().as_deref(),
            Some("\"r4\"")
        );
        let v: Result<FhirVersion, _> = serde_json::from_str("\"r5\"");
        assert_eq!(v.ok(), Some(FhirVersion::R5));
        let v: Result<FhirVersion, _> = serde_json::from_str("\"r4b\"");
        assert_eq!(v.ok(), Some(FhirVersion::R4B));
    }

    #[test]
    fn valid_ids_follow_fhir_pattern() {
        assert!(is_valid_id("cow-service-request-example"));
        assert!(is_valid_id("a.B-1"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("é"));
        assert!(!is_valid_id("."));
        assert!(!is_valid_id(".."));
        assert!(is_valid_id("..."));
        assert!(is_valid_id(".a"));
    }
}
