use super::*;
use serde_json::json;

fn parse(query: &[(&str, &str)]) -> Result<ResultParams, FhirError> {
    parse_result_params(FhirVersion::R4, "Task", query.iter().copied())
}

#[test]
fn include_parses_source_parameter_and_target_and_follows_relative_references() {
    let rp = parse(&[
        ("_include", "Task:focus:ServiceRequest"),
        ("_include", "Task:*"),
    ])
    .unwrap_or_default();
    assert!(rp.ignored.is_empty(), "{:?}", rp.ignored);
    assert_eq!(rp.include.len(), 2);
    let task = json!({"resourceType": "Task", "focus": {"reference": "ServiceRequest/sr1"},
        "owner": {"reference": "Organization/lab"}, "basedOn": [{"reference": "ServiceRequest/sr1"},
        {"reference": "http://elsewhere.example.org/fhir/ServiceRequest/x"}, {"reference": "#contained"}]});
    assert_eq!(
        include_targets(&rp.include[0], &task),
        [("ServiceRequest".to_owned(), "sr1".to_owned())]
    );
    let all = include_targets(&rp.include[1], &task);
    assert!(
        all.contains(&("Organization".to_owned(), "lab".to_owned())),
        "{all:?}"
    );
    assert_eq!(
        all.iter().filter(|(t, _)| t == "ServiceRequest").count(),
        1,
        "each target once; absolute and contained references are not followed: {all:?}"
    );
    let targets: HashSet<String> = ["ServiceRequest/sr1".to_owned()].into();
    assert!(refers_to_any(&rp.include[0], &task, &targets));
}

#[test]
fn what_is_not_supported_is_ignored_with_a_reason_and_malformed_values_are_errors() {
    let rp = parse(&[
        ("_include:iterate", "Task:part-of"),
        ("_include", "Task:status"),
        ("_revinclude", "Task:focus:Patient"),
        ("_sort", "status,nonsense"),
        ("_contained", "true"),
    ])
    .unwrap_or_default();
    let said: Vec<&str> = rp.ignored.iter().map(|i| i.parameter.as_str()).collect();
    assert_eq!(
        said,
        [
            "_include:iterate=Task:part-of",
            "_include=Task:status",
            "_revinclude=Task:focus:Patient",
            "_sort=nonsense",
            "_contained=true"
        ]
    );
    assert_eq!(rp.sort.len(), 1, "the known key is kept");
    assert_eq!(rp.echo, [("_sort".to_owned(), "status".to_owned())]);
    for bad in [
        ("_summary", "maybe"),
        ("_total", "lots"),
        ("_include", "Task"),
        ("_sort", "status,,_id"),
        ("_elements", ","),
        ("_pretty", "yes"),
    ] {
        assert!(parse(&[bad]).is_err(), "{bad:?}");
    }
    assert!(parse(&[("_summary", "true"), ("_elements", "status")]).is_err());
}

#[test]
fn summary_count_drops_includes_and_modes_parse() {
    let rp = parse(&[("_summary", "count"), ("_include", "Task:focus")]).unwrap_or_default();
    assert_eq!(rp.summary, Some(SummaryMode::Count));
    assert!(rp.include.is_empty());
    let rp = parse(&[("_total", "none"), ("_elements", "status, owner")]).unwrap_or_default();
    assert_eq!(rp.total, Some(TotalMode::None));
    assert_eq!(
        rp.elements,
        Some(vec!["status".to_owned(), "owner".to_owned()])
    );
    assert!(rp.subsets());
    let rp = parse(&[(
        "_elements",
        "status,Task.restriction.period,restriction.period",
    )])
    .unwrap_or_default();
    assert_eq!(rp.elements, Some(vec!["status".to_owned()]));
    assert_eq!(rp.ignored.len(), 2, "{:?}", rp.ignored);
}

fn key(code: &str, descending: bool) -> SortKey {
    let rp = parse(&[(
        "_sort",
        &format!("{}{code}", if descending { "-" } else { "" }),
    )])
    .unwrap_or_default();
    assert!(rp.ignored.is_empty(), "{code}: {:?}", rp.ignored);
    rp.sort
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{code}"))
}

#[test]
fn sort_values_take_the_lowest_ascending_and_the_highest_descending() {
    let t = json!({"resourceType": "Task", "id": "b", "status": "requested",
        "authoredOn": "2026-02-01", "executionPeriod": {"start": "2026-01-01", "end": "2026-03-01"},
        "meta": {"lastUpdated": "2026-05-05T10:00:00Z"}});
    assert_eq!(
        sort_value(&key("status", false), &t),
        Some(SortValue::Text("requested".into()))
    );
    assert_eq!(
        sort_value(&key("_id", true), &t),
        Some(SortValue::Text("b".into()))
    );
    let asc = sort_value(&key("period", false), &t);
    let desc = sort_value(&key("period", true), &t);
    assert!(matches!((&asc, &desc), (Some(SortValue::Date(a)), Some(SortValue::Date(d))) if a < d));
    assert!(sort_value(&key("_lastUpdated", false), &t).is_some());
    assert_eq!(sort_value(&key("owner", false), &t), None);
}

#[test]
fn missing_values_sort_last_in_both_directions() {
    for descending in [false, true] {
        let keys = [key("status", descending)];
        let some = [Some(SortValue::Text("a".into()))];
        let none = [None];
        assert_eq!(compare_sort_values(&keys, &some, &none), Ordering::Less);
        assert_eq!(compare_sort_values(&keys, &none, &some), Ordering::Greater);
    }
    let keys = [key("status", true), key("_id", false)];
    let a = [
        Some(SortValue::Text("x".into())),
        Some(SortValue::Text("2".into())),
    ];
    let b = [
        Some(SortValue::Text("x".into())),
        Some(SortValue::Text("1".into())),
    ];
    assert_eq!(
        compare_sort_values(&keys, &a, &b),
        Ordering::Greater,
        "ties go to the next key"
    );
}
