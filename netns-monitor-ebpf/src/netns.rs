//! Tier 1: network-namespace creation and destruction from the kernel functions that make and free one.
//!
//! - `fexit/copy_net_ns`: `struct net *copy_net_ns(unsigned long flags, struct user_namespace *user_ns,
//!   struct net *old_net)` (net/core/net_namespace.c, the same prototype from 5.10 to 7.x). Every new network
//!   namespace is made here, by unshare, clone or clone3 with `CLONE_NEWNET`; without that flag it returns
//!   `old_net` with a reference taken, and on failure an `ERR_PTR`. Reported from here, a namespace whose
//!   syscall fails afterwards (and that is freed at once) still gets its creation and its destruction.
//! - `fentry/netdev_exit`: `static void netdev_exit(struct net *net)` (net/core/dev.c, the same from 5.10 to
//!   7.x), the exit method of `netdev_net_ops`, which `cleanup_net` calls exactly once for every network
//!   namespace it tears down, through a function pointer, so no call site can inline it away. The pernet exit
//!   methods run in reverse order of registration, and `netdev_net_ops` (subsys_initcall) is registered after
//!   `net_ns_ops` (pure_initcall), whose exit frees the inode number: the record is out before the inode can be
//!   given to a new namespace. It comes from the `netns` workqueue, some time after the last reference went
//!   (an RCU grace period; in batches when many die at once).
//!
//!   Not `__put_net`, where the last reference goes: net/core/net_namespace.c inlines it into its own callers of
//!   `put_net`, so a namespace whose last reference is dropped there (closing its last nsfs file descriptor
//!   goes through `netns_put`, and `RTM_NEWNSID` through `rtnl_net_newid`) was never reported. The kernel
//!   matrix caught it on every kernel: a namespace held by an fd was not reported destroyed, and 1 in 1,000
//!   short-lived ones was missing.
//!
//! Tier 2 (where fentry is refused) has no function hook, and no tracepoint names a namespace as it dies, so its
//! destruction comes from one the teardown always passes through:
//! - `raw_tracepoint/workqueue_queue_work`: `TP_PROTO(int req_cpu, struct pool_workqueue *pwq, struct
//!   work_struct *work)` (kernel/workqueue.c `__queue_work`; the same arguments from 5.10 to 7.x). The IPv4
//!   pernet exit method `ipv4_frags_exit_net` calls `fqdir_exit(net->ipv4.fqdir)` (net/ipv4/inet_fragment.c),
//!   which queues `&fqdir->destroy_work` with the function `fqdir_work_fn`, once for every namespace that
//!   `cleanup_net` tears down, and before `net_ns_ops`' exit frees the inode number (IPv4 registers its pernet
//!   operations in `inet_init`, after `net_ns_init`, and exit methods run in reverse). The program compares the
//!   work's function with `fqdir_work_fn`'s address (userspace reads it from `/proc/kallsyms` and sets
//!   [`FQDIR_WORK_FN`]; without it the program is not attached), steps back to the `struct fqdir` and keeps only
//!   the namespace's IPv4 directory (`net->ipv4.fqdir == fqdir`; IPv6 and netfilter reassembly have fqdirs of
//!   their own). A raw tracepoint costs nothing to syscalls; it runs for every queued work item, and returns after
//!   one read for all but these.
//!
//! All three records carry `net.ns.inum` and, from 6.18, `net.ns.ns_id`.

use aya_ebpf::{
    EbpfContext, Global,
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns},
    macros::{fentry, fexit, raw_tracepoint},
    programs::{FEntryContext, FExitContext, RawTracePointContext},
};
use netns_monitor_common::{
    counters::COUNTER_LOST_EVENTS,
    event::{KIND_NETNS_CREATED, KIND_NETNS_DESTROYED, SYSCALL_NONE, TransitionEvent},
    ns::{CLONE_NEWNET, NS_NET},
};

use crate::{
    filter,
    kernel::{Reads, read},
    maps::{EVENTS, count},
    offset,
    syscalls::function_arg,
    task,
};

