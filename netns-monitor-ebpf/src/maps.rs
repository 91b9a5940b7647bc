//! Maps shared by the transition programs.
//!
//! Names are part of the userspace contract (`netns_monitor::bpf::maps`); sizes here are defaults that the
//! loader may override (`EbpfLoader::map_max_entries`), e.g. a tiny ring buffer for the overflow test.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use netns_monitor_common::{
    counters::COUNTER_SLOTS,
    event::TransitionEvent,
    traffic::{DeviceCache, ProtocolCounters, TrafficBase, TrafficCounters, TrafficKey},
};

/// Events to userspace. 1 MiB holds about 5,900 events (168 bytes + 8 of header each): 25 ms of a one-core setns
/// storm, so the reader can coalesce wake-ups (netns_monitor::trace::stream) without losing any.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Calls in flight, keyed by thread id: filled at `sys_enter_*` with the caller's namespaces before the call,
/// completed and emitted at `sys_exit_*`. LRU so that a thread killed inside the syscall cannot leak a slot.
#[map]
pub static PENDING: LruHashMap<u32, TransitionEvent> = LruHashMap::with_max_entries(16 * 1024, 0);

/// With a process filter (`FILTER_TGID`): the network namespaces that process made, by inode, so that their
/// destructions (which run in a kernel worker, no caller to filter on) pass the filter and no other does. LRU so
/// that a namespace whose end was never seen (made while no program was attached) cannot leak a slot.
#[map]
pub static FILTERED_NETNS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16 * 1024, 0);

/// Self-observation counters, per CPU so the hot path never shares a cache line; indexes in
/// `netns_monitor_common::counters`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Traffic counters by counter slot, per CPU: an array, so finding an interface's counters costs no hash
/// (the slot comes from the attachment or the device memo, see `traffic`). Pinned by name under the agent's
/// bpffs directory (/sys/fs/bpf/netns-monitor/TRAFFIC), so counting survives agent restarts. Preallocated:
/// userspace sizes it at load (`--max-interfaces`; 32 bytes per slot and possible CPU).
#[map]
pub static TRAFFIC: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(16 * 1024, 0);

/// The protocol split of [`TRAFFIC`], same slots; one entry unless the split is on (the loader sizes it).
#[map]
pub static TRAFFIC_PROTOCOLS: PerCpuArray<ProtocolCounters> = PerCpuArray::pinned(1, 0);

/// The counter slot of each (namespace inode, ifindex) the agent counts: written by userspace only (before it
/// attaches, so no packet of an attached interface finds none), read where the attachment cannot name the slot.
#[map]
pub static TRAFFIC_SLOTS: HashMap<TrafficKey, u32> = HashMap::pinned(64 * 1024, BPF_F_NO_PREALLOC);

/// What the kernel counted on each interface before the classifiers saw it, per (namespace inode, ifindex):
/// written by userspace only, once per interface, and read beside [`TRAFFIC`]. No program touches it; it lives
/// in the object so that the loader creates and pins it with the others.
#[map]
pub static TRAFFIC_BASE: HashMap<TrafficKey, TrafficBase> = HashMap::pinned(64 * 1024, BPF_F_NO_PREALLOC);

/// Slots of [`DEVICE_CACHE`].
pub const DEVICE_CACHE_SLOTS: u32 = 64;

/// Per-CPU memo of recent devices' counter slots, direct-mapped by device address (see `DeviceCache`).
#[map]
pub static DEVICE_CACHE: PerCpuArray<DeviceCache> = PerCpuArray::with_max_entries(DEVICE_CACHE_SLOTS, 0);

/// Bumped by userspace on every link or namespace change; a memo from an older generation is not trusted.
#[map]
pub static LINK_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Adds one to counter `slot` on this CPU.
#[inline(always)]
pub fn count(slot: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it is valid and only this CPU
        // (with preemption disabled while the program runs) writes it.
        unsafe { *counter += 1 };
    }
}

/// Raises counter `slot` on this CPU to `value` if it is higher (a high-water mark userspace resets).
#[inline(always)]
pub fn raise_to(slot: u32, value: u64) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: as in `count`: this CPU's own slot, valid while the program runs.
        unsafe {
            if *counter < value {
                *counter = value;
            }
        }
    }
}
