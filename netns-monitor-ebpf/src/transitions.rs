//! Namespace transitions, from the `syscalls` tracepoints of setns, unshare, clone and clone3.
//!
//! Why these hooks: the `syscalls/sys_{enter,exit}_*` tracepoints are stable ABI, exist on every kernel with
//! `CONFIG_FTRACE_SYSCALLS` (this one has no kprobes at all), and bracket the call, so the caller's namespaces
//! can be read before (at enter) and after (at exit) and the return value reported. Record layouts, as on
//! Linux 6.18 (`events/syscalls/<event>/format`; userspace checks them against the live files before loading,
//! see `netns_monitor_common::tracepoint`):
//!
//! ```text
//! sys_enter_setns:   int fd @16 (8 bytes), int flags (nstype) @24
//! sys_enter_unshare: unsigned long unshare_flags @16
//! sys_enter_clone:   unsigned long clone_flags @16, newsp @24, parent_tidptr @32, child_tidptr @40, tls @48
//! sys_enter_clone3:  struct clone_args *uargs @16, size_t size @24   (clone_args.flags is its first u64)
//! sys_exit_*:        long ret @16
//! ```
//!
//! Enter stores a half-built event in `PENDING` (keyed by thread id); exit completes it with the return value
//! and the namespaces after the call, and pushes it to `EVENTS`. Filtering happens at enter: unshare/clone/
//! clone3 without a `CLONE_NEW*` flag never touch a map, so fork storms stay cheap.
//!
//! For clone/clone3 the new namespaces are the child's: `raw_tracepoint/sched_process_fork`
//! (`TP_PROTO(struct task_struct *parent, struct task_struct *child)`, fired in `kernel_clone` in the parent's
//! context after `copy_process` succeeded) records the child's ids and namespaces in the parent's pending
//! entry, so the parent's exit can emit one complete event. The child's own return from clone finds no entry
//! under its new thread id and emits nothing.
//!
//! Network-namespace creation is reported here too, as a second record (`KIND_NETNS_CREATED`) after a
//! successful unshare/clone/clone3 with `CLONE_NEWNET`: every new network namespace is made by one of these
//! three syscalls (`copy_net_ns` is only reached through them; setns never creates one), so nothing is missed
//! and it costs nothing extra. The natural kernel hooks for the whole lifecycle, `fexit/copy_net_ns` and
//! `fentry/__put_net`, cannot be used on this kernel: loading any fentry/fexit program fails with EPERM (tp_btf
//! and raw tracepoints load), there is no kprobe support, and no tracepoint fires per namespace on teardown.
//! Destruction is therefore reported by userspace from the kernel's `RTM_DELNSID` netlink notification (see
//! `netns_monitor::lifecycle`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_AVAIL_DATA,
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_user},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use netns_monitor_common::{
    counters::{COUNTER_LOST_EVENTS, COUNTER_PENDING_FAILED, COUNTER_READ_ERRORS, COUNTER_RINGBUF_HIGH_WATER},
    event::{
        KIND_NETNS_CREATED, KIND_TRANSITION, SYSCALL_CLONE, SYSCALL_CLONE3, SYSCALL_NONE, SYSCALL_SETNS,
        SYSCALL_UNSHARE, TransitionEvent,
    },
    ns::{CLONE_NEW_MASK, CLONE_NEW_MASK_CLONE, CLONE_NEWNET, NS_COUNT, NS_NET},
    tracepoint::{EXIT_RET, enter_arg},
};

use crate::{
    filter,
    maps::{EVENTS, PENDING, count, raise_to},
    task,
};

/// Reads argument `n` of a `sys_enter_*` record.
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> Option<u64> {
    // SAFETY: every sys_enter_* record has 8-byte argument slots from offset 16 (checked against the format
    // files by userspace), and read_at goes through bpf_probe_read_kernel, which cannot fault.
    unsafe { ctx.read_at::<u64>(enter_arg(n)) }.ok()
}

