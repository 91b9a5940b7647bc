//! Tier 1: fentry/fexit on the syscall functions of setns, unshare, clone and clone3.
//!
//! A BPF trampoline on a function runs only when that function is called, so unlike a syscall tracepoint it
//! costs nothing for the other syscalls (`cargo xtask bench getpid`). The functions are the x86_64 syscall
//! wrappers `__x64_sys_setns`, `__x64_sys_unshare`, `__x64_sys_clone` and `__x64_sys_clone3`, each
//! `long __x64_sys_NAME(const struct pt_regs *regs)` on every kernel from 4.17 (in the BTF of Debian's 5.10,
//! 6.1, 6.12, 6.18 and 7.x kernels; userspace names them when loading, see `netns_monitor::bpf::hooks`). The
//! syscall's arguments are in `regs` in the syscall calling convention: the first in `di`, the second in `si`
//! (offsets from BTF, `OFFSETS.regs_arg`). fexit sees the same `regs` and, after them, the return value.
//!
//! Entry remembers the caller's namespaces, exit completes the event, as in tier 2 ([`crate::transitions`]).
//! Network-namespace creation and destruction come from the kernel functions themselves ([`crate::netns`]),
//! so the exits report only the transitions.

use aya_ebpf::{
    EbpfContext,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::{
    kernel::Reads,
    offset,
    transitions::{self, Creation},
};

/// Argument `n` of the traced function, as a plain number. Read through bpf_probe_read_kernel rather than by a
/// typed context access, so that the verifier sees a scalar (pointer arithmetic with offsets that are only
/// known at load time is then no question) on every kernel from 5.10.
#[inline(always)]
pub fn function_arg<C: EbpfContext>(ctx: &C, n: usize) -> u64 {
    let mut reads = Reads::new();
    let value = reads.get::<u64>(ctx.as_ptr().cast::<u8>(), (n * 8) as u32);
    reads.finish();
    value
}

/// Syscall argument `n` (0 or 1) from the `pt_regs` the wrapper received.
#[inline(always)]
fn syscall_arg<C: EbpfContext>(ctx: &C, n: usize) -> u64 {
    let regs = function_arg(ctx, 0) as *const u8;
    let mut reads = Reads::new();
    let value = reads.get::<u64>(regs, if n == 0 { offset!(regs_arg[0]) } else { offset!(regs_arg[1]) });
    reads.finish();
    value
}

/// A wrapper's return value: fexit's context holds the function's one argument, then the return value.
#[inline(always)]
fn exit(ctx: &FExitContext) {
    transitions::exit(ctx, function_arg(ctx, 1) as i64, Creation::Elsewhere);
}

#[fentry(function = "__x64_sys_setns")]
pub fn fentry_setns(ctx: FEntryContext) -> u32 {
    transitions::enter_setns(&ctx, syscall_arg(&ctx, 0), syscall_arg(&ctx, 1));
    0
}

#[fentry(function = "__x64_sys_unshare")]
pub fn fentry_unshare(ctx: FEntryContext) -> u32 {
    transitions::enter_unshare(&ctx, syscall_arg(&ctx, 0));
    0
}

#[fentry(function = "__x64_sys_clone")]
pub fn fentry_clone(ctx: FEntryContext) -> u32 {
    transitions::enter_clone(&ctx, syscall_arg(&ctx, 0), Creation::Elsewhere);
    0
}

#[fentry(function = "__x64_sys_clone3")]
pub fn fentry_clone3(ctx: FEntryContext) -> u32 {
    transitions::enter_clone3(&ctx, syscall_arg(&ctx, 0), syscall_arg(&ctx, 1), Creation::Elsewhere);
    0
}

#[fexit(function = "__x64_sys_setns")]
pub fn fexit_setns(ctx: FExitContext) -> u32 {
    exit(&ctx);
    0
}

#[fexit(function = "__x64_sys_unshare")]
pub fn fexit_unshare(ctx: FExitContext) -> u32 {
    exit(&ctx);
    0
}

#[fexit(function = "__x64_sys_clone")]
pub fn fexit_clone(ctx: FExitContext) -> u32 {
    exit(&ctx);
    0
}

#[fexit(function = "__x64_sys_clone3")]
pub fn fexit_clone3(ctx: FExitContext) -> u32 {
    exit(&ctx);
    0
}
