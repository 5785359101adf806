//! Shared by the benchmarks: percentiles and the table they print.
#![allow(dead_code)]

use std::time::Duration;

/// Sorted samples with percentile look-ups.
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }

    /// The `p`-th percentile (0.0 to 100.0), nearest rank.
    pub fn pct(&self, p: f64) -> Duration {
        let n = self.0.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.0[rank.clamp(1, n) - 1]
    }

    pub fn max(&self) -> Duration {
        *self.0.last().unwrap()
    }

    /// One line: `label  n  p50  p90  p99  max`, in milliseconds.
    pub fn print(&self, label: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{label:<40} n={:<6} p50={:>9.3} ms  p90={:>9.3} ms  p99={:>9.3} ms  max={:>9.3} ms",
            self.0.len(),
            ms(self.pct(50.0)),
            ms(self.pct(90.0)),
            ms(self.pct(99.0)),
            ms(self.max())
        );
    }
}
