//! The transition programs on this kernel, on each hook tier it has: load them (timing the verifier per program),
//! then setns, unshare, clone and clone3 each give exactly their event with the inodes `/proc` shows before and
//! after, a namespace made and dropped is reported created and destroyed, and 1,000 short-lived ones are each
//! reported created once and destroyed once. Tier 1 (fentry/fexit) runs under the plain check names, tier 2
//! (syscall tracepoints, forced) under the same names with `@tier2`; `hooks` says what `auto` picks here.

use std::{fs::File, os::fd::AsRawFd as _, path::Path, time::Duration};

use netns_monitor::{
    bpf::{HookChoice, LoadOptions, Probes, Tier},
    inventory::{Inventory, ScanOptions},
    lifecycle::{End, Tracker},
    trace::{
        event::{Event, EventKind, NsType, Syscall},
        stream::EventStream,
    },
};
use netns_monitor_common::ns::CLONE_NEWNET;
use netns_monitor_tests::{
    anonymous_netns, clone_and_hold, collect_until_sentinel, gettid, inode, namespaces_of, sentinel,
    transition_and_creation,
};
use nix::sched::{CloneFlags, setns, unshare};

use crate::report::{Outcome, Reporter};

const DEADLINE: Duration = Duration::from_secs(60);

/// Namespaces in the exact-lifecycle check (the number).
const LIFECYCLE_NAMESPACES: usize = 1000;

/// The checks of one tier, and the suffix its names carry.
const CHECKS: [&str; 8] = ["load", "setns", "unshare", "clone", "clone3", "netns-lifecycle", "lifecycle-1000", "cost"];

pub fn run(report: &mut Reporter, binary: &Path, expect_tier1: bool) {
    // What `auto` picks here decides which tiers this kernel has: tier 2 always, tier 1 where it is accepted.
    let picked = Probes::load(&LoadOptions { filter_pid: Some(std::process::id()), ..LoadOptions::default() })
        .map(|probes| probes.hooks.clone());
    let tier1 = matches!(&picked, Ok(hooks) if hooks.tier == Tier::Fentry);
    report.check("hooks", || match picked {
        Ok(hooks) => match (hooks.tier, hooks.fallback) {
            (Tier::Fentry, _) => Outcome::Pass("auto picks tier 1 (fentry/fexit)".into()),
            (Tier::Tracepoint, reason) if expect_tier1 => {
                Outcome::Fail(format!("auto fell back to tier 2 on a kernel that allows fentry: {reason:?}"))
            }
            (Tier::Tracepoint, reason) => Outcome::Degraded(format!(
                "this kernel refuses tier 1, so auto picks tier 2 (syscall tracepoints) and only the @tier2 checks \
                 run: {}",
                reason.unwrap_or_default()
            )),
        },
        Err(err) => Outcome::Fail(netns_monitor::bpf::error_chain(&err)),
    });
    if tier1 {
        tier(report, binary, HookChoice::Fentry, "");
    }
    tier(report, binary, HookChoice::Tracepoint, "@tier2");
}

fn tier(report: &mut Reporter, binary: &Path, hooks: HookChoice, suffix: &str) {
    let name = |check: &str| format!("{check}{suffix}");
    if !CHECKS.iter().any(|check| report.wanted(&name(check))) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut loaded = None;
    report.check(&name("load"), || {
        let options = LoadOptions { filter_pid: Some(std::process::id()), hooks, ..LoadOptions::default() };
        let mut probes = Probes::load(&options).unwrap_or_else(|e| panic!("{}", netns_monitor::bpf::error_chain(&e)));
        let times: Vec<String> = probes
            .verified
            .iter()
            .map(|v| match v.instructions {
                Some(n) => format!("{} {}ms/{n} insns", v.program, v.took.as_millis()),
                None => format!("{} {}ms", v.program, v.took.as_millis()),
            })
            .collect();
        let total: Duration = probes.verified.iter().map(|v| v.took).sum();
        let stream = runtime.block_on(async { probes.events() }).expect("event stream");
        let tier = probes.hooks.tier;
        let destruction = probes.hooks.destruction;
        let not_probed = probes.hooks.destruction_fallback.clone();
        loaded = Some((probes, stream));
        let verified = format!(
            "tier {} verified in {} ms: {}; destruction: {}",
            tier.number(),
            total.as_millis(),
            times.join(", "),
            destruction.hook()
        );
        match not_probed {
            // Every kernel of the matrix has fqdir_work_fn: a tier 2 without its probe is a finding.
            Some(reason) => Outcome::Degraded(format!("{verified}: the kernel probe is not used: {reason}")),
            None => Outcome::Pass(verified),
        }
    });
    let Some((probes, mut stream)) = loaded else {
        for check in &CHECKS[1..] {
            report.check(&name(check), || Outcome::Fail("the programs did not load".into()));
        }
        return;
    };
    report.check(&name("setns"), || runtime.block_on(setns_check(&mut stream)));
    report.check(&name("unshare"), || runtime.block_on(unshare_check(&mut stream)));
    report.check(&name("clone"), || runtime.block_on(clone_check(&mut stream, false)));
    report.check(&name("clone3"), || runtime.block_on(clone_check(&mut stream, true)));
    report.check(&name("netns-lifecycle"), || runtime.block_on(lifecycle_check(&mut stream, &probes)));
    drop((probes, stream));
    report.check(&name("lifecycle-1000"), || exact_lifecycle(binary, hooks));
    report.check(&name("cost"), || crate::cost::check(hooks));
}

