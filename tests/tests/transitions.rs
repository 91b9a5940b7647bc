//! Namespace transitions from the kernel: each syscall path produces exactly the expected events, with inodes
//! equal to what /proc shows before and after.

use std::{fs::File, os::fd::AsRawFd as _, time::Duration};

use netns_monitor::{
    bpf::{LoadOptions, Probes},
    inventory::{Inventory, ScanOptions},
    lifecycle::{End, Tracker},
    trace::event::{Event, EventKind, NsType, Syscall},
};
use netns_monitor_common::ns::{CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUTS};
use netns_monitor_tests::{
    NamedNetns, clone_and_hold, collect_until_sentinel, gettid, inode, namespaces_of, require_root, sentinel,
    transition_and_creation,
};
use nix::sched::{CloneFlags, setns, unshare};

const DEADLINE: Duration = Duration::from_secs(15);

async fn probes() -> (Probes, netns_monitor::trace::stream::EventStream) {
    require_root();
    let mut probes = Probes::load(&LoadOptions::default()).expect("load and attach the programs");
    let events = probes.events().expect("event stream");
    (probes, events)
}

/// The events caused by thread `tid`.
fn of_thread(events: &[Event], tid: u32) -> Vec<&Event> {
    events.iter().filter(|e| e.tid == tid).collect()
}

