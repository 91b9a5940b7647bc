//! Slots of the kernel's per-CPU `COUNTERS` array: what the programs could not do, counted instead of hidden.

/// An event was dropped because the ring buffer was full (`bpf_ringbuf_reserve` failed).
pub const COUNTER_LOST_EVENTS: u32 = 0;
/// A syscall entry could not be remembered until its exit (the pending map rejected the insert).
pub const COUNTER_PENDING_FAILED: u32 = 1;
/// A kernel memory read failed (`bpf_probe_read_kernel`), so some field of an event is 0.
pub const COUNTER_READ_ERRORS: u32 = 2;
/// A classifier could not tell a packet's namespace (a kernel read failed); the packet was not counted.
pub const COUNTER_TRAFFIC_UNKNOWN_NETNS: u32 = 3;
/// A classifier found no counters for its interface: userspace already removed them (the interface's namespace
/// is being torn down, its devices still send a last packet or two) or never created them. Not counted.
pub const COUNTER_TRAFFIC_NO_ENTRY: u32 = 4;
/// Highest ring buffer fill (bytes of unconsumed data) seen at a submit since userspace last reset it.
pub const COUNTER_RINGBUF_HIGH_WATER: u32 = 5;
/// Number of slots in the array.
pub const COUNTER_SLOTS: u32 = 6;
