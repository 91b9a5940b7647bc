//! Namespace types as indexes into the per-type inode arrays of an event, and the clone flags that create them.

/// Index of each namespace type in [`crate::event::TransitionEvent::old_ns`] / `new_ns`.
///
/// The order is the order of `/proc/PID/ns/*` as `lsns` prints it; it is part of the event ABI.
pub const NS_NET: usize = 0;
pub const NS_MNT: usize = 1;
pub const NS_PID: usize = 2;
pub const NS_PID_FOR_CHILDREN: usize = 3;
pub const NS_UTS: usize = 4;
pub const NS_IPC: usize = 5;
pub const NS_USER: usize = 6;
pub const NS_CGROUP: usize = 7;
pub const NS_TIME: usize = 8;
pub const NS_TIME_FOR_CHILDREN: usize = 9;
/// Number of namespace types tracked per event.
pub const NS_COUNT: usize = 10;

/// `CLONE_NEW*` flags from `include/uapi/linux/sched.h`.
pub const CLONE_NEWTIME: u64 = 0x0000_0080;
pub const CLONE_NEWNS: u64 = 0x0002_0000;
pub const CLONE_NEWCGROUP: u64 = 0x0200_0000;
pub const CLONE_NEWUTS: u64 = 0x0400_0000;
pub const CLONE_NEWIPC: u64 = 0x0800_0000;
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
pub const CLONE_NEWPID: u64 = 0x2000_0000;
pub const CLONE_NEWNET: u64 = 0x4000_0000;

/// Flags that create a namespace in `clone()`. `CLONE_NEWTIME` is absent: in `clone()` the low byte is the
/// exit signal, so bit 0x80 cannot ask for a time namespace there (only `unshare` and `clone3` can).
pub const CLONE_NEW_MASK_CLONE: u64 =
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;

/// Flags that create a namespace in `unshare()` and `clone3()`.
pub const CLONE_NEW_MASK: u64 = CLONE_NEW_MASK_CLONE | CLONE_NEWTIME;
