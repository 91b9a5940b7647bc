//! What the agent currently watches, shared between its event loop (the writer) and the scrape (the reader):
//! the interfaces it counts and the netns ids it gave out.

use std::collections::BTreeMap;

use netns_monitor_common::traffic::TrafficKey;

/// A snapshot the collector reads at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// Interfaces with classifiers attached: (netns inode, ifindex) -> interface name.
    pub interfaces: BTreeMap<TrafficKey, String>,
    /// Netns ids in the agent's namespace, by inode.
    pub nsids: BTreeMap<u32, i32>,
    /// Processes that got into each namespace, by syscall in `Syscall::ALL`'s order (`lifecycle::arrivals`).
    pub arrivals: BTreeMap<u32, [u64; 4]>,
}

impl Topology {
    /// Interfaces of one namespace.
    pub fn interfaces_of(&self, netns: u32) -> impl Iterator<Item = (&TrafficKey, &String)> {
        self.interfaces.range(TrafficKey { netns, ifindex: 0 }..=TrafficKey { netns, ifindex: u32::MAX })
    }
}
