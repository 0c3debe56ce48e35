//! Cost of validating a write body against the core definitions (`herald_fhir::validate`), per
//! body, beside the cost of parsing the same bytes with serde_json (what every write pays
//! already), so the ratio says what validation adds to the write path.
//!
//! Bodies: the COW coordination Task and ServiceRequest (R4, the writes Herald serves most), an
//! R4 backport Subscription, and the official R4 CapabilityStatement example (a large body).
//!
//! Run: `cargo bench -p herald-benches --bench validate`. Under `cargo test --benches` each case
//! runs once and the bodies are checked valid.
#![allow(clippy::expect_used)] // a benchmark aborts on a broken fixture

use std::hint::black_box;

use criterion::Criterion;
use herald_fhir::validate::check_resource_for;
use serde_json::Value;

const BODIES: [(&str, &str); 4] = [
    (
        "task",
        include_str!(
            "../../crates/herald-fhir/tests/fixtures/Task-cow-coordination-task-example.json"
        ),
    ),
    (
        "service-request",
        include_str!(
            "../../crates/herald-fhir/tests/fixtures/ServiceRequest-cow-service-request-example.json"
        ),
    ),
    (
        "subscription",
        include_str!(
            "../../crates/herald-fhir/tests/fixtures/examples/4.0.1/Subscription-subscription-zulip.json"
        ),
    ),
    (
        "capability-statement",
        include_str!(
            "../../crates/herald-fhir/tests/fixtures/examples/4.0.1/CapabilityStatement-r4-capabilitystatement-example-server.json"
        ),
    ),
];

fn main() {
    let mut c = Criterion::default().configure_from_args();
    // Load the table once, outside the timings (it is parsed once per process).
    let _ = herald_fhir::definitions::for_fhir_version("4.0.1");
    for (name, text) in BODIES {
        let body: Value = serde_json::from_str(text).expect("fixture is JSON");
        check_resource_for("4.0.1", &body).expect("fixture is valid R4");
        let mut g = c.benchmark_group(name);
        g.throughput(criterion::Throughput::Bytes(text.len() as u64));
        g.bench_function("validate", |b| {
            b.iter(|| check_resource_for("4.0.1", black_box(&body)))
        });
        g.bench_function("parse", |b| {
            b.iter(|| serde_json::from_str::<Value>(black_box(text)))
        });
        g.finish();
    }
    c.final_summary();
}
