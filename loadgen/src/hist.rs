//! Latency histograms (HdrHistogram, microseconds) and their JSON summary.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly: one hour (larger values are clamped to it).
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // 1 µs .. 1 h at 3 significant digits is a valid configuration: this cannot fail.
        match Histogram::new_with_bounds(1, MAX_US, 3) {
            Ok(h) => Latency(h),
            Err(e) => unreachable!("constant histogram bounds rejected: {e}"),
        }
    }

    /// Records one latency (clamped to 1 µs .. 1 h).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(MAX_US)
            .clamp(1, MAX_US);
        self.0.saturating_record(us);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding never fails; saturate rather than panic anyway.
        if self.0.add(&other.0).is_err() {
            for v in other.0.iter_recorded() {
                self.0
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Percentiles, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        let q = |p: f64| self.0.value_at_quantile(p);
        Some(Summary {
            count: self.0.len(),
            min_us: self.0.min(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.0.max(),
            mean_us: (self.0.mean() * 10.0).round() / 10.0,
        })
    }
}

/// Latency percentiles of one phase, in microseconds (HdrHistogram values: 3 significant digits).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Latency::new().summary(), None);
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Latency::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary().unwrap();
        assert_eq!((s.count, s.min_us, s.max_us), (1000, 1, 1000));
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
    }

    #[test]
    fn merge_adds_counts_and_out_of_range_values_clamp() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record(Duration::ZERO);
        b.record(Duration::from_secs(10_000));
        a.merge(&b);
        let s = a.summary().unwrap();
        assert_eq!((s.count, s.min_us), (2, 1));
        assert!(s.max_us >= MAX_US * 999 / 1000);
    }
}
