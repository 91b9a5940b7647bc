//! What the transition tracepoints cost the rest of the system, and whether the agent keeps up with storms of
//! the syscalls it traces: getpid() in a loop (a syscall our programs never handle), setns() back and forth on
//! one core, and unshare(CLONE_NEWNET) + exit. The syscalls run in this process, the agent as its own process
//! (consuming events, counting them in its metrics, which is where lost events are read).

use std::{
    fs::{self, File},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Ctx,
    agent::{self, Agent},
    fixture,
    report::{Row, Target},
    stats::median,
};

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        bail!("cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time the calling thread has used. Loops are timed with it rather than the wall clock: the 2 cores of
/// this VM are shared, and time spent preempted by someone else's compiler is not the syscall's cost.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// ns of thread CPU time per getpid() over `calls` calls, on a thread pinned to the last CPU.
fn getpid_ns(calls: u64) -> anyhow::Result<f64> {
    let cpu = std::thread::available_parallelism().map_or(1, usize::from) - 1;
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(cpu)?;
            let start = thread_cpu_time();
            for _ in 0..calls {
                // SAFETY: getpid has no preconditions; the raw syscall avoids any caching in libc.
                unsafe { libc::syscall(libc::SYS_getpid) };
            }
            Ok((thread_cpu_time() - start).as_nanos() as f64 / calls as f64)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Enables one syscall tracepoint through tracefs (no program, no perf event) while it lives.
struct FtraceEvent {
    enable: PathBuf,
    previous: String,
}

impl FtraceEvent {
    fn enable(event: &str) -> anyhow::Result<Self> {
        let root = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("events").exists())
            .context("tracefs is not mounted")?;
        let enable = root.join("events/syscalls").join(event).join("enable");
        let previous = fs::read_to_string(&enable).with_context(|| format!("cannot read {}", enable.display()))?;
        fs::write(&enable, "1").with_context(|| format!("cannot write {}", enable.display()))?;
        Ok(FtraceEvent { enable, previous: previous.trim().to_owned() })
    }
}

impl Drop for FtraceEvent {
    fn drop(&mut self) {
        let _ = fs::write(&self.enable, &self.previous);
    }
}

/// The agent's hook tiers as the getpid benchmark runs them: what `auto` picks on this kernel, and tier 2 forced.
const GETPID_AGENTS: [(&str, &[&str]); 2] = [("auto", &[]), ("tier2", &["--hooks", "tracepoint"])];

pub fn getpid(ctx: &mut Ctx) -> anyhow::Result<()> {
    let rounds = ctx.rounds(5);
    let calls = 3_000_000;
    let (mut none, mut ftrace) = (Vec::new(), Vec::new());
    let mut with: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut tiers = [0u8; 2];
    for round in 0..rounds {
        // Rotate the order of the four variants.
        for variant in (0..4).map(|i| (i + round) % 4) {
            fixture::check()?;
            match variant {
                0 => none.push(getpid_ns(calls)?),
                1 | 2 => {
                    let (_, extra) = GETPID_AGENTS[variant - 1];
                    let agent = Agent::start_with(&ctx.binary, Duration::from_secs(120), extra)?;
                    tiers[variant - 1] = agent.tier()?;
                    let value = getpid_ns(calls);
                    agent.stop()?;
                    with[variant - 1].push(value?);
                }
                _ => {
                    let event = FtraceEvent::enable("sys_enter_setns")?;
                    ftrace.push(getpid_ns(calls)?);
                    drop(event);
                }
            }
        }
        eprintln!(
            "[bench]   round {}/{rounds}: none {:.1}, agent auto (tier {}) {:.1}, agent tier 2 {:.1}, one ftrace \
             tracepoint {:.1} ns/call",
            round + 1,
            none.last().unwrap(),
            tiers[0],
            with[0].last().unwrap(),
            with[1].last().unwrap(),
            ftrace.last().unwrap()
        );
    }
    let (n, f) = (median(&none), median(&ftrace));
    for (index, (name, _)) in GETPID_AGENTS.iter().enumerate() {
        let w = median(&with[index]);
        let tier = tiers[index];
        let id = if *name == "auto" { "getpid".to_owned() } else { format!("getpid-{name}") };
        let mut row = Row::new(
            &id,
            format!(
                "Thread CPU time per raw getpid() syscall, {calls} calls on one pinned core, with the agent running \
                 (`--hooks {}`, which loaded tier {tier} here) versus no programs; median of {rounds} interleaved runs",
                if *name == "auto" { "auto" } else { "tracepoint" }
            ),
            "ns/call",
            w,
        )
        .baseline(n)
        .target(Target::MaxDelta(if tier == 1 { 2.0 } else { 20.0 }))
        .samples(&with[index], &none)
        .note(format!(
            "tier {tier}: +{:.1} ns; one ftrace-enabled syscall tracepoint alone: +{:.1} ns",
            w - n,
            f - n
        ));
        if tier == 2 {
            row = row.analysis(format!(
                "Tier 2 (syscall tracepoints{}). Our programs never run for getpid. Any enabled syscall \
                 tracepoint sets SYSCALL_WORK_SYSCALL_TRACEPOINT on every task, so every syscall of every process \
                 takes the slow path through syscall_trace_enter/syscall_exit_work and calls the sys_enter/sys_exit \
                 tracepoint handlers, which only then find no program for that syscall number. Enabling a single \
                 syscall event through tracefs (no BPF at all) costs +{:.1} ns per getpid here, {:.0}% of our \
                 +{:.1} ns. Tier 1 (fentry/fexit on the syscall functions) does not touch that flag; where the \
                 kernel refuses it, as this VM's policy does (EPERM on every fentry load), its cost is measured \
                 in the kernel matrix VMs instead (`cargo xtask kernels`, check `cost`).",
                if *name == "auto" { ", because this kernel refuses tier 1" } else { ", forced" },
                f - n,
                100.0 * (f - n) / (w - n).max(f64::EPSILON),
                w - n
            ));
        }
        ctx.report.push(row);
    }
    ctx.report.push(
        Row::new(
            "getpid-ftrace-floor",
            "Diagnostic: the same loop with only tracefs' syscalls/sys_enter_setns event enabled (no BPF), \
             interleaved with the runs above: the cost of any syscall tracepoint",
            "ns/call",
            f,
        )
        .baseline(n)
        .samples(&ftrace, &none)
        .note(format!("+{:.1} ns", f - n)),
    );
    Ok(())
}

/// ns of the parent's thread CPU time per clone(SIGCHLD) of a child that exits at once, over `calls` forks on a
/// thread pinned to the last CPU: the clone call itself, where the hooks run, not the child's life or the wait.
fn fork_ns(calls: u64) -> anyhow::Result<f64> {
    let cpu = std::thread::available_parallelism().map_or(1, usize::from) - 1;
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(cpu)?;
            let mut spent = Duration::ZERO;
            for _ in 0..calls {
                let start = thread_cpu_time();
                // SAFETY: clone with newsp 0 behaves like fork (x86_64: flags, newsp, parent_tid, child_tid, tls).
                let child = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as u64, 0, 0, 0, 0) };
                if child == 0 {
                    // SAFETY: the child of a multi-threaded process only calls _exit.
                    unsafe { libc::_exit(0) };
                }
                spent += thread_cpu_time() - start;
                if child < 0 {
                    bail!("clone: {}", std::io::Error::last_os_error());
                }
                // SAFETY: reaps the child just made.
                unsafe { libc::waitpid(child as i32, std::ptr::null_mut(), 0) };
            }
            Ok(spent.as_nanos() as f64 / calls as f64)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What one fork costs its parent with the agent running (`auto` tier) versus none, interleaved. Every clone
