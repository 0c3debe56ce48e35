//! Matcher tests: every check runs both the indexed and the linear path and requires the same
//! answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_fhir::FhirVersion;
use herald_subscriptions::builtin::{
    self, COW_CANCELLATION_REQUESTED, COW_SERVICEREQUEST_CHANGED, COW_SERVICEREQUEST_FOR_OWNER,
    COW_TASK_CHANGED, COW_TASK_OUTPUT_ADDED, COW_TASK_STATUS_CHANGED,
};
use herald_subscriptions::{
    Channel, ChannelType, Filter, Interaction, PayloadContent, QueryCriteria, ResourceTrigger,
    Subscription, SubscriptionStatus, TestResult, Topic, TopicStatus,
};
use serde_json::{Value, json};

use crate::{Change, Match, Matcher, NoRelated, RelatedLookup};

const V: FhirVersion = FhirVersion::R4;

fn fixture(name: &str) -> Value {
    let full = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&full).expect(&full)).expect("JSON")
}

fn filter(spec: &str) -> Filter {
    // "param[:modifier]=value"
    let (name, value) = spec.split_once('=').unwrap();
    let (parameter, modifier) = match name.split_once(':') {
        Some((p, m)) => (p, Some(m.to_owned())),
        None => (name, None),
    };
    Filter {
        resource_type: None,
        parameter: parameter.into(),
        comparator: None,
        modifier,
        value: value.into(),
    }
}

fn sub_with(id: &str, topic: &str, filters: &[&str], status: SubscriptionStatus) -> Subscription {
    Subscription {
        id: id.into(),
        identifier: vec![],
        status,
        topic: if topic.starts_with("http") {
            topic.to_owned()
        } else {
            builtin::canonical(topic)
        },
        filters: filters.iter().map(|f| filter(f)).collect(),
        channel: Channel {
            kind: ChannelType::RestHook,
            endpoint: Some("https://example.org/hook".into()),
            headers: vec![],
            heartbeat_period: None,
            timeout: None,
            content_type: "application/fhir+json".into(),
            content: PayloadContent::IdOnly,
            max_count: None,
        },
        end: None,
        reason: None,
    }
}

fn sub(id: &str, topic: &str, filters: &[&str]) -> Subscription {
    sub_with(id, topic, filters, SubscriptionStatus::Active)
}

fn matcher(subs: Vec<Subscription>) -> Matcher {
    let mut m = Matcher::new(V);
    for t in builtin::topics(V) {
        m.upsert_topic(t).unwrap();
    }
    for s in subs {
        m.upsert_subscription(s).unwrap();
    }
    m
}

fn task(id: &str, owner: Option<&str>, status: &str) -> Value {
    let mut t = json!({
        "resourceType": "Task",
        "id": id,
        "meta": { "versionId": "1" },
        "status": status,
        "intent": "order",
        "code": { "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill" }] },
        "focus": { "reference": "ServiceRequest/sr-1" },
        "requester": { "reference": "Organization/placer" }
    });
    if let Some(o) = owner {
        t["owner"] = json!({ "reference": o });
    }
    t
}

fn change<'a>(
    rt: &'a str,
    id: &'a str,
    interaction: Interaction,
    previous: Option<&'a Value>,
    current: Option<&'a Value>,
) -> Change<'a> {
    Change {
        resource_type: rt,
        id,
        interaction,
        previous,
        current,
        at_ms: None,
    }
}

/// Runs both paths, requires agreement, returns the matched subscription ids.
fn run_with(m: &Matcher, c: &Change<'_>, related: &dyn RelatedLookup) -> Vec<Match> {
    let indexed = m.matches(c, related).unwrap();
    let linear = m.matches_linear(c, related).unwrap();
    assert_eq!(indexed, linear, "index and linear disagree");
    indexed
}

fn ids(m: &Matcher, c: &Change<'_>) -> Vec<String> {
    run_with(m, c, &NoRelated)
        .into_iter()
        .map(|m| m.subscription_id)
        .collect()
}

fn created(t: &Value) -> Change<'_> {
    change(
        "Task",
        t["id"].as_str().unwrap(),
        Interaction::Create,
        None,
        Some(t),
    )
}

