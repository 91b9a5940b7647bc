//! Slots of the kernel's per-CPU `COUNTERS` array: what the programs could not do, counted instead of hidden.

/// An event was dropped because the ring buffer was full (`bpf_ringbuf_reserve` failed).
pub const COUNTER_LOST_EVENTS: u32 = 0;
/// A syscall entry could not be remembered until its exit (the pending map rejected the insert).
pub const COUNTER_PENDING_FAILED: u32 = 1;
/// A kernel memory read failed (`bpf_probe_read_kernel`), so some field of an event is 0.
pub const COUNTER_READ_ERRORS: u32 = 2;
/// Number of slots in the array.
pub const COUNTER_SLOTS: u32 = 3;
