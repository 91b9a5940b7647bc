//! Shared fixtures for the privileged integration tests.
//!
//! Tests run as root against the real kernel and use the kernel's own view as the oracle (inodes from
//! `/proc/.../ns/*`). Every namespace a test makes is either anonymous (held by an fd, gone when the fd is
//! closed) or uniquely named and removed by a guard's `Drop`, so a failing test leaves nothing behind.

pub mod netns;

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use netns_monitor::trace::{event::Event, stream::EventStream};
use nix::sched::{CloneFlags, unshare};

/// Panics with an explanation unless running as root: privileged tests must never silently skip.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test loads eBPF programs and creates namespaces, so it must run as root \
             (CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN); run it with `cargo xtask test` as root"
        );
    }
}

/// The nsfs inode of a namespace file such as `/proc/thread-self/ns/net`.
pub fn inode(path: impl AsRef<Path>) -> u32 {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    u32::try_from(meta.ino()).expect("nsfs inodes fit in 32 bits")
}

/// A name no other test (or earlier run) uses: `nsm-t<pid>-<n>`, short enough for interface names too.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}-{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Creates an anonymous network namespace and returns an fd that holds it; it disappears when the fd closes.
pub fn anonymous_netns() -> File {
    // unshare() moves the calling thread; do it on a throwaway thread so the test's threads stay put.
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        File::open("/proc/thread-self/ns/net").expect("open own netns")
    })
    .join()
    .expect("netns thread panicked")
}

/// Waits up to `deadline` for the first event matching `matches`; panics listing what was seen otherwise.
pub async fn wait_for(stream: &mut EventStream, deadline: Duration, mut matches: impl FnMut(&Event) -> bool) -> Event {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(deadline, async {
        let mut batch = Vec::new();
        loop {
            stream.next_batch(&mut batch).await.expect("read ring buffer");
            for event in batch.drain(..) {
                if matches(&event) {
                    return event;
                }
                seen.push(event);
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no matching event within {deadline:?}; saw {} others: {seen:#?}", seen.len()))
}
