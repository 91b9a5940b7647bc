//! The standard `process_*` metrics, with `process_cpu_seconds_total` to the clock tick.
//!
//! The prometheus crate's process collector keeps CPU time as an integer counter of whole seconds (an agent
//! that used 0.35 s shows 0, and `rate()` over it moves in steps of one second), so this wraps it and sets
//! that one sample from `/proc/self/stat` (utime + stime, in clock ticks) as a float, as client_golang does.

use prometheus::{
    core::{Collector, Desc},
    process_collector::ProcessCollector,
    proto::MetricFamily,
};

/// Name of the CPU time family, as every Prometheus client library spells it.
const CPU_SECONDS: &str = "process_cpu_seconds_total";

/// `ProcessCollector::for_self()` with `process_cpu_seconds_total` to the clock tick.
pub struct ProcessMetrics {
    inner: ProcessCollector,
    ticks_per_second: f64,
}

impl ProcessMetrics {
    pub fn for_self() -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self { inner: ProcessCollector::for_self(), ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 } }
    }
}

/// User plus system CPU time of this process in clock ticks: fields 14 and 15 of `/proc/self/stat`, counted
/// after the command name, which is in parentheses and may itself contain spaces and parentheses.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        let ticks = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(cpu_ticks);
        if let Some(ticks) = ticks
            && let Some(family) = families.iter_mut().find(|family| family.name() == CPU_SECONDS)
        {
            for metric in family.mut_metric() {
                let mut counter = prometheus::proto::Counter::default();
                counter.set_value(ticks as f64 / self.ticks_per_second);
                metric.set_counter(counter);
            }
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "1234 (net (mon) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 35 7 0 0 20 0 3 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(42));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn cpu_seconds_are_fractional() {
        // Burn well over a clock tick but under a second, then read the family as a scrape would.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let collector = ProcessMetrics::for_self();
        let families = collector.collect();
        let cpu = families.iter().find(|f| f.name() == CPU_SECONDS).expect("the CPU family");
        let seconds = cpu.get_metric()[0].get_counter().get_value();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let now = cpu_ticks(&stat).unwrap() as f64 / collector.ticks_per_second;
        // Whole seconds (the crate's own) would read 0 here, 0.3 s or more below /proc.
        assert!((now - seconds).abs() <= 0.05, "{seconds} s from the collector, {now} s from /proc/self/stat");
    }
}
