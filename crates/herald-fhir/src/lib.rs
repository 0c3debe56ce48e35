//! placeholder (owned by the herald-fhir helper)
#![forbid(unsafe_code)]
