//! RLIMIT_MEMLOCK: kernels before 5.11 charge every BPF map and program to it (newer ones charge memcg and
//! ignore it), and its usual default of 64 KiB is too small for our maps. The agent raises it while it still
//! holds CAP_SYS_RESOURCE, before dropping capabilities; on a kernel where the limit matters and cannot be
//! raised, it says so, and a failed load names the limit instead of blaming missing capabilities.

use aya::util::KernelVersion;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The first kernel that ignores RLIMIT_MEMLOCK for BPF (memcg-based accounting).
const MEMCG_ACCOUNTING: (u8, u8) = (5, 11);

fn kernel_charges_memlock() -> bool {
    KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(MEMCG_ACCOUNTING.0, MEMCG_ACCOUNTING.1, 0))
}

/// Raises RLIMIT_MEMLOCK to unlimited; logs a warning when that fails on a kernel that charges BPF to it.
pub fn raise() {
    match setrlimit(Resource::RLIMIT_MEMLOCK, libc::RLIM_INFINITY, libc::RLIM_INFINITY) {
        Ok(()) => {}
        Err(err) if kernel_charges_memlock() => tracing::warn!(
            %err,
            limit = limiting().unwrap_or(0),
            "cannot raise RLIMIT_MEMLOCK, which this kernel (before 5.11) charges BPF maps to: loading may fail; \
             grant CAP_SYS_RESOURCE or set LimitMEMLOCK=infinity"
        ),
        Err(err) => tracing::debug!(%err, "could not raise RLIMIT_MEMLOCK (only matters before Linux 5.11)"),
    }
}

/// The current soft limit in bytes, when it is finite and this kernel charges BPF memory to it.
pub fn limiting() -> Option<u64> {
    if !kernel_charges_memlock() {
        return None;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).ok()?;
    (soft != libc::RLIM_INFINITY).then_some(soft)
}
