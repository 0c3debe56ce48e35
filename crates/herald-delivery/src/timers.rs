//! The dispatcher's schedule: one deadline per subscription and purpose (retry or heartbeat;
//! `Subscription.end`), ordered so that the dispatcher sleeps until the earliest and nothing
//! polls. Times are Unix milliseconds from the dispatcher's clock, so the schedule is tested
//! without sleeping.

use std::collections::{BTreeSet, HashMap};

use crate::channel::Key;

/// At most one deadline per key, earliest first.
#[derive(Debug, Default)]
pub struct Deadlines {
    order: BTreeSet<(u64, Key)>,
    of: HashMap<Key, u64>,
}

impl Deadlines {
    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: &Key, at_ms: u64) {
        self.clear(key);
        self.order.insert((at_ms, key.clone()));
        self.of.insert(key.clone(), at_ms);
    }

    /// Removes the deadline of `key`, if any.
    pub fn clear(&mut self, key: &Key) {
        if let Some(old) = self.of.remove(key) {
            self.order.remove(&(old, key.clone()));
        }
    }

    /// The earliest deadline.
    pub fn earliest(&self) -> Option<u64> {
        self.order.first().map(|(t, _)| *t)
    }

    /// Removes and returns the keys whose deadline is at or before `now_ms`, earliest first.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some((t, _)) = self.order.first() {
            if *t > now_ms {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.of.remove(&key);
                due.push(key);
            }
        }
        due
    }

    /// Number of deadlines held.
    pub fn len(&self) -> usize {
        self.of.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }
}

/// Where the dispatcher reads the time (injected so tests can drive it).
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

/// The system's time in Unix milliseconds (what [`SystemClock`] reads; for code outside the
/// dispatcher, whose clock is not injected).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: &str) -> Key {
        ("r4".to_owned(), id.to_owned())
    }

    #[test]
    fn each_key_has_one_deadline_and_moving_it_replaces_the_old_one() {
        let mut d = Deadlines::default();
        d.set(&k("a"), 100);
        d.set(&k("a"), 50);
        assert_eq!(d.len(), 1);
        assert_eq!(d.earliest(), Some(50));
        assert!(d.take_due(60) == vec![k("a")]);
        assert!(d.is_empty());
    }

    #[test]
    fn due_keys_come_out_earliest_first_and_later_ones_stay() {
        let mut d = Deadlines::default();
        d.set(&k("late"), 300);
        d.set(&k("b"), 200);
        d.set(&k("a"), 100);
        assert_eq!(d.take_due(200), vec![k("a"), k("b")]);
        assert_eq!(d.earliest(), Some(300));
        d.clear(&k("late"));
        assert_eq!(d.earliest(), None);
    }
}