/// Address of `fqdir_work_fn` in the running kernel, from `/proc/kallsyms`; set by userspace at load time.
#[unsafe(no_mangle)]
static FQDIR_WORK_FN: Global<u64> = Global::new(0);

/// The highest address an `ERR_PTR` can have is -1; the lowest is -MAX_ERRNO (4095).
const MAX_ERRNO: u64 = 4095;

#[fexit(function = "copy_net_ns")]
pub fn fexit_copy_net_ns(ctx: FExitContext) -> u32 {
    let flags = function_arg(&ctx, 0);
    // The return value follows the three arguments.
    let net = function_arg(&ctx, 3);
    if flags & CLONE_NEWNET == 0 || net == 0 || net >= MAX_ERRNO.wrapping_neg() || !filter::wanted(&ctx) {
        return 0;
    }
    let mut event = record(&ctx, KIND_NETNS_CREATED, net as *const u8);
    event.flags = flags;
    event.new_ns[NS_NET] = event.old_ns[NS_NET];
    event.old_ns[NS_NET] = 0;
    filter::created(event.new_ns[NS_NET]);
    send(&event);
    0
}

#[fentry(function = "netdev_exit")]
pub fn fentry_netdev_exit(ctx: FEntryContext) -> u32 {
    // Not filtered by the caller: this runs in a kernel worker. A process filter keeps the namespaces its
    // process made ([`filter::destruction_wanted`]), and userspace keeps the destructions of the namespaces
    // whose creations it kept (`trace --pid`).
    let net = function_arg(&ctx, 0);
    if net != 0 {
        destroyed(&ctx, net as *const u8);
    }
    0
}

#[raw_tracepoint(tracepoint = "workqueue_queue_work")]
pub fn netns_exit_queued(ctx: RawTracePointContext) -> i32 {
    let work: *const u8 = ctx.arg(2);
    let expected = FQDIR_WORK_FN.load();
    if expected == 0 || read::<u64>(work, offset!(work_func)) != Some(expected) {
        return 0;
    }
    let fqdir = work.wrapping_sub(offset!(fqdir_destroy_work) as usize);
    let Some(net) = read::<*const u8>(fqdir, offset!(fqdir_net)) else {
        return 0;
    };
    // Filtered as fentry_netdev_exit: this is cleanup_net's worker.
    if !net.is_null() && read::<*const u8>(net, offset!(net_ipv4_fqdir)) == Some(fqdir) {
        destroyed(&ctx, net);
    }
    0
}

/// Reports the destruction of `net`, if it passes the process filter.
#[inline(always)]
fn destroyed<C: EbpfContext>(ctx: &C, net: *const u8) {
    let event = record(ctx, KIND_NETNS_DESTROYED, net);
    if filter::destruction_wanted(event.old_ns[NS_NET]) {
        send(&event);
    }
}

/// A lifecycle record for namespace `net` with the current task as the caller, the inode in `old_ns`.
#[inline(always)]
pub fn record<C: EbpfContext>(ctx: &C, kind: u32, net: *const u8) -> TransitionEvent {
    let mut event = TransitionEvent::zeroed();
    event.kind = kind;
    event.syscall = SYSCALL_NONE;
    // SAFETY: the helper has no preconditions.
    event.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    event.pid = ctx.tgid();
    event.tid = ctx.pid();
    event.ppid = task::tgid(task::real_parent(task::current()));
    event.uid = bpf_get_current_uid_gid() as u32;
    event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let mut reads = Reads::new();
    event.old_ns[NS_NET] = reads.inum(net, NS_NET);
    event.net_cookie = task::net_ns_id(net, &mut reads);
    reads.finish();
    event.changed = 1 << NS_NET;
    event
}

#[inline(always)]
pub fn send(event: &TransitionEvent) {
    if EVENTS.output::<TransitionEvent>(event, 0).is_err() {
        count(COUNTER_LOST_EVENTS);
    }
}