fn updated<'a>(p: &'a Value, c: &'a Value) -> Change<'a> {
    change(
        "Task",
        c["id"].as_str().unwrap(),
        Interaction::Update,
        Some(p),
        Some(c),
    )
}

fn deleted(p: &Value) -> Change<'_> {
    change(
        "Task",
        p["id"].as_str().unwrap(),
        Interaction::Delete,
        Some(p),
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// Filter timing and statuses
// ---------------------------------------------------------------------------------------------

#[test]
fn created_task_notifies_only_its_owners_subscription() {
    let m = matcher(vec![
        sub("a", COW_TASK_CHANGED, &["owner=Organization/a"]),
        sub("b", COW_TASK_CHANGED, &["owner=Organization/b"]),
        sub("all", COW_TASK_CHANGED, &[]),
    ]);
    let t = task("t1", Some("Organization/a"), "requested");
    assert_eq!(ids(&m, &created(&t)), vec!["a", "all"]);
}

#[test]
fn owner_reassignment_notifies_old_and_new_owner() {
    let m = matcher(vec![
        sub("a", COW_TASK_CHANGED, &["owner=Organization/a"]),
        sub("b", COW_TASK_CHANGED, &["owner=Organization/b"]),
        sub("c", COW_TASK_CHANGED, &["owner=Organization/c"]),
    ]);
    let before = task("t1", Some("Organization/a"), "requested");
    let after = task("t1", Some("Organization/b"), "requested");
    assert_eq!(ids(&m, &updated(&before, &after)), vec!["a", "b"]);
}

#[test]
fn filters_are_all_met_by_one_version_not_split_across_versions() {
    // owner A + status completed: before = (A, requested), after = (B, completed). Neither
    // version satisfies both filters, so nothing matches.
    let m = matcher(vec![sub(
        "x",
        COW_TASK_CHANGED,
        &["owner=Organization/a", "status=completed"],
    )]);
    let before = task("t1", Some("Organization/a"), "requested");
    let after = task("t1", Some("Organization/b"), "completed");
    assert!(ids(&m, &updated(&before, &after)).is_empty());
}

#[test]
fn delete_evaluates_filters_on_the_previous_version() {
    let m = matcher(vec![
        sub("a", COW_TASK_CHANGED, &["owner=Organization/a"]),
        sub("b", COW_TASK_CHANGED, &["owner=Organization/b"]),
    ]);
    let before = task("t1", Some("Organization/a"), "requested");
    assert_eq!(ids(&m, &deleted(&before)), vec!["a"]);
}

#[test]
fn off_and_entered_in_error_subscriptions_get_nothing() {
    use SubscriptionStatus::*;
    let m = matcher(vec![
        sub_with("active", COW_TASK_CHANGED, &[], Active),
        sub_with("requested", COW_TASK_CHANGED, &[], Requested),
        sub_with("error", COW_TASK_CHANGED, &[], Error),
        sub_with("off", COW_TASK_CHANGED, &[], Off),
        sub_with("eie", COW_TASK_CHANGED, &[], EnteredInError),
    ]);
    let t = task("t1", None, "requested");
    assert_eq!(ids(&m, &created(&t)), vec!["active", "error", "requested"]);
}

#[test]
fn turning_a_subscription_off_and_removing_it_stops_matches() {
    let mut m = matcher(vec![sub("a", COW_TASK_CHANGED, &["owner=Organization/a"])]);
    let t = task("t1", Some("Organization/a"), "requested");
    assert_eq!(ids(&m, &created(&t)), vec!["a"]);
    m.upsert_subscription(sub_with(
        "a",
        COW_TASK_CHANGED,
        &["owner=Organization/a"],
        SubscriptionStatus::Off,
    ))
    .unwrap();
    assert!(ids(&m, &created(&t)).is_empty());
    m.upsert_subscription(sub("a", COW_TASK_CHANGED, &["owner=Organization/a"]))
        .unwrap();
    assert_eq!(ids(&m, &created(&t)), vec!["a"]);
    assert!(m.remove_subscription("a").is_some());
    assert!(ids(&m, &created(&t)).is_empty());
    assert_eq!(m.subscription_count(), 0);
}

#[test]
fn subscription_upserted_before_its_topic_matches_once_the_topic_arrives() {
    let mut m = Matcher::new(V);
    m.upsert_subscription(sub("a", COW_TASK_CHANGED, &["owner=Organization/a"]))
        .unwrap();
    let t = task("t1", Some("Organization/a"), "requested");
    assert!(ids(&m, &created(&t)).is_empty());
    for topic in builtin::topics(V) {
        m.upsert_topic(topic).unwrap();
    }
    assert_eq!(ids(&m, &created(&t)), vec!["a"]);
    m.remove_topic(&builtin::canonical(COW_TASK_CHANGED));
    assert!(ids(&m, &created(&t)).is_empty());
}

#[test]
fn filter_that_does_not_compile_is_refused_on_upsert() {
    let mut m = matcher(vec![]);
    let err = m
        .upsert_subscription(sub("bad", COW_TASK_CHANGED, &["no-such-param=1"]))
        .unwrap_err();
    assert!(matches!(err, crate::MatchError::SubscriptionFilter { .. }));
    assert_eq!(m.subscription_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Trigger rules
// ---------------------------------------------------------------------------------------------

#[test]
fn noop_update_differing_only_in_meta_triggers_nothing() {
    let m = matcher(vec![sub("all", COW_TASK_CHANGED, &[])]);
    let before = task("t1", Some("Organization/a"), "requested");
    let mut after = before.clone();
    after["meta"] = json!({ "versionId": "2", "lastUpdated": "2025-01-01T00:00:00Z" });
    assert!(ids(&m, &updated(&before, &after)).is_empty());
    after["status"] = json!("accepted");
    assert_eq!(ids(&m, &updated(&before, &after)), vec!["all"]);
}

#[test]
fn supported_interactions_limit_what_fires() {
    // cow-cancellation-requested fires on create only; cow-task-output-added on update only.
    let m = matcher(vec![
        sub("cancel", COW_CANCELLATION_REQUESTED, &[]),
        sub("output", COW_TASK_OUTPUT_ADDED, &[]),
    ]);
    let cancel = fixture("Task-cow-cancellation-task-example.json");
    assert_eq!(ids(&m, &created(&cancel)), vec!["cancel"]);
    let mut changed = cancel.clone();
    changed["description"] = json!("changed");
    assert!(ids(&m, &updated(&cancel, &changed)).is_empty());
    assert!(ids(&m, &deleted(&cancel)).is_empty());
}

#[test]
fn empty_supported_interaction_means_every_interaction() {
    let mut m = Matcher::new(V);
    m.upsert_topic(custom_topic(vec![], None, None)).unwrap();
    m.upsert_subscription(sub("s", CUSTOM, &[])).unwrap();
    let t = task("t1", None, "requested");
    let mut t2 = t.clone();
    t2["status"] = json!("accepted");
    assert_eq!(ids(&m, &created(&t)), vec!["s"]);
    assert_eq!(ids(&m, &updated(&t, &t2)), vec!["s"]);
    assert_eq!(ids(&m, &deleted(&t)), vec!["s"]);
}

#[test]
fn cancellation_topic_current_query_needs_code_abort_and_status_requested() {
    let m = matcher(vec![sub("cancel", COW_CANCELLATION_REQUESTED, &[])]);
    let coordination = fixture("Task-cow-coordination-task-example.json");
    assert!(ids(&m, &created(&coordination)).is_empty());
    let mut accepted = fixture("Task-cow-cancellation-task-example.json");
    accepted["status"] = json!("accepted");
    assert!(ids(&m, &created(&accepted)).is_empty());
}

const CUSTOM: &str = "http://example.org/SubscriptionTopic/custom";

fn custom_topic(
    interactions: Vec<Interaction>,
    query: Option<QueryCriteria>,
    fhirpath: Option<&str>,
) -> Topic {
    let mut topic = builtin::topics(V)
        .into_iter()
        .find(|t| t.url.ends_with(COW_TASK_CHANGED))
        .unwrap();
    topic.url = CUSTOM.into();
    topic.status = TopicStatus::Active;
    topic.resource_triggers = vec![ResourceTrigger {
        description: None,
        resource: "Task".into(),
        interactions,
        query_criteria: query,
        fhirpath_criteria: fhirpath.map(str::to_owned),
    }];
    topic
}

#[test]
fn query_criteria_combine_result_for_create_delete_and_require_both() {
    use Interaction::*;
    let open = task("t1", None, "in-progress");
    let done = task("t1", None, "completed");
    let mut done_again = done.clone();
    done_again["description"] = json!("edited");
    // (require_both, result_for_create, result_for_delete, change, expected)
    type Row<'a> = (bool, bool, bool, Change<'a>, bool);
    let mut rows: Vec<Row<'_>> = Vec::new();
    for rb in [true, false] {
        for rfc in [true, false] {
            for rfd in [true, false] {
                // create of a completed Task: previous = resultForCreate, current passes.
                rows.push((rb, rfc, rfd, created(&done), if rb { rfc } else { true }));
                // create of an open Task: current fails.
                rows.push((rb, rfc, rfd, created(&open), if rb { false } else { rfc }));
                // delete of an open Task: previous passes, current = resultForDelete.
                rows.push((rb, rfc, rfd, deleted(&open), if rb { rfd } else { true }));
                // delete of a completed Task: previous fails.
                rows.push((rb, rfc, rfd, deleted(&done), if rb { false } else { rfd }));
                // update open → completed: both pass.
                rows.push((rb, rfc, rfd, updated(&open, &done), true));
                // update completed → completed: previous fails, current passes.
                rows.push((rb, rfc, rfd, updated(&done, &done_again), !rb));
                // update completed → open: previous fails, current fails.
                rows.push((rb, rfc, rfd, updated(&done, &open), false));
            }
        }
    }
    let result = |b: bool| {
        if b {
            TestResult::TestPasses
        } else {
            TestResult::TestFails
        }
    };
    for (rb, rfc, rfd, c, expected) in rows {
        let mut m = Matcher::new(V);
        m.upsert_topic(custom_topic(
            vec![Create, Update, Delete],
            Some(QueryCriteria {
                previous: Some("status:not=completed".into()),
                current: Some("status=completed".into()),
                result_for_create: Some(result(rfc)),
                result_for_delete: Some(result(rfd)),
                require_both: rb,
            }),
            None,
        ))
        .unwrap();
        m.upsert_subscription(sub("s", CUSTOM, &[])).unwrap();
        assert_eq!(
            !ids(&m, &c).is_empty(),
            expected,
            "requireBoth={rb} resultForCreate={rfc} resultForDelete={rfd} {:?} {:?}->{:?}",
            c.interaction,
            c.previous.map(|p| &p["status"]),
            c.current.map(|p| &p["status"])
        );
    }
}

#[test]
fn fhirpath_status_change_fires_on_create_and_on_status_or_business_status_change() {
    let m = matcher(vec![sub("s", COW_TASK_STATUS_CHANGED, &[])]);
    let t = task("t1", None, "requested");
    assert_eq!(ids(&m, &created(&t)), vec!["s"]);
    let mut noted = t.clone();
    noted["note"] = json!([{ "text": "hello" }]);
    assert!(ids(&m, &updated(&t, &noted)).is_empty());
    let mut accepted = t.clone();
    accepted["status"] = json!("accepted");
    assert_eq!(ids(&m, &updated(&t, &accepted)), vec!["s"]);
    let mut business = t.clone();
    business["businessStatus"] = json!({ "text": "specimen collected" });
    assert_eq!(ids(&m, &updated(&t, &business)), vec!["s"]);
    let mut business2 = business.clone();
    business2["businessStatus"] = json!({ "text": "result ready" });
    assert_eq!(ids(&m, &updated(&business, &business2)), vec!["s"]);
}

#[test]
fn fhirpath_output_added_fires_only_when_output_grows() {
    let m = matcher(vec![sub("s", COW_TASK_OUTPUT_ADDED, &[])]);
    let t = task("t1", None, "in-progress");
    let mut one = t.clone();
    one["output"] = json!([{ "type": { "text": "result" }, "valueReference": { "reference": "DiagnosticReport/1" } }]);
    assert_eq!(ids(&m, &updated(&t, &one)), vec!["s"]);
    let mut edited = one.clone();
    edited["status"] = json!("completed");
    assert!(ids(&m, &updated(&one, &edited)).is_empty());
}

#[test]
fn fhirpath_sees_empty_previous_on_create_and_empty_current_on_delete() {
    use Interaction::*;
    let mut m = Matcher::new(V);
    m.upsert_topic(custom_topic(
        vec![Create, Update, Delete],
        None,
        Some("%previous.empty() or %current.empty()"),
    ))
    .unwrap();
    m.upsert_subscription(sub("s", CUSTOM, &[])).unwrap();
    let t = task("t1", None, "requested");
    let mut t2 = t.clone();
    t2["status"] = json!("accepted");
    assert_eq!(ids(&m, &created(&t)), vec!["s"]);
    assert_eq!(ids(&m, &deleted(&t)), vec!["s"]);
    assert!(ids(&m, &updated(&t, &t2)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Filter types and modifiers
// ---------------------------------------------------------------------------------------------

#[test]
fn each_filter_type_and_modifier_selects_the_right_tasks() {
    let mut t = task("t1", Some("Organization/a"), "requested");
    t["identifier"] = json!([{ "system": "http://placer.example/ids", "value": "123" }]);
    t["basedOn"] = json!([{ "reference": "ServiceRequest/sr-9" }]);
    t["partOf"] = json!([{ "reference": "Task/parent" }]);
    t["for"] = json!({ "reference": "Patient/p1" });
    t["businessStatus"] =
        json!({ "coding": [{ "system": "http://example.org/bs", "code": "collected" }] });
    let cases: [(&str, bool); 24] = [
        ("owner=Organization/a", true),
        ("owner=Organization/b", false),
        ("owner=Organization/b,Organization/a", true),
        ("owner:missing=false", true),
        ("owner:missing=true", false),
        ("requester=Organization/placer", true),
        ("status=requested", true),
        ("status=completed", false),
        ("status:not=completed", true),
        ("status:not=requested", false),
        (
            "code=http://hl7.org/fhir/CodeSystem/task-code|fulfill",
            true,
        ),
        ("code=fulfill", true),
        ("code=http://hl7.org/fhir/CodeSystem/task-code|abort", false),
        ("focus=ServiceRequest/sr-1", true),
        ("focus=ServiceRequest/sr-2", false),
        ("based-on=ServiceRequest/sr-9", true),
        ("part-of=Task/parent", true),
        ("identifier=http://placer.example/ids|123", true),
        ("identifier=http://placer.example/ids|999", false),
        ("patient=Patient/p1", true),
        ("patient=Patient/p2", false),
        ("intent=order", true),
        ("business-status=http://example.org/bs|collected", true),
        ("business-status:not=http://example.org/bs|collected", false),
    ];
    for (spec, expected) in cases {
        let m = matcher(vec![sub("s", COW_TASK_CHANGED, &[spec])]);
        assert_eq!(!ids(&m, &created(&t)).is_empty(), expected, "{spec}");
    }
}

#[test]
fn filters_are_anded() {
    let m = matcher(vec![
        sub(
            "both",
            COW_TASK_CHANGED,
            &["owner=Organization/a", "status=requested"],
        ),
        sub(
            "mismatch",
            COW_TASK_CHANGED,
            &["owner=Organization/a", "status=completed"],
        ),
    ]);
    let t = task("t1", Some("Organization/a"), "requested");
    assert_eq!(ids(&m, &created(&t)), vec!["both"]);
}

#[test]
fn filter_for_another_resource_type_does_not_apply() {
    let mut s = sub("s", COW_TASK_CHANGED, &["owner=Organization/a"]);
    s.filters.push(Filter {
        resource_type: Some("ServiceRequest".into()),
        parameter: "status".into(),
        comparator: None,
        modifier: None,
        value: "active".into(),
    });
    let m = matcher(vec![s]);
    let t = task("t1", Some("Organization/a"), "requested");
    assert_eq!(ids(&m, &created(&t)), vec!["s"]);
}

// ---------------------------------------------------------------------------------------------
// notificationShape and the task-owner topic
// ---------------------------------------------------------------------------------------------

#[test]
fn task_includes_become_additional_context() {
    let m = matcher(vec![sub("a", COW_TASK_CHANGED, &["owner=Organization/a"])]);
    let mut t = task("t1", Some("Organization/a"), "requested");
    t["basedOn"] = json!([{ "reference": "ServiceRequest/sr-9" }]);
    let matches = run_with(&m, &created(&t), &NoRelated);
    let ctx = &matches[0].additional_context;
    for r in [
        "ServiceRequest/sr-1",
        "ServiceRequest/sr-9",
        "Organization/a",
        "Organization/placer",
    ] {
        assert!(ctx.contains(&r.to_owned()), "{r} missing from {ctx:?}");
    }
    assert!(!ctx.contains(&"Task/t1".to_owned()));
}

struct Tasks(Vec<Value>);

impl RelatedLookup for Tasks {
    fn tasks_for_service_request(&self, service_request: &str) -> Vec<Value> {
        self.0
            .iter()
            .filter(|t| {
                t["focus"]["reference"] == service_request
                    || t["basedOn"]
                        .as_array()
                        .is_some_and(|b| b.iter().any(|r| r["reference"] == service_request))
            })
            .cloned()
            .collect()
    }
}

#[test]
fn servicerequest_change_notifies_owner_of_a_related_task() {
    let task_owner = |id: &str, owner: &str| {
        let mut s = sub(id, COW_SERVICEREQUEST_FOR_OWNER, &[]);
        s.filters.push(Filter {
            resource_type: Some("ServiceRequest".into()),
            parameter: builtin::TASK_OWNER_FILTER.into(),
            comparator: None,
            modifier: None,
            value: owner.into(),
        });
        s
    };
    let m = matcher(vec![
        task_owner("ful-1", "Organization/fulfiller-1"),
        task_owner("ful-2", "Organization/fulfiller-2"),
    ]);
    let sr = fixture("ServiceRequest-cow-service-request-example.json");
    let mut coordination = fixture("Task-cow-coordination-task-example.json");
    coordination["owner"] = json!({ "reference": "Organization/fulfiller-1" });
    let related = Tasks(vec![
        coordination,
        task("other", Some("Organization/fulfiller-2"), "requested"),
    ]);
    let mut sr2 = sr.clone();
    sr2["note"] = json!([{ "text": "supporting info changed" }]);
    let c = change(
        "ServiceRequest",
        "cow-service-request-example",
        Interaction::Update,
        Some(&sr),
        Some(&sr2),
    );
    let matches = run_with(&m, &c, &related);
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].subscription_id, "ful-1");
    assert!(
        matches[0]
            .additional_context
            .contains(&"Task/cow-coordination-task-example".to_owned())
    );
    assert!(run_with(&m, &c, &NoRelated).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Index
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (no external crates needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn index_and_linear_scan_agree_on_random_subscriptions_and_changes() {
    let orgs = [
        "Organization/o0",
        "Organization/o1",
        "Organization/o2",
        "Organization/o3",
    ];
    let statuses = ["requested", "accepted", "in-progress", "completed"];
    let topics = [
        COW_TASK_CHANGED,
        COW_TASK_STATUS_CHANGED,
        COW_TASK_OUTPUT_ADDED,
    ];
    let sub_statuses = [
        SubscriptionStatus::Active,
        SubscriptionStatus::Requested,
        SubscriptionStatus::Error,
        SubscriptionStatus::Off,
    ];
    let mut rng = Lcg(42);
    let mut subs = Vec::new();
    for i in 0..300 {
        let mut filters: Vec<String> = Vec::new();
        for _ in 0..rng.next(3) {
            filters.push(match rng.next(6) {
                0 | 1 => format!("owner={}", orgs[rng.next(orgs.len())]),
                2 => format!("requester={}", orgs[rng.next(orgs.len())]),
                3 => format!("status={}", statuses[rng.next(statuses.len())]),
                4 => format!("status:not={}", statuses[rng.next(statuses.len())]),
                _ => "code=http://hl7.org/fhir/CodeSystem/task-code|fulfill".to_owned(),
            });
        }
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        subs.push(sub_with(
            &format!("s{i:03}"),
            topics[rng.next(topics.len())],
            &refs,
            sub_statuses[rng.next(sub_statuses.len())],
        ));
    }
    let m = matcher(subs);
    let random_task = |rng: &mut Lcg| {
        let mut t = task(
            "t1",
            Some(orgs[rng.next(orgs.len())]),
            statuses[rng.next(statuses.len())],
        );
        t["requester"] = json!({ "reference": orgs[rng.next(orgs.len())] });
        if rng.next(2) == 0 {
            t["output"] = json!([{ "type": { "text": "r" }, "valueString": "x" }]);
        }
        t
    };
    let mut total = 0;
    for _ in 0..300 {
        let a = random_task(&mut rng);
        let b = random_task(&mut rng);
        let c = match rng.next(3) {
            0 => created(&b),
            1 => updated(&a, &b),
            _ => deleted(&a),
        };
        total += run_with(&m, &c, &NoRelated).len();
    }
    assert!(total > 0, "the generator should produce some matches");
}

#[test]
fn matching_cost_is_independent_of_subscription_count() {
    let n = 100_000;
    let mut m = matcher(vec![]);
    let started = std::time::Instant::now();
    for i in 0..n {
        m.upsert_subscription(sub(
            &format!("s{i}"),
            COW_TASK_CHANGED,
            &[&format!("owner=Organization/org-{i}")],
        ))
        .unwrap();
    }
    let built = started.elapsed();
    assert_eq!(m.subscription_count(), n);
    let t = task("t1", Some("Organization/org-77777"), "requested");
    let c = created(&t);
    assert_eq!(m.candidate_count(&c, &NoRelated).unwrap(), 1);
    let matched = m.matches(&c, &NoRelated).unwrap();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0].subscription_id, "s77777");
    let before = task("t1", Some("Organization/org-1"), "requested");
    assert_eq!(
        m.candidate_count(&updated(&before, &t), &NoRelated)
            .unwrap(),
        2
    );
    // Generous bound for unoptimised test builds; release builds are far faster.
    assert!(built.as_secs() < 60, "building took {built:?}");
}

#[test]
fn removing_one_of_several_subscriptions_sharing_a_key_keeps_the_others() {
    let mut m = matcher(vec![
        sub("a1", COW_TASK_CHANGED, &["owner=Organization/a"]),
        sub(
            "a2",
            COW_TASK_CHANGED,
            &["owner=Organization/a", "status=requested"],
        ),
        sub("scan", COW_TASK_CHANGED, &["status:not=completed"]),
    ]);
    let t = task("t1", Some("Organization/a"), "requested");
    assert_eq!(ids(&m, &created(&t)), vec!["a1", "a2", "scan"]);
    m.remove_subscription("a1");
    assert_eq!(ids(&m, &created(&t)), vec!["a2", "scan"]);
    m.remove_subscription("scan");
    assert_eq!(ids(&m, &created(&t)), vec!["a2"]);
    assert_eq!(m.candidate_count(&created(&t), &NoRelated).unwrap(), 1);
}

#[test]
fn matcher_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Matcher>();
}

#[test]
fn a_topic_that_fails_to_evaluate_does_not_silence_the_others() {
    use Interaction::*;
    let mut m = matcher(vec![sub(
        "healthy",
        &builtin::canonical(COW_TASK_CHANGED),
        &[],
    )]);
    // A string function on a collection of two identifiers is an evaluation error, not `false`.
    m.upsert_topic(custom_topic(
        vec![Create, Update],
        None,
        Some("%current.identifier.value.startsWith('x')"),
    ))
    .unwrap();
    m.upsert_subscription(sub("broken", CUSTOM, &[])).unwrap();
    let mut t = task("t1", None, "requested");
    t["identifier"] = json!([{"value": "a"}, {"value": "b"}]);
    let c = created(&t);
    let (matches, errors) = m.matches_isolated(&c, &NoRelated);
    assert_eq!(
        matches
            .iter()
            .map(|x| x.subscription_id.as_str())
            .collect::<Vec<_>>(),
        vec!["healthy"]
    );
    assert_eq!(errors.len(), 1, "the broken topic is reported: {errors:?}");
    assert!(
        m.matches(&c, &NoRelated).is_err(),
        "the strict form still fails"
    );
}

#[test]
fn a_subscription_is_not_notified_of_changes_at_or_after_its_end() {
    let mut ending = sub("ending", COW_TASK_CHANGED, &[]);
    ending.end = Some("2030-01-01T00:00:00Z".to_owned());
    let m = matcher(vec![ending, sub("open", COW_TASK_CHANGED, &[])]);
    let t = task("t1", Some("Organization/a"), "requested");
    let end_ms = herald_fhir::date::parse_range("2030-01-01T00:00:00Z")
        .expect("instant")
        .0
        .start;
    let at = |ms: i64| Change {
        at_ms: Some(ms),
        ..created(&t)
    };
    assert_eq!(ids(&m, &at(end_ms - 1)), vec!["ending", "open"]);
    assert_eq!(ids(&m, &at(end_ms)), vec!["open"]);
    assert_eq!(ids(&m, &at(end_ms + 60_000)), vec!["open"]);
    // Without a commit time the end is not checked (pure evaluation).
    assert_eq!(ids(&m, &created(&t)), vec!["ending", "open"]);
}

// ---------------------------------------------------------------------------------------------
// cow-servicerequest-changed
// ---------------------------------------------------------------------------------------------

fn specific_request(id: &str, based_on_system: &str, status: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "basedOn": [{
            "reference": "https://placer.example.org/fhir/ServiceRequest/sr-1",
            "identifier": {"system": based_on_system, "value": "sr-1"}
        }],
        "requester": {"reference": "Organization/lab-1"},
        "subject": {"reference": "Patient/p1"}
    })
}

#[test]
fn a_fulfillers_request_based_on_a_placers_order_reaches_that_placer_only() {
    let m = matcher(vec![
        sub(
            "placer",
            COW_SERVICEREQUEST_CHANGED,
            &["based-on:identifier=https://placer.example.org/ehr|"],
        ),
        sub(
            "other-placer",
            COW_SERVICEREQUEST_CHANGED,
            &["based-on:identifier=https://other.example.org/ehr|"],
        ),
        sub(
            "by-url",
            COW_SERVICEREQUEST_CHANGED,
            &["based-on=https://placer.example.org/fhir/ServiceRequest/sr-1"],
        ),
        // the Task topics never fire on a ServiceRequest
        sub("tasks", COW_TASK_CHANGED, &[]),
    ]);
    let sr = specific_request("sr-lab-1", "https://placer.example.org/ehr", "active");
    let c = change(
        "ServiceRequest",
        "sr-lab-1",
        Interaction::Create,
        None,
        Some(&sr),
    );
    assert_eq!(ids(&m, &c), vec!["by-url", "placer"]);
    let mut done = sr.clone();
    done["status"] = json!("completed");
    let u = change(
        "ServiceRequest",
        "sr-lab-1",
        Interaction::Update,
        Some(&sr),
        Some(&done),
    );
    assert_eq!(ids(&m, &u), vec!["by-url", "placer"]);
}

#[test]
fn a_replacing_order_reaches_the_subscription_on_what_it_replaces() {
    let m = matcher(vec![sub(
        "replaced",
        COW_SERVICEREQUEST_CHANGED,
        &["replaces=ServiceRequest/sr-3"],
    )]);
    let mut sr = specific_request("sr-4", "https://placer.example.org/ehr", "active");
    sr["replaces"] = json!([{"reference": "ServiceRequest/sr-3"}]);
    let c = change(
        "ServiceRequest",
        "sr-4",
        Interaction::Create,
        None,
        Some(&sr),
    );
    assert_eq!(ids(&m, &c), vec!["replaced"]);
    let other = specific_request("sr-5", "https://placer.example.org/ehr", "active");
    let c = change(
        "ServiceRequest",
        "sr-5",
        Interaction::Create,
        None,
        Some(&other),
    );
    assert!(ids(&m, &c).is_empty());
}