/// runs the clone hooks (tier 1's fentry/fexit on `__x64_sys_clone`, tier 2's tracepoints), which return at once
/// for calls without `CLONE_NEW*` flags; tier 2 also pays the syscall slow path of every syscall.
pub fn clone(ctx: &mut Ctx) -> anyhow::Result<()> {
    let rounds = ctx.rounds(5);
    let calls = 5_000;
    let (mut none, mut with) = (Vec::new(), Vec::new());
    let mut tier = 0;
    for round in 0..rounds {
        for attached in if round % 2 == 0 { [false, true] } else { [true, false] } {
            fixture::check()?;
            if attached {
                let agent = Agent::start_with(&ctx.binary, Duration::from_secs(120), &[])?;
                tier = agent.tier()?;
                let value = fork_ns(calls);
                agent.stop()?;
                with.push(value?);
            } else {
                none.push(fork_ns(calls)?);
            }
        }
        eprintln!(
            "[bench]   round {}/{rounds}: none {:.0}, agent (tier {tier}) {:.0} ns/fork",
            round + 1,
            none.last().unwrap(),
            with.last().unwrap()
        );
    }
    let (w, n) = (median(&with), median(&none));
    ctx.report.push(
        Row::new(
            "clone",
            format!(
                "Parent's thread CPU time per clone(SIGCHLD) (a fork whose child exits at once), {calls} forks on \
                 one pinned core, with the agent running (tier {tier} here) versus no programs; median of {rounds} \
                 interleaved runs"
            ),
            "ns/call",
            w,
        )
        .baseline(n)
        .samples(&with, &none)
        .note(format!("tier {tier}: {:+.0} ns per fork (x{:.3})", w - n, w / n)),
    );
    Ok(())
}

