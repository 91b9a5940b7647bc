//! Tier 2: the `syscalls` tracepoints of setns, unshare, clone and clone3, used where the kernel refuses
//! fentry/fexit programs (some hardened or locked-down kernels, and architectures without the x86_64 syscall
//! wrappers).
//!
//! Why these hooks: the `syscalls/sys_{enter,exit}_*` tracepoints are stable ABI, exist on every kernel with
//! `CONFIG_FTRACE_SYSCALLS` (even one without kprobes), and bracket the call. Their price: any program on a
//! syscall tracepoint sets the kernel's traced-syscall work flag on every thread, so every syscall of every
//! process takes the slow path (`cargo xtask bench getpid`). Record layouts, as on Linux 6.18
//! (`events/syscalls/<event>/format`; userspace checks them against the live files before loading, see
//! `netns_monitor_common::tracepoint`):
//!
//! ```text
//! sys_enter_setns:   int fd @16 (8 bytes), int flags (nstype) @24
//! sys_enter_unshare: unsigned long unshare_flags @16
//! sys_enter_clone:   unsigned long clone_flags @16, newsp @24, parent_tidptr @32, child_tidptr @40, tls @48
//! sys_enter_clone3:  struct clone_args *uargs @16, size_t size @24   (clone_args.flags is its first u64)
//! sys_exit_*:        long ret @16
//! ```
//!
//! Network-namespace creation is reported as a record of its own (`KIND_NETNS_CREATED`): after a successful
//! unshare with `CLONE_NEWNET` at its exit, and for clone/clone3 from the fork hook before the child runs
//! (`crate::transitions::sched_process_fork`). `copy_net_ns` is only reached through these three syscalls
//! (setns never creates one), so nothing is missed. No syscall tracepoint sees a namespace's teardown:
//! its destruction comes from `crate::netns::netns_exit_queued`, or, where that cannot be attached, from userspace
//! (`netns_monitor::lifecycle`).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use netns_monitor_common::tracepoint::{EXIT_RET, enter_arg};

use crate::transitions::{self, Creation};

/// Reads argument `n` of a `sys_enter_*` record.
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> Option<u64> {
    // SAFETY: every sys_enter_* record has 8-byte argument slots from offset 16 (checked against the format
    // files by userspace), and read_at goes through bpf_probe_read_kernel, which cannot fault.
    unsafe { ctx.read_at::<u64>(enter_arg(n)) }.ok()
}

/// The `ret` slot of a `sys_exit_*` record.
#[inline(always)]
fn exit(ctx: &TracePointContext) {
    // SAFETY: offset 16 is the `ret` slot of every sys_exit_* record.
    let ret = unsafe { ctx.read_at::<i64>(EXIT_RET) }.unwrap_or(0);
    transitions::exit(ctx, ret, Creation::Here);
}

#[tracepoint(category = "syscalls", name = "sys_enter_setns")]
pub fn sys_enter_setns(ctx: TracePointContext) -> u32 {
    if let (Some(fd), Some(nstype)) = (arg(&ctx, 0), arg(&ctx, 1)) {
        transitions::enter_setns(&ctx, fd, nstype);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unshare")]
pub fn sys_enter_unshare(ctx: TracePointContext) -> u32 {
    if let Some(flags) = arg(&ctx, 0) {
        transitions::enter_unshare(&ctx, flags);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone")]
pub fn sys_enter_clone(ctx: TracePointContext) -> u32 {
    if let Some(flags) = arg(&ctx, 0) {
        transitions::enter_clone(&ctx, flags, Creation::Here);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone3")]
pub fn sys_enter_clone3(ctx: TracePointContext) -> u32 {
    if let (Some(uargs), Some(size)) = (arg(&ctx, 0), arg(&ctx, 1)) {
        transitions::enter_clone3(&ctx, uargs, size, Creation::Here);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setns")]
pub fn sys_exit_setns(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unshare")]
pub fn sys_exit_unshare(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone")]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone3")]
pub fn sys_exit_clone3(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}
