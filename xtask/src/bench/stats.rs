//! Summary statistics of a set of timings.

use std::time::Duration;

/// Total, median, 90th percentile and maximum of `samples`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub total: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub max: Duration,
}

/// Nearest-rank percentile `q` (0..=1) of `samples`: the smallest sample with at least q of them at or
/// below it (so the p99 of 50 samples is the largest). 0 for no samples.
pub fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Median of `samples` (for an even count, the mean of the two middle ones).
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Summary {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |q: f64| {
            if sorted.is_empty() {
                return Duration::ZERO;
            }
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        Summary {
            count: sorted.len(),
            total: sorted.iter().sum(),
            p50: at(0.5),
            p90: at(0.9),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let s = Summary::of(&(1..=10).map(ms).collect::<Vec<_>>());
        assert_eq!((s.count, s.total, s.p50, s.p90, s.max), (10, ms(55), ms(5), ms(9), ms(10)));
        assert_eq!(Summary::of(&[]).p50, Duration::ZERO);
        assert_eq!(Summary::of(&[ms(3)]).p90, ms(3));
    }

    #[test]
    fn float_median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let fifty: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&fifty, 0.5), 25.0);
        assert_eq!(percentile(&fifty, 0.99), 50.0);
    }
}
