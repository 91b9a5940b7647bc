//! Per-interface traffic, from tc/TCX classifiers on ingress and egress of every veth end.
//!
//! Why these hooks: TCX (Linux >= 6.6; aya falls back to a clsact qdisc on older kernels) sees every packet an
//! interface receives or sends, per namespace, without touching the packet. The programs never change a
//! packet's fate: they always return `TC_ACT_UNSPEC` (= `TCX_NEXT`), which hands the packet to the next program
//! in the chain and, after the last one, to the stack. Userspace attaches the ingress program first in the chain
//! (it sees what the interface received, before anyone can drop it) and the egress program last (it counts what
//! is actually handed to the device), which is what the kernel's own rx/tx statistics count for veth.
//!
//! The context is the kernel's `struct sk_buff *` at run time; the interface's namespace is
//! `skb->dev->nd_net.net->ns.inum` (offsets from BTF, as for the transition programs, Linux 6.18 layout). Each
//! kernel read costs about 30 ns here, so a per-CPU memo keeps the last device's namespace and the walk is one
//! read in the common case (measured with `cargo xtask bench`: see the README). The memo is dropped whenever
//! userspace bumps `LINK_GENERATION` (any link or namespace change it hears of), so a device moved to another
//! namespace, or a freed device's address reused, is attributed right once the agent has seen the change. The
//! packet's protocol comes from `skb->protocol` and one byte of the IP header (direct packet access: tc programs
//! see the frame from its Ethernet header).
//!
//! Counters live in a per-CPU hash keyed by (namespace inode, ifindex), so the packet path shares no cache line
//! and takes no lock. Only userspace creates entries (before it attaches, so no packet of an attached interface
//! misses one) and removes them (when the interface or its namespace goes). The program never creates one: the
//! kernel tells userspace a namespace died (`RTM_DELNSID`) before it unregisters the namespace's devices, and a
//! packet they send meanwhile would otherwise bring back counters nobody will ever remove.

use aya_ebpf::{EbpfContext as _, bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use netns_monitor_common::{
    counters::{COUNTER_TRAFFIC_NO_ENTRY, COUNTER_TRAFFIC_UNKNOWN_NETNS},
    ns::NS_NET,
    traffic::{DIR_EGRESS, DIR_INGRESS, DeviceCache, PROTO_ICMP, PROTO_OTHER, PROTO_TCP, PROTO_UDP, TrafficKey},
};

use crate::{
    kernel::{inum, read},
    maps::{DEVICE_CACHE, DEVICE_CACHE_SLOTS, LINK_GENERATION, TRAFFIC, count},
    offset,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;
/// Offset of the protocol byte from the start of the IPv4 header, and of next-header in IPv6.
const IPV4_PROTOCOL: usize = 9;
const IPV6_NEXT_HEADER: usize = 6;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    count_packet(&ctx, DIR_INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    count_packet(&ctx, DIR_EGRESS);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn count_packet(ctx: &TcContext, dir: usize) {
    let Some(netns) = netns_of(ctx) else {
        count(COUNTER_TRAFFIC_UNKNOWN_NETNS);
        return;
    };
    // SAFETY: `skb` is the program's context pointer, valid for the whole run; these are plain ctx reads.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = TrafficKey { netns, ifindex };
    let Some(counters) = TRAFFIC.get_ptr_mut(key) else {
        count(COUNTER_TRAFFIC_NO_ENTRY);
        return;
    };
    let proto = protocol(ctx);
    let len = u64::from(ctx.len());
    // SAFETY: the pointer comes from a successful lookup in a per-CPU map: this CPU's copy, which nothing else
    // writes while the program runs (preemption is off), valid until the program returns. Indexes are < 2 and
    // < 4 by construction.
    unsafe {
        (*counters).packets[dir][proto] += 1;
        (*counters).bytes[dir][proto] += len;
    }
}

/// Inode of the network namespace of the packet's device: one kernel read (`skb->dev`) when this CPU's memo
/// holds that device for the current link generation, three otherwise.
#[inline(always)]
fn netns_of(ctx: &TcContext) -> Option<u32> {
    let skb = ctx.as_ptr() as *const u8;
    let dev = read::<*const u8>(skb, offset!(skb_dev))?;
    let generation = LINK_GENERATION.get(0).copied().unwrap_or(0);
    // Direct-mapped by address: a veth pair's two ends alternate on one CPU (the sender's egress, then the
    // peer's ingress), so a single slot would always miss. net_device structs are page-aligned allocations.
    let slot = ((dev as u64 >> 12) % u64::from(DEVICE_CACHE_SLOTS)) as u32;
    let cache = DEVICE_CACHE.get_ptr_mut(slot)?;
    // SAFETY: a per-CPU array slot: this CPU's own, valid while the program runs, not shared.
    let cache = unsafe { &mut *cache };
    if cache.device == dev as u64 && cache.generation == generation && cache.netns != 0 {
        return Some(cache.netns);
    }
    let net = read::<*const u8>(dev, offset!(netdev_net))?;
    let inode = inum(net, NS_NET);
    if inode == 0 {
        return None;
    }
    *cache = DeviceCache { device: dev as u64, netns: inode, generation };
    Some(inode)
}

/// The packet's transport protocol class.
#[inline(always)]
fn protocol(ctx: &TcContext) -> usize {
    // SAFETY: plain ctx read; `protocol` is the ethertype in network byte order.
    let ethertype = u32::from(u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16));
    let offset = match ethertype {
        ETH_P_IP => ETH_HLEN + IPV4_PROTOCOL,
        ETH_P_IPV6 => ETH_HLEN + IPV6_NEXT_HEADER,
        _ => return PROTO_OTHER,
    };
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + offset + 1 > end {
        return PROTO_OTHER;
    }
    // SAFETY: the byte lies inside [data, data_end), checked just above (the verifier checks it too).
    match unsafe { *((data + offset) as *const u8) } {
        IPPROTO_TCP => PROTO_TCP,
        IPPROTO_UDP => PROTO_UDP,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => PROTO_ICMP,
        _ => PROTO_OTHER,
    }
}
