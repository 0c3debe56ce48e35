//! Shared pieces of Herald's AFL++ fuzz targets (one binary per target under `src/bin/`): the
//! fixture resources the targets evaluate against and the FHIR versions every target covers.
//!
//! Fixtures are compiled in (`include_str!`) so a target binary is self-contained: a crash found
//! in CI reproduces by feeding the saved input to the binary, from any directory.
#![forbid(unsafe_code)]

use herald_fhir::FhirVersion;
use serde_json::Value;

/// The FHIR releases Herald serves; every target exercises each.
pub const VERSIONS: [FhirVersion; 3] = [FhirVersion::R4, FhirVersion::R4B, FhirVersion::R5];

/// A Task after an update (status `in-progress`, many element kinds: contained resource,
/// extensions, choice types, decimals, periods): `%current` and the default focus.
pub const TASK_CURRENT: &str = include_str!("../fixtures/task-current.json");

/// The same Task before the update (status `requested`): `%previous`.
pub const TASK_PREVIOUS: &str = include_str!("../fixtures/task-previous.json");

/// The Clinical Order Workflows example ServiceRequest (CC0).
pub const SERVICE_REQUEST: &str = include_str!("../fixtures/service-request.json");

/// Parses a compiled-in fixture. Start-up only: a fixture that does not parse is a bug in this
/// package, found by the first run, so panicking (before the fuzz loop starts) is the right
/// report.
#[allow(clippy::expect_used)]
pub fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("compiled-in fuzz fixture is valid JSON")
}

/// Fills Herald's lazily built caches (the search-parameter registry of each version, the compiled
/// search paths of every resource type) before the fuzz loop. In AFL++'s persistent mode one
/// process runs many inputs: without this, the first input to name a resource type takes paths
/// no later one repeats, and AFL reports the target as unstable.
pub fn warm_up() {
    for version in VERSIONS {
        for rt in herald_fhir::resource_types(version) {
            let body = serde_json::json!({ "resourceType": rt, "id": "warm-up" });
            consume(herald_fhir::validate::check_resource(version, &body));
        }
    }
}

/// Keeps an outcome alive (so the optimiser cannot drop the call) and renders an error the way
/// the server does before putting it into an OperationOutcome: rendering must not panic either.
pub fn consume<T, E: std::fmt::Display>(outcome: Result<T, E>) {
    match outcome {
        Ok(v) => {
            std::hint::black_box(v);
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}
