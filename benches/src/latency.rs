//! Latency samples and their summary (percentiles by nearest rank over all samples; the load
//! runs are short enough that keeping every sample is cheaper than a histogram dependency).

use std::time::Duration;

/// Collected request latencies, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        self.micros
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Adds all samples of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.micros.extend_from_slice(&other.micros);
        self.sorted = false;
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The `q`-quantile (0.0..=1.0) by nearest rank, or `None` without samples.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        if self.micros.is_empty() {
            return None;
        }
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
        let n = self.micros.len();
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n);
        Some(Duration::from_micros(self.micros[rank - 1]))
    }
}

/// Formats a duration as milliseconds with two decimals.
pub fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2}", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for us in (1..=100).rev() {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.quantile(0.5), Some(Duration::from_micros(50)));
        assert_eq!(l.quantile(0.99), Some(Duration::from_micros(99)));
        assert_eq!(l.quantile(1.0), Some(Duration::from_micros(100)));
        assert_eq!(l.quantile(0.0), Some(Duration::from_micros(1)));
        assert_eq!(Latencies::default().quantile(0.5), None);
    }
}
