//! Unit tests of the FHIRPath subset.

use super::*;
use serde_json::json;

fn task() -> Value {
    json!({
        "resourceType": "Task", "id": "t1", "status": "in-progress", "businessStatus": {"text": "waiting"},
        "intent": "order",
        "for": {"reference": "Patient/p1"},
        "owner": {"reference": "http://x/fhir/Organization/o1"},
        "requester": {"type": "Practitioner", "identifier": {"system": "s", "value": "v"}},
        "input": [{"type": {"text": "a"}, "valueString": "hello"}, {"type": {"text": "b"}, "valueInteger": 3}],
        "output": [{"type": {"text": "o"}, "valueReference": {"reference": "DiagnosticReport/d1"}}],
        "extension": [{"url": "http://e/1", "valueCode": "x"}],
        "note": [{"text": "Ab  C"}],
        "authoredOn": "2024-03-01T10:00:00Z"
    })
}

fn eval_on(expr: &str, res: &Value) -> Vec<Value> {
    match parse(expr).and_then(|e| e.evaluate(&Context::on(res))) {
        Ok(v) => v,
        Err(e) => panic!("{expr}: {e}"),
    }
}

fn one(expr: &str) -> Value {
    let r = eval_on(expr, &task());
    assert_eq!(r.len(), 1, "{expr} gave {r:?}");
    r[0].clone()
}

fn with_prev_cur(expr: &str, prev: Option<&Value>, cur: &Value) -> Vec<Value> {
    let mut ctx = Context::on(cur);
    ctx.variables.insert("previous".into(), prev);
    ctx.variables.insert("current".into(), Some(cur));
    match parse(expr).and_then(|e| e.evaluate(&ctx)) {
        Ok(v) => v,
        Err(e) => panic!("{expr}: {e}"),
    }
}

#[test]
fn type_prefixed_root_selects_matching_resource_only() {
    assert_eq!(eval_on("Task.status", &task()), vec![json!("in-progress")]);
    assert!(eval_on("Patient.status", &task()).is_empty());
    assert_eq!(eval_on("Resource.id", &task()), vec![json!("t1")]);
    assert_eq!(eval_on("status", &task()), vec![json!("in-progress")]);
}

#[test]
fn paths_flatten_arrays() {
    assert_eq!(
        eval_on("Task.input.type.text", &task()),
        vec![json!("a"), json!("b")]
    );
}

#[test]
fn choice_types_resolve_and_filter_by_type() {
    assert_eq!(
        eval_on("Task.input.value", &task()),
        vec![json!("hello"), json!(3)]
    );
    assert_eq!(
        eval_on("Task.input.value.ofType(string)", &task()),
        vec![json!("hello")]
    );
    assert_eq!(
        eval_on("Task.input.value.ofType(integer)", &task()),
        vec![json!(3)]
    );
    assert_eq!(
        eval_on("Task.output.value.ofType(Reference)", &task()),
        vec![json!({"reference": "DiagnosticReport/d1"})]
    );
    assert_eq!(
        eval_on("(Task.input.value as string)", &task()),
        vec![json!("hello")]
    );
    assert_eq!(
        eval_on("Task.input[1].value is integer", &task()),
        vec![json!(true)]
    );
    assert_eq!(
        eval_on("Task.input[0].value.is(integer)", &task()),
        vec![json!(false)]
    );
}

#[test]
fn resolve_is_checks_referenced_type() {
    assert_eq!(
        eval_on("Task.for.where(resolve() is Patient)", &task()).len(),
        1
    );
    assert!(eval_on("Task.for.where(resolve() is Group)", &task()).is_empty());
    assert_eq!(
        eval_on("Task.owner.where(resolve() is Organization)", &task()).len(),
        1
    );
    // Reference.type is used when there is no reference string.
    assert_eq!(
        eval_on("Task.requester.where(resolve() is Practitioner)", &task()).len(),
        1
    );
}

#[test]
fn resolve_of_contained_reference_uses_contained_type() {
    let r = json!({"resourceType":"Task","contained":[{"resourceType":"Patient","id":"p"}],"for":{"reference":"#p"}});
    assert_eq!(eval_on("Task.for.where(resolve() is Patient)", &r).len(), 1);
}

