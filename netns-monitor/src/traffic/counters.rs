//! The pinned traffic maps: counter slots given to interfaces (`TRAFFIC_SLOTS`), their per-CPU counters
//! (`TRAFFIC`, and `TRAFFIC_PROTOCOLS` with the protocol split), summed into totals per interface, plus each
//! interface's `TRAFFIC_BASE` (what the kernel counted before the classifiers saw it, written once by
//! userspace).
//!
//! Slots are given out by the agent only, from the free ones the pinned slot map leaves ([`super::slots`] says
//! in which order).
//!
//! A scrape reads every entry. aya (0.14) walks a hash map with two syscalls per entry (next key, then lookup),
//! and an array with one per index; `BPF_MAP_LOOKUP_BATCH` (Linux >= 5.6) returns up to [`BATCH`] entries per
//! syscall, so [`TrafficMap::totals`] uses it and falls back to the walk where the kernel lacks it.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::Path,
    time::Instant,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use netns_monitor_common::traffic::{
    DIR_COUNT, DIR_EGRESS, DIR_INGRESS, PROTO_COUNT, PROTO_OTHER, ProtocolCounters, TrafficBase, TrafficCounters,
    TrafficKey,
};

use super::{TrafficError, kernel::KernelTotals, slots::SlotAllocator};
use crate::bpf::maps::{TRAFFIC, TRAFFIC_BASE, TRAFFIC_PROTOCOLS, TRAFFIC_SLOTS};

/// The kernel's internal "operation not supported" (not in libc), which the bpf syscall can return.
const ENOTSUPP: i32 = 524;

/// Totals of one interface: packets and bytes by direction (`DIR_*`), and by protocol where the split is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: [u64; DIR_COUNT],
    pub bytes: [u64; DIR_COUNT],
    /// The protocol split (`--traffic-protocols`), `None` without it.
    pub protocols: Option<ProtocolTotals>,
}

/// Packets and bytes by direction and protocol (`PROTO_*`). What passed before the split counted the interface
/// is booked as `other`, so the protocols add up to the totals when the split was on from the interface's start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolTotals {
    pub packets: [[u64; PROTO_COUNT]; DIR_COUNT],
    pub bytes: [[u64; PROTO_COUNT]; DIR_COUNT],
}

impl ProtocolTotals {
    fn merge(&mut self, other: &ProtocolTotals) {
        for dir in 0..DIR_COUNT {
            for proto in 0..PROTO_COUNT {
                self.packets[dir][proto] += other.packets[dir][proto];
                self.bytes[dir][proto] += other.bytes[dir][proto];
            }
        }
    }
}

impl Totals {
    /// All packets in direction `dir`.
    pub fn packets(&self, dir: usize) -> u64 {
        self.packets[dir]
    }

    /// All bytes in direction `dir`.
    pub fn bytes(&self, dir: usize) -> u64 {
        self.bytes[dir]
    }

