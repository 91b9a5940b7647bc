//! Reading the pinned `TRAFFIC` map: per-CPU values summed into totals per interface.
//!
//! A scrape reads every entry. aya (0.14) walks a hash map with two syscalls per entry (next key, then lookup),
//! 40,000 syscalls for 20,000 interfaces; `BPF_MAP_LOOKUP_BATCH` (Linux >= 5.6) returns up to [`BATCH`]
//! entries per syscall, so [`TrafficMap::totals`] uses it and falls back to the walk where the kernel lacks it.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::Path,
};

use aya::maps::{Map, MapData, MapError, PerCpuHashMap, PerCpuValues};
use netns_monitor_common::traffic::{
    DIR_COUNT, DIR_EGRESS, DIR_INGRESS, PROTO_COUNT, PROTO_OTHER, TrafficCounters, TrafficKey,
};

use super::TrafficError;
use crate::bpf::maps::TRAFFIC;

/// The kernel's internal "operation not supported" (not in libc), which the bpf syscall can return.
const ENOTSUPP: i32 = 524;

/// Totals of one interface: packets and bytes by direction (`DIR_*`) and protocol (`PROTO_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: [[u64; PROTO_COUNT]; DIR_COUNT],
    pub bytes: [[u64; PROTO_COUNT]; DIR_COUNT],
}

impl Totals {
    /// All packets in direction `dir`.
    pub fn packets(&self, dir: usize) -> u64 {
        self.packets[dir].iter().sum()
    }

    /// All bytes in direction `dir`.
    pub fn bytes(&self, dir: usize) -> u64 {
        self.bytes[dir].iter().sum()
    }

    /// Adds another interface's totals (a namespace's sum over its interfaces).
    pub fn merge(&mut self, other: &Totals) {
        for dir in 0..DIR_COUNT {
            for proto in 0..PROTO_COUNT {
                self.packets[dir][proto] += other.packets[dir][proto];
                self.bytes[dir][proto] += other.bytes[dir][proto];
            }
        }
    }

    fn add(&mut self, counters: &TrafficCounters) {
        for dir in 0..DIR_COUNT {
            for proto in 0..PROTO_COUNT {
                self.packets[dir][proto] += counters.packets[dir][proto];
                self.bytes[dir][proto] += counters.bytes[dir][proto];
            }
        }
    }
}