/// A new anonymous network namespace, held by the returned fd.
fn anonymous_netns() -> anyhow::Result<File> {
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this short-lived thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        File::open("/proc/thread-self/ns/net").context("cannot open the new namespace")
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// setns() calls for `seconds` on a thread pinned to CPU 0, alternating between `a` and `b`: the number, and
/// the rate per second of the thread's CPU time (see [`thread_cpu_time`]) and of wall time.
fn setns_storm(a: &File, b: &File, seconds: f64) -> anyhow::Result<(u64, f64, f64)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(0)?;
            let deadline = Duration::from_secs_f64(seconds);
            let (a, b) = (a.as_raw_fd(), b.as_raw_fd());
            let start = Instant::now();
            let cpu_start = thread_cpu_time();
            let mut calls = 0u64;
            while start.elapsed() < deadline {
                for _ in 0..1000 {
                    let fd = if calls.is_multiple_of(2) { a } else { b };
                    // SAFETY: setns on a valid namespace fd, affecting only this thread.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        bail!("setns: {}", std::io::Error::last_os_error());
                    }
                    calls += 1;
                }
            }
            let cpu = (thread_cpu_time() - cpu_start).as_secs_f64();
            Ok((calls, calls as f64 / cpu, calls as f64 / start.elapsed().as_secs_f64()))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Reads `metric` from the agent until it has grown by at least `expected` over `before`, or stopped growing
/// for a second (events still in flight are either delivered or counted lost by then); returns the growth.
fn settle(agent: &Agent, before: f64, expected: f64, metric: impl Fn(&str) -> f64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (f64::NAN, Instant::now());
    loop {
        let now = metric(&agent.metrics()?) - before;
        if now >= expected || Instant::now() > deadline {
            return Ok(now);
        }
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_secs(1) {
            return Ok(now);
        }
        fixture::sleep(Duration::from_millis(50))?;
    }
}

fn setns_total(text: &str) -> f64 {
    agent::sample(text, "netns_monitor_transitions_total", &[("syscall", "setns")])
}

fn lost_total(text: &str) -> f64 {
    agent::sample(text, "netns_monitor_events_lost_total", &[])
}

pub fn setns(ctx: &mut Ctx) -> anyhow::Result<()> {
    let rounds = ctx.rounds(5);
    let seconds = ctx.seconds(3.0);
    let (a, b) = (anonymous_netns()?, anonymous_netns()?);
    let (mut with, mut without, mut lost, mut generated, mut delivered) = (Vec::new(), Vec::new(), 0.0, 0.0, 0.0);
    let (mut wall_with, mut wall_without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for with_agent in order {
            fixture::check()?;
            if !with_agent {
                let (_, rate, wall) = setns_storm(&a, &b, seconds)?;
                without.push(rate);
                wall_without.push(wall);
                continue;
            }
            let agent = Agent::start(&ctx.binary, Duration::from_secs(120))?;
            let before = agent.metrics()?;
            let (calls, rate, wall) = setns_storm(&a, &b, seconds)?;
            wall_with.push(wall);
            let got = settle(&agent, setns_total(&before), calls as f64, setns_total)?;
            let after = agent.metrics()?;
            agent.stop()?;
            with.push(rate);
            generated += calls as f64;
            delivered += got;
            lost += lost_total(&after) - lost_total(&before);
        }
        eprintln!(
            "[bench]   round {}/{rounds}: none {:.0}/s, agent {:.0}/s; lost so far {lost}",
            round + 1,
            without.last().unwrap(),
            with.last().unwrap()
        );
    }
    let (w, n) = (median(&with), median(&without));
    ctx.report.push(
        Row::new(
            "setns-storm",
            format!(
                "setns() between two network namespaces, back and forth, one thread pinned to CPU 0 for {seconds} s; \
                 calls per second of the thread's CPU time with the agent consuming the events (on the other \
                 core) versus no programs; median of {rounds} interleaved runs"
            ),
            "calls/s",
            w,
        )
        .baseline(n)
        .samples(&with, &without)
        .note(format!(
            "wall-clock rates {:.0} vs {:.0}/s; {generated:.0} calls traced, {delivered:.0} counted by the agent",
            median(&wall_with),
            median(&wall_without)
        ))
        .extra("wall_rate_with", wall_with.clone())
        .extra("wall_rate_without", wall_without.clone())
        .analysis(format!(
            "Ratio only (no target). With the agent each call runs sys_enter_setns (stores the caller's \
             namespaces in a per-thread hash) and sys_exit_setns (reads them again, reserves and submits a \
             168-byte ring buffer record), plus the traced-syscall slow path; {:.0} ns per call more than \
             without.",
            1e9 / w - 1e9 / n
        )),
    );
    ctx.report.push(
        Row::new(
            "setns-storm-lost",
            "Events the kernel dropped (ring buffer full) during the setns storms, from the agent's \
             netns_monitor_events_lost_total, summed over all runs",
            "events",
            lost,
        )
        .target(Target::Max(0.0))
        .reps(rounds)
        .note(format!("{generated:.0} events generated, 1 MiB ring buffer")),
    );
    Ok(())
}

