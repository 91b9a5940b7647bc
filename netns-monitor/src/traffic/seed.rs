//! An interface's base: what the kernel counted on it that the classifiers never saw, so that its totals
//! (classifier counters + base) equal the kernel's own statistics from its first packet.
//!
//! While the classifiers stay attached, every packet the kernel counts on the device is also counted by them,
//! so `kernel - counted` is constant: the packets from before the attach. It can be measured at any moment
//! nothing is in flight. Reading the two one after the other is not enough (the earlier seed, kernel totals
//! read and then the entry created, lost the packets counted between the read and the insert: one in an ARP
//! burst made CI fail), so [`measure`] reads counted, kernel, counted, kernel and keeps a sample only when both
//! pairs agree: then nothing was counted by either side over the whole sample. What can still be wrong is a
//! packet in flight across the whole sample (counted by the kernel on one side of the hook, by the program on
//! the other, tens of microseconds apart): it needs the packet to wait longer than the sample takes, which only
//! a softirq deferred under load does. Under a steady flood no sample is quiet; after [`ATTEMPTS`] the last
//! one is taken and a warning says the base may be off by the packets in flight.

use netns_monitor_common::traffic::TrafficKey;

use super::{
    TrafficError,
    counters::TrafficMap,
    kernel::{DeviceStats, KernelTotals},
};
use crate::manage::rtnl::Within;

/// Samples tried before one that is not quiet is taken.
pub const ATTEMPTS: usize = 200;

/// The base of one interface, as measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    pub base: KernelTotals,
    /// Whether nothing moved during the sample it comes from (see the module's notes).
    pub quiet: bool,
    /// Samples taken.
    pub samples: usize,
}

/// Measures the base from `counted` (the classifiers' totals) and `kernel` (the kernel's), both in the
/// kernel's order. `Ok(None)` when either says the interface is gone.
pub fn measure<E>(
    mut counted: impl FnMut() -> Result<Option<KernelTotals>, E>,
    mut kernel: impl FnMut() -> Result<Option<KernelTotals>, E>,
) -> Result<Option<Measured>, E> {
    let mut last = None;
    for samples in 1..=ATTEMPTS {
        let (Some(m1), Some(k1), Some(m2), Some(k2)) = (counted()?, kernel()?, counted()?, kernel()?) else {
            return Ok(None);
        };
        let quiet = m1 == m2 && k1 == k2;
        let base = std::array::from_fn(|i| k2[i].saturating_sub(m2[i]));
        last = Some(Measured { base, quiet, samples });
        if quiet {
            break;
        }
    }
    Ok(last)
}

/// Measures and writes the base of `key` (named `name` in namespace `netns`). `Ok(false)` when the
/// interface went away meanwhile.
pub fn write_base(map: &mut TrafficMap, netns: Within<'_>, key: TrafficKey, name: &str) -> Result<bool, TrafficError> {
    let measured = {
        let map = &*map;
        netns
            .run(|| {
                let mut stats =
                    DeviceStats::open().map_err(|source| TrafficError::KernelStats { ifindex: key.ifindex, source })?;
                measure(
                    || map.counted(&key),
                    || {
                        stats
                            .get(key.ifindex)
                            .map_err(|source| TrafficError::KernelStats { ifindex: key.ifindex, source })
                    },
                )
            })
            .map_err(TrafficError::Thread)??
    };
    let Some(measured) = measured else { return Ok(false) };
    if !measured.quiet {
        tracing::warn!(
            device = name,
            netns = key.netns,
            samples = measured.samples,
            "traffic never paused while this interface's counters were started: its totals may differ from the \
             kernel's by the packets that were in flight"
        );
    }
    map.set_base(key, measured.base)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, convert::Infallible};

    use super::*;

    /// Counters that move by one packet of 100 bytes each time they are read, `moving` times.
    fn moving(start: KernelTotals, moving: usize) -> impl FnMut() -> Result<Option<KernelTotals>, Infallible> {
        let (mut now, mut left) = (start, moving);
        move || {
            if left > 0 {
                left -= 1;
                now = [now[0] + 100, now[1] + 1, now[2], now[3]];
            }
            Ok(Some(now))
        }
    }

    #[test]
    fn a_quiet_sample_gives_the_difference() {
        let measured = measure(moving([0, 0, 0, 0], 0), moving([1000, 10, 500, 5], 0)).unwrap().unwrap();
        assert_eq!(measured, Measured { base: [1000, 10, 500, 5], quiet: true, samples: 1 });
    }

    #[test]
    fn samples_are_retried_until_nothing_moves() {
        // The kernel's counters move for the first 5 reads (2 per sample): the third sample is quiet.
        let measured = measure(moving([300, 3, 0, 0], 0), moving([1000, 10, 0, 0], 5)).unwrap().unwrap();
        assert!(measured.quiet);
        assert_eq!(measured.samples, 3);
        assert_eq!(measured.base, [1000 + 500 - 300, 10 + 5 - 3, 0, 0]);
    }

    #[test]
    fn a_flood_ends_with_the_last_sample_marked_not_quiet() {
        let reads = Cell::new(0);
        let counted = || {
            reads.set(reads.get() + 1);
            Ok::<_, Infallible>(Some([reads.get() * 100, reads.get(), 0, 0]))
        };
        let measured = measure(counted, moving([0, 0, 0, 0], usize::MAX)).unwrap().unwrap();
        assert!(!measured.quiet);
        assert_eq!(measured.samples, ATTEMPTS);
    }

    #[test]
    fn a_device_that_goes_has_no_base() {
        let gone = || Ok::<_, Infallible>(None);
        assert_eq!(measure(moving([0, 0, 0, 0], 0), gone).unwrap(), None);
    }

    #[test]
    fn more_counted_than_the_kernel_saw_is_no_negative_base() {
        let measured = measure(moving([200, 2, 0, 0], 0), moving([100, 1, 0, 0], 0)).unwrap().unwrap();
        assert_eq!(measured.base, [0, 0, 0, 0]);
    }
}