#[test]
fn existence_functions() {
    assert_eq!(one("Task.input.exists()"), json!(true));
    assert_eq!(one("Task.partOf.exists()"), json!(false));
    assert_eq!(one("Task.input.exists(value = 3)"), json!(true));
    assert_eq!(one("Task.input.exists(value = 4)"), json!(false));
    assert_eq!(one("Task.partOf.empty()"), json!(true));
    assert_eq!(one("Task.input.count()"), json!(2));
    assert_eq!(one("Task.input.first().value"), json!("hello"));
    assert_eq!(one("Task.input.last().value"), json!(3));
    assert_eq!(one("Task.status.hasValue()"), json!(true));
    assert_eq!(one("Task.input.hasValue()"), json!(false));
    assert_eq!(
        one("(Task.status | Task.status | Task.intent).count()"),
        json!(2)
    );
    assert_eq!(
        one("Task.status.union(Task.intent).distinct().count()"),
        json!(2)
    );
    assert_eq!(one("Task.input.all(value.exists())"), json!(true));
    assert_eq!(one("Task.input.select(type.text).count()"), json!(2));
}

#[test]
fn string_functions() {
    assert_eq!(one("Task.status.startsWith('in-')"), json!(true));
    assert_eq!(one("Task.status.contains('prog')"), json!(true));
    assert_eq!(one("Task.status.endsWith('x')"), json!(false));
    assert_eq!(one("Task.status.upper()"), json!("IN-PROGRESS"));
    assert_eq!(one("Task.status.length()"), json!(11));
    assert!(eval_on("Task.partOf.startsWith('a')", &task()).is_empty());
}

#[test]
fn equality_and_empty_propagation() {
    assert_eq!(one("Task.status = 'in-progress'"), json!(true));
    assert_eq!(one("Task.status != 'in-progress'"), json!(false));
    assert!(eval_on("Task.partOf = 'x'", &task()).is_empty());
    assert!(eval_on("{} = {}", &task()).is_empty());
    assert_eq!(one("Task.note.text ~ 'ab c'"), json!(true));
    assert_eq!(one("Task.note.text !~ 'ab c'"), json!(false));
    assert_eq!(one("{} ~ {}"), json!(true));
    assert_eq!(one("1.0 = 1"), json!(true));
    assert_eq!(one("Task.input.count() = 2"), json!(true));
}

#[test]
fn ordering_comparisons_on_numbers_strings_and_dates() {
    assert_eq!(one("Task.input.count() > 1"), json!(true));
    assert_eq!(one("Task.input.count() <= 1"), json!(false));
    assert_eq!(one("'abc' < 'abd'"), json!(true));
    assert_eq!(one("Task.authoredOn >= @2024-01-01T00:00:00Z"), json!(true));
    assert_eq!(
        one("Task.authoredOn < '2024-03-01T11:00:00+00:00'"),
        json!(true)
    );
    assert!(eval_on("Task.partOf.count() > {}", &task()).is_empty());
}

#[test]
fn boolean_logic_is_three_valued() {
    assert!(eval_on("true and {}", &task()).is_empty());
    assert_eq!(one("false and {}"), json!(false));
    assert_eq!(one("true or {}"), json!(true));
    assert!(eval_on("false or {}", &task()).is_empty());
    assert_eq!(one("true xor false"), json!(true));
    assert_eq!(one("false implies {}"), json!(true));
    assert_eq!(one("true implies false"), json!(false));
    assert_eq!(one("(Task.status = 'x').not()"), json!(true));
    assert!(eval_on("{}.not()", &task()).is_empty());
}

#[test]
fn membership_and_iif() {
    assert_eq!(one("Task.status in ('draft' | 'in-progress')"), json!(true));
    assert_eq!(
        one("('draft' | 'ready') contains Task.status"),
        json!(false)
    );
    assert_eq!(
        one("iif(Task.status = 'in-progress', 'yes', 'no')"),
        json!("yes")
    );
    assert_eq!(one("iif(Task.partOf.exists(), 'yes', 'no')"), json!("no"));
}

#[test]
fn extension_by_url() {
    assert_eq!(one("Task.extension('http://e/1').value"), json!("x"));
    assert!(eval_on("Task.extension('http://e/2')", &task()).is_empty());
}

#[test]
fn this_and_resource_variables() {
    assert_eq!(
        one("Task.input.where($this.value = 3).type.text"),
        json!("b")
    );
    assert_eq!(one("%resource.id"), json!("t1"));
    assert_eq!(
        one("Task.input.where(%resource.id = 't1').count()"),
        json!(2)
    );
}