/// unshare(CLONE_NEWNET) on fresh threads that exit at once, from one worker per core, for `seconds`;
/// returns the count and the rate.
fn unshare_storm(seconds: f64) -> anyhow::Result<(u64, f64)> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
            s.spawn(move || {
                while start.elapsed().as_secs_f64() < seconds && !failed.load(Ordering::Relaxed) {
                    let ok = std::thread::spawn(|| {
                        // SAFETY: unshare affects only this thread, which exits right after.
                        unsafe { libc::unshare(libc::CLONE_NEWNET) == 0 }
                    })
                    .join()
                    .unwrap_or(false);
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if failed.load(Ordering::Relaxed) {
        bail!("unshare(CLONE_NEWNET) failed: {}", std::io::Error::last_os_error());
    }
    let count = done.load(Ordering::Relaxed);
    Ok((count, count as f64 / start.elapsed().as_secs_f64()))
}

/// Waits until the kernel has freed the namespaces of a storm (`cleanup_net` work), so the next run does not
/// compete with it.
fn wait_for_netns_cleanup() {
    fixture::wait_until(Duration::from_secs(120), || {
        !fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| fs::read_to_string(e.path().join("stack")).is_ok_and(|s| s.contains("cleanup_net")))
    });
}

pub fn unshare(ctx: &mut Ctx) -> anyhow::Result<()> {
    let rounds = ctx.rounds(3);
    let seconds = ctx.seconds(10.0);
    let created = |text: &str| agent::sample(text, "netns_monitor_netns_created_total", &[]);
    let (mut with, mut without, mut lost, mut generated, mut seen, mut untracked) =
        (Vec::new(), Vec::new(), 0.0, 0.0, 0.0, 0.0);
    let mut catch_up = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for with_agent in order {
            fixture::check()?;
            wait_for_netns_cleanup();
            if !with_agent {
                without.push(unshare_storm(seconds)?.1);
                continue;
            }
            let agent = Agent::start(&ctx.binary, Duration::from_secs(120))?;
            let before = agent.metrics()?;
            let (count, rate) = unshare_storm(seconds)?;
            let storm_end = Instant::now();
            let got = settle(&agent, created(&before), count as f64, created)?;
            catch_up.push(storm_end.elapsed().as_secs_f64());
            let after = agent.metrics()?;
            agent.stop()?;
            with.push(rate);
            generated += count as f64;
            seen += got;
            lost += lost_total(&after) - lost_total(&before);
            let untracked_total = |t: &str| agent::sample(t, "netns_monitor_netns_untracked_total", &[]);
            untracked += untracked_total(&after) - untracked_total(&before);
        }
        eprintln!(
            "[bench]   round {}/{rounds}: none {:.0}/s, agent {:.0}/s; lost so far {lost}",
            round + 1,
            without.last().unwrap(),
            with.last().unwrap()
        );
    }
    wait_for_netns_cleanup();
    let (w, n) = (median(&with), median(&without));
    ctx.report.push(
        Row::new(
            "unshare-storm",
            format!(
                "Threads doing unshare(CLONE_NEWNET) and exiting at once, one worker per core spawning them for \
                 {seconds} s: namespaces created per second with the agent consuming versus no programs \
                 (informational); median of {rounds} interleaved runs"
            ),
            "netns/s",
            w,
        )
        .baseline(n)
        .samples(&with, &without)
        .note(format!(
            "{generated:.0} created, {seen:.0} seen by the agent, {untracked:.0} gone before it could open them \
             (untracked); it caught up {:.1} s after the storm (median)",
            median(&catch_up)
        ))
        .extra("catch_up_seconds", catch_up.clone()),
    );
    ctx.report.push(
        Row::new(
            "unshare-storm-lost",
            "Events the kernel dropped during the unshare storms (netns_monitor_events_lost_total), summed",
            "events",
            lost,
        )
        .target(Target::Max(0.0))
        .reps(rounds)
        .note(format!("{generated:.0} unshare calls, each a transition and a netns-created event")),
    );
    Ok(())
}
