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
}