#[test]
fn status_change_criterion_with_and_without_previous() {
    let expr = "%previous.empty() or %previous.status != %current.status or %previous.businessStatus != %current.businessStatus";
    let cur = task();
    assert!(is_truthy(&with_prev_cur(expr, None, &cur)));
    assert!(!is_truthy(&with_prev_cur(expr, Some(&cur), &cur)));
    let mut prev = cur.clone();
    prev["status"] = json!("ready");
    assert!(is_truthy(&with_prev_cur(expr, Some(&prev), &cur)));
    let mut prev = cur.clone();
    prev["businessStatus"] = json!({"text": "other"});
    assert!(is_truthy(&with_prev_cur(expr, Some(&prev), &cur)));
}

#[test]
fn output_count_criterion_with_empty_previous() {
    let expr = "%current.output.count() > %previous.output.count()";
    let cur = task();
    // %previous empty: count() of empty is 0, so 1 > 0.
    assert!(is_truthy(&with_prev_cur(expr, None, &cur)));
    assert!(!is_truthy(&with_prev_cur(expr, Some(&cur), &cur)));
}

#[test]
fn undefined_variable_is_an_error() {
    let r = parse("%nope.id").and_then(|e| e.evaluate(&Context::on(&task())));
    assert!(matches!(r, Err(FhirError::FhirPath(_))));
}

#[test]
fn unsupported_constructs_are_refused_at_parse_time() {
    for (expr, what) in [
        ("Task.input.aggregate($this)", "function aggregate"),
        ("Task.for.memberOf('x')", "function memberOf"),
        ("Task.input.count() + 1", "operator +"),
        ("Task.status & 'x'", "operator &"),
        ("Task.input.count() div 2", "operator div"),
        ("today()", "function today"),
        ("Task.input.repeat(item)", "function repeat"),
        ("$index", "$index"),
    ] {
        match parse(expr) {
            Err(FhirError::FhirPathUnsupported(m)) => assert_eq!(m, what, "{expr}"),
            other => panic!("{expr}: {other:?}"),
        }
    }
}

#[test]
fn syntax_errors_are_reported() {
    for expr in [
        "Task.",
        "Task.status = ",
        "(Task.status",
        "'unterminated",
        "Task.where(",
        "#",
        "where()",
    ] {
        assert!(matches!(parse(expr), Err(FhirError::FhirPath(_))), "{expr}");
    }
}

#[test]
fn is_truthy_follows_criteria_semantics() {
    assert!(!is_truthy(&[]));
    assert!(is_truthy(&[json!(true)]));
    assert!(!is_truthy(&[json!(false)]));
    assert!(is_truthy(&[json!("x")]));
    assert!(is_truthy(&[json!({"a": 1})]));
}

#[test]
fn for_resource_type_keeps_only_applicable_branches() {
    let e = parse("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | Task.for.where(resolve() is Patient)")
        .ok();
    let t = e.as_ref().and_then(|e| e.for_resource_type("Task"));
    assert!(t.is_some());
    assert!(
        e.as_ref()
            .and_then(|e| e.for_resource_type("Observation"))
            .is_none()
    );
    let r = t.map(|t| t.evaluate(&Context::on(&task())));
    assert_eq!(r, Some(Ok(vec![json!({"reference": "Patient/p1"})])));
}

