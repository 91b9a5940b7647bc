//! Kernel struct field offsets the programs need to walk from a task to its namespaces.
//!
//! Rust eBPF has no CO-RE relocations, so userspace computes these from `/sys/kernel/btf/vmlinux` at
//! start-up and sets them as the programs' `OFFSETS` global. Layouts change between kernels (6.18 reworked
//! `ns_common`), so none of them is ever hard-coded.

/// Marks an offset the running kernel does not have (for example `time_ns` without `CONFIG_TIME_NS`).
/// The programs report inode 0 for a namespace type whose path contains an unavailable offset.
pub const UNAVAILABLE: u32 = u32::MAX;

/// Byte offsets of the fields on the paths task -> namespace -> `ns_common.inum`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.pid` (thread id in the initial pid namespace)
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.real_cred`
    pub task_real_cred: u32,
    /// `task_struct.thread_pid`
    pub task_thread_pid: u32,
    /// `cred.user_ns`
    pub cred_user_ns: u32,
    /// `pid.level`
    pub pid_level: u32,
    /// `pid.numbers` (array of `struct upid`)
    pub pid_numbers: u32,
    /// `sizeof(struct upid)`
    pub upid_size: u32,
    /// `upid.ns`
    pub upid_ns: u32,
    /// `sk_buff.dev` (the classifiers' context is the kernel's `struct sk_buff *`)
    pub skb_dev: u32,
    /// `net_device.nd_net.net`
    pub netdev_net: u32,
    /// `net.ns.ns_id` (Linux >= 6.18; [`UNAVAILABLE`] before).
    pub net_ns_id: u32,
    /// `work_struct.func` (tier 2's destruction probe compares it with `fqdir_work_fn`).
    pub work_func: u32,
    /// `fqdir.destroy_work`, the work `fqdir_exit` queues.
    pub fqdir_destroy_work: u32,
    /// `fqdir.net`
    pub fqdir_net: u32,
    /// `net.ipv4.fqdir`, the namespace's IPv4 fragment directory (the one of its fqdirs the probe reports).
    pub net_ipv4_fqdir: u32,
    /// Where the first two syscall arguments sit in the `struct pt_regs` a syscall wrapper (`__x64_sys_*`)
    /// receives: `di` and `si` on x86_64. [`UNAVAILABLE`] on other architectures, which then use the tracepoints.
    pub regs_arg: [u32; 2],
    /// `nsproxy` members, indexed like [`crate::ns`] (`NS_PID`, `NS_USER` have no nsproxy member and are
    /// [`UNAVAILABLE`] here; they are reached through `thread_pid` and `real_cred`).
    pub nsproxy_member: [u32; crate::ns::NS_COUNT],
    /// Offset of `ns.inum` inside each namespace struct (`net`, `mnt_namespace`, ...), indexed like
    /// [`crate::ns`].
    pub ns_inum: [u32; crate::ns::NS_COUNT],
}

impl KernelOffsets {
    /// Every offset unavailable: what the programs see if userspace never set the global.
    pub const fn unavailable() -> Self {
        Self {
            task_nsproxy: UNAVAILABLE,
            task_real_parent: UNAVAILABLE,
            task_pid: UNAVAILABLE,
            task_tgid: UNAVAILABLE,
            task_real_cred: UNAVAILABLE,
            task_thread_pid: UNAVAILABLE,
            cred_user_ns: UNAVAILABLE,
            pid_level: UNAVAILABLE,
            pid_numbers: UNAVAILABLE,
            upid_size: UNAVAILABLE,
            upid_ns: UNAVAILABLE,
            skb_dev: UNAVAILABLE,
            netdev_net: UNAVAILABLE,
            net_ns_id: UNAVAILABLE,
            work_func: UNAVAILABLE,
            fqdir_destroy_work: UNAVAILABLE,
            fqdir_net: UNAVAILABLE,
            net_ipv4_fqdir: UNAVAILABLE,
            regs_arg: [UNAVAILABLE; 2],
            nsproxy_member: [UNAVAILABLE; crate::ns::NS_COUNT],
            ns_inum: [UNAVAILABLE; crate::ns::NS_COUNT],
        }
    }
}

const _: () = assert!(size_of::<KernelOffsets>() == 20 * 4 + 2 * 4 * crate::ns::NS_COUNT);
