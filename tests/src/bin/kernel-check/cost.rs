//! What each hook tier costs on this kernel, measured inside the VM as ratios with and without the programs in
//! one run: an untraced syscall (getpid, which no program handles), one setns, one unshare, one clone (a plain
//! fork: the clone hooks run for every fork, whatever its flags, and filter in the program). Emulated timings
//! are noisy (getpid reads 700-1100 ns under TCG with +-200 ns between identical runs), so the variants
//! alternate (attach, measure, detach, measure, ...) and medians are reported. A measurement, not an assertion:
//! the check fails only when it cannot measure.

use std::{fs::File, time::Duration};

use netns_monitor::bpf::{HookChoice, LoadOptions, Probes};
use nix::sched::{CloneFlags, setns, unshare};

use crate::report::Outcome;

const ROUNDS: usize = 5;
const GETPID_CALLS: u32 = 100_000;
/// Back-and-forth pairs: 4,000 events, which the 1 MiB ring buffer holds without a reader.
const SETNS_PAIRS: u32 = 2_000;
const UNSHARE_CALLS: u32 = 500;
/// Forks of a child that exits at once; the parent's thread CPU time covers its clone call (where the hooks run),
/// not the child's life or the wait.
const CLONE_CALLS: u32 = 300;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// ns of thread CPU time per call of `body`, run `calls` times on a fresh thread.
fn per_call(calls: u32, body: impl Fn() + Send + Sync) -> f64 {
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = thread_cpu();
            for _ in 0..calls {
                body();
            }
            (thread_cpu() - start).as_nanos() as f64 / f64::from(calls)
        })
        .join()
        .expect("measuring thread")
    })
}

/// clone(SIGCHLD) of a child that exits at once, reaped.
fn fork_and_reap() {
    // SAFETY: clone with newsp 0 behaves like fork (x86_64 order: flags, newsp, parent_tid, child_tid, tls).
    let child = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as u64, 0, 0, 0, 0) };
    assert!(child >= 0, "clone: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: the child of a multi-threaded process only calls _exit.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reaps the child just made.
    unsafe { libc::waitpid(child as i32, std::ptr::null_mut(), 0) };
}

/// [getpid, setns, unshare, clone] in ns per call.
fn measure(a: &File, b: &File) -> [f64; 4] {
    // SAFETY: getpid has no preconditions; the raw syscall avoids any caching in libc.
    let getpid = per_call(GETPID_CALLS, || unsafe {
        libc::syscall(libc::SYS_getpid);
    });
    let setns_ns = per_call(SETNS_PAIRS, || {
        setns(a, CloneFlags::CLONE_NEWNET).expect("setns a");
        setns(b, CloneFlags::CLONE_NEWNET).expect("setns b");
    }) / 2.0;
    let unshare_ns = per_call(UNSHARE_CALLS, || unshare(CloneFlags::CLONE_NEWUTS).expect("unshare uts"));
    let clone_ns = per_call(CLONE_CALLS, fork_and_reap);
    [getpid, setns_ns, unshare_ns, clone_ns]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn check(hooks: HookChoice) -> Outcome {
    let (a, b) = (netns_monitor_tests::anonymous_netns(), netns_monitor_tests::anonymous_netns());
    let mut without: [Vec<f64>; 4] = Default::default();
    let mut with: [Vec<f64>; 4] = Default::default();
    let mut tier = 0;
    for round in 0..ROUNDS {
        for attached in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let probes = attached.then(|| {
                let options = LoadOptions { filter_pid: Some(std::process::id()), hooks, ..LoadOptions::default() };
                Probes::load(&options).unwrap_or_else(|e| panic!("{}", netns_monitor::bpf::error_chain(&e)))
            });
            let values = measure(&a, &b);
            let into = if let Some(probes) = &probes {
                tier = probes.hooks.tier.number();
                &mut with
            } else {
                &mut without
            };
            for (series, value) in into.iter_mut().zip(values) {
                series.push(value);
            }
            drop(probes);
        }
    }
    let names = ["getpid", "setns", "unshare", "clone"];
    let parts: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (w, n) = (median(&mut with[i]), median(&mut without[i]));
            format!("{name} {n:.0} -> {w:.0} ns ({:+.0} ns, x{:.3})", w - n, w / n)
        })
        .collect();
    Outcome::Pass(format!("tier {tier}, medians of {ROUNDS} alternated rounds: {}", parts.join("; ")))
}