fn assert_sentinel(event: &Event) {
    assert_eq!(event.kind, EventKind::Transition(Syscall::Setns));
    assert_eq!(event.fd, Some(-1));
    assert_eq!(event.errno(), Some(libc::EBADF), "failed setns reports its errno");
    assert_eq!(event.changed().count(), 0, "a failed setns changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setns_via_namespace_file_then_failed_setns() {
    let (_probes, mut events) = probes().await;
    let target = NamedNetns::new("nsm-tr");
    let path = target.path();
    let (tid, fd, before, after) = std::thread::spawn(move || {
        let file = File::open(&path).expect("open the namespace file");
        let before = namespaces_of("thread-self");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let after = namespaces_of("thread-self");
        sentinel();
        (gettid(), file.as_raw_fd(), before, after)
    })
    .join()
    .unwrap();
    assert_eq!(after[NsType::Net.index()], target.inode());

    let seen = collect_until_sentinel(&mut events, tid, DEADLINE).await;
    let mine = of_thread(&seen, tid);
    assert_eq!(mine.len(), 2, "exactly one setns and the sentinel: {mine:#?}");
    let event = mine[0];
    assert_eq!(event.kind, EventKind::Transition(Syscall::Setns));
    assert_eq!((event.fd, event.flags, event.ret), (Some(fd), CLONE_NEWNET, 0));
    assert_eq!(event.old_ns, before, "every namespace before, as /proc/thread-self/ns shows");
    assert_eq!(event.new_ns, after, "every namespace after");
    assert_eq!(event.changed().collect::<Vec<_>>(), vec![NsType::Net]);
    assert_sentinel(mine[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshare_net_and_uts() {
    let (_probes, mut events) = probes().await;
    let (tid, before, after) = std::thread::spawn(|| {
        let before = namespaces_of("thread-self");
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS).expect("unshare");
        let after = namespaces_of("thread-self");
        sentinel();
        (gettid(), before, after)
    })
    .join()
    .unwrap();

    let seen = collect_until_sentinel(&mut events, tid, DEADLINE).await;
    let mine = of_thread(&seen, tid);
    assert_eq!(mine.len(), 3, "unshare, netns created, sentinel: {mine:#?}");
    // Tier 1 reports the creation from copy_net_ns, inside the call; tier 2 after it.
    let (event, created) = transition_and_creation(&mine[..2]);
    assert_eq!(event.kind, EventKind::Transition(Syscall::Unshare));
    assert_eq!((event.flags, event.ret, event.fd), (CLONE_NEWNET | CLONE_NEWUTS, 0, None));
    assert_eq!(event.old_ns, before);
    assert_eq!(event.new_ns, after);
    assert_eq!(event.changed().collect::<Vec<_>>(), vec![NsType::Net, NsType::Uts]);

    assert_eq!(created.kind, EventKind::NetnsCreated);
    assert_eq!(created.ns(NsType::Net), (0, after[NsType::Net.index()]));
    assert_sentinel(mine[2]);
}

async fn clone_test(clone3: bool) {
    let (_probes, mut events) = probes().await;
    let (tid, before, child, child_ns) = std::thread::spawn(move || {
        let before = namespaces_of("thread-self");
        let (child, child_ns) = clone_and_hold(clone3, CLONE_NEWNET);
        sentinel();
        (gettid(), before, child, child_ns)
    })
    .join()
    .unwrap();
    assert_ne!(before[NsType::Net.index()], child_ns[NsType::Net.index()]);

    let seen = collect_until_sentinel(&mut events, tid, DEADLINE).await;
    let mine = of_thread(&seen, tid);
    assert_eq!(mine.len(), 3, "clone, netns created, sentinel: {mine:#?}");
    let (event, created) = transition_and_creation(&mine[..2]);
    let syscall = if clone3 { Syscall::Clone3 } else { Syscall::Clone };
    assert_eq!(event.kind, EventKind::Transition(syscall));
    assert_eq!(event.flags & CLONE_NEWNET, CLONE_NEWNET);
    assert_eq!(event.ret, i64::from(child), "ret is the child's pid");
    assert_eq!(event.child, Some((child, child)), "the child's pid and tid");
    assert_eq!(event.old_ns, before, "the caller's namespaces before");
    assert_eq!(event.new_ns, child_ns, "the child's namespaces, as /proc/CHILD/ns shows");
    assert_eq!(event.changed().collect::<Vec<_>>(), vec![NsType::Net]);
    assert_eq!(created.kind, EventKind::NetnsCreated);
    assert_eq!(created.ns(NsType::Net).1, child_ns[NsType::Net.index()]);
    assert_sentinel(mine[2]);
    // The child's own return from clone is not a second event.
    // The end of its namespace is no call of the child's (on tier 1 it comes from cleanup_net's worker, whatever
    // task that ran in), so ends do not count.
    assert!(seen.iter().all(|e| e.pid != child || e.is_end()), "no event from the child itself: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_with_newnet_reports_the_child() {
    clone_test(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone3_with_newnet_reports_the_child() {
    clone_test(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_fork_and_spawn_produce_no_event() {
    let (_probes, mut events) = probes().await;
    let (tid, children) = std::thread::spawn(|| {
        let spawned = std::process::Command::new("true").spawn().expect("spawn true");
        let spawned_pid = spawned.id();
        let status = { spawned }.wait().expect("wait");
        assert!(status.success());
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let forked = unsafe { libc::fork() };
        if forked == 0 {
            // SAFETY: see above.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(forked, std::ptr::null_mut(), 0) };
        sentinel();
        (gettid(), [spawned_pid, forked as u32])
    })
    .join()
    .unwrap();
    let seen = collect_until_sentinel(&mut events, tid, DEADLINE).await;
    let mine = of_thread(&seen, tid);
    assert_eq!(mine.len(), 1, "only the sentinel: {mine:#?}");
    assert!(seen.iter().all(|e| !children.contains(&e.pid)), "no event from the children");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_netns_exec_and_nsenter() {
    let (_probes, mut events) = probes().await;
    let target = NamedNetns::new("nsm-ex");
    let host = namespaces_of("self");
    let ip = std::process::Command::new("ip").args(["netns", "exec", &target.name, "true"]).spawn().unwrap();
    let ip_pid = ip.id();
    assert!({ ip }.wait().unwrap().success());
    let nsenter_path = format!("--net={}", target.path().display());
    let nsenter = std::process::Command::new("nsenter").args([nsenter_path.as_str(), "true"]).spawn().unwrap();
    let nsenter_pid = nsenter.id();
    assert!({ nsenter }.wait().unwrap().success());
    let tid = std::thread::spawn(sentinel).join().unwrap();

    let seen = collect_until_sentinel(&mut events, tid, DEADLINE).await;
    let net = NsType::Net.index();
    let by_ip: Vec<&Event> = seen.iter().filter(|e| e.pid == ip_pid).collect();
    assert_eq!(by_ip.len(), 2, "ip netns exec: setns into the namespace, then unshare(CLONE_NEWNS): {by_ip:#?}");
    assert_eq!(by_ip[0].kind, EventKind::Transition(Syscall::Setns));
    assert_eq!(by_ip[0].ns(NsType::Net), (host[net], target.inode()));
    assert_eq!(by_ip[0].comm, "ip");
    assert_eq!(by_ip[1].kind, EventKind::Transition(Syscall::Unshare));
    assert_eq!(by_ip[1].flags, CLONE_NEWNS);
    assert_eq!(by_ip[1].changed().collect::<Vec<_>>(), vec![NsType::Mnt]);
    assert_eq!(by_ip[1].old_ns[NsType::Mnt.index()], host[NsType::Mnt.index()]);

    let by_nsenter: Vec<&Event> = seen.iter().filter(|e| e.pid == nsenter_pid).collect();
    assert_eq!(by_nsenter.len(), 1, "nsenter --net: one setns: {by_nsenter:#?}");
    assert_eq!(by_nsenter[0].kind, EventKind::Transition(Syscall::Setns));
    assert_eq!(by_nsenter[0].ns(NsType::Net), (host[net], target.inode()));
    assert_eq!(by_nsenter[0].ret, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_netns_is_created_and_destroyed() {
    let (_probes, mut events) = probes().await;
    let mut tracker = Tracker::start(&Inventory::scan(&ScanOptions::default()).unwrap()).await.expect("tracker");
    // A namespace no name ever points to, held only by this fd.
    let (tid, holder) = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
        let holder = File::open("/proc/thread-self/ns/net").unwrap();
        sentinel();
        (gettid(), holder)
    })
    .join()
    .unwrap();
    let anonymous = inode(format!("/proc/self/fd/{}", holder.as_raw_fd()));

    let seen = collect_until_sentinel(&mut events, tid, DEADLINE).await;
    let created: Vec<&Event> =
        of_thread(&seen, tid).into_iter().filter(|e| e.kind == EventKind::NetnsCreated).collect();
    assert_eq!(created.len(), 1, "{seen:#?}");
    assert_eq!(created[0].ns(NsType::Net), (0, anonymous));
    let pid = std::process::id();
    let cookie = created[0].net_cookie;
    tracker.track_created(anonymous, cookie, pid, tid, || Inventory::scan(&ScanOptions { fds: true }).ok()).await;
    let before = tracker.tracked();

    drop(holder);
    let destroyed = tokio::time::timeout(DEADLINE, async {
        loop {
            match tracker.next_end().await {
                Some(End::Destroyed(inode)) if inode == anonymous => return,
                Some(_) => continue, // another test's namespace
                None => panic!("netlink connection closed"),
            }
        }
    })
    .await;
    assert!(destroyed.is_ok(), "no destruction reported for {anonymous} within {DEADLINE:?}");
    assert!(tracker.tracked() < before, "the destroyed namespace is no longer tracked");
}
