//! The traffic maps read in batches (`BPF_MAP_LOOKUP_BATCH`, what every scrape and `stats` use) return exactly
//! what the per-entry walk returns and what was written: every interface with a slot, and for each the sum of
//! its per-CPU counters (and of its protocol split) plus its base, across several batches. Also how slots are
//! given out: packed low, a freed one not reused at once, and a clear error once all are in use.

use std::collections::HashMap;

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use netns_monitor::{
    bpf::{
        LoadOptions, Probes, TrafficOptions,
        maps::{TRAFFIC, TRAFFIC_PROTOCOLS},
    },
    traffic::{
        TrafficError,
        counters::{ProtocolTotals, Totals, TrafficMap},
    },
};
use netns_monitor_common::traffic::{
    DIR_COUNT, DIR_EGRESS, DIR_INGRESS, PROTO_COUNT, PROTO_OTHER, ProtocolCounters, TrafficCounters, TrafficKey,
};
use netns_monitor_tests::require_root;

/// Distinct values for every (slot, CPU, direction, protocol), so a value read from the wrong place shows.
fn n(slot: u32, cpu: usize, dir: usize, proto: usize) -> u64 {
    u64::from(slot) * 1_000_000 + cpu as u64 * 1_000 + (dir * PROTO_COUNT + proto) as u64
}

fn counters(slot: u32, cpu: usize) -> TrafficCounters {
    let mut c = TrafficCounters::zeroed();
    for dir in 0..DIR_COUNT {
        c.packets[dir] = n(slot, cpu, dir, 0) + 7;
        c.bytes[dir] = n(slot, cpu, dir, 0) * 1_500 + 1;
    }
    c
}

fn split(slot: u32, cpu: usize) -> ProtocolCounters {
    let mut c = ProtocolCounters::zeroed();
    for dir in 0..DIR_COUNT {
        for proto in 0..PROTO_COUNT {
            c.packets[dir][proto] = n(slot, cpu, dir, proto);
            c.bytes[dir][proto] = n(slot, cpu, dir, proto) * 1_500 + 1;
        }
    }
    c
}

const INTERFACES: u32 = 2_500;
const CAPACITY: u32 = 2_600;

