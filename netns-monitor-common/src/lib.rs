//! Types shared by the kernel programs (`netns-monitor-ebpf`) and userspace (`netns-monitor`).
//!
//! Everything that crosses the boundary is `#[repr(C)]`, built from fixed-width integers with explicit
//! padding, and has its size asserted so both sides agree at compile time. Kinds are plain `u32`
//! constants; userspace turns them into enums with `TryFrom`, rejecting unknown values.
//!
//! - [`counters`]: slots of the per-CPU self-observation counters.
//! - [`event`]: the record the transition programs push through the ring buffer.
//! - [`ns`]: namespace type indexes and the `CLONE_NEW*` flags.
//! - [`offsets`]: kernel struct field offsets, computed from BTF in userspace and set as a global.
//! - [`tracepoint`]: the byte layout of the `syscalls` tracepoint records the programs read.
//! - [`traffic`]: the per-interface counters of the tc/TCX classifiers.
#![no_std]

pub mod counters;
pub mod event;
pub mod ns;
pub mod offsets;
pub mod tracepoint;
pub mod traffic;

/// Implements `aya::Pod` for types that are plain old data: `#[repr(C)]`, integers only, no padding holes.
#[cfg(feature = "user")]
macro_rules! impl_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            // SAFETY: the type is #[repr(C)], built only from integers and integer arrays with explicit
            // `_pad` fields, so every bit pattern is valid and there are no uninitialised bytes.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

#[cfg(feature = "user")]
impl_pod!(
    event::TransitionEvent,
    offsets::KernelOffsets,
    traffic::TrafficKey,
    traffic::TrafficCounters,
    traffic::ProtocolCounters,
    traffic::TrafficConfig,
    traffic::TrafficBase,
    traffic::DeviceCache
);
