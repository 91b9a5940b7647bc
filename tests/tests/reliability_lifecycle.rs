//! Lost netns id notifications: when namespaces die faster than the agent reads `RTM_DELNSID` (the socket's
//! buffer overflows and the kernel drops notifications), the tracker still reports every tracked namespace's
//! destruction, exactly once, by asking the kernel which ids are left. Without that, whatever the agent holds
//! for those namespaces (pins, counters, series) would never be cleaned up.

use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use netns_monitor::{
    inventory::Inventory,
    lifecycle::{End, Tracker},
};
use netns_monitor_tests::{anonymous_netns, require_root};

const NAMESPACES: usize = 300;

/// RTNLGRP_NSID and RTM_DELNSID (linux/rtnetlink.h).
const RTNLGRP_NSID: libc::c_int = 28;
const RTM_DELNSID: u16 = 89;

/// A blocking rtnetlink socket with a large buffer, subscribed to netns id notifications: the test's own
/// witness of the deaths, read without giving the tracker's task a chance to run.
fn witness() -> OwnedFd {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    assert!(fd >= 0, "netlink socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid (the kernel picks the port id).
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: bind with a pointer to a live sockaddr_nl and its size.
    let bound =
        unsafe { libc::bind(fd, (&raw const address).cast(), size_of::<libc::sockaddr_nl>() as libc::socklen_t) };
    assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
    // After bind, which resets the groups below 32 to its (empty) nl_groups.
    let (size, group): (libc::c_int, libc::c_int) = (16 << 20, RTNLGRP_NSID);
    // SAFETY: setsockopt with pointers to live c_ints and their sizes.
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&raw const size).cast(), 4);
        let joined =
            libc::setsockopt(fd, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, (&raw const group).cast(), 4);
        assert_eq!(joined, 0, "join RTNLGRP_NSID: {}", std::io::Error::last_os_error());
    }
    socket
}

/// Blocks until `count` RTM_DELNSID notifications arrived on `socket` (or fails after a deadline).
fn wait_deletions(socket: &OwnedFd, count: usize) {
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: setsockopt with a pointer to a live timeval and its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let (start, mut seen, mut buffer) = (Instant::now(), 0, vec![0u8; 1 << 16]);
    while seen < count {
        assert!(start.elapsed() < Duration::from_secs(60), "only {seen} of {count} namespaces died");
        // SAFETY: recv into a live buffer of the given length.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if n <= 0 {
            continue;
        }
        let mut at = 0;
        while at + 16 <= n as usize {
            let length = u32::from_ne_bytes(buffer[at..at + 4].try_into().unwrap()) as usize;
            if u16::from_ne_bytes(buffer[at + 4..at + 6].try_into().unwrap()) == RTM_DELNSID {
                seen += 1;
            }
            at += length.max(16).next_multiple_of(4);
        }
    }
}

// A single-threaded runtime: while the test blocks in `wait_deletions`, the tracker's netlink task cannot read,
// so its (tiny) socket buffer overflows for real.
#[tokio::test]
async fn destructions_are_reported_even_when_notifications_are_lost() {
    require_root();
    let socket = witness();
    // The smallest buffer the kernel allows: a few notifications fill it.
    let mut tracker = Tracker::start_with(&Inventory::default(), 1).await.expect("tracker");
    let mut tracked = BTreeSet::new();
    let mut files = Vec::new();
    for _ in 0..NAMESPACES {
        let file = anonymous_netns();
        let inode = netns_monitor_tests::inode(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)));
        let file = tracker.track_file(inode, file).await.expect("the file comes back");
        assert!(tracker.nsid_of(inode).is_some(), "namespace {inode} got an id");
        tracked.insert(inode);
        files.push(file);
    }
    // All die at once, while the tracker cannot read its notifications.
    drop(files);
    wait_deletions(&socket, NAMESPACES);
    let mut reported = BTreeSet::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while reported.len() < NAMESPACES {
            let Some(End::Destroyed(inode)) = tracker.next_end().await else { panic!("notifications go on") };
            assert!(tracked.contains(&inode), "{inode} was not tracked");
            assert!(reported.insert(inode), "{inode} reported twice");
        }
    })
    .await;
    assert!(all.is_ok(), "only {} of {NAMESPACES} destructions were reported", reported.len());
    assert!(tracker.resyncs() > 0, "the test must overflow the notification buffer to mean anything");
    assert_eq!(tracker.tracked(), 0);
    eprintln!("{NAMESPACES} destructions reported after {} resyncs", tracker.resyncs());
}
