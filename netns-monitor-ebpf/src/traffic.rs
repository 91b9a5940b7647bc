//! Per-interface traffic, from tc/TCX classifiers on ingress and egress of every veth end.
//!
//! Why these hooks: TCX (Linux >= 6.6; aya falls back to a clsact qdisc on older kernels) sees every packet an
//! interface receives or sends, per namespace, without touching the packet. The programs never change a
//! packet's fate: they always return `TC_ACT_UNSPEC` (= `TCX_NEXT`), which hands the packet to the next program
//! in the chain and, after the last one, to the stack. Userspace attaches the ingress program first in the chain
//! (it sees what the interface received, before anyone can drop it) and the egress program last (it counts what
//! is actually handed to the device), which is what the kernel's own rx/tx statistics count for veth.
//!
//! Finding the interface's counters is the whole cost, so it is made as cheap as each kernel allows. Counters
//! live in per-CPU arrays indexed by a slot userspace gives each interface (`TRAFFIC`, and `TRAFFIC_PROTOCOLS`
//! when the protocol split is on), so the packet path shares no cache line, takes no lock and hashes nothing.
//! The slot comes from, cheapest first:
//! - the attachment itself, on clsact kernels (before 6.6, or `NETNS_MONITOR_TC=clsact`): each cls_bpf filter
//!   carries its interface's slot as its classid, which the kernel copies into `qdisc_skb_cb.tc_classid` (16
//!   bits) just before it runs the filter's program (`cls_bpf_classify`), and the program reads it as
//!   `__sk_buff.tc_classid`: no kernel read at all. A filter moves with nothing: a device that changes namespace
//!   loses its qdisc (`dev_shutdown`) and is attached again with another slot. TCX runs programs without such a
//!   per-attachment word (`tc_classid` is then stale), so `TRAFFIC_CONFIG.slot_from_classid` says which applies.
//! - a per-CPU memo of recent devices (`DEVICE_CACHE`, direct-mapped by the device's address): one kernel read
//!   (`skb->dev`, about 30 ns on the VM this was measured on). The memo is dropped whenever userspace bumps
//!   `LINK_GENERATION` (any link or namespace change it hears of), so a device moved to another namespace, or a
//!   freed device's address reused, is attributed right once the agent has seen the change.
//! - the device's namespace (`skb->dev->nd_net.net->ns.inum`, offsets from BTF as for the transition programs,
//!   Linux 6.18 layout) and ifindex, looked up in `TRAFFIC_SLOTS`; the memo then keeps the answer.
//!
//! The packet's protocol, only with the split on, comes from `skb->protocol` and one byte of the IP header
//! (direct packet access: tc programs see the frame from its Ethernet header).
//!
//! Only userspace gives out slots (before it attaches, so no packet of an attached interface finds none) and
//! takes them back (when the interface or its namespace goes). The program never creates one: the kernel tells
//! userspace a namespace died (`RTM_DELNSID`) before it unregisters the namespace's devices, and a packet they
//! send meanwhile would otherwise bring back counters nobody will ever remove.

