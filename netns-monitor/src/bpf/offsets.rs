//! Computes [`KernelOffsets`] for the running kernel from its BTF.
//!
//! The net namespace path (task -> nsproxy -> net_ns -> ns.inum) is required: without it no event can say
//! which network namespace a task left or entered, so loading fails with the missing member named. Other
//! namespace types are optional (a kernel without `CONFIG_TIME_NS` has no `time_ns`): their offsets become
//! [`UNAVAILABLE`] and the programs report inode 0 for them.

use netns_monitor_common::{
    ns::{
        NS_CGROUP, NS_COUNT, NS_IPC, NS_MNT, NS_NET, NS_PID, NS_PID_FOR_CHILDREN, NS_TIME, NS_TIME_FOR_CHILDREN,
        NS_USER, NS_UTS,
    },
    offsets::{KernelOffsets, UNAVAILABLE},
};

use super::btf::{Btf, BtfError};

/// For each namespace type: the `nsproxy` member that points to it (if any) and the struct it points to.
const NAMESPACE_STRUCTS: [(usize, Option<&str>, &str); NS_COUNT] = [
    (NS_NET, Some("net_ns"), "net"),
    (NS_MNT, Some("mnt_ns"), "mnt_namespace"),
    (NS_PID, None, "pid_namespace"),
    (NS_PID_FOR_CHILDREN, Some("pid_ns_for_children"), "pid_namespace"),
    (NS_UTS, Some("uts_ns"), "uts_namespace"),
    (NS_IPC, Some("ipc_ns"), "ipc_namespace"),
    (NS_USER, None, "user_namespace"),
    (NS_CGROUP, Some("cgroup_ns"), "cgroup_namespace"),
    (NS_TIME, Some("time_ns"), "time_namespace"),
    (NS_TIME_FOR_CHILDREN, Some("time_ns_for_children"), "time_namespace"),
];

/// Offsets for the running kernel; fails only if the network-namespace path cannot be resolved.
pub fn compute(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let optional = |ty: &str, path: &str| match btf.member_offset(ty, path) {
        Ok(offset) => Ok(offset),
        Err(BtfError::NoSuchStruct(_) | BtfError::NoSuchMember { .. }) => Ok(UNAVAILABLE),
        Err(other) => Err(other),
    };
    let mut offsets = KernelOffsets {
        task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        task_real_parent: btf.member_offset("task_struct", "real_parent")?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_real_cred: optional("task_struct", "real_cred")?,
        task_thread_pid: optional("task_struct", "thread_pid")?,
        cred_user_ns: optional("cred", "user_ns")?,
        pid_level: optional("pid", "level")?,
        pid_numbers: optional("pid", "numbers")?,
        upid_size: btf.struct_size("upid").unwrap_or(UNAVAILABLE),
        upid_ns: optional("upid", "ns")?,
        // The classifiers cannot attribute packets to namespaces without these two.
        skb_dev: btf.member_offset("sk_buff", "dev")?,
        netdev_net: btf.member_offset("net_device", "nd_net.net")?,
        net_ns_id: optional("net", "ns.ns_id")?,
        work_func: optional("work_struct", "func")?,
        fqdir_destroy_work: optional("fqdir", "destroy_work")?,
        fqdir_net: optional("fqdir", "net")?,
        net_ipv4_fqdir: optional("net", "ipv4.fqdir")?,
        regs_arg: syscall_registers(btf)?,
        ..KernelOffsets::unavailable()
    };
    for (index, member, ty) in NAMESPACE_STRUCTS {
        let required = index == NS_NET;
        let lookup = |ty: &str, path: &str| if required { btf.member_offset(ty, path) } else { optional(ty, path) };
        if let Some(member) = member {
            offsets.nsproxy_member[index] = lookup("nsproxy", member)?;
        }
        offsets.ns_inum[index] = lookup(ty, "ns.inum")?;
    }
    Ok(offsets)
}

/// Where the syscall wrappers' `struct pt_regs` holds the first two arguments (tier 1 reads them there).
#[cfg(target_arch = "x86_64")]
fn syscall_registers(btf: &Btf) -> Result<[u32; 2], BtfError> {
    let optional = |path: &str| match btf.member_offset("pt_regs", path) {
        Ok(offset) => Ok(offset),
        Err(BtfError::NoSuchStruct(_) | BtfError::NoSuchMember { .. }) => Ok(UNAVAILABLE),
        Err(other) => Err(other),
    };
    Ok([optional("di")?, optional("si")?])
}

#[cfg(not(target_arch = "x86_64"))]
fn syscall_registers(_btf: &Btf) -> Result<[u32; 2], BtfError> {
    Ok([UNAVAILABLE; 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_has_every_namespace_path() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let offsets = compute(&btf).expect("offsets");
        // This kernel (6.18, CONFIG_TIME_NS) has all ten paths; a missing one would silently report 0s.
        for index in 0..NS_COUNT {
            assert_ne!(offsets.ns_inum[index], UNAVAILABLE, "ns_inum[{index}]");
        }
        for (index, member, _) in NAMESPACE_STRUCTS {
            assert_eq!(offsets.nsproxy_member[index] == UNAVAILABLE, member.is_none(), "nsproxy_member[{index}]");
        }
        assert_ne!(offsets.upid_size, UNAVAILABLE);
        assert_ne!(offsets.cred_user_ns, UNAVAILABLE);
        // Linux 6.18: `dev` sits after `next` and `prev` in an anonymous union of struct sk_buff.
        assert_eq!(offsets.skb_dev, 16);
        // x86_64 `struct pt_regs`: r15 .. ax, cx, dx, si (13th u64), di (14th); 6.18 has namespace ids.
        assert_eq!(offsets.regs_arg, [112, 104]);
        assert_ne!(offsets.net_ns_id, UNAVAILABLE);
        // The destruction probe's path (tier 2): work -> fqdir -> net -> net.ipv4.fqdir.
        assert_eq!(offsets.work_func, 24, "atomic_long_t data, struct list_head entry, then func");
        for offset in [offsets.fqdir_destroy_work, offsets.fqdir_net, offsets.net_ipv4_fqdir] {
            assert_ne!(offset, UNAVAILABLE);
        }
    }
}
