//! Reading kernel memory with the offsets userspace computed from BTF (the `OFFSETS` global).
//!
//! Rust eBPF has no CO-RE, so every struct field the programs follow is found through `OFFSETS`, which userspace
//! fills from `/sys/kernel/btf/vmlinux` before loading (`netns_monitor::bpf::offsets`). A read that fails (or
//! whose offset this kernel does not have) yields `None` and is counted in `COUNTER_READ_ERRORS`.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use netns_monitor_common::{
    counters::COUNTER_READ_ERRORS,
    offsets::{KernelOffsets, UNAVAILABLE},
};

use crate::maps::count;

/// Set by userspace at load time (`EbpfLoader::override_global("OFFSETS", ..)`).
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::unavailable();

/// Reads one `u32` of `OFFSETS`. A volatile read, so the compiler cannot fold in the placeholder value the
/// object file carries before userspace patches it.
#[macro_export]
macro_rules! offset {
    ($($field:tt)+) => {{
        let field = &raw const $crate::kernel::OFFSETS.$($field)+;
        // SAFETY: `field` points into OFFSETS, a static that lives for the whole program.
        unsafe { core::ptr::read_volatile(field) }
    }};
}

/// Reads a `T` at `base + offset` from kernel memory; `None` (counted) when the offset is unknown or the read
/// fails.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == UNAVAILABLE {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address (it faults safely); we only compute the address.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) } {
        Ok(value) => Some(value),
        Err(_) => {
            count(COUNTER_READ_ERRORS);
            None
        }
    }
}

/// A batch of reads that do not branch on their own failure: a failed read leaves zero (the helper zeroes its
/// destination), and the batch counts one read error at the end ([`Reads::finish`]). On 5.10 and 6.1 the
/// verifier walked every per-read error branch (a map lookup each) of the enter programs for seconds; one
/// branch per batch keeps that walk short.
pub struct Reads {
    failed: i64,
}

impl Reads {
    #[inline(always)]
    pub const fn new() -> Self {
        Self { failed: 0 }
    }

    /// Reads a `T` at `base + offset`; zero when `base` is null, the offset unknown or the read fails.
    #[inline(always)]
    pub fn get<T: Copy>(&mut self, base: *const u8, offset: u32) -> T {
        // An unknown offset reads address 0, which fails like any bad address: no branch of its own.
        let address = if offset == UNAVAILABLE { 0 } else { (base as usize).wrapping_add(offset as usize) };
        let mut value = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: bpf_probe_read_kernel copes with any source address (it faults safely and zeroes `value` on
        // failure), and `value` has room for size_of::<T>() bytes.
        let ret = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                value.as_mut_ptr().cast(),
                size_of::<T>() as u32,
                address as *const core::ffi::c_void,
            )
        };
        self.failed |= ret;
        // SAFETY: the helper wrote all of `value`: the data on success, zeroes on failure.
        unsafe { value.assume_init() }
    }

    /// Inode of one namespace struct (`ns.inum` at the type's offset), 0 when it cannot be read.
    #[inline(always)]
    pub fn inum(&mut self, ns: *const u8, index: usize) -> u32 {
        self.get::<u32>(ns, offset!(ns_inum[index]))
    }

    /// Counts one read error if any read of the batch failed.
    #[inline(always)]
    pub fn finish(self) {
        if self.failed != 0 {
            count(COUNTER_READ_ERRORS);
        }
    }
}

/// Inode of one namespace struct (`ns.inum` at the type's offset).
#[inline(always)]
pub fn inum(ns: *const u8, index: usize) -> u32 {
    read::<u32>(ns, offset!(ns_inum[index])).unwrap_or(0)
}