/// Entries asked for per `BPF_MAP_LOOKUP_BATCH` call.
const BATCH: usize = 1024;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s member for the `BPF_MAP_*_BATCH` commands (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The traffic map, opened from its pin (so the CLI can read it while an agent owns the programs).
pub struct TrafficMap {
    map: PerCpuHashMap<MapData, TrafficKey, TrafficCounters>,
    /// The same map, for the batch lookups aya does not offer.
    fd: OwnedFd,
}

impl TrafficMap {
    /// Opens `PIN_DIR/TRAFFIC`.
    pub fn open(pin_dir: &Path) -> Result<Self, TrafficError> {
        let path = pin_dir.join(TRAFFIC);
        let data = MapData::from_pin(&path)
            .map_err(|source| TrafficError::OpenMap { path: path.display().to_string(), source })?;
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(TrafficError::Batch)?;
        let map = PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(TrafficError::Map)?;
        Ok(Self { map, fd })
    }

    /// Totals of every interface in the map.
    pub fn totals(&self) -> Result<HashMap<TrafficKey, Totals>, TrafficError> {
        match self.totals_batched() {
            Ok(Some(all)) => Ok(all),
            Ok(None) => self.totals_walked(),
            Err(err) => Err(TrafficError::Batch(err)),
        }
    }

    /// Totals through `BPF_MAP_LOOKUP_BATCH`; `None` when this kernel cannot do it for this map.
    pub fn totals_batched(&self) -> io::Result<Option<HashMap<TrafficKey, Totals>>> {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| err)?;
        // Per-CPU values come as one value per possible CPU, each rounded up to 8 bytes (ours is 128).
        const _: () = assert!(size_of::<TrafficCounters>().is_multiple_of(8));
        let mut keys = vec![TrafficKey { netns: 0, ifindex: 0 }; BATCH];
        let mut values = vec![TrafficCounters::zeroed(); BATCH * cpus];
        // For hash maps the batch cursor is a bucket index (u32).
        let (mut cursor, mut next) = (0u32, 0u32);
        let mut all = HashMap::new();
        for first in std::iter::once(true).chain(std::iter::repeat(false)) {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &raw const cursor as u64 },
                out_batch: &raw mut next as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: BATCH as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            // SAFETY: `attr` is laid out as the kernel's batch member of bpf_attr and its size is passed; the
            // key and value buffers hold `count` keys and `count` x possible-CPUs values, and the cursors are
            // u32s, all alive for the call.
            let ret = unsafe {
                libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as u32)
            };
            let err = (ret < 0).then(io::Error::last_os_error);
            match err.as_ref().and_then(io::Error::raw_os_error) {
                None | Some(libc::ENOENT) => {}
                // Not supported here (before 5.6, or not for this map type), or a bucket larger than a batch.
                Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSPC | ENOTSUPP) if first => return Ok(None),
                Some(_) => return Err(err.expect("an error")),
            }
            for (i, key) in keys.iter().enumerate().take(attr.count as usize) {
                let mut totals = Totals::default();
                for counters in &values[i * cpus..(i + 1) * cpus] {
                    totals.add(counters);
                }
                all.insert(*key, totals);
            }
            // ENOENT: that was the last batch.
            if err.is_some() {
                break;
            }
            cursor = next;
        }
        Ok(Some(all))
    }

    /// Totals through aya's walk: a next-key and a lookup syscall per entry.
    pub fn totals_walked(&self) -> Result<HashMap<TrafficKey, Totals>, TrafficError> {
        let mut all = HashMap::new();
        for entry in self.map.iter() {
            let (key, values) = match entry {
                Ok(entry) => entry,
                // Deleted between the key walk and the lookup: it is gone, skip it.
                Err(MapError::KeyNotFound) => continue,
                Err(err) => return Err(TrafficError::Map(err)),
            };
            let mut totals = Totals::default();
            for counters in values.iter() {
                totals.add(counters);
            }
            all.insert(key, totals);
        }
        Ok(all)
    }

    /// Whether `key` has counters.
    pub fn contains(&self, key: &TrafficKey) -> bool {
        self.map.get(key, 0).is_ok()
    }

    /// Creates the entry for `key` unless one exists (so a restarted agent keeps counting from where the
    /// pinned map is), starting at `before` (rx bytes, rx packets, tx bytes, tx packets: what passed before the
    /// classifiers were attached), counted as protocol "other" on the first CPU's slot.
    pub fn ensure(&mut self, key: TrafficKey, before: [u64; 4]) -> Result<(), TrafficError> {
        if self.contains(&key) {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| TrafficError::Cpus(err))?;
        let mut values = vec![TrafficCounters::zeroed(); cpus];
        let [rx_bytes, rx_packets, tx_bytes, tx_packets] = before;
        values[0].bytes[DIR_INGRESS][PROTO_OTHER] = rx_bytes;
        values[0].packets[DIR_INGRESS][PROTO_OTHER] = rx_packets;
        values[0].bytes[DIR_EGRESS][PROTO_OTHER] = tx_bytes;
        values[0].packets[DIR_EGRESS][PROTO_OTHER] = tx_packets;
        let values = PerCpuValues::try_from(values).map_err(TrafficError::Cpus)?;
        // BPF_NOEXIST: never overwrite counters a packet (or a previous agent) already created.
        match self.map.insert(key, values, 1) {
            Ok(()) => Ok(()),
            // A packet created it meanwhile.
            Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(err) => Err(TrafficError::Map(err)),
        }
    }

    /// Removes the counters of an interface that is gone.
    pub fn remove(&mut self, key: &TrafficKey) -> Result<(), TrafficError> {
        match self.map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(err) => Err(TrafficError::Map(err)),
        }
    }

    /// Every key in the map.
    pub fn keys(&self) -> Vec<TrafficKey> {
        self.map.keys().filter_map(Result::ok).collect()
    }
}
