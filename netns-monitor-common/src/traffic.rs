//! Per-interface traffic counters kept by the tc/TCX classifiers.

/// Index of the direction in [`TrafficCounters`] arrays: packets arriving on the interface (tc ingress).
pub const DIR_INGRESS: usize = 0;
/// Packets leaving through the interface (tc egress).
pub const DIR_EGRESS: usize = 1;
/// Number of directions.
pub const DIR_COUNT: usize = 2;

/// Index of the protocol in [`TrafficCounters`] arrays.
pub const PROTO_TCP: usize = 0;
pub const PROTO_UDP: usize = 1;
/// ICMP and ICMPv6.
pub const PROTO_ICMP: usize = 2;
/// Anything else, including IPv6 whose transport header follows extension headers.
pub const PROTO_OTHER: usize = 3;
/// Number of protocol classes.
pub const PROTO_COUNT: usize = 4;

/// An interface, as the key of `TRAFFIC_SLOTS` (its counter slot) and `TRAFFIC_BASE`: interface indexes are only
/// unique inside one namespace, so the namespace's inode is part of the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrafficKey {
    /// nsfs inode of the interface's network namespace.
    pub netns: u32,
    /// Interface index inside that namespace.
    pub ifindex: u32,
}

/// Value of the `TRAFFIC` map, an array indexed by the interface's counter slot (one value per CPU; userspace
/// sums them): packets and bytes by direction. The hot path updates two words per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub packets: [u64; DIR_COUNT],
    pub bytes: [u64; DIR_COUNT],
}

impl TrafficCounters {
    pub const fn zeroed() -> Self {
        Self { packets: [0; DIR_COUNT], bytes: [0; DIR_COUNT] }
    }
}

/// Value of the `TRAFFIC_PROTOCOLS` map (same slots as `TRAFFIC`), filled only when the protocol split is on:
/// packets and bytes by direction and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolCounters {
    pub packets: [[u64; PROTO_COUNT]; DIR_COUNT],
    pub bytes: [[u64; PROTO_COUNT]; DIR_COUNT],
}

impl ProtocolCounters {
    pub const fn zeroed() -> Self {
        Self { packets: [[0; PROTO_COUNT]; DIR_COUNT], bytes: [[0; PROTO_COUNT]; DIR_COUNT] }
    }
}

/// Counter slots on a cls_bpf (clsact) attachment come from the filter's classid, which the kernel stores in
/// the 16-bit `qdisc_skb_cb.tc_classid` before it runs the program: slot `n` is classid `n + 1` (0 means the
/// filter carries none), so there are at most this many slots.
pub const MAX_SLOTS: u32 = u16::MAX as u32;

/// The classifiers' load-time settings (the `TRAFFIC_CONFIG` global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficConfig {
    /// Non-zero when the classifiers are attached as cls_bpf filters whose classid names the counter slot
    /// (clsact kernels): then a packet needs no kernel read to find its counters.
    pub slot_from_classid: u32,
    /// Non-zero to count by protocol too (`TRAFFIC_PROTOCOLS`).
    pub protocols: u32,
}

/// Value of the `TRAFFIC_BASE` map, written only by userspace: what the kernel counted on an interface that the
/// classifiers never saw (packets before they were attached). An interface's totals are its `TRAFFIC` counters
/// plus this. It is kept apart because userspace cannot add to a per-CPU entry without overwriting what the
/// programs count meanwhile on the other CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficBase {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

const _: () = assert!(size_of::<TrafficKey>() == 8);
const _: () = assert!(size_of::<TrafficBase>() == 32);
const _: () = assert!(size_of::<TrafficCounters>() == 2 * 2 * 8);
const _: () = assert!(size_of::<ProtocolCounters>() == 2 * 2 * 4 * 8);
const _: () = assert!(size_of::<TrafficConfig>() == 8);

/// A CPU's memo of a device a classifier saw and that device's counter slot, so the common case on TCX (a run
/// of packets through one device) costs one kernel read and no hash lookup. Valid while `generation` equals the
/// `LINK_GENERATION` userspace bumps on every link or namespace change.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCache {
    /// `struct net_device *` as an integer.
    pub device: u64,
    pub slot: u32,
    pub generation: u32,
}

const _: () = assert!(size_of::<DeviceCache>() == 16);
