//! netns-monitor's kernel programs.
//!
//! - [`transitions`]: `syscalls` tracepoints on setns, unshare, clone and clone3 that report who moved between
//!   which namespaces.
//! - [`filter`]: load-time filters (globals) applied before anything reaches the ring buffer.
//! - [`task`]: walks a `task_struct` to its namespace inodes with offsets computed from BTF by userspace.
//! - [`maps`]: the maps shared by the programs (event ring buffer, pending calls, self-observation counters).
#![no_std]
#![no_main]

mod filter;
mod maps;
mod task;
mod transitions;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program in which a panic path is reachable, so this is never run.
    unsafe { core::hint::unreachable_unchecked() }
}
