//! Fuzz target `fhir_json`: bytes → JSON (serde_json with the workspace's `arbitrary_precision`
//! and `preserve_order`) → `herald_fhir::validate::check_resource`, the structural check every
//! incoming resource body goes through, for R4 and R5.
//!
//! Only panics, aborts, stack overflows and hangs count: a refusal is a normal outcome.
#![forbid(unsafe_code)]

use herald_fhir::validate::check_resource;
use herald_fuzz::{VERSIONS, consume, warm_up};
use serde_json::Value;

fn main() {
    warm_up();
    afl::fuzz!(|data: &[u8]| {
        let Ok(body) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        for version in VERSIONS {
            consume(check_resource(version, &body));
        }
    });
}
