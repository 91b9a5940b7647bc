//! Measures the transition programs' cost and throughput, side by side in one run (ratios, not absolute
//! times). Not a test: nothing here asserts a time. Run as root, in release mode:
//!
//! ```text
//! cargo run --release -p netns-monitor-tests --bin transitions-bench -- [--seconds S] [--calls N] [--rounds R]
//! ```
//!
//! - getpid: ns per `getpid()` syscall without programs and with every transition program attached (syscall
//!   tracepoints put every task on the traced syscall path, so even untraced syscalls pay a little).
//! - setns storm: one thread calls setns back and forth between two namespaces as fast as it can for S seconds
//!   while the consumer drains the ring buffer on the other core; setns/s without and with the programs, events
//!   received per second and events lost.

use std::{
    fs::File,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use netns_monitor::bpf::{LoadOptions, Probes};
use netns_monitor_tests::{anonymous_netns, require_root};
use nix::sched::{CloneFlags, setns};

struct Args {
    seconds: f64,
    calls: u64,
    rounds: usize,
}

fn parse_args() -> Args {
    let mut args = Args { seconds: 3.0, calls: 5_000_000, rounds: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().expect("--seconds S"),
            "--calls" => args.calls = value.parse().expect("--calls N"),
            "--rounds" => args.rounds = value.parse().expect("--rounds R"),
            other => panic!("unknown flag {other}; expected --seconds, --calls, --rounds"),
        }
    }
    args
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// ns per getpid() over `calls` calls.
fn getpid_ns(calls: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: getpid has no preconditions; the raw syscall avoids any libc caching.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// setns calls per second for `seconds`, alternating between `a` and `b`.
fn setns_rate(a: &File, b: &File, seconds: f64) -> (u64, f64) {
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < deadline {
        for _ in 0..1000 {
            setns(if calls.is_multiple_of(2) { a } else { b }, CloneFlags::CLONE_NEWNET).expect("setns");
            calls += 1;
        }
    }
    (calls, calls as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    require_root();
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (a, b) = (anonymous_netns(), anonymous_netns());
    println!("machine: {} cores, kernel {}", num_cores(), kernel());

    // getpid, alternating so drift affects both sides alike.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        without.push(getpid_ns(args.calls));
        let probes = Probes::load(&LoadOptions::default()).expect("load");
        with.push(getpid_ns(args.calls));
        drop(probes);
    }
    let (without, with) = (median(without), median(with));
    println!(
        "getpid: {without:.1} ns/call without programs, {with:.1} ns/call with, +{:.1} ns ({:.3}x); median of {} x {} calls",
        with - without,
        with / without,
        args.rounds,
        args.calls
    );

    // setns storm without programs.
    let (_, base_rate) = std::thread::scope(|s| s.spawn(|| setns_rate(&a, &b, args.seconds)).join().unwrap());

    // setns storm with programs and nobody consuming: the ring buffer fills at once, so this is the programs'
    // own cost per call, without wake-ups of a consumer.
    let unconsumed = {
        let probes = Probes::load(&LoadOptions { filter_pid: Some(std::process::id()), ..LoadOptions::default() })
            .expect("load");
        let rate = std::thread::scope(|s| s.spawn(|| setns_rate(&a, &b, args.seconds)).join().unwrap()).1;
        drop(probes);
        rate
    };
    println!(
        "setns storm, programs attached, ring buffer full (no consumer): {unconsumed:.0} calls/s ({:.3}x)",
        unconsumed / base_rate
    );

    // setns storm with programs and a consumer draining on the other core.
    let mut probes =
        Probes::load(&LoadOptions { filter_pid: Some(std::process::id()), ..LoadOptions::default() }).expect("load");
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let consumer = {
        let _guard = runtime.enter();
        let mut events = probes.events().expect("events");
        let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
        runtime.spawn(async move {
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(read) = tokio::time::timeout(Duration::from_millis(50), events.next_batch(&mut batch)).await {
                    read.expect("ring buffer");
                    received.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
            }
        })
    };
    let (calls, rate) = std::thread::scope(|s| s.spawn(|| setns_rate(&a, &b, args.seconds)).join().unwrap());
    // Wait until every event is either received or counted lost (the consumer may still be draining).
    let lost = || probes.counters().expect("counters").lost_events;
    let drain_start = Instant::now();
    while received.load(Ordering::Relaxed) + lost() < calls && drain_start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(consumer).expect("consumer");
    let (received, lost) = (received.load(Ordering::Relaxed), lost());
    println!(
        "setns storm: {base_rate:.0} calls/s without programs, {rate:.0} calls/s with ({:.3}x); {calls} events \
         generated, {received} received, {lost} lost; {:.0} events/s delivered",
        rate / base_rate,
        received as f64 / (calls as f64 / rate)
    );
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn kernel() -> String {
    nix::sys::utsname::uname().map_or_else(|_| "?".into(), |u| u.release().to_string_lossy().into_owned())
}
