//! netns-monitor's kernel programs.
//!
//! - [`syscalls`]: tier 1, fentry/fexit on the setns, unshare, clone and clone3 syscall functions, which report
//!   who moved between which namespaces and cost the other syscalls nothing.
//! - [`netns`]: network-namespace creation and destruction: tier 1 from `copy_net_ns` and `netdev_exit`, tier 2's
//!   destruction from the work the IPv4 teardown queues (`workqueue_queue_work`).
//! - [`tracepoints`]: tier 2, the same transitions from the `syscalls` tracepoints, where fentry is refused.
//! - [`transitions`]: what both tiers share (the in-flight calls, the events, the fork hook).
//! - [`filter`]: load-time filters (globals) applied before anything reaches the ring buffer.
//! - [`traffic`]: tc/TCX classifiers counting packets and bytes per (namespace, interface, direction, protocol).
//! - [`task`]: walks a `task_struct` to its namespace inodes.
//! - [`kernel`]: reads kernel memory with the struct offsets userspace computed from BTF.
//! - [`maps`]: the maps shared by the programs (event ring buffer, pending calls, traffic, self-observation).
#![no_std]
#![no_main]

mod filter;
mod kernel;
mod maps;
mod netns;
mod syscalls;
mod task;
mod tracepoints;
mod traffic;
mod transitions;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program in which a panic path is reachable, so this is never run.
    unsafe { core::hint::unreachable_unchecked() }
}
