//! Load-time filters, set by userspace as globals so that uninteresting events never reach the ring buffer.

use aya_ebpf::{EbpfContext, Global};

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
