//! Reading the pinned `TRAFFIC` map: per-CPU values summed into totals per interface, plus each interface's
//! `TRAFFIC_BASE` (what the kernel counted before the classifiers saw it, written once by userspace).
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

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuHashMap, PerCpuValues};
use netns_monitor_common::traffic::{
    DIR_COUNT, DIR_EGRESS, DIR_INGRESS, PROTO_COUNT, PROTO_OTHER, TrafficBase, TrafficCounters, TrafficKey,
};

use super::{TrafficError, kernel::KernelTotals};
use crate::bpf::maps::{TRAFFIC, TRAFFIC_BASE};

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

    /// The four numbers the kernel's own statistics have: (rx bytes, rx packets, tx bytes, tx packets).
    pub fn kernel_order(&self) -> KernelTotals {
        [self.bytes(DIR_INGRESS), self.packets(DIR_INGRESS), self.bytes(DIR_EGRESS), self.packets(DIR_EGRESS)]
    }

    /// What passed before the classifiers saw the interface, booked as protocol "other" (its protocols are not
    /// known).
    fn add_base(&mut self, base: &TrafficBase) {
        self.bytes[DIR_INGRESS][PROTO_OTHER] += base.rx_bytes;
        self.packets[DIR_INGRESS][PROTO_OTHER] += base.rx_packets;
        self.bytes[DIR_EGRESS][PROTO_OTHER] += base.tx_bytes;
        self.packets[DIR_EGRESS][PROTO_OTHER] += base.tx_packets;
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

/// Every entry of the hash map behind `fd` through `BPF_MAP_LOOKUP_BATCH`: the keys, and `per_key` values for
/// each (one per possible CPU for a per-CPU map, else one), in key order. `None` when this kernel cannot do it
/// for this map. `V` must be the map's value type, a multiple of 8 bytes (per-CPU values are rounded up to 8).
fn lookup_batched<V: Copy>(fd: &OwnedFd, per_key: usize, zero: V) -> io::Result<Option<(Vec<TrafficKey>, Vec<V>)>> {
    const { assert!(size_of::<V>().is_multiple_of(8)) };
    let mut keys = vec![TrafficKey { netns: 0, ifindex: 0 }; BATCH];
    let mut values = vec![zero; BATCH * per_key];
    let (mut all_keys, mut all_values) = (Vec::new(), Vec::new());
    // For hash maps the batch cursor is a bucket index (u32).
    let (mut cursor, mut next) = (0u32, 0u32);
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const cursor as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is laid out as the kernel's batch member of bpf_attr and its size is passed; the key and
        // value buffers hold `count` keys and `count` x `per_key` values of the map's value type, and the cursors
        // are u32s, all alive for the call.
        let ret =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as u32) };
        let err = (ret < 0).then(io::Error::last_os_error);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {}
            // Not supported here (before 5.6, or not for this map type), or a bucket larger than a batch.
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSPC | ENOTSUPP) if first => return Ok(None),
            Some(_) => return Err(err.expect("an error")),
        }
        let count = attr.count as usize;
        all_keys.extend_from_slice(&keys[..count]);
        all_values.extend_from_slice(&values[..count * per_key]);
        // ENOENT: that was the last batch.
        if err.is_some() {
            break;
        }
        cursor = next;
    }
    Ok(Some((all_keys, all_values)))
}

/// The pinned `TRAFFIC_BASE` map.
struct BaseMap {
    map: BpfHashMap<MapData, TrafficKey, TrafficBase>,
    fd: OwnedFd,
}

/// The traffic maps, opened from their pins (so the CLI can read them while an agent owns the programs).
pub struct TrafficMap {
    map: PerCpuHashMap<MapData, TrafficKey, TrafficCounters>,
    /// The same map, for the batch lookups aya does not offer.
    fd: OwnedFd,
    /// `None` in a pin directory an agent from before the base map left (its seeds are inside `TRAFFIC`).
    base: Option<BaseMap>,
}

impl TrafficMap {
    /// Opens `PIN_DIR/TRAFFIC` and `PIN_DIR/TRAFFIC_BASE`.
    pub fn open(pin_dir: &Path) -> Result<Self, TrafficError> {
        let path = pin_dir.join(TRAFFIC);
        let data = MapData::from_pin(&path)
            .map_err(|source| TrafficError::OpenMap { path: path.display().to_string(), source })?;
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(TrafficError::Batch)?;
        let map = PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(TrafficError::Map)?;
        let base_path = pin_dir.join(TRAFFIC_BASE);
        let base = if base_path.exists() {
            let data = MapData::from_pin(&base_path)
                .map_err(|source| TrafficError::OpenMap { path: base_path.display().to_string(), source })?;
            let fd = data.fd().as_fd().try_clone_to_owned().map_err(TrafficError::Batch)?;
            let map = BpfHashMap::try_from(Map::HashMap(data)).map_err(TrafficError::Map)?;
            Some(BaseMap { map, fd })
        } else {
            None
        };
        Ok(Self { map, fd, base })
    }

