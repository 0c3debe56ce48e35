//! The delivery policy table, rule by rule, with an explicit clock.

use super::*;
use crate::config::DeliveryConfig;

const NOW: u64 = 1_700_000_000_000;

fn policy() -> RetryPolicy {
    RetryPolicy::new(&DeliveryConfig::default())
}

fn view(state: &DeliveryState) -> View<'_> {
    View {
        status: SubscriptionStatus::Active,
        end_ms: None,
        max_count: 100,
        heartbeat_secs: None,
        state,
        durable: 0,
        verifies: true,
        ready: true,
        resend: None,
    }
}

fn verified() -> DeliveryState {
    DeliveryState {
        verified: true,
        ..DeliveryState::default()
    }
}

fn failed(failure: Failure) -> Outcome {
    Outcome::Failed {
        failure,
        reason: "connect: connection refused".into(),
        retry_after: None,
    }
}

fn apply(state: &DeliveryState, status: SubscriptionStatus, job: Job, o: &Outcome) -> Transition {
    let p = policy();
    let rules = Rules {
        policy: &p,
        error_after_failures: 5,
    };
    // jitter 0.5 = no jitter: delays are the schedule's own
    after_attempt(state, status, job, o, NOW, &rules, 0.5)
}

#[test]
fn an_unverified_endpoint_gets_a_handshake_before_any_event() {
    let s = DeliveryState::default();
    let v = View {
        status: SubscriptionStatus::Requested,
        durable: 7,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Handshake));
}

#[test]
fn an_accepted_handshake_verifies_the_endpoint_and_asks_for_active() {
    let t = apply(
        &DeliveryState::default(),
        SubscriptionStatus::Requested,
        Job::Handshake,
        &Outcome::Delivered,
    );
    assert!(t.state.verified);
    assert_eq!(t.ask, Some((SubscriptionStatus::Active, None)));
    assert!(!t.cursor_moved);
    assert_eq!(t.state.last_sent_at_ms, Some(NOW));
}

#[test]
fn a_refused_handshake_asks_for_error_with_the_reason_and_retries_on_schedule() {
    let t = apply(
        &DeliveryState::default(),
        SubscriptionStatus::Requested,
        Job::Handshake,
        &failed(Failure::Transport),
    );
    assert!(!t.state.verified);
    let (status, why) = t.ask.expect("asks");
    assert_eq!(status, SubscriptionStatus::Error);
    assert_eq!(
        why.as_deref(),
        Some("handshake failed: connect: connection refused")
    );
    assert_eq!(t.state.next_attempt_at_ms, Some(NOW + 5_000));
    assert_eq!(t.state.failing_since_ms, Some(NOW));
}

#[test]
fn events_go_in_order_in_batches_of_max_count_and_never_above_the_durable_number() {
    let s = verified();
    let v = View {
        durable: 250,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Events(1, 100)));
    let s = DeliveryState {
        acked: 200,
        ..verified()
    };
    let v = View {
        durable: 250,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Events(201, 250)));
    let v = View {
        durable: 200,
        ..view(&s)
    };
    assert_eq!(
        next_step(&v, NOW),
        Next::Idle,
        "nothing durable beyond the cursor"
    );
}

#[test]
fn a_max_count_of_zero_still_sends_one_event_at_a_time() {
    let s = verified();
    let v = View {
        durable: 3,
        max_count: 0,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Events(1, 1)));
}

#[test]
fn a_delivered_batch_moves_the_cursor_which_must_be_durable_before_the_next() {
    let t = apply(
        &verified(),
        SubscriptionStatus::Active,
        Job::Events(1, 100),
        &Outcome::Delivered,
    );
    assert_eq!(t.state.acked, 100);
    assert!(t.cursor_moved);
    assert_eq!(t.ask, None);
}

#[test]
fn heartbeats_only_when_asked_for_and_only_after_the_idle_period() {
    let s = DeliveryState {
        last_sent_at_ms: Some(NOW - 10_000),
        ..verified()
    };
    assert_eq!(next_step(&view(&s), NOW), Next::Idle);
    let v = View {
        heartbeat_secs: Some(60),
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::WaitUntil(NOW + 50_000));
    assert_eq!(next_step(&v, NOW + 50_000), Next::Send(Job::Heartbeat));
    // events first, heartbeat never instead of them
    let v = View {
        heartbeat_secs: Some(60),
        durable: 1,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW + 90_000), Next::Send(Job::Events(1, 1)));
}

#[test]
fn a_retry_waits_for_its_time() {
    let s = DeliveryState {
        next_attempt_at_ms: Some(NOW + 30_000),
        consecutive_failures: 2,
        ..verified()
    };
    let v = View {
        durable: 4,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::WaitUntil(NOW + 30_000));
    assert_eq!(next_step(&v, NOW + 30_000), Next::Send(Job::Events(1, 4)));
}

#[test]
fn failures_follow_the_schedule_and_set_error_only_after_the_configured_count() {
    let mut s = verified();
    let delays = [5_000, 30_000, 120_000, 600_000, 1_800_000];
    for (i, d) in delays.iter().enumerate() {
        let t = apply(
            &s,
            SubscriptionStatus::Active,
            Job::Events(1, 1),
            &failed(Failure::Status(503)),
        );
        assert_eq!(t.state.consecutive_failures, i as u32 + 1);
        assert_eq!(
            t.state.next_attempt_at_ms,
            Some(NOW + d),
            "failure {}",
            i + 1
        );
        assert_eq!(t.state.acked, 0, "a failure never moves the cursor");
        if i + 1 < 5 {
            assert_eq!(t.ask, None, "failure {}", i + 1);
        } else {
            assert_eq!(t.ask.map(|a| a.0), Some(SubscriptionStatus::Error));
        }
        s = t.state;
        s.failing_since_ms = Some(NOW); // the streak began now (horizon not reached)
    }
}

