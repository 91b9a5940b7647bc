//! Shared fixtures for the privileged integration tests.
//!
//! Tests run as root against the real kernel and use the kernel's own view as the oracle (inodes from
//! `/proc/.../ns/*`). Every namespace a test makes is either anonymous (held by an fd, gone when the fd is
//! closed) or uniquely named and removed by a guard's `Drop`, so a failing test leaves nothing behind.

pub mod agent;
pub mod containers;
pub mod lifecycle;
pub mod monitoring;
pub mod netns;
pub mod reliability;

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use netns_monitor::trace::{event::Event, stream::EventStream};
use nix::sched::{CloneFlags, setns, unshare};

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

/// A named network namespace made with iproute2 (the independent tool), deleted on drop even if the test
/// fails.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        run_ok(std::process::Command::new("ip").args(["netns", "add", &name]));
        Self { name }
    }

    pub fn path(&self) -> std::path::PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    pub fn inode(&self) -> u32 {
        inode(self.path())
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Runs a command and panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every namespace inode of `/proc/<who>/ns/*` (e.g. `thread-self`, `self`, a pid), indexed like the event's
/// arrays.
pub fn namespaces_of(who: &str) -> [u32; netns_monitor_common::ns::NS_COUNT] {
    netns_monitor::trace::event::NsType::ALL.map(|ty| inode(format!("/proc/{who}/ns/{}", ty.proc_name())))
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// On a new thread, calls setns `count` times alternating between `a` and `b`; returns the thread's id.
pub fn setns_burst(a: File, b: File, count: u64) -> u32 {
    std::thread::spawn(move || {
        for i in 0..count {
            setns(if i.is_multiple_of(2) { &a } else { &b }, CloneFlags::CLONE_NEWNET).expect("setns");
        }
        gettid()
    })
    .join()
    .expect("burst thread")
}

/// Calls `setns(-1, CLONE_NEWNET)` on the calling thread: it fails with EBADF and its event marks that every
/// event this thread caused before has been submitted to the ring buffer (a thread's events are reserved in
/// order). Returns the thread id.
pub fn sentinel() -> u32 {
    // SAFETY: setns with an invalid fd only returns EBADF; no memory is involved.
    let ret = unsafe { libc::setns(-1, libc::CLONE_NEWNET) };
    assert_eq!(ret, -1, "setns(-1) must fail");
    gettid()
}

/// Collects every event until the sentinel of thread `tid` (included) arrives; panics after `deadline`.
pub async fn collect_until_sentinel(stream: &mut EventStream, tid: u32, deadline: Duration) -> Vec<Event> {
    let mut seen = Vec::new();
    let done = tokio::time::timeout(deadline, async {
        let mut batch = Vec::new();
        loop {
            stream.next_batch(&mut batch).await.expect("read ring buffer");
            for event in batch.drain(..) {
                let is_sentinel = event.tid == tid && event.fd == Some(-1) && event.ret == -i64::from(libc::EBADF);
                seen.push(event);
                if is_sentinel {
                    return;
                }
            }
        }
    })
    .await;
    if done.is_err() {
        panic!("no sentinel from tid {tid} within {deadline:?}; saw {} events: {seen:#?}", seen.len());
    }
    seen
}

/// The CLI under test ([`netns::cli_path`]) as an async command, with logging at info (tests wait for log
/// lines) and killed if the test drops it.
pub fn cli_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(netns::cli_path());
    cmd.env("RUST_LOG", "info").kill_on_drop(true);
    cmd
}

/// A running `netns-monitor trace` whose programs are attached.
pub struct TraceProcess {
    pub child: tokio::process::Child,
    pub stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
}

impl TraceProcess {
    /// Starts `netns-monitor trace ARGS` and waits (up to 30 s) until it reports its programs attached.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_verb("trace", args, "programs attached").await
    }

    /// Starts `netns-monitor VERB ARGS` and waits (up to 30 s) for a log line containing `marker`.
    pub async fn start_verb(verb: &str, args: &[&str], marker: &str) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = cli_command()
            .arg(verb)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn netns-monitor trace");
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stderr.next_line().await.expect("read trace stderr") {
                let attached = line.contains(marker);
                log.push(line);
                if attached {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(ready, Ok(true)), "{verb} {args:?} did not get ready; stderr: {log:#?}");
        Self { child, stdout, stderr }
    }

    /// Reads stdout lines until the process exits (it must, within `deadline`); returns them and the status.
    pub async fn finish(mut self, deadline: Duration) -> (Vec<String>, std::process::ExitStatus) {
        let mut lines = Vec::new();
        let read = tokio::time::timeout(deadline, async {
            while let Some(line) = self.stdout.next_line().await.expect("read trace stdout") {
                lines.push(line);
            }
            self.child.wait().await.expect("wait for trace")
        })
        .await;
        match read {
            Ok(status) => (lines, status),
            Err(_) => panic!("trace did not exit within {deadline:?}; printed so far: {lines:#?}"),
        }
    }
}

/// The transition and the creation record of one call, in whichever order the tier sends them (tier 1 reports
/// the creation from `copy_net_ns`, inside the call; tier 2 after it).
pub fn transition_and_creation<'a>(pair: &[&'a Event]) -> (&'a Event, &'a Event) {
    let (call, created) = match pair {
        [a, b] if a.kind == netns_monitor::trace::event::EventKind::NetnsCreated => (*b, *a),
        [a, b] => (*a, *b),
        other => panic!("expected two events: {other:#?}"),
    };
    assert_eq!(created.kind, netns_monitor::trace::event::EventKind::NetnsCreated, "{pair:#?}");
    (call, created)
}

/// Clones like fork (same stack, copy-on-write) with `flags`; the child waits on a pipe until the parent has
/// read its /proc files, then exits. Returns (child pid, child's namespaces).
pub fn clone_and_hold(clone3: bool, flags: u64) -> (u32, [u32; netns_monitor_common::ns::NS_COUNT]) {
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two fds pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let ret = if clone3 {
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        let args = CloneArgs { flags, exit_signal: libc::SIGCHLD as u64, ..CloneArgs::default() };
        // SAFETY: clone3 with no stack behaves like fork; `args` is a valid clone_args of the size passed.
        unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) }
    } else {
        // SAFETY: clone with newsp 0 behaves like fork (x86_64 order: flags, newsp, parent_tid, child_tid, tls).
        unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0) }
    };
    assert!(ret >= 0, "clone failed: {}", std::io::Error::last_os_error());
    if ret == 0 {
        // Child of a multi-threaded process: only async-signal-safe calls until _exit.
        let mut byte = 0u8;
        // SAFETY: plain read/close/_exit on fds this process owns.
        unsafe {
            libc::close(pipe[1]);
            libc::read(pipe[0], (&raw mut byte).cast(), 1);
            libc::_exit(0);
        }
    }
    let child = ret as u32;
    let namespaces = namespaces_of(&child.to_string());
    // SAFETY: closing our own pipe fds releases the child (its read returns 0); waitpid reaps it.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
        libc::waitpid(child as i32, std::ptr::null_mut(), 0);
    }
    (child, namespaces)
}