    /// Totals of every interface in the map, bases included.
    pub fn totals(&self) -> Result<HashMap<TrafficKey, Totals>, TrafficError> {
        let mut all = match self.totals_batched() {
            Ok(Some(all)) => all,
            Ok(None) => self.totals_walked()?,
            Err(err) => return Err(TrafficError::Batch(err)),
        };
        // Read after the counters: a base whose counters are gone is stale (ignored), and counters whose base is
        // not written yet (an interface being attached) are only the classifiers' for one read.
        for (key, base) in self.bases()? {
            if let Some(totals) = all.get_mut(&key) {
                totals.add_base(&base);
            }
        }
        Ok(all)
    }

    /// Every base, batched where the kernel can.
    fn bases(&self) -> Result<Vec<(TrafficKey, TrafficBase)>, TrafficError> {
        let Some(base) = &self.base else { return Ok(Vec::new()) };
        match lookup_batched(&base.fd, 1, TrafficBase::default()).map_err(TrafficError::Batch)? {
            Some((keys, values)) => Ok(keys.into_iter().zip(values).collect()),
            None => {
                let mut all = Vec::new();
                for entry in base.map.iter() {
                    match entry {
                        Ok(entry) => all.push(entry),
                        Err(MapError::KeyNotFound) => continue,
                        Err(err) => return Err(TrafficError::Map(err)),
                    }
                }
                Ok(all)
            }
        }
    }

    /// The classifiers' totals (no base) through `BPF_MAP_LOOKUP_BATCH`; `None` when this kernel cannot do it
    /// for this map.
    pub fn totals_batched(&self) -> io::Result<Option<HashMap<TrafficKey, Totals>>> {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| err)?;
        let Some((keys, values)) = lookup_batched(&self.fd, cpus, TrafficCounters::zeroed())? else {
            return Ok(None);
        };
        let mut all = HashMap::with_capacity(keys.len());
        for (key, per_cpu) in keys.into_iter().zip(values.chunks(cpus)) {
            let mut totals = Totals::default();
            for counters in per_cpu {
                totals.add(counters);
            }
            all.insert(key, totals);
        }
        Ok(Some(all))
    }

    /// The classifiers' totals (no base) through aya's walk: a next-key and a lookup syscall per entry.
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

    /// What the classifiers counted on `key` so far (no base), in the kernel's order; `None` without an entry.
    pub fn counted(&self, key: &TrafficKey) -> Result<Option<KernelTotals>, TrafficError> {
        match self.map.get(key, 0) {
            Ok(values) => {
                let mut totals = Totals::default();
                for counters in values.iter() {
                    totals.add(counters);
                }
                Ok(Some(totals.kernel_order()))
            }
            Err(MapError::KeyNotFound) => Ok(None),
            Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(TrafficError::Map(err)),
        }
    }

    /// Creates zeroed counters for `key` unless some exist (a restarted agent keeps counting from where the
    /// pinned map is). Whether it created them.
    pub fn create(&mut self, key: TrafficKey) -> Result<bool, TrafficError> {
        if self.contains(&key) {
            return Ok(false);
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| TrafficError::Cpus(err))?;
        let values = PerCpuValues::try_from(vec![TrafficCounters::zeroed(); cpus]).map_err(TrafficError::Cpus)?;
        // BPF_NOEXIST: never overwrite counters a previous agent (or another thread) already created.
        match self.map.insert(key, values, 1) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(err) => Err(TrafficError::Map(err)),
        }
    }

    /// Whether `key`'s base is written (so its totals are complete).
    pub fn has_base(&self, key: &TrafficKey) -> bool {
        self.base.as_ref().is_some_and(|base| base.map.get(key, 0).is_ok())
    }

    /// Writes `key`'s base: what the kernel counted on the interface that the classifiers never saw.
    pub fn set_base(
        &mut self,
        key: TrafficKey,
        [rx_bytes, rx_packets, tx_bytes, tx_packets]: KernelTotals,
    ) -> Result<(), TrafficError> {
        let base = self.base.as_mut().ok_or_else(|| TrafficError::NoBaseMap)?;
        let value = TrafficBase { rx_bytes, rx_packets, tx_bytes, tx_packets };
        base.map.insert(key, value, 0).map_err(TrafficError::Map)
    }

    /// Removes the counters and the base of an interface that is gone.
    pub fn remove(&mut self, key: &TrafficKey) -> Result<(), TrafficError> {
        let gone = |result: Result<(), MapError>| match result {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(err) => Err(TrafficError::Map(err)),
        };
        gone(self.map.remove(key))?;
        if let Some(base) = &mut self.base {
            gone(base.map.remove(key))?;
        }
        Ok(())
    }

    /// Every key with counters or a base.
    pub fn keys(&self) -> Vec<TrafficKey> {
        let mut keys: Vec<TrafficKey> = self.map.keys().filter_map(Result::ok).collect();
        if let Some(base) = &self.base {
            keys.extend(base.map.keys().filter_map(Result::ok));
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}
