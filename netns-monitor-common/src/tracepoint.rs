//! Byte offsets of the fields the programs read from `syscalls` tracepoint records.
//!
//! Written against `/sys/kernel/tracing/events/syscalls/sys_{enter,exit}_*/format` on Linux 6.18: an 8-byte
//! common header, `int __syscall_nr` at 8, then each argument (or `long ret`) as an 8-byte slot from 16.
//! Userspace checks these against the live format files before loading, so a kernel that moves them is
//! refused with a clear error instead of producing wrong events.

/// Offset of `__syscall_nr` in both enter and exit records.
pub const SYSCALL_NR: usize = 8;
/// Offset of argument `n` (0-based) in a `sys_enter_*` record.
pub const fn enter_arg(n: usize) -> usize {
    16 + 8 * n
}
/// Offset of `ret` in a `sys_exit_*` record.
pub const EXIT_RET: usize = 16;