    /// Adds another interface's totals (a namespace's sum over its interfaces).
    pub fn merge(&mut self, other: &Totals) {
        for dir in 0..DIR_COUNT {
            self.packets[dir] += other.packets[dir];
            self.bytes[dir] += other.bytes[dir];
        }
        match (&mut self.protocols, &other.protocols) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, Some(theirs)) => *mine = Some(*theirs),
            (_, None) => {}
        }
    }

    /// The four numbers the kernel's own statistics have: (rx bytes, rx packets, tx bytes, tx packets).
    pub fn kernel_order(&self) -> KernelTotals {
        [self.bytes(DIR_INGRESS), self.packets(DIR_INGRESS), self.bytes(DIR_EGRESS), self.packets(DIR_EGRESS)]
    }

    /// What passed before the classifiers saw the interface; in the split, protocol "other" (its protocols are
    /// not known).
    fn add_base(&mut self, base: &TrafficBase) {
        let [rx_bytes, rx_packets, tx_bytes, tx_packets] =
            [base.rx_bytes, base.rx_packets, base.tx_bytes, base.tx_packets];
        self.bytes[DIR_INGRESS] += rx_bytes;
        self.packets[DIR_INGRESS] += rx_packets;
        self.bytes[DIR_EGRESS] += tx_bytes;
        self.packets[DIR_EGRESS] += tx_packets;
        if let Some(split) = &mut self.protocols {
            split.bytes[DIR_INGRESS][PROTO_OTHER] += rx_bytes;
            split.packets[DIR_INGRESS][PROTO_OTHER] += rx_packets;
            split.bytes[DIR_EGRESS][PROTO_OTHER] += tx_bytes;
            split.packets[DIR_EGRESS][PROTO_OTHER] += tx_packets;
        }
    }

    fn add(&mut self, counters: &TrafficCounters) {
        for dir in 0..DIR_COUNT {
            self.packets[dir] += counters.packets[dir];
            self.bytes[dir] += counters.bytes[dir];
        }
    }

    fn add_protocols(&mut self, counters: &ProtocolCounters) {
        let split = self.protocols.get_or_insert_default();
        for dir in 0..DIR_COUNT {
            for proto in 0..PROTO_COUNT {
                split.packets[dir][proto] += counters.packets[dir][proto];
                split.bytes[dir][proto] += counters.bytes[dir][proto];
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

/// What to read in batches: `per_key` values per key, at most `limit` keys, and the zero values the buffers
/// start as.
struct Batch<K, V> {
    per_key: usize,
    limit: Option<usize>,
    zero_key: K,
    zero: V,
}

/// Entries of the map behind `fd` through `BPF_MAP_LOOKUP_BATCH`, at most `limit` of them (all with `None`;
/// an array's come from index 0 up): the keys, and `per_key` values for each (one per possible CPU for a
/// per-CPU map, else one), in the map's order. `None` when this kernel cannot do it for this map. `V` must be
/// the map's value type and `K` its key type; a per-CPU map's value must be a multiple of 8 bytes (the kernel
/// rounds each CPU's copy up to 8).
fn lookup_batched<K: Copy, V: Copy>(
    fd: &OwnedFd,
    Batch { per_key, limit, zero_key, zero }: Batch<K, V>,
) -> io::Result<Option<(Vec<K>, Vec<V>)>> {
    assert!(per_key == 1 || size_of::<V>().is_multiple_of(8), "per-CPU values are 8-byte aligned");
    let mut keys = vec![zero_key; BATCH];
    let mut values = vec![zero; BATCH * per_key];
    let (mut all_keys, mut all_values) = (Vec::new(), Vec::new());
    // For hash maps the batch cursor is a bucket index, for arrays an index: a u32 either way.
    let (mut cursor, mut next) = (0u32, 0u32);
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let wanted = limit.map_or(BATCH, |limit| BATCH.min(limit - all_keys.len()));
        if wanted == 0 {
            break;
        }
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const cursor as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: wanted as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is laid out as the kernel's batch member of bpf_attr and its size is passed; the key and
        // value buffers hold `count` keys of the map's key type and `count` x `per_key` values of its value
        // type, and the cursors are u32s, all alive for the call.
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

/// A pinned map opened by aya, and its fd again for the batch lookups aya does not offer.
struct Pinned<M> {
    map: M,
    fd: OwnedFd,
}

impl<M> Pinned<M> {
    fn open(
        pin_dir: &Path,
        name: &str,
        wrap: impl FnOnce(MapData) -> Map,
        convert: impl FnOnce(Map) -> Result<M, MapError>,
    ) -> Result<Self, TrafficError> {
        let path = pin_dir.join(name);
        let data = MapData::from_pin(&path)
            .map_err(|source| TrafficError::OpenMap { path: path.display().to_string(), source })?;
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(TrafficError::Batch)?;
        Ok(Self { map: convert(wrap(data)).map_err(TrafficError::Map)?, fd })
    }
}

/// Whether a map operation failed only because the key is not there.
fn not_found(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(err) => err.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// The traffic maps, opened from their pins (so the CLI can read them while an agent owns the programs).
pub struct TrafficMap {
    counters: Pinned<PerCpuArray<MapData, TrafficCounters>>,
    /// `None` unless the protocol split is on (its map then has a slot per counter slot).
    protocols: Option<Pinned<PerCpuArray<MapData, ProtocolCounters>>>,
    slots: Pinned<BpfHashMap<MapData, TrafficKey, u32>>,
    base: Pinned<BpfHashMap<MapData, TrafficKey, TrafficBase>>,
    slots_free: SlotAllocator,
    /// Whether to read in batches where the kernel can (else the walk, as before Linux 5.6).
    batched: bool,
}

impl TrafficMap {
    /// Opens the traffic maps pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, TrafficError> {
        let counters = Pinned::open(pin_dir, TRAFFIC, Map::PerCpuArray, PerCpuArray::try_from)?;
        let capacity = counters.map.len();
        let protocols = Pinned::open(pin_dir, TRAFFIC_PROTOCOLS, Map::PerCpuArray, PerCpuArray::try_from)?;
        let protocols = (protocols.map.len() >= capacity).then_some(protocols);
        let slots = Pinned::open(pin_dir, TRAFFIC_SLOTS, Map::HashMap, BpfHashMap::try_from)?;
        let base = Pinned::open(pin_dir, TRAFFIC_BASE, Map::HashMap, BpfHashMap::try_from)?;
        let mut map =
            Self { counters, protocols, slots, base, slots_free: SlotAllocator::new(capacity, []), batched: true };
        map.slots_free = SlotAllocator::new(capacity, map.slot_map()?.into_values());
        Ok(map)
    }

    /// Reads entry by entry from now on, as on kernels without `BPF_MAP_LOOKUP_BATCH` (tests compare the two).
    pub fn without_batches(mut self) -> Self {
        self.batched = false;
        self
    }

    /// How many interfaces can have counters at once (the size of `TRAFFIC`).
    pub fn capacity(&self) -> u32 {
        self.slots_free.capacity()
    }

    /// How many slots this handle has given out or found given (the agent's own view; see [`Self::slot_map`]
    /// for the map's).
    pub fn used(&self) -> u32 {
        self.slots_free.used()
    }

    /// Whether the classifiers count by protocol too.
    pub fn has_protocols(&self) -> bool {
        self.protocols.is_some()
    }

    /// Every interface's slot, batched where the kernel can.
    pub fn slot_map(&self) -> Result<HashMap<TrafficKey, u32>, TrafficError> {
        Ok(self.entries(&self.slots, 0)?.into_iter().collect())
    }

    /// `key`'s counter slot, if it has one.
    pub fn slot(&self, key: &TrafficKey) -> Option<u32> {
        self.slots.map.get(key, 0).ok()
    }

    /// Totals of every interface with a slot, bases included.
    pub fn totals(&self) -> Result<HashMap<TrafficKey, Totals>, TrafficError> {
        let slots = self.slot_map()?;
        // Slots are packed low: only the arrays' start up to the highest slot in use is read.
        let end = slots.values().max().map_or(0, |&slot| slot as usize + 1).min(self.capacity() as usize);
        let counters = self.per_slot(&self.counters, end, TrafficCounters::zeroed(), |totals, c| totals.add(c))?;
        let split = match &self.protocols {
            Some(protocols) => {
                Some(self.per_slot(protocols, end, ProtocolCounters::zeroed(), |t, c| t.add_protocols(c))?)
            }
            None => None,
        };
        let mut all = HashMap::with_capacity(slots.len());
        for (key, slot) in slots {
            let Some(mut totals) = counters.get(slot as usize).copied() else { continue };
            if let Some(split) = &split {
                totals.protocols = split.get(slot as usize).and_then(|t| t.protocols);
            }
            all.insert(key, totals);
        }
        // Read after the counters: a base whose interface is gone is stale (ignored), and counters whose base is
        // not written yet (an interface being attached) are only the classifiers' for one read.
        for (key, base) in self.bases()? {
            if let Some(totals) = all.get_mut(&key) {
                totals.add_base(&base);
            }
        }
        Ok(all)
    }

    /// The per-CPU values of slots `0..end` of the array `map`, each slot's summed into a [`Totals`] with `add`,
    /// indexed by slot: in batches where the kernel can, else one lookup per slot.
    fn per_slot<V: Copy + aya::Pod>(
        &self,
        map: &Pinned<PerCpuArray<MapData, V>>,
        end: usize,
        zero: V,
        add: impl Fn(&mut Totals, &V),
    ) -> Result<Vec<Totals>, TrafficError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| TrafficError::Cpus(err))?;
        let mut all = vec![Totals::default(); end];
        match self
            .batch::<u32, V>(&map.fd, Batch { per_key: cpus, limit: Some(end), zero_key: 0, zero })
            .map_err(TrafficError::Batch)?
        {
            Some((indexes, values)) => {
                for (index, per_cpu) in indexes.into_iter().zip(values.chunks(cpus)) {
                    if let Some(totals) = all.get_mut(index as usize) {
                        per_cpu.iter().for_each(|v| add(totals, v));
                    }
                }
            }
            None => {
                for (index, totals) in all.iter_mut().enumerate() {
                    let values = map.map.get(&(index as u32), 0).map_err(TrafficError::Map)?;
                    values.iter().for_each(|v| add(totals, v));
                }
            }
        }
        Ok(all)
    }

    /// [`lookup_batched`], unless batches are off.
    fn batch<K: Copy, V: Copy>(&self, fd: &OwnedFd, request: Batch<K, V>) -> io::Result<Option<(Vec<K>, Vec<V>)>> {
        if !self.batched {
            return Ok(None);
        }
        lookup_batched(fd, request)
    }

    /// Every base, batched where the kernel can.
    fn bases(&self) -> Result<Vec<(TrafficKey, TrafficBase)>, TrafficError> {
        self.entries(&self.base, TrafficBase::default())
    }

    /// Every entry of one of the hash maps keyed by interface: in batches where the kernel can, else by a walk
    /// (which skips entries deleted under it). `zero` is what the batch buffers start as.
    fn entries<V: Copy + aya::Pod>(
        &self,
        map: &Pinned<BpfHashMap<MapData, TrafficKey, V>>,
        zero: V,
    ) -> Result<Vec<(TrafficKey, V)>, TrafficError> {
        let zero_key = TrafficKey { netns: 0, ifindex: 0 };
        match self.batch(&map.fd, Batch { per_key: 1, limit: None, zero_key, zero }).map_err(TrafficError::Batch)? {
            Some((keys, values)) => Ok(keys.into_iter().zip(values).collect()),
            None => {
                let mut all = Vec::new();
                for entry in map.map.iter() {
                    match entry {
                        Ok(entry) => all.push(entry),
                        Err(err) if not_found(&err) => continue,
                        Err(err) => return Err(TrafficError::Map(err)),
                    }
                }
                Ok(all)
            }
        }
    }

    /// Whether `key` has counters.
    pub fn contains(&self, key: &TrafficKey) -> bool {
        self.slot(key).is_some()
    }

    /// What the classifiers counted on `key` so far (no base), in the kernel's order; `None` without a slot.
    pub fn counted(&self, key: &TrafficKey) -> Result<Option<KernelTotals>, TrafficError> {
        let Some(slot) = self.slot(key) else { return Ok(None) };
        let values = self.counters.map.get(&slot, 0).map_err(TrafficError::Map)?;
        let mut totals = Totals::default();
        values.iter().for_each(|v| totals.add(v));
        Ok(Some(totals.kernel_order()))
    }

    /// Gives `key` a slot with zeroed counters unless it has one (a restarted agent keeps counting from where
    /// the pinned maps are). Whether it made one.
    pub fn create(&mut self, key: TrafficKey) -> Result<bool, TrafficError> {
        if self.contains(&key) {
            return Ok(false);
        }
        let slot = self.slots_free.take(Instant::now()).ok_or(TrafficError::Full { capacity: self.capacity() })?;
        let created = self.zero_and_assign(key, slot);
        if !matches!(created, Ok(true)) {
            self.slots_free.untake(slot);
        }
        created
    }

    fn zero_and_assign(&mut self, key: TrafficKey, slot: u32) -> Result<bool, TrafficError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| TrafficError::Cpus(err))?;
        let zeros = PerCpuValues::try_from(vec![TrafficCounters::zeroed(); cpus]).map_err(TrafficError::Cpus)?;
        self.counters.map.set(slot, zeros, 0).map_err(TrafficError::Map)?;
        if let Some(protocols) = &mut self.protocols {
            let zeros = PerCpuValues::try_from(vec![ProtocolCounters::zeroed(); cpus]).map_err(TrafficError::Cpus)?;
            protocols.map.set(slot, zeros, 0).map_err(TrafficError::Map)?;
        }
        // BPF_NOEXIST: never overwrite a slot a previous agent (or another thread) already gave.
        match self.slots.map.insert(key, slot, 1) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(err) => Err(TrafficError::Map(err)),
        }
    }

    /// Whether `key`'s base is written (so its totals are complete).
    pub fn has_base(&self, key: &TrafficKey) -> bool {
        self.base.map.get(key, 0).is_ok()
    }

    /// Writes `key`'s base: what the kernel counted on the interface that the classifiers never saw.
    pub fn set_base(
        &mut self,
        key: TrafficKey,
        [rx_bytes, rx_packets, tx_bytes, tx_packets]: KernelTotals,
    ) -> Result<(), TrafficError> {
        let value = TrafficBase { rx_bytes, rx_packets, tx_bytes, tx_packets };
        self.base.map.insert(key, value, 0).map_err(TrafficError::Map)
    }

    /// Takes back the slot and removes the base of an interface that is gone.
    pub fn remove(&mut self, key: &TrafficKey) -> Result<(), TrafficError> {
        let gone = |result: Result<(), MapError>| match result {
            Err(err) if !not_found(&err) => Err(TrafficError::Map(err)),
            _ => Ok(()),
        };
        let slot = self.slot(key);
        gone(self.slots.map.remove(key))?;
        gone(self.base.map.remove(key))?;
        if let Some(slot) = slot {
            self.slots_free.release(slot, Instant::now());
        }
        Ok(())
    }

    /// Every key with a slot or a base.
    pub fn keys(&self) -> Vec<TrafficKey> {
        let mut keys: Vec<TrafficKey> = self.slots.map.keys().filter_map(Result::ok).collect();
        keys.extend(self.base.map.keys().filter_map(Result::ok));
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}
