//! Walks a `task_struct` to the inodes of its namespaces.
//!
//! Rust eBPF has no CO-RE, so every field offset comes from the `OFFSETS` global, which userspace fills from
//! `/sys/kernel/btf/vmlinux` before loading (`netns_monitor::bpf::offsets`). The paths, as on Linux 6.18:
//! - net, mnt, uts, ipc, cgroup, pid_for_children, time, time_for_children:
//!   `task->nsproxy-><member>->ns.inum`
//! - pid: `task->thread_pid->numbers[thread_pid->level].ns->ns.inum` (what `task_active_pid_ns` returns)
//! - user: `task->real_cred->user_ns->ns.inum` (what `/proc/PID/ns/user` shows)
//!
//! A read that fails leaves that inode 0 and is counted in `COUNTER_READ_ERRORS` (see [`crate::kernel`]).

use core::ptr;

use aya_ebpf::helpers::bpf_get_current_task;
use netns_monitor_common::{
    ns::{NS_COUNT, NS_NET, NS_PID, NS_USER},
    offsets::UNAVAILABLE,
};

use crate::{
    kernel::{Reads, read},
    offset,
};

/// The task the program runs in.
#[inline(always)]
pub fn current() -> *const u8 {
    // SAFETY: the helper has no preconditions; it returns the current task_struct pointer.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// `task->real_parent`.
#[inline(always)]
pub fn real_parent(task: *const u8) -> *const u8 {
    read::<*const u8>(task, offset!(task_real_parent)).unwrap_or(ptr::null())
}

/// `task->tgid` (process id in the initial pid namespace).
#[inline(always)]
pub fn tgid(task: *const u8) -> u32 {
    read::<i32>(task, offset!(task_tgid)).map_or(0, |v| v as u32)
}

/// `task->pid` (thread id in the initial pid namespace).
#[inline(always)]
pub fn tid(task: *const u8) -> u32 {
    read::<i32>(task, offset!(task_pid)).map_or(0, |v| v as u32)
}

/// Fills `out` with the inode of each namespace type of `task`, 0 where it cannot be read (one read error is
/// counted for the lot).
#[inline(always)]
pub fn namespaces(task: *const u8, out: &mut [u32; NS_COUNT]) {
    let mut reads = Reads::new();
    // A task that is exiting has no nsproxy any more; everything below then reads as 0.
    let nsproxy = reads.get::<*const u8>(task, offset!(task_nsproxy));
    let mut index = 0;
    while index < NS_COUNT {
        if index != NS_PID && index != NS_USER {
            let member = reads.get::<*const u8>(nsproxy, offset!(nsproxy_member[index]));
            out[index] = reads.inum(member, index);
        }
        index += 1;
    }
    out[NS_PID] = active_pid_ns(task, &mut reads);
    let cred = reads.get::<*const u8>(task, offset!(task_real_cred));
    let user_ns = reads.get::<*const u8>(cred, offset!(cred_user_ns));
    out[NS_USER] = reads.inum(user_ns, NS_USER);
    reads.finish();
}

/// Inode of `task_active_pid_ns(task)`: `thread_pid->numbers[thread_pid->level].ns`.
#[inline(always)]
fn active_pid_ns(task: *const u8, reads: &mut Reads) -> u32 {
    let pid = reads.get::<*const u8>(task, offset!(task_thread_pid));
    let level = reads.get::<u32>(pid, offset!(pid_level));
    let (numbers, upid_size, upid_ns) = (offset!(pid_numbers), offset!(upid_size), offset!(upid_ns));
    if numbers == UNAVAILABLE || upid_size == UNAVAILABLE || upid_ns == UNAVAILABLE {
        return 0;
    }
    // level <= MAX_PID_NS_LEVEL (32), so this cannot overflow; wrapping keeps the verifier's job simple.
    let upid = numbers.wrapping_add(level.wrapping_mul(upid_size)).wrapping_add(upid_ns);
    let ns = reads.get::<*const u8>(pid, upid);
    reads.inum(ns, NS_PID)
}

/// `task->nsproxy->net_ns->ns.ns_id`, 0 where the kernel has no namespace ids (before 6.18) or it cannot be read.
#[inline(always)]
pub fn net_cookie(task: *const u8) -> u64 {
    let mut reads = Reads::new();
    let nsproxy = reads.get::<*const u8>(task, offset!(task_nsproxy));
    let net = reads.get::<*const u8>(nsproxy, offset!(nsproxy_member[NS_NET]));
    let cookie = net_ns_id(net, &mut reads);
    reads.finish();
    cookie
}

/// `task->nsproxy->net_ns`, null when it cannot be read.
#[inline(always)]
pub fn net(task: *const u8) -> *const u8 {
    let mut reads = Reads::new();
    let nsproxy = reads.get::<*const u8>(task, offset!(task_nsproxy));
    let net = reads.get::<*const u8>(nsproxy, offset!(nsproxy_member[NS_NET]));
    reads.finish();
    net
}

/// `net->ns.ns_id`, 0 where the kernel has none. Not a read error on kernels before 6.18, which lack the field.
#[inline(always)]
pub fn net_ns_id(net: *const u8, reads: &mut Reads) -> u64 {
    if offset!(net_ns_id) == UNAVAILABLE {
        return 0;
    }
    reads.get::<u64>(net, offset!(net_ns_id))
}
