//! The R5 tenant held to the R4 backport suite (`tests/subscriptions.rs`, `tests/delivery.rs`),
//! scenario for scenario: the scenarios of `herald_tests::suite` on R5. (What only R5 has — topics
//! created and searched, query criteria, type-level `$status` — stays in `subscriptions.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_fhir::FhirVersion;
use herald_tests::suite;

const V: FhirVersion = FhirVersion::R5;

#[tokio::test]
async fn r5_builtin_topics_are_served_and_advertised() {
    suite::builtin_topics_are_served_and_advertised(V).await;
}

#[tokio::test]
async fn r5_subscription_is_stored_requested_with_identifier_and_filters() {
    suite::subscription_is_stored_requested_with_identifier_and_filters(V).await;
}

#[tokio::test]
async fn r5_invalid_subscriptions_are_refused_and_nothing_is_stored() {
    suite::invalid_subscriptions_are_refused_and_nothing_is_stored(V).await;
}

#[tokio::test]
async fn r5_matching_writes_become_numbered_versioned_events() {
    suite::matching_writes_become_numbered_versioned_events(V).await;
}

#[tokio::test]
async fn r5_events_carry_the_triggering_version_at_full_resource() {
    suite::events_carry_the_triggering_version_at_full_resource(V).await;
}

#[tokio::test]
async fn r5_owner_reassignment_notifies_old_and_new_owner() {
    suite::owner_reassignment_notifies_old_and_new_owner(V).await;
}

#[tokio::test]
async fn r5_status_topic_ignores_changes_that_keep_the_status() {
    suite::status_topic_ignores_changes_that_keep_the_status(V).await;
}

#[tokio::test]
async fn r5_subscriptions_created_later_off_or_deleted_get_nothing() {
    suite::subscriptions_created_later_off_or_deleted_get_nothing(V).await;
}

#[tokio::test]
async fn r5_event_numbers_continue_across_a_crash_restart() {
    suite::event_numbers_continue_across_a_crash_restart(V).await;
}

#[tokio::test]
async fn r5_servicerequest_topic_notifies_the_owner_of_its_task() {
    suite::servicerequest_topic_notifies_the_owner_of_its_task(V).await;
}

#[tokio::test]
async fn r5_handshake_then_active_then_every_payload_level_has_its_shape() {
    suite::handshake_then_active_then_every_payload_level_has_its_shape(V).await;
}

#[tokio::test]
async fn r5_heartbeats_arrive_while_idle_only_when_a_period_is_set() {
    suite::heartbeats_arrive_while_idle_only_when_a_period_is_set(V).await;
}

#[tokio::test]
async fn r5_a_backlog_is_delivered_in_order_in_batches_of_at_most_max_count() {
    suite::a_backlog_is_delivered_in_order_in_batches_of_at_most_max_count(V).await;
}

#[tokio::test]
async fn r5_an_outage_sets_error_keeps_counting_and_recovery_makes_it_active() {
    suite::an_outage_sets_error_keeps_counting_and_recovery_makes_it_active(V).await;
}
