//! Fuzz target `fhirpath`: bytes → UTF-8 → `herald_fhir::fhirpath::parse`; what parses is
//! evaluated (`evaluate_bool`, `evaluate`, and per-resource-type restriction as search parameters
//! use it) on a fixed Task with `%previous` / `%current` set, as topic `fhirPathCriteria` are.
//!
//! Only panics, aborts, stack overflows and hangs count: a refusal is a normal outcome.
#![forbid(unsafe_code)]

use herald_fhir::fhirpath::{Context, parse};
use herald_fuzz::{TASK_CURRENT, TASK_PREVIOUS, consume, fixture};

fn main() {
    let current = fixture(TASK_CURRENT);
    let previous = fixture(TASK_PREVIOUS);
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let expr = match parse(text) {
            Ok(e) => e,
            Err(e) => return consume::<(), _>(Err(e)),
        };
        // An update (both versions) and a create (`%previous` empty).
        for prev in [Some(&previous), None] {
            let mut ctx = Context::on(&current);
            // Context keys may carry the `%` or not: use both spellings.
            ctx.variables.insert("previous".into(), prev);
            ctx.variables.insert("%current".into(), Some(&current));
            consume(expr.evaluate_bool(&ctx));
            consume(expr.evaluate(&ctx));
        }
        if let Some(restricted) = expr.for_resource_type("Task") {
            consume(restricted.evaluate(&Context::on(&current)));
        }
    });
}