/// 1,000 short-lived namespaces through `netns-monitor trace --json`: each created once and destroyed once. On
/// tier 2 without nsfs file handles (before 6.18) the ends of those already gone are unknown: said per namespace,
/// so the check is degraded, not failed, when the counts still add up.
fn exact_lifecycle(binary: &Path, hooks: HookChoice) -> Outcome {
    let reported = netns_monitor_tests::lifecycle::run(binary, &hooks.to_string(), LIFECYCLE_NAMESPACES, DEADLINE * 5)
        .unwrap_or_else(|e| panic!("{e}"));
    let summary = reported.summary();
    if reported.exact() {
        Outcome::Pass(summary)
    } else if hooks == HookChoice::Tracepoint
        && netns_monitor::lifecycle::handle::Opener::probe().is_none()
        && reported.created == reported.made.total()
        && reported.unmatched.is_empty()
    {
        Outcome::Degraded(format!(
            "{summary}: no nsfs file handles before Linux 6.18, so tier 2 cannot see the end \
             of a namespace gone before it could be reached; each such one is reported `destroyed: unknown`"
        ))
    } else {
        Outcome::Fail(format!(
            "{summary}; unmatched (created, ended): {:?}",
            reported.unmatched.iter().take(10).collect::<Vec<_>>()
        ))
    }
}

fn of_thread(events: &[Event], tid: u32) -> Vec<&Event> {
    events.iter().filter(|e| e.tid == tid).collect()
}

fn assert_sentinel(event: &Event) {
    assert_eq!(event.kind, EventKind::Transition(Syscall::Setns), "sentinel: {event:?}");
    assert_eq!(event.errno(), Some(libc::EBADF), "the failed setns reports EBADF: {event:?}");
}

async fn setns_check(stream: &mut EventStream) -> Outcome {
    let target = anonymous_netns();
    let target_inode = inode(format!("/proc/self/fd/{}", target.as_raw_fd()));
    let (tid, fd, before, after) = std::thread::spawn(move || {
        let before = namespaces_of("thread-self");
        setns(&target, CloneFlags::CLONE_NEWNET).expect("setns");
        let after = namespaces_of("thread-self");
        sentinel();
        (gettid(), target.as_raw_fd(), before, after)
    })
    .join()
    .expect("setns thread");
    assert_eq!(after[NsType::Net.index()], target_inode);
    let seen = collect_until_sentinel(stream, tid, DEADLINE).await;
    let mine = of_thread(&seen, tid);
    assert_eq!(mine.len(), 2, "exactly the setns and the sentinel: {mine:#?}");
    let event = mine[0];
    assert_eq!(event.kind, EventKind::Transition(Syscall::Setns));
    assert_eq!((event.fd, event.flags, event.ret), (Some(fd), CLONE_NEWNET, 0));
    assert_eq!(event.old_ns, before, "all ten namespaces before, as /proc/thread-self/ns shows");
    assert_eq!(event.new_ns, after, "all ten namespaces after");
    assert_eq!(event.changed().collect::<Vec<_>>(), vec![NsType::Net]);
    assert_sentinel(mine[1]);
    let net = NsType::Net.index();
    Outcome::Pass(format!("net:[{}] -> net:[{}], failed setns with EBADF", before[net], after[net]))
}

async fn unshare_check(stream: &mut EventStream) -> Outcome {
    let (tid, before, after) = std::thread::spawn(|| {
        let before = namespaces_of("thread-self");
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS).expect("unshare");
        let after = namespaces_of("thread-self");
        sentinel();
        (gettid(), before, after)
    })
    .join()
    .expect("unshare thread");
    let seen = collect_until_sentinel(stream, tid, DEADLINE).await;
    let mine = of_thread(&seen, tid);
    assert_eq!(mine.len(), 3, "unshare, netns created, sentinel: {mine:#?}");
    // Tier 1 reports the creation from copy_net_ns, inside the call; tier 2 after it.
    let (call, created) = transition_and_creation(&mine[..2]);
    assert_eq!(call.kind, EventKind::Transition(Syscall::Unshare));
    assert_eq!(call.old_ns, before);
    assert_eq!(call.new_ns, after);
    assert_eq!(call.changed().collect::<Vec<_>>(), vec![NsType::Net, NsType::Uts]);
    assert_eq!(created.ns(NsType::Net), (0, after[NsType::Net.index()]));
    assert_sentinel(mine[2]);
    Outcome::Pass(format!("net and uts changed, created net:[{}]", after[NsType::Net.index()]))
}