#[tracepoint(category = "syscalls", name = "sys_enter_setns")]
pub fn sys_enter_setns(ctx: TracePointContext) -> u32 {
    if let (Some(fd), Some(nstype)) = (arg(&ctx, 0), arg(&ctx, 1)) {
        // Every setns is a transition attempt, including nstype 0 (any type) and failed ones.
        record_enter(&ctx, SYSCALL_SETNS, nstype & 0xffff_ffff, fd as i32);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unshare")]
pub fn sys_enter_unshare(ctx: TracePointContext) -> u32 {
    if let Some(flags) = arg(&ctx, 0)
        && flags & CLONE_NEW_MASK != 0
    {
        record_enter(&ctx, SYSCALL_UNSHARE, flags, -1);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone")]
pub fn sys_enter_clone(ctx: TracePointContext) -> u32 {
    if let Some(flags) = arg(&ctx, 0)
        && flags & CLONE_NEW_MASK_CLONE != 0
    {
        record_enter(&ctx, SYSCALL_CLONE, flags, -1);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone3")]
pub fn sys_enter_clone3(ctx: TracePointContext) -> u32 {
    let (Some(uargs), Some(size)) = (arg(&ctx, 0), arg(&ctx, 1)) else {
        return 0;
    };
    if size < 8 {
        // The kernel rejects it with EINVAL before looking at any flag; nothing to report.
        return 0;
    }
    // SAFETY: `uargs` is the user pointer the caller passed; bpf_probe_read_user validates it.
    match unsafe { bpf_probe_read_user(uargs as *const u64) } {
        Ok(flags) if flags & CLONE_NEW_MASK != 0 => record_enter(&ctx, SYSCALL_CLONE3, flags, -1),
        Ok(_) => {}
        // A bad pointer: the kernel fails the call with EFAULT; count that we could not look.
        Err(_) => count(COUNTER_READ_ERRORS),
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setns")]
pub fn sys_exit_setns(ctx: TracePointContext) -> u32 {
    emit_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unshare")]
pub fn sys_exit_unshare(ctx: TracePointContext) -> u32 {
    emit_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone")]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    emit_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone3")]
pub fn sys_exit_clone3(ctx: TracePointContext) -> u32 {
    emit_exit(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    // Runs in the parent: its pending entry exists only if it is inside a clone/clone3 with CLONE_NEW* flags.
    let Some(pending) = PENDING.get_ptr_mut(ctx.pid()) else {
        return 0;
    };
    let child: *const u8 = ctx.arg(1);
    // SAFETY: the pointer comes from a successful lookup of this thread's own entry; only this thread writes or
    // removes it, and it is not used after this function returns.
    let pending = unsafe { &mut *pending };
    if pending.syscall == SYSCALL_CLONE || pending.syscall == SYSCALL_CLONE3 {
        pending.child_pid = task::tgid(child);
        pending.child_tid = task::tid(child);
        task::namespaces(child, &mut pending.new_ns);
    }
    0
}

/// Remembers the caller and its namespaces before the call.
#[inline(always)]
fn record_enter(ctx: &TracePointContext, syscall: u32, flags: u64, fd: i32) {
    if !filter::wanted(ctx) {
        return;
    }
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
        // Rare (16k calls in flight at once); userspace reports it with the lost events.
        count(COUNTER_PENDING_FAILED);
        // Worth a line in the agent's log beside the counter. aya-log's formatting costs the verifier about
        // 3,000 instructions here (1,500 without it), a few tens of ms on 5.10 under emulation.
        warn!(ctx, "pending map full: dropped syscall entry of tid {}", event.tid);
    }
}

/// Completes the pending call of this thread with its result and pushes it to userspace, followed by a
/// creation record when the call made a new network namespace.
#[inline(always)]
fn emit_exit(ctx: &TracePointContext) {
    let tid = ctx.pid();
    let Some(pending) = PENDING.get_ptr_mut(tid) else {
        // Filtered out at enter, or entered before the programs were attached: nothing to complete.
        return;
    };
    // SAFETY: `pending` comes from a successful lookup of this thread's own entry, which only this thread
    // writes or removes; it is not used after the remove below.
    let pending = unsafe { &mut *pending };
    // SAFETY: offset 16 is the `ret` slot of every sys_exit_* record.
    pending.ret = unsafe { ctx.read_at::<i64>(EXIT_RET) }.unwrap_or(0);
    // SAFETY: the helper has no preconditions.
    pending.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    // A clone's new namespaces are the child's, recorded at fork; without a child (the call failed) and for
    // setns/unshare they are the caller's own after the call.
    if pending.child_tid == 0 {
        task::namespaces(task::current(), &mut pending.new_ns);
    }
    pending.changed = changed_mask(&pending.old_ns, &pending.new_ns);
    // Straight from the map value: bpf_ringbuf_output copies it, nothing lands on the 512-byte BPF stack.
    let sent = EVENTS.output::<TransitionEvent>(&*pending, 0);
    if sent.is_err() {
        count(COUNTER_LOST_EVENTS);
    }
    raise_to(COUNTER_RINGBUF_HIGH_WATER, EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)));
    let created = pending.syscall != SYSCALL_SETNS
        && pending.flags & CLONE_NEWNET != 0
        && pending.ret >= 0
        && pending.changed & (1 << NS_NET) != 0;
    if created {
        // Same caller fields; the new namespace is the only one named.
        pending.kind = KIND_NETNS_CREATED;
        pending.syscall = SYSCALL_NONE;
        pending.old_ns = [0; NS_COUNT];
        let new_net = pending.new_ns[NS_NET];
        pending.new_ns = [0; NS_COUNT];
        pending.new_ns[NS_NET] = new_net;
        pending.changed = 1 << NS_NET;
        let sent = EVENTS.output::<TransitionEvent>(&*pending, 0);
        if sent.is_err() {
            count(COUNTER_LOST_EVENTS);
        }
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