#[test]
fn every_bundle_expression_parses_and_evaluates_on_task_service_request_patient() {
    let sr: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/ServiceRequest-cow-service-request-example.json"
    ))
    .unwrap_or_default();
    let patient = json!({"resourceType":"Patient","id":"p","active":true,"deceasedDateTime":"2020-01-01",
        "name":[{"family":"Doe","given":["John"]}],"telecom":[{"system":"email","value":"a@b"}],
        "address":[{"city":"Paris"}],"gender":"male","birthDate":"1970"});
    for bundle in [
        include_str!("../../data/r4/search-parameters-workflow.json"),
        include_str!("../../data/r5/search-parameters-workflow.json"),
    ] {
        let b: Value = serde_json::from_str(bundle).unwrap_or_default();
        let entries = b["entry"].as_array().cloned().unwrap_or_default();
        assert!(!entries.is_empty());
        for e in entries {
            let Some(x) = e["resource"]["expression"].as_str() else {
                continue;
            };
            let parsed = parse(x).unwrap_or_else(|err| panic!("{x}: {err}"));
            for res in [&task(), &sr, &patient] {
                let rt = res["resourceType"].as_str().unwrap_or_default();
                if let Some(sub) = parsed.for_resource_type(rt) {
                    sub.evaluate(&Context::on(res))
                        .unwrap_or_else(|err| panic!("{x} on {rt}: {err}"));
                }
                parsed
                    .evaluate(&Context::on(res))
                    .unwrap_or_else(|err| panic!("{x} on {rt}: {err}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Limits: client-written criteria cannot exhaust the stack or the CPU
// ---------------------------------------------------------------------------------------------

fn limit_error(result: Result<Expression, FhirError>) -> String {
    match result {
        Err(FhirError::FhirPathLimit(m)) => m,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn thousands_of_nested_parentheses_are_refused_without_exhausting_the_stack() {
    // 4 000 levels stay under the length limit, so it is the nesting limit that refuses them.
    let text = format!("{}true{}", "(".repeat(4000), ")".repeat(4000));
    let m = limit_error(parse(&text));
    assert!(m.contains("levels"), "{m}");
    // The probe's 5 000 levels: refused too (by the length limit first).
    limit_error(parse(&format!(
        "{}true{}",
        "(".repeat(5000),
        ")".repeat(5000)
    )));
}

#[test]
fn a_long_chain_of_invocations_is_refused_at_parse_time() {
    let text = format!("%current.status.exists(){}", ".not()".repeat(1300));
    let m = limit_error(parse(&text));
    assert!(m.contains("levels"), "{m}");
}

#[test]
fn an_expression_longer_than_the_limit_is_refused_naming_it() {
    let text = format!("%current.status.exists(){}", ".not()".repeat(20_000));
    let m = limit_error(parse(&text));
    assert!(m.contains(&MAX_EXPRESSION_BYTES.to_string()), "{m}");
}

#[test]
fn nesting_up_to_the_limit_is_accepted_and_one_more_level_is_refused() {
    // `true` is one level; each pair of parentheses adds none, each `.not()` adds one.
    let at = format!("true{}", ".not()".repeat(MAX_DEPTH - 1));
    let e = parse(&at).expect("at the limit");
    assert_eq!(
        e.evaluate(&Context::on(&task())).expect("evaluates"),
        vec![json!(MAX_DEPTH % 2 == 1)]
    );
    let beyond = format!("true{}", ".not()".repeat(MAX_DEPTH));
    limit_error(parse(&beyond));
    let parens = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    limit_error(parse(&parens));
    let ops = format!("true{}", " and true".repeat(MAX_DEPTH));
    limit_error(parse(&ops));
    let args = format!(
        "{}true{}",
        "iif(true, ".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    limit_error(parse(&args));
}

#[test]
fn an_evaluation_over_its_step_budget_fails_instead_of_running_on() {
    let items: Vec<Value> = (0..400).map(|i| json!({"text": format!("n{i}")})).collect();
    let task = json!({"resourceType": "Task", "note": items});
    // 400 × 400 × 400 item visits: far beyond the budget.
    let e = parse(
        "note.where(%resource.note.where(%resource.note.where(text = 'x').exists()).exists())",
    )
    .expect("parses");
    match e.evaluate(&Context::on(&task)) {
        Err(FhirError::FhirPathLimit(m)) => assert!(m.contains("steps"), "{m}"),
        other => panic!("expected the step budget to run out, got {other:?}"),
    }
    // The same shape over a small collection is well within it.
    let small = json!({"resourceType": "Task", "note": [{"text": "x"}, {"text": "y"}]});
    assert_eq!(
        e.evaluate(&Context::on(&small)).expect("evaluates").len(),
        2
    );
}

#[test]
fn long_unions_are_wide_not_deep() {
    let text = vec!["Task.status"; 200].join(" | ");
    let e = parse(&text).expect("a 200-branch union parses");
    assert_eq!(
        e.evaluate(&Context::on(&task())).expect("evaluates"),
        vec![json!("in-progress")]
    );
}

#[test]
fn distinct_over_a_large_collection_is_charged_quadratically() {
    let items: Vec<Value> = (0..2000)
        .map(|i| json!({"text": format!("n{i}")}))
        .collect();
    let task = json!({"resourceType": "Task", "note": items});
    let e = parse("note.text.distinct().count()").expect("parses");
    assert!(matches!(
        e.evaluate(&Context::on(&task)),
        Err(FhirError::FhirPathLimit(_))
    ));
}

#[test]
fn the_fuzzers_stack_overflow_input_is_refused_by_the_depth_limit() {
    // Found by `scripts/fuzz fhirpath` before the limits existed: 1 470 nested levels overflowed
    // a 2 MiB stack (a tokio worker's, like this test thread's).
    let text = include_str!("../../../../fuzz/regressions/fhirpath/deep-parens-stack-overflow.txt");
    let m = limit_error(parse(text));
    assert!(m.contains("levels"), "{m}");
}
