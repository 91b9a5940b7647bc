//! Load-time filters, set by userspace as globals so that uninteresting events never reach the ring buffer.

use aya_ebpf::{EbpfContext, Global};

use crate::maps::FILTERED_NETNS;

/// Only report what this process (tgid, initial pid namespace) does; 0 reports every process.
/// `netns-monitor trace --pid` and tests that need exact counts set it.
#[unsafe(no_mangle)]
static FILTER_TGID: Global<u32> = Global::new(0);

/// Whether the calling process passes the tgid filter.
#[inline(always)]
pub fn wanted(ctx: &impl EbpfContext) -> bool {
    let filter = FILTER_TGID.load();
    filter == 0 || filter == ctx.tgid()
}

/// Notes that the filtered process made network namespace `inode` (a creation that passed [`wanted`]).
#[inline(always)]
pub fn created(inode: u32) {
    if FILTER_TGID.load() != 0 && inode != 0 {
        // Full: LRU evicts the oldest; its end would then not be reported under the filter.
        let _ = FILTERED_NETNS.insert(inode, 0u8, 0);
    }
}

/// Whether the destruction of network namespace `inode` passes the filter: without one always, with one only
/// for a namespace the filtered process made (forgotten once reported: inodes are reused).
#[inline(always)]
pub fn destruction_wanted(inode: u32) -> bool {
    FILTER_TGID.load() == 0 || FILTERED_NETNS.remove(inode).is_ok()
}