use aya_ebpf::{EbpfContext as _, bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use netns_monitor_common::{
    counters::{COUNTER_TRAFFIC_NO_ENTRY, COUNTER_TRAFFIC_UNKNOWN_NETNS},
    ns::NS_NET,
    traffic::{
        DIR_EGRESS, DIR_INGRESS, DeviceCache, PROTO_ICMP, PROTO_OTHER, PROTO_TCP, PROTO_UDP, TrafficConfig, TrafficKey,
    },
};

use crate::{
    kernel::{inum, read},
    maps::{DEVICE_CACHE, DEVICE_CACHE_SLOTS, LINK_GENERATION, TRAFFIC, TRAFFIC_PROTOCOLS, TRAFFIC_SLOTS, count},
    offset,
};

/// Set by userspace at load time (`EbpfLoader::override_global("TRAFFIC_CONFIG", ..)`); read-only to the
/// programs, so the verifier knows its value and drops the branches it rules out.
#[unsafe(no_mangle)]
pub static TRAFFIC_CONFIG: TrafficConfig = TrafficConfig { slot_from_classid: 0, protocols: 0 };

/// Reads one field of `TRAFFIC_CONFIG`; volatile so the compiler cannot fold in the placeholder the object
/// file carries.
macro_rules! config {
    ($field:ident) => {{
        let field = &raw const TRAFFIC_CONFIG.$field;
        // SAFETY: `field` points into TRAFFIC_CONFIG, a static that lives for the whole program.
        unsafe { core::ptr::read_volatile(field) }
    }};
}

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
    let Some(slot) = slot_of(ctx) else { return };
    let Some(counters) = TRAFFIC.get_ptr_mut(slot) else {
        count(COUNTER_TRAFFIC_NO_ENTRY);
        return;
    };
    let len = u64::from(ctx.len());
    // SAFETY: the pointer comes from a successful lookup in a per-CPU map: this CPU's copy, which nothing else
    // writes while the program runs (preemption is off), valid until the program returns. `dir` is < 2 by
    // construction.
    unsafe {
        (*counters).packets[dir] += 1;
        (*counters).bytes[dir] += len;
    }
    if config!(protocols) != 0
        && let Some(split) = TRAFFIC_PROTOCOLS.get_ptr_mut(slot)
    {
        let proto = protocol(ctx);
        // SAFETY: as above; `proto` is < 4 by construction.
        unsafe {
            (*split).packets[dir][proto] += 1;
            (*split).bytes[dir][proto] += len;
        }
    }
}

/// The packet's interface's counter slot: from the filter's classid where that names it, else through the
/// device. `None` (counted) when the interface has none.
#[inline(always)]
fn slot_of(ctx: &TcContext) -> Option<u32> {
    if config!(slot_from_classid) != 0 {
        // SAFETY: `skb` is the program's context pointer, valid for the whole run; a plain ctx read.
        let classid = unsafe { (*ctx.skb.skb).tc_classid };
        if classid != 0 {
            return Some(classid - 1);
        }
        // A filter without a classid (left by an agent from before slots): the device tells.
    }
    slot_of_device(ctx)
}

/// The slot of the packet's device: one kernel read (`skb->dev`) when this CPU's memo holds that device for the
/// current link generation, three and a hash lookup otherwise.
#[inline(always)]
fn slot_of_device(ctx: &TcContext) -> Option<u32> {
    let skb = ctx.as_ptr() as *const u8;
    let Some(dev) = read::<*const u8>(skb, offset!(skb_dev)).filter(|dev| !dev.is_null()) else {
        count(COUNTER_TRAFFIC_UNKNOWN_NETNS);
        return None;
    };
    let generation = LINK_GENERATION.get(0).copied().unwrap_or(0);
    // Direct-mapped by address: a veth pair's two ends alternate on one CPU (the sender's egress, then the
    // peer's ingress), so a single slot would always miss. net_device structs are page-aligned allocations.
    let index = ((dev as u64 >> 12) % u64::from(DEVICE_CACHE_SLOTS)) as u32;
    let cache = DEVICE_CACHE.get_ptr_mut(index)?;
    // SAFETY: a per-CPU array slot: this CPU's own, valid while the program runs, not shared.
    let cache = unsafe { &mut *cache };
    if cache.device == dev as u64 && cache.generation == generation {
        return Some(cache.slot);
    }
    let netns = read::<*const u8>(dev, offset!(netdev_net)).map_or(0, |net| inum(net, NS_NET));
    if netns == 0 {
        count(COUNTER_TRAFFIC_UNKNOWN_NETNS);
        return None;
    }
    // SAFETY: plain ctx read (`skb->dev->ifindex`, rewritten by the verifier).
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a hash map value read by copy right away; only userspace writes this map.
    let Some(&slot) = (unsafe { TRAFFIC_SLOTS.get(TrafficKey { netns, ifindex }) }) else {
        count(COUNTER_TRAFFIC_NO_ENTRY);
        return None;
    };
    *cache = DeviceCache { device: dev as u64, slot, generation };
    Some(slot)
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