#[test]
fn a_permanent_4xx_sets_error_at_once_and_waits_the_longest_step() {
    let t = apply(
        &verified(),
        SubscriptionStatus::Active,
        Job::Events(1, 1),
        &failed(Failure::Status(404)),
    );
    assert_eq!(t.ask.map(|a| a.0), Some(SubscriptionStatus::Error));
    assert_eq!(t.state.next_attempt_at_ms, Some(NOW + 3_600_000));
}

#[test]
fn timeouts_and_rate_limits_are_not_permanent() {
    for code in [408, 429, 500, 503] {
        let t = apply(
            &verified(),
            SubscriptionStatus::Active,
            Job::Events(1, 1),
            &failed(Failure::Status(code)),
        );
        assert_eq!(t.ask, None, "{code}");
        assert_eq!(t.state.next_attempt_at_ms, Some(NOW + 5_000), "{code}");
    }
}

#[test]
fn retry_after_is_honoured_within_its_bounds() {
    let with = |secs| Outcome::Failed {
        failure: Failure::Status(503),
        reason: "http-status: 503".into(),
        retry_after: Some(Duration::from_secs(secs)),
    };
    let t = apply(
        &verified(),
        SubscriptionStatus::Active,
        Job::Events(1, 1),
        &with(42),
    );
    assert_eq!(t.state.next_attempt_at_ms, Some(NOW + 42_000));
    let t = apply(
        &verified(),
        SubscriptionStatus::Active,
        Job::Events(1, 1),
        &with(0),
    );
    assert_eq!(t.state.next_attempt_at_ms, Some(NOW + 1_000));
    let t = apply(
        &verified(),
        SubscriptionStatus::Active,
        Job::Events(1, 1),
        &with(86_400),
    );
    assert_eq!(t.state.next_attempt_at_ms, Some(NOW + 3_600_000));
}

#[test]
fn past_the_retry_horizon_delivery_is_parked_until_redriven() {
    let s = DeliveryState {
        consecutive_failures: 40,
        failing_since_ms: Some(NOW - 3 * 24 * 3_600_000),
        ..verified()
    };
    let t = apply(
        &s,
        SubscriptionStatus::Error,
        Job::Events(1, 1),
        &failed(Failure::Transport),
    );
    assert!(t.parked_now);
    assert!(t.state.parked);
    assert_eq!(t.state.next_attempt_at_ms, None);
    let v = View {
        status: SubscriptionStatus::Error,
        durable: 9,
        ..view(&t.state)
    };
    assert_eq!(next_step(&v, NOW), Next::Idle);
}

#[test]
fn the_first_success_after_an_error_returns_to_active_and_clears_the_streak() {
    let s = DeliveryState {
        consecutive_failures: 7,
        last_error: Some("http-status: 500".into()),
        failing_since_ms: Some(NOW - 60_000),
        next_attempt_at_ms: Some(NOW),
        ..verified()
    };
    let t = apply(
        &s,
        SubscriptionStatus::Error,
        Job::Events(1, 3),
        &Outcome::Delivered,
    );
    assert_eq!(t.ask, Some((SubscriptionStatus::Active, None)));
    assert_eq!(t.state.consecutive_failures, 0);
    assert_eq!(t.state.last_error, None);
    assert_eq!(t.state.failing_since_ms, None);
    assert_eq!(t.state.next_attempt_at_ms, None);
    assert_eq!(t.state.acked, 3);
}

#[test]
fn off_and_entered_in_error_subscriptions_send_nothing() {
    let s = verified();
    for status in [SubscriptionStatus::Off, SubscriptionStatus::EnteredInError] {
        let v = View {
            status,
            durable: 5,
            ..view(&s)
        };
        assert_eq!(next_step(&v, NOW), Next::Idle, "{status:?}");
    }
}

#[test]
fn nothing_is_sent_from_the_end_on() {
    let s = verified();
    let v = View {
        durable: 5,
        end_ms: Some(NOW as i64),
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Idle);
    assert_eq!(next_step(&v, NOW - 1), Next::Send(Job::Events(1, 5)));
}

#[test]
fn a_channel_that_is_not_ready_waits_without_counting_a_failure() {
    let s = verified();
    let v = View {
        durable: 5,
        ready: false,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Idle);
}

#[test]
fn a_channel_without_endpoint_verification_sends_events_without_a_handshake() {
    let s = DeliveryState::default();
    let v = View {
        durable: 2,
        verifies: false,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Events(1, 2)));
}

#[test]
fn a_paused_subscription_sends_nothing_though_events_wait() {
    let s = DeliveryState {
        paused: true,
        ..verified()
    };
    let v = View {
        durable: 3,
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Idle);
}

#[test]
fn a_resend_goes_before_new_events_in_batches_of_max_count_and_never_past_the_cursor() {
    let s = DeliveryState {
        acked: 10,
        ..verified()
    };
    let v = View {
        durable: 12,
        max_count: 3,
        resend: Some((2, 20)),
        ..view(&s)
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Events(2, 4)));
    let v = View {
        resend: Some((9, 20)),
        ..v
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Events(9, 10)));
    // nothing delivered in the range: new events go as usual
    let v = View {
        resend: Some((11, 20)),
        ..v
    };
    assert_eq!(next_step(&v, NOW), Next::Send(Job::Events(11, 12)));
}