async fn clone_check(stream: &mut EventStream, clone3: bool) -> Outcome {
    let (tid, before, child, child_ns) = std::thread::spawn(move || {
        let before = namespaces_of("thread-self");
        let (child, child_ns) = clone_and_hold(clone3, CLONE_NEWNET);
        sentinel();
        (gettid(), before, child, child_ns)
    })
    .join()
    .expect("clone thread");
    let seen = collect_until_sentinel(stream, tid, DEADLINE).await;
    let mine = of_thread(&seen, tid);
    assert_eq!(mine.len(), 3, "clone, netns created, sentinel: {mine:#?}");
    let syscall = if clone3 { Syscall::Clone3 } else { Syscall::Clone };
    let (call, created) = transition_and_creation(&mine[..2]);
    assert_eq!(call.kind, EventKind::Transition(syscall));
    assert_eq!(call.ret, i64::from(child), "ret is the child's pid");
    assert_eq!(call.child, Some((child, child)));
    assert_eq!(call.old_ns, before);
    assert_eq!(call.new_ns, child_ns, "the child's namespaces, as /proc/CHILD/ns shows");
    assert_eq!(created.ns(NsType::Net).1, child_ns[NsType::Net.index()]);
    assert_sentinel(mine[2]);
    // The end of its namespace is no call of the child's (on tier 1 it comes from cleanup_net's worker, whatever
    // task that ran in), so ends do not count.
    assert!(seen.iter().all(|e| e.pid != child || e.is_end()), "no event from the child itself: {seen:#?}");
    Outcome::Pass(format!("child {child} in net:[{}]", child_ns[NsType::Net.index()]))
}

/// A namespace held only by an fd, then dropped: tier 1 reports its end from the kernel, tier 2 from the
/// tracker (its netns id's RTM_DELNSID).
async fn lifecycle_check(stream: &mut EventStream, probes: &Probes) -> Outcome {
    let tier = probes.hooks.tier;
    let inventory = Inventory::scan(&ScanOptions::default()).expect("inventory");
    let mut tracker = Tracker::start(&inventory).await.expect("lifecycle tracker");
    let (tid, holder) = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
        let holder = File::open("/proc/thread-self/ns/net").expect("open own netns");
        sentinel();
        (gettid(), holder)
    })
    .join()
    .expect("unshare thread");
    let anonymous = inode(format!("/proc/self/fd/{}", holder.as_raw_fd()));
    let seen = collect_until_sentinel(stream, tid, DEADLINE).await;
    let created = seen.iter().find(|e| e.kind == EventKind::NetnsCreated && e.ns(NsType::Net).1 == anonymous);
    let Some(created) = created else { return Outcome::Fail(format!("no creation of net:[{anonymous}]: {seen:#?}")) };
    let cookie = created.net_cookie;
    // As the agent does on both tiers (its netns ids serve link notifications).
    tracker
        .track_created(anonymous, cookie, std::process::id(), tid, || Inventory::scan(&ScanOptions { fds: true }).ok())
        .await;
    drop(holder);
    let closed = std::time::Instant::now();
    let destruction = probes.hooks.destruction;
    let destroyed = tokio::time::timeout(DEADLINE, async {
        let mut how = Vec::new();
        if probes.hooks.reports_destruction() {
            // The last reference goes in close (through netns_put, where __put_net is inlined: the reason tier 1's
            // hook is netdev_exit); the record comes from cleanup_net's worker a grace period later.
            netns_monitor_tests::wait_for(stream, DEADLINE, |e| {
                e.kind == EventKind::NetnsDestroyed && e.ns(NsType::Net).0 == anonymous
            })
            .await;
            how.push(format!("{}, {} ms after the close", destruction.hook(), closed.elapsed().as_millis()));
        }
        // Tier 2's userspace path too, whether or not its kernel probe reports: the tracker here was not told
        // that the kernel does (the path a kernel without the probe's symbol takes).
        if tier == Tier::Tracepoint {
            loop {
                match tracker.next_end().await {
                    Some(End::Destroyed(inode)) if inode == anonymous => break,
                    Some(_) => {}
                    None => return None,
                }
            }
            how.push("RTM_DELNSID".to_owned());
        }
        Some(how.join("; "))
    })
    .await;
    let id = if cookie == 0 { String::new() } else { format!(", ns_id {cookie}") };
    match destroyed {
        Ok(Some(how)) => Outcome::Pass(format!("net:[{anonymous}]{id} destroyed ({how})")),
        Ok(None) => Outcome::Fail("the netlink connection closed".into()),
        Err(_) => Outcome::Fail(format!(
            "no destruction of net:[{anonymous}] within {DEADLINE:?} (kernel counters {:?}; namespace still open \
             somewhere: {})",
            probes.counters(),
            Inventory::scan(&ScanOptions { fds: true }).ok().is_some_and(|inv| inv.get(anonymous).is_some())
        )),
    }
}
