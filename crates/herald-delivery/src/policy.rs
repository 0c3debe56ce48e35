//! The retry policy: how long to wait after a failed attempt, whether a failure is permanent,
//! and when to stop. Pure, so the schedule is tested without clocks.

use std::time::Duration;

use crate::config::DeliveryConfig;

/// What came back from one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response (connect error, timeout, refused by the egress guard, …).
    Transport,
    /// An HTTP status outside 2xx.
    Status(u16),
}

impl Failure {
    /// A 4xx other than 408 (timeout) and 429 (too many requests) will not get better by
    /// itself: the endpoint rejects the request. It still keeps its queue; the subscription goes
    /// to `error` at once and is retried on the slow tail of the schedule.
    pub fn is_permanent(self) -> bool {
        matches!(self, Failure::Status(s) if (400..500).contains(&s) && s != 408 && s != 429)
    }
}

/// Retry decisions from the configuration.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    horizon: Duration,
    retry_after_min: Duration,
    retry_after_max: Duration,
}

impl RetryPolicy {
    /// Builds the policy from the configuration.
    pub fn new(cfg: &DeliveryConfig) -> Self {
        let mut schedule: Vec<Duration> = cfg
            .retry_schedule_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        if schedule.is_empty() {
            schedule.push(Duration::from_secs(60));
        }
        RetryPolicy {
            schedule,
            horizon: Duration::from_secs(cfg.retry_horizon_secs),
            retry_after_min: Duration::from_secs(cfg.retry_after_min_secs),
            retry_after_max: Duration::from_secs(cfg.retry_after_max_secs),
        }
    }

    /// The nominal delay before retry number `failures` (1-based), without jitter.
    pub fn base_delay(&self, failures: u32, failure: Failure) -> Duration {
        let last = self.schedule.len() - 1;
        let idx = if failure.is_permanent() {
            last
        } else {
            (failures.saturating_sub(1) as usize).min(last)
        };
        self.schedule[idx]
    }

    /// The delay before the next attempt, or `None` when the streak has lasted longer than the
    /// horizon (park the subscription). `retry_after` (from the response) wins within bounds;
    /// otherwise the schedule's delay gets ±20 % jitter so that many subscriptions failing at
    /// once do not retry in lockstep.
    pub fn next_delay(
        &self,
        failures: u32,
        failure: Failure,
        retry_after: Option<Duration>,
        streak_age: Duration,
        jitter: f64,
    ) -> Option<Duration> {
        if streak_age >= self.horizon {
            return None;
        }
        if let Some(ra) = retry_after {
            return Some(ra.clamp(self.retry_after_min, self.retry_after_max));
        }
        let base = self.base_delay(failures, failure).as_secs_f64();
        let j = jitter.clamp(0.0, 1.0) * 0.4 - 0.2;
        Some(Duration::from_secs_f64((base * (1.0 + j)).max(0.05)))
    }
}

/// Parses a `Retry-After` value given in seconds (HTTP-date values are ignored: the schedule
/// applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&DeliveryConfig::default())
    }

    #[test]
    fn schedule_grows_then_repeats_its_last_step() {
        let p = policy();
        let secs: Vec<u64> = (1..=8)
            .map(|n| p.base_delay(n, Failure::Transport).as_secs())
            .collect();
        assert_eq!(secs, [5, 30, 120, 600, 1800, 3600, 3600, 3600]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = policy();
        let lo = p
            .next_delay(2, Failure::Status(503), None, Duration::ZERO, 0.0)
            .expect("delay");
        let hi = p
            .next_delay(2, Failure::Status(503), None, Duration::ZERO, 1.0)
            .expect("delay");
        assert_eq!(lo, Duration::from_secs(24));
        assert_eq!(hi, Duration::from_secs(36));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = policy();
        let d = |s| {
            p.next_delay(
                1,
                Failure::Status(429),
                Some(Duration::from_secs(s)),
                Duration::ZERO,
                0.5,
            )
        };
        assert_eq!(d(42), Some(Duration::from_secs(42)));
        assert_eq!(d(0), Some(Duration::from_secs(1)));
        assert_eq!(d(999_999), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn client_errors_other_than_408_and_429_are_permanent_and_wait_longest() {
        assert!(Failure::Status(404).is_permanent());
        assert!(Failure::Status(400).is_permanent());
        assert!(!Failure::Status(408).is_permanent());
        assert!(!Failure::Status(429).is_permanent());
        assert!(!Failure::Status(500).is_permanent());
        assert!(!Failure::Transport.is_permanent());
        assert_eq!(policy().base_delay(1, Failure::Status(410)).as_secs(), 3600);
    }

    #[test]
    fn a_streak_older_than_the_horizon_parks() {
        let p = policy();
        assert!(
            p.next_delay(
                99,
                Failure::Transport,
                None,
                Duration::from_secs(3 * 24 * 3600),
                0.5
            )
            .is_none()
        );
        assert!(
            p.next_delay(
                99,
                Failure::Transport,
                None,
                Duration::from_secs(3 * 24 * 3600 - 1),
                0.5
            )
            .is_some()
        );
    }

    #[test]
    fn retry_after_seconds_parse_and_dates_are_ignored() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
