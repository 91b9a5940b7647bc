//! The record the transition programs push through the `EVENTS` ring buffer.

use crate::ns::NS_COUNT;

/// `TransitionEvent::kind`: a task called a namespace syscall (`syscall` says which).
pub const KIND_TRANSITION: u32 = 1;
/// `TransitionEvent::kind`: a network namespace came into existence (`new_ns[NS_NET]`).
pub const KIND_NETNS_CREATED: u32 = 2;
/// `TransitionEvent::kind`: a network namespace was destroyed (`old_ns[NS_NET]`).
pub const KIND_NETNS_DESTROYED: u32 = 3;

/// `TransitionEvent::syscall` values.
pub const SYSCALL_NONE: u32 = 0;
pub const SYSCALL_SETNS: u32 = 1;
pub const SYSCALL_UNSHARE: u32 = 2;
pub const SYSCALL_CLONE: u32 = 3;
pub const SYSCALL_CLONE3: u32 = 4;

/// Length of `task_struct.comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// One namespace transition (or netns lifecycle change) as seen by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionEvent {
    /// `bpf_ktime_get_boot_ns()` when the syscall returned (CLOCK_BOOTTIME).
    pub ts_boot_ns: u64,
    /// `nstype` for setns, the `CLONE_*` flags for unshare/clone/clone3.
    pub flags: u64,
    /// The syscall's return value: 0 or a negative errno; the child's pid (in the caller's pid namespace) for
    /// a successful clone/clone3.
    pub ret: i64,
    /// One of the `KIND_*` constants.
    pub kind: u32,
    /// One of the `SYSCALL_*` constants.
    pub syscall: u32,
    /// Caller's process id (tgid), thread id and parent's process id, in the initial pid namespace.
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    /// Caller's uid in the initial user namespace.
    pub uid: u32,
    /// The setns file descriptor; -1 for the other syscalls.
    pub fd: i32,
    /// For clone/clone3: the child's process and thread id in the initial pid namespace, else 0.
    pub child_pid: u32,
    pub child_tid: u32,
    /// Bit `1 << NS_*` set where `old_ns` and `new_ns` differ.
    pub changed: u32,
    /// Namespace inodes before the call (of the caller) and after it (of the caller, or of the child for
    /// clone/clone3), indexed by the `NS_*` constants; 0 where the kernel has no such namespace type.
    pub old_ns: [u32; NS_COUNT],
    pub new_ns: [u32; NS_COUNT],
    /// Caller's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// The 64-bit id (`ns_common.ns_id`, Linux >= 6.18) of the network namespace a lifecycle record names (or a
    /// clone's new one), never reused while the machine runs, unlike the inode; 0 where the kernel has none.
    /// With the inode it makes the nsfs file handle that reopens the namespace without pinning it
    /// (`netns_monitor::lifecycle::handle`).
    pub net_cookie: u64,
}

impl TransitionEvent {
    /// An all-zero event, the starting point the programs fill in.
    pub const fn zeroed() -> Self {
        Self {
            ts_boot_ns: 0,
            flags: 0,
            ret: 0,
            kind: 0,
            syscall: SYSCALL_NONE,
            pid: 0,
            tid: 0,
            ppid: 0,
            uid: 0,
            fd: -1,
            child_pid: 0,
            child_tid: 0,
            changed: 0,
            old_ns: [0; NS_COUNT],
            new_ns: [0; NS_COUNT],
            comm: [0; COMM_LEN],
            net_cookie: 0,
        }
    }
}

// 3 * 8 + 10 * 4 + 2 * 40 + 16 + 8 = 168: no implicit padding anywhere.
const _: () = assert!(size_of::<TransitionEvent>() == 168);
const _: () = assert!(align_of::<TransitionEvent>() == 8);
