//! Fuzz target `search`: bytes → UTF-8 query string (`a=1&b:not=x`, URL-encoded or not) →
//! `herald_fhir::search::parse_query` for Task and ServiceRequest, R4 and R5; every criterion
//! that parses is matched (`search::matches`) against fixture resources. Each `name=value` pair
//! also goes through `parse_filter` (the R5 `filterBy` / backport filter path, with the value's
//! first two letters tried as a comparator), and each value through `reference::parse` and
//! `date::parse_range`. The result-control pairs go through `search::result::parse_result_params`,
//! and what parses is applied to the fixtures: sort values, include targets, `_summary` and
//! `_elements` subsets (`herald_fhir::summary::apply`).
//!
//! One property is checked besides crash-freedom, because `index_keys` documents it and the
//! matcher's equality index relies on it: an indexable criterion matches a resource exactly when
//! its `index_keys_of_criterion` share a key with the resource's `index_keys`. A violation
//! panics (a subscription would miss or wrongly receive notifications).
#![forbid(unsafe_code)]

use std::hint::black_box;

use herald_fhir::search::result::{include_targets, parse_result_params, sort_value};
use herald_fhir::search::{
    Criterion, index_keys, index_keys_of_criterion, matches, parse_filter, parse_query,
};
use herald_fhir::summary::{self, Subset};
use herald_fhir::{FhirVersion, date, reference};
use herald_fuzz::{
    SERVICE_REQUEST, TASK_CURRENT, TASK_PREVIOUS, VERSIONS, consume, fixture, warm_up,
};
use serde_json::Value;

/// The resource types the built-in topics are about.
const RESOURCE_TYPES: [&str; 2] = ["Task", "ServiceRequest"];

fn main() {
    warm_up();
    let resources = [
        fixture(TASK_CURRENT),
        fixture(TASK_PREVIOUS),
        fixture(SERVICE_REQUEST),
    ];
    afl::fuzz!(|data: &[u8]| {
        let Ok(query) = std::str::from_utf8(data) else {
            return;
        };
        for version in VERSIONS {
            for rt in RESOURCE_TYPES {
                match parse_query(version, rt, query) {
                    Ok((criteria, control)) => {
                        result_parameters(version, rt, &control, &resources);
                        for c in &criteria {
                            for r in &resources {
                                check_criterion(c, r);
                            }
                        }
                    }
                    Err(e) => consume::<(), _>(Err(e)),
                }
                for pair in query.trim_start_matches('?').split('&') {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let (param, modifier) = match name.split_once(':') {
                        Some((p, m)) => (p, Some(m)),
                        None => (name, None),
                    };
                    let mut forms = vec![(None, value)];
                    if let (Some(cmp), Some(rest)) = (value.get(..2), value.get(2..))
                        && cmp.bytes().all(|b| b.is_ascii_lowercase())
                    {
                        forms.push((Some(cmp), rest));
                    }
                    for (cmp, v) in forms {
                        if let Ok(c) = parse_filter(version, rt, param, cmp, modifier, v) {
                            for r in &resources {
                                check_criterion(&c, r);
                            }
                        }
                    }
                    black_box(reference::parse(value));
                    black_box(date::parse_range(value));
                }
            }
        }
    });
}

/// Parses the result parameters and applies what parses to the fixtures.
fn result_parameters(
    version: FhirVersion,
    rt: &str,
    control: &[(String, String)],
    resources: &[Value],
) {
    let pairs = control.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let rp = match parse_result_params(version, rt, pairs) {
        Ok(rp) => rp,
        Err(e) => return consume::<(), _>(Err(e)),
    };
    for r in resources {
        for k in &rp.sort {
            black_box(sort_value(k, r));
        }
        for inc in rp.include.iter().chain(&rp.revinclude) {
            black_box(include_targets(inc, r));
        }
        if let Some(names) = &rp.elements {
            black_box(summary::apply(version, r, Subset::Elements(names)));
        }
        if let Some(mode) = rp.summary {
            black_box(summary::apply(version, r, Subset::Summary(mode)));
        }
    }
}

/// Matches `c` against `resource` and checks the index-key property documented on
/// `search::index_keys`.
fn check_criterion(c: &Criterion, resource: &Value) {
    let matched = match matches(c, resource) {
        Ok(m) => m,
        Err(e) => return consume::<(), _>(Err(e)),
    };
    let Some(wanted) = index_keys_of_criterion(c) else {
        return;
    };
    let same_type = resource.get("resourceType").and_then(Value::as_str) == Some(&c.resource_type);
    if !same_type {
        return;
    }
    let have = index_keys(&c.param, resource);
    let shared = wanted.iter().any(|k| have.contains(k));
    assert_eq!(
        matched, shared,
        "index keys disagree with matches(): param {} modifier {:?} values {:?}; criterion keys {wanted:?}; resource keys {have:?}",
        c.param.code, c.modifier, c.values
    );
}
