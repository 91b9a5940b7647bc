//! What every hook tier shares: the caller's namespaces remembered at a namespace syscall's entry, the event
//! completed at its exit, and the child's namespaces from the fork hook. The entry points are in
//! [`crate::syscalls`] (tier 1, fentry/fexit on the syscall functions) and [`crate::tracepoints`] (tier 2, the
//! `syscalls` tracepoints); network-namespace creation and destruction of tier 1 are in [`crate::netns`].
//!
//! Entry stores a half-built event in `PENDING` (keyed by thread id); exit completes it with the return value
//! and the namespaces after the call, and pushes it to `EVENTS`. Filtering happens at entry: unshare/clone/
//! clone3 without a `CLONE_NEW*` flag never touch a map, so fork storms stay cheap.
//!
//! For clone/clone3 the new namespaces are the child's: `raw_tracepoint/sched_process_fork`
//! (`TP_PROTO(struct task_struct *parent, struct task_struct *child)`, fired in `kernel_clone` in the parent's
//! context after `copy_process` succeeded) records the child's ids and namespaces in the parent's pending
//! entry, so the parent's exit can emit one complete event. The child's own return from clone finds no entry
//! under its new thread id and emits nothing. A raw tracepoint runs only for forks: unlike a syscall
//! tracepoint it does not put every other syscall on the slow path, so both tiers use it.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_AVAIL_DATA,
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use netns_monitor_common::{
    counters::{COUNTER_LOST_EVENTS, COUNTER_PENDING_FAILED, COUNTER_READ_ERRORS, COUNTER_RINGBUF_HIGH_WATER},
    event::{
        KIND_NETNS_CREATED, KIND_TRANSITION, SYSCALL_CLONE, SYSCALL_CLONE3, SYSCALL_NONE, SYSCALL_SETNS,
        SYSCALL_UNSHARE, TransitionEvent,
    },
    ns::{CLONE_NEW_MASK, CLONE_NEW_MASK_CLONE, CLONE_NEWNET, NS_COUNT, NS_NET},
};

use crate::{
    filter,
    maps::{EVENTS, PENDING, count, raise_to},
    task,
};

/// Set in a pending clone's `changed` (which the exit recomputes before sending) when the tier reports
/// creations itself ([`Creation::Here`]): the fork hook then reports the child's new network namespace.
const CREATION_AT_FORK: u32 = 1 << 31;

/// Entry of setns(fd, nstype): every call is a transition attempt, including nstype 0 (any type) and failed
/// ones.
#[inline(always)]
pub fn enter_setns<C: EbpfContext>(ctx: &C, fd: u64, nstype: u64) {
    record_enter(ctx, SYSCALL_SETNS, nstype & 0xffff_ffff, fd as i32, 0);
}

/// Entry of unshare(flags): only calls that make a namespace are remembered.
#[inline(always)]
pub fn enter_unshare<C: EbpfContext>(ctx: &C, flags: u64) {
    if flags & CLONE_NEW_MASK != 0 {
        record_enter(ctx, SYSCALL_UNSHARE, flags, -1, 0);
    }
}

/// Entry of clone(flags, ...): only calls that make a namespace are remembered.
#[inline(always)]
pub fn enter_clone<C: EbpfContext>(ctx: &C, flags: u64, creation: Creation) {
    if flags & CLONE_NEW_MASK_CLONE != 0 {
        record_enter(ctx, SYSCALL_CLONE, flags, -1, fork_mark(creation));
    }
}

#[inline(always)]
fn fork_mark(creation: Creation) -> u32 {
    if creation == Creation::Here { CREATION_AT_FORK } else { 0 }
}

/// Entry of clone3(uargs, size): the flags are the first u64 of the caller's `struct clone_args`.
#[inline(always)]
pub fn enter_clone3<C: EbpfContext>(ctx: &C, uargs: u64, size: u64, creation: Creation) {
    if size < 8 {
        // The kernel rejects it with EINVAL before looking at any flag; nothing to report.
        return;
    }
    // SAFETY: `uargs` is the user pointer the caller passed; bpf_probe_read_user validates it.
    match unsafe { bpf_probe_read_user(uargs as *const u64) } {
        Ok(flags) if flags & CLONE_NEW_MASK != 0 => {
            record_enter(ctx, SYSCALL_CLONE3, flags, -1, fork_mark(creation));
        }
        Ok(_) => {}
        // A bad pointer: the kernel fails the call with EFAULT; count that we could not look.
        Err(_) => count(COUNTER_READ_ERRORS),
    }
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
        if pending.flags & CLONE_NEWNET != 0 {
            pending.net_cookie = task::net_cookie(child);
            // Here, before kernel_clone wakes the child: the child cannot exit, and its namespace cannot be
            // torn down and reported destroyed, before this record is in the ring buffer. From the syscall's
            // exit it could (a parent preempted for longer than the child's life and a grace period).
            if pending.changed & CREATION_AT_FORK != 0 {
                let mut event = crate::netns::record(&ctx, KIND_NETNS_CREATED, task::net(child));
                event.flags = pending.flags;
                event.new_ns[NS_NET] = event.old_ns[NS_NET];
                event.old_ns[NS_NET] = 0;
                event.child_pid = pending.child_pid;
                event.child_tid = pending.child_tid;
                filter::created(event.new_ns[NS_NET]);
                crate::netns::send(&event);
            }
        }
    }
    0
}

/// Remembers the caller and its namespaces before the call; `mark` goes into `changed` until the exit.
#[inline(always)]
fn record_enter<C: EbpfContext>(ctx: &C, syscall: u32, flags: u64, fd: i32, mark: u32) {
    if !filter::wanted(ctx) {
        return;
    }
    let current = task::current();
    let mut event = TransitionEvent::zeroed();
    event.kind = KIND_TRANSITION;
    event.syscall = syscall;
    event.flags = flags;
    event.fd = fd;
    event.changed = mark;
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

/// Where a tier learns that a network namespace was made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// From the syscall hooks (tier 2): a successful unshare with `CLONE_NEWNET` at its exit, a clone/clone3 at
    /// the fork hook, before the child runs.
    Here,
    /// From `copy_net_ns` itself (tier 1, [`crate::netns`]); the exit reports only the transition.
    Elsewhere,
}

/// Completes the pending call of this thread with its result `ret` and pushes it to userspace, followed by a
/// creation record when the call made a new network namespace and `creation` says the exit reports it.
#[inline(always)]
pub fn exit<C: EbpfContext>(ctx: &C, ret: i64, creation: Creation) {
    let tid = ctx.pid();
    let Some(pending) = PENDING.get_ptr_mut(tid) else {
        // Filtered out at enter, or entered before the programs were attached: nothing to complete.
        return;
    };
    // SAFETY: `pending` comes from a successful lookup of this thread's own entry, which only this thread
    // writes or removes; it is not used after the remove below.
    let pending = unsafe { &mut *pending };
    pending.ret = ret;
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
    // A clone's namespace was reported by the fork hook (a clone has a child exactly when it succeeded).
    let created = creation == Creation::Here
        && pending.child_tid == 0
        && pending.syscall != SYSCALL_SETNS
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
        pending.net_cookie = task::net_cookie(task::current());
        filter::created(new_net);
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