#[test]
fn batched_totals_equal_what_was_written_and_the_walk() {
    require_root();
    // A private pin directory: fresh, empty traffic maps, with the protocol split.
    let options =
        LoadOptions { traffic: TrafficOptions { max_interfaces: CAPACITY, protocols: true }, ..LoadOptions::default() };
    let probes = Probes::load(&options).expect("load the programs");
    let cpus = aya::util::nr_cpus().expect("possible CPUs");
    let mut traffic = TrafficMap::open(&probes.pin_dir).expect("open the traffic maps");
    assert_eq!(traffic.capacity(), CAPACITY);
    assert!(traffic.has_protocols());

    let open_array = |name: &str| MapData::from_pin(probes.pin_dir.join(name)).expect("open a pinned array");
    let mut values: PerCpuArray<MapData, TrafficCounters> =
        PerCpuArray::try_from(Map::PerCpuArray(open_array(TRAFFIC))).expect("TRAFFIC is a per-CPU array");
    let mut protocols: PerCpuArray<MapData, ProtocolCounters> =
        PerCpuArray::try_from(Map::PerCpuArray(open_array(TRAFFIC_PROTOCOLS))).expect("a per-CPU array");

    // More interfaces than two batches hold, three per namespace (ifindexes repeat across namespaces).
    let mut expected = HashMap::new();
    for entry in 0..INTERFACES {
        let key = TrafficKey { netns: 4_026_600_000 + entry / 3, ifindex: entry % 3 + 1 };
        assert!(traffic.create(key).expect("give a slot"), "a new interface gets a slot");
        assert!(!traffic.create(key).expect("idempotent"), "an interface keeps its slot");
        let slot = traffic.slot(&key).expect("its slot");
        assert_eq!(slot, entry, "slots are given out packed, lowest first");
        assert_eq!(traffic.counted(&key).expect("counted"), Some([0; 4]), "a new slot starts at zero");
        let per_cpu: Vec<TrafficCounters> = (0..cpus).map(|cpu| counters(slot, cpu)).collect();
        let per_cpu_split: Vec<ProtocolCounters> = (0..cpus).map(|cpu| split(slot, cpu)).collect();
        let mut totals = Totals { protocols: Some(ProtocolTotals::default()), ..Totals::default() };
        for (c, p) in per_cpu.iter().zip(&per_cpu_split) {
            let t = totals.protocols.as_mut().expect("split");
            for dir in 0..DIR_COUNT {
                totals.packets[dir] += c.packets[dir];
                totals.bytes[dir] += c.bytes[dir];
                for proto in 0..PROTO_COUNT {
                    t.packets[dir][proto] += p.packets[dir][proto];
                    t.bytes[dir][proto] += p.bytes[dir][proto];
                }
            }
        }
        values.set(slot, PerCpuValues::try_from(per_cpu).expect("one value per CPU"), 0).expect("write counters");
        protocols.set(slot, PerCpuValues::try_from(per_cpu_split).expect("per CPU"), 0).expect("write split");
        // Every other interface has a base (what passed before the classifiers): in the totals and, in the
        // split, under "other".
        if entry % 2 == 0 {
            let base = [100 + u64::from(entry), 10, 200, 20];
            traffic.set_base(key, base).expect("write a base");
            let t = &mut totals;
            t.bytes[DIR_INGRESS] += base[0];
            t.packets[DIR_INGRESS] += base[1];
            t.bytes[DIR_EGRESS] += base[2];
            t.packets[DIR_EGRESS] += base[3];
            let p = t.protocols.as_mut().expect("split");
            p.bytes[DIR_INGRESS][PROTO_OTHER] += base[0];
            p.packets[DIR_INGRESS][PROTO_OTHER] += base[1];
            p.bytes[DIR_EGRESS][PROTO_OTHER] += base[2];
            p.packets[DIR_EGRESS][PROTO_OTHER] += base[3];
        }
        expected.insert(key, totals);
    }

    let batched = traffic.totals().expect("totals");
    assert_eq!(batched.len(), expected.len(), "every interface, once");
    assert!(batched == expected, "batched totals differ from what was written");
    let walker = TrafficMap::open(&probes.pin_dir).expect("open again").without_batches();
    assert_eq!(walker.used(), INTERFACES, "a second handle finds the slots given");
    assert!(walker.totals().expect("walk") == expected, "the walk differs from what was written");

    // A freed slot goes back, but not to the next interface while others are free; its counters are zeroed
    // when it is given again.
    let gone = TrafficKey { netns: 4_026_600_000, ifindex: 1 };
    let freed = traffic.slot(&gone).expect("a slot");
    traffic.remove(&gone).expect("remove");
    assert_eq!(traffic.slot(&gone), None);
    expected.remove(&gone);
    assert!(traffic.totals().expect("totals") == expected, "a removed interface is gone from the totals");
    let next = TrafficKey { netns: 4_026_700_000, ifindex: 1 };
    traffic.create(next).expect("a slot");
    assert_ne!(traffic.slot(&next), Some(freed), "a slot freed an instant ago waits while others are free");

    // Fill the rest: then the freed one is reused (zeroed), and one more is a clear error.
    let mut last = None;
    while traffic.used() < CAPACITY {
        let key = TrafficKey { netns: 4_026_800_000 + traffic.used(), ifindex: 1 };
        traffic.create(key).expect("a slot");
        last = Some(key);
    }
    let reused = last.expect("some were left");
    assert_eq!(traffic.slot(&reused), Some(freed), "the cooling slot is the last one given");
    assert_eq!(traffic.counted(&reused).expect("counted"), Some([0; 4]), "a reused slot starts at zero");
    let full = traffic.create(TrafficKey { netns: 4_026_900_000, ifindex: 1 });
    assert!(matches!(full, Err(TrafficError::Full { capacity: CAPACITY })), "{full:?}");
    assert!(full.unwrap_err().to_string().contains("--max-interfaces"), "the error says what to raise");
}
