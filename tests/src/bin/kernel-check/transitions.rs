//! The transition programs on this kernel: load them (timing the verifier per program), then setns, unshare,
//! clone and clone3 each give exactly their event with the inodes `/proc` shows before and after, and a
//! namespace made and dropped is reported created and destroyed.

use std::{fs::File, os::fd::AsRawFd as _, time::Duration};

use netns_monitor::{
    bpf::{LoadOptions, Probes},
    inventory::{Inventory, ScanOptions},
    lifecycle::Tracker,
    trace::{
        event::{Event, EventKind, NsType, Syscall},
        stream::EventStream,
    },
};
use netns_monitor_common::ns::CLONE_NEWNET;
use netns_monitor_tests::{
    anonymous_netns, clone_and_hold, collect_until_sentinel, gettid, inode, namespaces_of, sentinel,
};
use nix::sched::{CloneFlags, setns, unshare};

use crate::report::{Outcome, Reporter};

const DEADLINE: Duration = Duration::from_secs(60);

pub fn run(report: &mut Reporter) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut loaded = None;
    report.check("load", || {
        let options = LoadOptions { filter_pid: Some(std::process::id()), ..LoadOptions::default() };
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
        loaded = Some((probes, stream));
        Outcome::Pass(format!("verified in {} ms: {}", total.as_millis(), times.join(", ")))
    });
    let Some((_probes, mut stream)) = loaded else {
        for check in ["setns", "unshare", "clone", "clone3", "netns-lifecycle"] {
            report.check(check, || Outcome::Fail("the programs did not load".into()));
        }
        return;
    };
    report.check("setns", || runtime.block_on(setns_check(&mut stream)));
    report.check("unshare", || runtime.block_on(unshare_check(&mut stream)));
    report.check("clone", || runtime.block_on(clone_check(&mut stream, false)));
    report.check("clone3", || runtime.block_on(clone_check(&mut stream, true)));
    report.check("netns-lifecycle", || runtime.block_on(lifecycle_check()));
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
    assert_eq!(mine[0].kind, EventKind::Transition(Syscall::Unshare));
    assert_eq!(mine[0].old_ns, before);
    assert_eq!(mine[0].new_ns, after);
    assert_eq!(mine[0].changed().collect::<Vec<_>>(), vec![NsType::Net, NsType::Uts]);
    assert_eq!(mine[1].kind, EventKind::NetnsCreated);
    assert_eq!(mine[1].ns(NsType::Net), (0, after[NsType::Net.index()]));
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
    assert_eq!(mine[0].kind, EventKind::Transition(syscall));
    assert_eq!(mine[0].ret, i64::from(child), "ret is the child's pid");
    assert_eq!(mine[0].child, Some((child, child)));
    assert_eq!(mine[0].old_ns, before);
    assert_eq!(mine[0].new_ns, child_ns, "the child's namespaces, as /proc/CHILD/ns shows");
    assert_eq!(mine[1].kind, EventKind::NetnsCreated);
    assert_eq!(mine[1].ns(NsType::Net).1, child_ns[NsType::Net.index()]);
    assert_sentinel(mine[2]);
    assert!(seen.iter().all(|e| e.pid != child), "no event from the child itself");
    Outcome::Pass(format!("child {child} in net:[{}]", child_ns[NsType::Net.index()]))
}

async fn lifecycle_check() -> Outcome {
    let inventory = Inventory::scan(&ScanOptions::default()).expect("inventory");
    let mut tracker = Tracker::start(&inventory).await.expect("lifecycle tracker");
    let (tid, holder) = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
        (gettid(), File::open("/proc/thread-self/ns/net").expect("open own netns"))
    })
    .join()
    .expect("unshare thread");
    let anonymous = inode(format!("/proc/self/fd/{}", holder.as_raw_fd()));
    tracker
        .track_created(anonymous, std::process::id(), tid, || Inventory::scan(&ScanOptions { fds: true }).ok())
        .await;
    drop(holder);
    let destroyed = tokio::time::timeout(DEADLINE, async {
        while let Some(inode) = tracker.next_destroyed().await {
            if inode == anonymous {
                return true;
            }
        }
        false
    })
    .await;
    match destroyed {
        Ok(true) => Outcome::Pass(format!("net:[{anonymous}] destroyed (RTM_DELNSID)")),
        Ok(false) => Outcome::Fail("the netlink connection closed".into()),
        Err(_) => Outcome::Fail(format!("no destruction of net:[{anonymous}] within {DEADLINE:?}")),
    }
}
