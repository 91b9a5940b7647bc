//! The traffic map read in batches (`BPF_MAP_LOOKUP_BATCH`, what every scrape and `stats` use) returns exactly
//! what the per-key walk returns and what was written: every key, and for each the sum of its per-CPU values,
//! across several batches.

use std::collections::HashMap;

use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
use netns_monitor::{
    bpf::{LoadOptions, Probes, maps::TRAFFIC},
    traffic::counters::{Totals, TrafficMap},
};
use netns_monitor_common::traffic::{DIR_COUNT, PROTO_COUNT, TrafficCounters, TrafficKey};
use netns_monitor_tests::require_root;

/// Distinct values for every (entry, CPU, direction, protocol), so a value read from the wrong slot shows.
fn counters(entry: u32, cpu: usize) -> TrafficCounters {
    let mut c = TrafficCounters::zeroed();
    for dir in 0..DIR_COUNT {
        for proto in 0..PROTO_COUNT {
            let n = u64::from(entry) * 1_000_000 + cpu as u64 * 1_000 + (dir * PROTO_COUNT + proto) as u64;
            c.packets[dir][proto] = n;
            c.bytes[dir][proto] = n * 1_500 + 1;
        }
    }
    c
}

#[test]
fn batched_totals_equal_what_was_written_and_the_walk() {
    require_root();
    // A private pin directory: a fresh, empty TRAFFIC map.
    let probes = Probes::load(&LoadOptions::default()).expect("load the programs");
    let data = MapData::from_pin(probes.pin_dir.join(TRAFFIC)).expect("open the pinned traffic map");
    let mut map: PerCpuHashMap<MapData, TrafficKey, TrafficCounters> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).expect("a per-CPU hash map");
    let cpus = aya::util::nr_cpus().expect("possible CPUs");

    // More entries than two batches hold.
    let mut expected = HashMap::new();
    for entry in 0..2_500u32 {
        let key = TrafficKey { netns: 4_026_600_000 + entry / 3, ifindex: entry % 3 + 1 };
        let values: Vec<TrafficCounters> = (0..cpus).map(|cpu| counters(entry, cpu)).collect();
        let mut totals = Totals::default();
        for v in &values {
            for dir in 0..DIR_COUNT {
                for proto in 0..PROTO_COUNT {
                    totals.packets[dir][proto] += v.packets[dir][proto];
                    totals.bytes[dir][proto] += v.bytes[dir][proto];
                }
            }
        }
        map.insert(key, PerCpuValues::try_from(values).expect("one value per CPU"), 0).expect("insert");
        expected.insert(key, totals);
    }

    let traffic = TrafficMap::open(&probes.pin_dir).expect("open the traffic map");
    let batched = traffic
        .totals_batched()
        .expect("batch lookup")
        .expect("this kernel (>= 5.6) supports batch lookups of per-CPU hash maps");
    assert_eq!(batched.len(), expected.len(), "every entry, once");
    assert!(batched == expected, "batched totals differ from what was written");
    assert!(traffic.totals_walked().expect("walk") == expected, "the walk differs from what was written");
    assert!(traffic.totals().expect("totals") == expected);
}
