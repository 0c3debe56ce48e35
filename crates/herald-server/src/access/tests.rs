//! The COW access rules, case by case.

use super::*;
use crate::auth::Scopes;

fn caller(id: &str, identity: &str, roles: &[Role]) -> Caller {
    Caller {
        client_id: id.into(),
        identity: Some(identity.into()),
        roles: roles.to_vec(),
        scopes: Scopes::all(),
    }
}

fn lab() -> Caller {
    caller("lab-app", "Organization/lab-1", &[Role::Fulfiller])
}

fn placer() -> Caller {
    caller("placer-app", "Organization/placer-1", &[Role::Placer])
}

fn task(owner: &str, requester: &str) -> Value {
    json!({"resourceType": "Task", "status": "requested", "intent": "order",
           "owner": {"reference": owner}, "requester": {"reference": requester},
           "focus": {"reference": "ServiceRequest/sr-1"}, "for": {"reference": "Patient/p-1"}})
}

fn none() -> HashSet<String> {
    HashSet::new()
}

#[test]
fn a_fulfiller_reads_the_tasks_it_owns_and_a_placer_those_it_requested() {
    let t = task("Organization/lab-1", "Organization/placer-1");
    assert!(may_read(&lab(), "Task", "t", &t, &mut none));
    assert!(may_read(&placer(), "Task", "t", &t, &mut none));
    let other = task("Organization/lab-2", "Organization/placer-2");
    assert!(!may_read(&lab(), "Task", "t", &other, &mut none));
    assert!(!may_read(&placer(), "Task", "t", &other, &mut none));
    // absolute references name the same organization
    let abs = task(
        "http://x/fhir/r4/Organization/lab-1",
        "Organization/placer-9",
    );
    assert!(may_read(&lab(), "Task", "t", &abs, &mut none));
}

#[test]
fn what_a_readable_task_references_is_readable_and_nothing_else() {
    let t = task("Organization/lab-1", "Organization/placer-1");
    let mut reach = || reach_of(&lab(), [("Task", &t)].into_iter());
    let sr = json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order"});
    assert!(may_read(&lab(), "ServiceRequest", "sr-1", &sr, &mut reach));
    assert!(may_read(
        &lab(),
        "Patient",
        "p-1",
        &json!({"resourceType": "Patient"}),
        &mut reach
    ));
    assert!(!may_read(
        &lab(),
        "Patient",
        "p-2",
        &json!({"resourceType": "Patient"}),
        &mut reach
    ));
}

#[test]
fn other_resources_belong_to_their_creator_and_the_tag_cannot_be_forged() {
    let mut p = json!({"resourceType": "Patient", "meta": {"tag": [{"system": CREATED_BY, "code": "lab-app"}]}});
    // the client sent a tag claiming lab-app; Herald records the real creator
    stamp_creator(&placer(), None, &mut p);
    assert_eq!(creator(&p), Some("placer-app"));
    assert!(may_read(&placer(), "Patient", "p", &p, &mut none));
    assert!(!may_read(&lab(), "Patient", "p", &p, &mut none));
    // an update keeps the first creator
    let mut next = json!({"resourceType": "Patient"});
    stamp_creator(&lab(), Some(&p), &mut next);
    assert_eq!(creator(&next), Some("placer-app"));
    assert!(check_write(&lab(), "Patient", Some(&p), Some(&next)).is_err());
    assert!(check_write(&placer(), "Patient", Some(&p), Some(&next)).is_ok());
}

#[test]
fn a_fulfiller_updates_only_tasks_it_owns_and_cannot_hand_them_to_someone_else() {
    let mine = task("Organization/lab-1", "Organization/placer-1");
    let theirs = task("Organization/lab-2", "Organization/placer-1");
    assert!(check_write(&lab(), "Task", Some(&mine), Some(&mine)).is_ok());
    assert!(check_write(&lab(), "Task", Some(&theirs), Some(&mine)).is_err());
    assert!(check_write(&lab(), "Task", Some(&mine), Some(&theirs)).is_err());
    // the placer may reassign the owner: it stays the requester
    assert!(check_write(&placer(), "Task", Some(&mine), Some(&theirs)).is_ok());
    // nobody but admins writes topics
    let topic = json!({"resourceType": "SubscriptionTopic", "url": "http://t"});
    assert!(check_write(&placer(), "SubscriptionTopic", None, Some(&topic)).is_err());
    let admin = caller("ops", "Organization/ops", &[Role::Admin]);
    assert!(check_write(&admin, "SubscriptionTopic", None, Some(&topic)).is_ok());
}

#[test]
fn a_subscription_must_be_restricted_to_its_creators_identity() {
    let sub = |param: &str, value: &str| herald_subscriptions::Subscription {
        filters: vec![herald_subscriptions::Filter {
            resource_type: Some("Task".into()),
            parameter: param.into(),
            comparator: None,
            modifier: None,
            value: value.into(),
        }],
        ..herald_subscriptions::r5::parse_subscription(&json!({
            "resourceType": "Subscription", "status": "requested", "topic": "http://t",
            "channelType": {"code": "rest-hook"}, "endpoint": "https://x", "content": "id-only"
        }))
        .expect("subscription")
    };
    assert!(check_subscription_scope(&lab(), &sub("owner", "Organization/lab-1")).is_ok());
    assert!(check_subscription_scope(&lab(), &sub("owner", "Organization/lab-2")).is_err());
    assert!(check_subscription_scope(&lab(), &sub("requester", "Organization/lab-1")).is_err());
    assert!(
        check_subscription_scope(&placer(), &sub("requester", "Organization/placer-1")).is_ok()
    );
    assert!(check_subscription_scope(&placer(), &sub("status", "requested")).is_err());
}

#[test]
fn channel_headers_are_write_only_and_survive_a_read_modify_write() {
    let stored = json!({"resourceType": "Subscription",
        "channel": {"header": ["Authorization: Bearer s3cret", "X-A: 1"]},
        "parameter": [{"name": "Authorization", "value": "Bearer s3cret"}]});
    let mut shown = stored.clone();
    redact(&placer(), "Subscription", &mut shown);
    assert!(!shown.to_string().contains("s3cret"), "{shown}");
    assert_eq!(shown["channel"]["header"][0], "Authorization: [redacted]");
    let mut back = shown.clone();
    back["channel"]["header"][1] = json!("X-A: 2");
    restore_redacted(&stored, &mut back);
    assert_eq!(back["channel"]["header"][0], "Authorization: Bearer s3cret");
    assert_eq!(back["channel"]["header"][1], "X-A: 2");
    assert_eq!(back["parameter"][0]["value"], "Bearer s3cret");
    let mut admin_view = stored.clone();
    redact(
        &caller("ops", "Organization/ops", &[Role::Admin]),
        "Subscription",
        &mut admin_view,
    );
    assert_eq!(admin_view, stored);
}
