//! The first probe end to end: a real setns into a namespace this test created produces one event whose fields
//! match what the kernel shows in /proc before and after.

use std::{os::fd::AsRawFd as _, time::Duration};

use netns_monitor::{
    bpf::{LoadOptions, Probes},
    trace::event::{EventKind, NsType, Syscall},
};
use netns_monitor_common::ns::CLONE_NEWNET;
use netns_monitor_tests::{anonymous_netns, inode, require_root, wait_for};
use nix::sched::{CloneFlags, setns};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setns_event_matches_proc_before_and_after() {
    require_root();
    let mut probes = Probes::load(&LoadOptions::default()).expect("load and attach the programs");
    let mut events = probes.events().expect("event stream");

    let target = anonymous_netns();
    let fd = target.as_raw_fd();
    let target_inode = inode(format!("/proc/self/fd/{fd}"));
    let (pid, tid, before, after) = std::thread::spawn(move || {
        let before = inode("/proc/thread-self/ns/net");
        setns(&target, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
        let after = inode("/proc/thread-self/ns/net");
        (nix::unistd::getpid().as_raw() as u32, nix::unistd::gettid().as_raw() as u32, before, after)
    })
    .join()
    .expect("setns thread");
    assert_eq!(after, target_inode, "oracle: the thread is now in the namespace it opened");
    assert_ne!(before, after);

    let event = wait_for(&mut events, Duration::from_secs(10), |e| {
        e.tid == tid && e.kind == EventKind::Transition(Syscall::Setns)
    })
    .await;
    assert_eq!(event.pid, pid, "pid (tgid) of the caller");
    assert_eq!(event.fd, Some(fd), "the fd passed to setns");
    assert_eq!(event.flags, CLONE_NEWNET, "nstype passed to setns");
    assert_eq!(event.ret, 0, "setns succeeded");
    assert_eq!(event.ns(NsType::Net), (before, after), "net inode before and after, as /proc shows");
    assert_eq!(event.changed().collect::<Vec<_>>(), vec![NsType::Net], "only the net namespace changed");
    assert_eq!(event.ppid, std::os::unix::process::parent_id(), "parent of the test process");
    assert!(!event.comm.is_empty());
}
