//! The delivery policy as pure functions: what a subscription should do next given its delivery
//! state and the clock ([`next_step`]), and what an attempt's outcome does to that state and to
//! the Subscription's status ([`after_attempt`]). No I/O and no clock of its own — `now` is an
//! argument — so every rule of the policy table in `docs/design.md` is a unit test that does not
//! sleep. The dispatcher only carries the decisions out.

use std::time::Duration;

use herald_store::DeliveryState;
use herald_subscriptions::SubscriptionStatus;

use crate::policy::{Failure, RetryPolicy};

/// What one attempt sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// The handshake that verifies an endpoint.
    Handshake,
    /// A heartbeat on an idle channel.
    Heartbeat,
    /// The events numbered `first..=last`.
    Events(u64, u64),
}

/// What [`next_step`] needs to know about a subscription.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The Subscription's status.
    pub status: SubscriptionStatus,
    /// `Subscription.end`, Unix ms.
    pub end_ms: Option<i64>,
    /// Events per notification (`maxCount`, else the configured default).
    pub max_count: u32,
    /// `heartbeatPeriod` in seconds, if heartbeats were asked for.
    pub heartbeat_secs: Option<u32>,
    /// Its delivery state.
    pub state: &'a DeliveryState,
    /// Highest event number known durable.
    pub durable: u64,
    /// Whether the channel verifies an endpoint with a handshake before events (rest-hook); a
    /// websocket sends its handshake on each bind instead.
    pub verifies: bool,
    /// Whether the channel can take a notification now (a websocket needs a bound socket).
    pub ready: bool,
    /// Delivered events an operator asked to send again (`first..=last`), before new ones.
    pub resend: Option<(u64, u64)>,
}

/// The decision of [`next_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send this now.
    Send(Job),
    /// Nothing now; look again at this time (Unix ms): a retry or a heartbeat is due then.
    WaitUntil(u64),
    /// Nothing until something changes (an event, a bind, a redrive, an update).
    Idle,
}

/// Decides what a subscription with no attempt in flight should do at `now_ms`.
pub fn next_step(v: &View<'_>, now_ms: u64) -> Next {
    let deliverable = matches!(
        v.status,
        SubscriptionStatus::Requested | SubscriptionStatus::Active | SubscriptionStatus::Error
    );
    if !deliverable || v.state.parked || v.state.paused || !v.ready {
        return Next::Idle;
    }
    // Past its end nothing more is sent (the dispatcher's end timer asks for `off`).
    if v.end_ms
        .is_some_and(|end| end <= i64::try_from(now_ms).unwrap_or(i64::MAX))
    {
        return Next::Idle;
    }
    if let Some(t) = v.state.next_attempt_at_ms
        && t > now_ms
    {
        return Next::WaitUntil(t);
    }
    if v.verifies && !v.state.verified {
        return Next::Send(Job::Handshake);
    }
    // An operator's resend goes first, in batches of maxCount, at most up to what was sent.
    if let Some((first, last)) = v.resend
        && first <= last
    {
        let last = last
            .min(v.state.acked)
            .min(first.saturating_add(u64::from(v.max_count.max(1)) - 1));
        if first <= last {
            return Next::Send(Job::Events(first, last));
        }
    }
    // Never above what is durable: the store may hold newer events whose writes still wait for
    // their sync, and a crash could give their numbers to other events.
    if v.durable > v.state.acked {
        let last = v
            .durable
            .min(v.state.acked.saturating_add(u64::from(v.max_count.max(1))));
        return Next::Send(Job::Events(v.state.acked + 1, last));
    }
    match v.heartbeat_secs.filter(|p| *p > 0) {
        Some(period) => {
            let due = v.state.last_sent_at_ms.unwrap_or(now_ms) + u64::from(period) * 1000;
            if now_ms >= due {
                Next::Send(Job::Heartbeat)
            } else {
                Next::WaitUntil(due)
            }
        }
        None => Next::Idle,
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The channel took the notification (2xx; written to a socket).
    Delivered,
    /// It did not.
    Failed {
        /// The kind of failure (drives the retry delay and permanence).
        failure: Failure,
        /// The cause, for operators and the `error` status.
        reason: String,
        /// The receiver's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

/// What an outcome changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new delivery state (to persist).
    pub state: DeliveryState,
    /// A status the server should set, with its reason.
    pub ask: Option<(SubscriptionStatus, Option<String>)>,
    /// The cursor moved: it must be durable before the next batch goes, so that a crash
    /// redelivers at most the batch that was in flight.
    pub cursor_moved: bool,
    /// The retry horizon passed with this failure: attempts stop until a redrive.
    pub parked_now: bool,
}

/// Settings [`after_attempt`] applies.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    /// The retry schedule and horizon.
    pub policy: &'a RetryPolicy,
    /// Consecutive failures after which the status becomes `error`.
    pub error_after_failures: u32,
}

/// Applies an attempt's outcome at `now_ms`. `jitter` in [0, 1] spreads retries (the caller
/// draws it, so that this stays deterministic).
pub fn after_attempt(
    state: &DeliveryState,
    status: SubscriptionStatus,
    job: Job,
    outcome: &Outcome,
    now_ms: u64,
    rules: &Rules<'_>,
    jitter: f64,
) -> Transition {
    let mut s = state.clone();
    s.last_attempt_at_ms = Some(now_ms);
    let mut ask = None;
    let mut parked_now = false;
    let mut cursor_moved = false;
    match outcome {
        Outcome::Delivered => {
            s.consecutive_failures = 0;
            s.next_attempt_at_ms = None;
            s.last_error = None;
            s.failing_since_ms = None;
            s.last_sent_at_ms = Some(now_ms);
            match job {
                Job::Handshake => {
                    s.verified = true;
                    ask = Some((SubscriptionStatus::Active, None));
                }
                Job::Events(_, last) => {
                    cursor_moved = last > s.acked;
                    s.acked = s.acked.max(last);
                    // Recovery: nothing queued was dropped, so the first success after an
                    // error returns the subscription to `active`.
                    if status == SubscriptionStatus::Error {
                        ask = Some((SubscriptionStatus::Active, None));
                    }
                }
                Job::Heartbeat => {}
            }
        }
        Outcome::Failed {
            failure,
            reason,
            retry_after,
        } => {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.last_error = Some(reason.clone());
            let since = *s.failing_since_ms.get_or_insert(now_ms);
            let delay = rules.policy.next_delay(
                s.consecutive_failures,
                *failure,
                *retry_after,
                Duration::from_millis(now_ms.saturating_sub(since)),
                jitter,
            );
            match delay {
                Some(d) => {
                    let d = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    s.next_attempt_at_ms = Some(now_ms.saturating_add(d));
                }
                None => {
                    s.parked = true;
                    s.next_attempt_at_ms = None;
                    parked_now = true;
                }
            }
            let handshake = job == Job::Handshake;
            if handshake
                || failure.is_permanent()
                || s.consecutive_failures >= rules.error_after_failures
            {
                let why = if handshake {
                    format!("handshake failed: {reason}")
                } else {
                    reason.clone()
                };
                ask = Some((SubscriptionStatus::Error, Some(why)));
            }
        }
    }
    Transition {
        state: s,
        ask,
        cursor_moved,
        parked_now,
    }
}

#[cfg(test)]
mod tests;
