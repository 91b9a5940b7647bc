//! Reading the pinned `TRAFFIC` map: per-CPU values summed into totals per interface.

use std::{collections::HashMap, path::Path};

use aya::maps::{Map, MapData, MapError, PerCpuHashMap, PerCpuValues};
use netns_monitor_common::traffic::{DIR_COUNT, PROTO_COUNT, TrafficCounters, TrafficKey};

use super::TrafficError;
use crate::bpf::maps::TRAFFIC;

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

    fn add(&mut self, counters: &TrafficCounters) {
        for dir in 0..DIR_COUNT {
            for proto in 0..PROTO_COUNT {
                self.packets[dir][proto] += counters.packets[dir][proto];
                self.bytes[dir][proto] += counters.bytes[dir][proto];
            }
        }
    }
}

/// The traffic map, opened from its pin (so the CLI can read it while an agent owns the programs).
pub struct TrafficMap {
    map: PerCpuHashMap<MapData, TrafficKey, TrafficCounters>,
}

impl TrafficMap {
    /// Opens `PIN_DIR/TRAFFIC`.
    pub fn open(pin_dir: &Path) -> Result<Self, TrafficError> {
        let path = pin_dir.join(TRAFFIC);
        let data = MapData::from_pin(&path)
            .map_err(|source| TrafficError::OpenMap { path: path.display().to_string(), source })?;
        let map = PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(TrafficError::Map)?;
        Ok(Self { map })
    }

    /// Totals of every interface in the map.
    pub fn totals(&self) -> Result<HashMap<TrafficKey, Totals>, TrafficError> {
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

    /// Creates a zeroed entry for `key` unless one exists (so a restarted agent keeps counting from where the
    /// pinned map is).
    pub fn ensure(&mut self, key: TrafficKey) -> Result<(), TrafficError> {
        if self.map.get(&key, 0).is_ok() {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| TrafficError::Cpus(err))?;
        let zeros = PerCpuValues::try_from(vec![TrafficCounters::zeroed(); cpus]).map_err(TrafficError::Cpus)?;
        // BPF_NOEXIST: never overwrite counters a packet (or a previous agent) already created.
        match self.map.insert(key, zeros, 1) {
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
