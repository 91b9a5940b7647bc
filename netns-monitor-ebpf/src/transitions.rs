//! Namespace transitions, from the `syscalls` tracepoints.
//!
//! Why these hooks: the `syscalls/sys_{enter,exit}_*` tracepoints are stable ABI, exist on every kernel with
//! `CONFIG_FTRACE_SYSCALLS` (this one has no kprobes at all), and bracket the call, so the caller's namespaces
//! can be read before (at enter) and after (at exit) and the return value reported. Record layout (checked by
//! userspace against the live format files before loading, see `netns_monitor_common::tracepoint`), Linux
//! 6.18 `events/syscalls/sys_enter_setns/format`:
//!
//! ```text
//! field:int __syscall_nr; offset:8;  size:4;
//! field:int fd;           offset:16; size:8;
//! field:int nstype;       offset:24; size:8;
//! ```
//! and `sys_exit_setns/format`: `field:long ret; offset:16; size:8;`.
//!
//! Enter stores a half-built event in `PENDING` (keyed by thread id); exit completes it with the return value
//! and the namespaces after the call, and pushes it to `EVENTS`. A full ring buffer counts a lost event.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use netns_monitor_common::{
    counters::{COUNTER_LOST_EVENTS, COUNTER_PENDING_FAILED},
    event::{KIND_TRANSITION, SYSCALL_SETNS, TransitionEvent},
    ns::NS_COUNT,
    tracepoint::{EXIT_RET, enter_arg},
};

use crate::{
    maps::{EVENTS, PENDING, count},
    task,
};

#[tracepoint(category = "syscalls", name = "sys_enter_setns")]
pub fn sys_enter_setns(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets 16 and 24 are the `fd` and `nstype` slots of the sys_enter_setns record (see above).
    let (fd, nstype) = unsafe { (ctx.read_at::<i64>(enter_arg(0)), ctx.read_at::<i64>(enter_arg(1))) };
    let (Ok(fd), Ok(nstype)) = (fd, nstype) else {
        return 0;
    };
    record_enter(&ctx, SYSCALL_SETNS, nstype as u64, fd as i32);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setns")]
pub fn sys_exit_setns(ctx: TracePointContext) -> u32 {
    emit_exit(&ctx);
    0
}

/// Remembers the caller and its namespaces before the call.
#[inline(always)]
fn record_enter(ctx: &TracePointContext, syscall: u32, flags: u64, fd: i32) {
    let current = task::current();
    let mut event = TransitionEvent::zeroed();
    event.kind = KIND_TRANSITION;
    event.syscall = syscall;
    event.flags = flags;
    event.fd = fd;
    event.pid = ctx.tgid();
    event.tid = ctx.pid();
    event.ppid = task::tgid(task::real_parent(current));
    // Low 32 bits of uid_gid are the uid, as seen from the initial user namespace.
    event.uid = bpf_get_current_uid_gid() as u32;
    event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    task::namespaces(current, &mut event.old_ns);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference: a second 160-byte copy would crowd the 512-byte BPF stack"
    )]
    let inserted = PENDING.insert(event.tid, &event, 0);
    if inserted.is_err() {
        count(COUNTER_PENDING_FAILED);
        // Rare (16k calls in flight at once): worth a line in the agent's log beside the counter.
        warn!(ctx, "pending map full: dropped syscall entry of tid {}", event.tid);
    }
}

/// Completes the pending call of this thread with its result and pushes it to userspace.
#[inline(always)]
fn emit_exit(ctx: &TracePointContext) {
    let tid = ctx.pid();
    let Some(pending) = PENDING.get_ptr(tid) else {
        // Entered before the programs were attached: nothing to complete.
        return;
    };
    // SAFETY: offset 16 is the `ret` slot of every sys_exit_* record.
    let ret = unsafe { ctx.read_at::<i64>(EXIT_RET) }.unwrap_or(0);
    match EVENTS.reserve::<TransitionEvent>(0) {
        Some(mut entry) => {
            // SAFETY: `pending` comes from a successful lookup of this thread's own entry, which only this
            // thread writes or removes, so it is valid for the copy.
            let event = entry.write(unsafe { *pending });
            event.ret = ret;
            event.ts_boot_ns = bpf_ktime_get_boot_ns_safe();
            task::namespaces(task::current(), &mut event.new_ns);
            event.changed = changed_mask(&event.old_ns, &event.new_ns);
            entry.submit(0);
        }
        None => count(COUNTER_LOST_EVENTS),
    }
    let _ = PENDING.remove(tid);
}

/// Bit `1 << i` set where the inode of namespace type `i` differs.
#[inline(always)]
fn changed_mask(old: &[u32; NS_COUNT], new: &[u32; NS_COUNT]) -> u32 {
    let mut mask = 0;
    let mut index = 0;
    while index < NS_COUNT {
        if old[index] != new[index] {
            mask |= 1 << index;
        }
        index += 1;
    }
    mask
}

#[inline(always)]
fn bpf_ktime_get_boot_ns_safe() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_boot_ns() }
}
