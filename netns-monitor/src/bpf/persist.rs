//! What outlives the agent: the transition programs' links and the maps they write, pinned in the agent's pin
//! directory, and how a restarted agent takes them over without a gap and without counting anything twice.
//!
//! Why: the transition tracepoints, their ring buffer and their counters used to belong to the agent process and
//! vanished with it, so while it was down (crash, `kill -9`, upgrade) nothing was traced and nothing counted what
//! was missed. In a persistent pin directory (the agent's; never `trace`'s or a test's private one):
//! - the maps `EVENTS` (ring buffer), `COUNTERS` (lost events and the other self-observation counters) and
//!   `PENDING` (calls between their enter and exit) are pinned by name, so every generation of the programs
//!   writes the same ones;
//! - the link of every transition program is pinned at `transitions/<program>`: a perf-event bpf link for the
//!   syscall tracepoints and a raw-tracepoint bpf link for `sched_process_fork` (both `FdLink`s, which bpffs
//!   pins like maps).
//!
//! While the agent is down the programs keep running: events queue in the ring buffer and, once it is full, each
//! event that does not fit is counted as lost in `COUNTERS`. So events generated while the agent was down are
//! either read by the next agent or counted in `netns_monitor_events_lost_total`, which lives in the pinned map
//! and therefore never goes backwards across restarts.
//!
//! Adoption, program by program: the new program is attached first, then its link is pinned under a temporary
//! name and renamed over the old pin (atomic in bpffs), which drops the last reference to the old link. No call
//! goes unseen, because the new program runs before the old one stops. No transition is reported twice while both run,
//! because they share `PENDING`: an exit emits only if it finds the thread's entry, and removes it, so the second
//! exit program of a pair finds nothing. Tier 1's lifecycle programs (`fexit/copy_net_ns`, `fentry/netdev_exit`)
//! do not go through `PENDING`: a namespace made or torn down in the moment both generations are attached is
//! reported by each. The restarted agent then reads the ring buffer from where the old one
//! stopped (the consumer position lives in the map, not in the process).
//!
//! A pinned map this build cannot share is replaced rather than misused: another ring buffer size (the operator
//! changed `ring_buffer_bytes`) or another key/value layout (an upgrade). The old pin is removed before loading,
//! and a replaced ring buffer is drained once the old programs writing into it are gone, so even then nothing is
//! lost uncounted. A replaced `COUNTERS` starts from zero (Prometheus sees a counter reset), which only an
//! upgrade that changes its layout can cause.
//!
//! Only one agent may use a pin directory at a time (two would take each other's links and share one ring
//! buffer reader position): an exclusive `flock` on the directory, which the kernel releases when the agent
//! dies, however it dies.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{MapData, MapType};
use nix::fcntl::{Flock, FlockArg};

use super::{BpfError, maps};

/// Directory (inside the pin directory) of the pinned transition links.
pub const TRANSITIONS_DIR: &str = "transitions";

/// The maps every generation of the transition programs shares, pinned by name in the pin directory.
pub const SHARED_MAPS: [&str; 4] = [maps::EVENTS, maps::COUNTERS, maps::PENDING, maps::FILTERED_NETNS];

/// The shape a pinned map must have to be shared with this build's programs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapShape {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    /// `None` where the size does not matter for sharing.
    pub max_entries: Option<u32>,
}

/// What this build's programs expect of each shared map, with a ring buffer of `ring_buffer_bytes`.
pub fn expected_shape(name: &str, ring_buffer_bytes: u32) -> Option<MapShape> {
    use netns_monitor_common::{counters::COUNTER_SLOTS, event::TransitionEvent};
    let shape = match name {
        maps::EVENTS => {
            MapShape { map_type: MapType::RingBuf, key_size: 0, value_size: 0, max_entries: Some(ring_buffer_bytes) }
        }
        maps::COUNTERS => {
            MapShape { map_type: MapType::PerCpuArray, key_size: 4, value_size: 8, max_entries: Some(COUNTER_SLOTS) }
        }
        maps::PENDING => MapShape {
            map_type: MapType::LruHash,
            key_size: 4,
            value_size: size_of::<TransitionEvent>() as u32,
            max_entries: None,
        },
        maps::FILTERED_NETNS => MapShape { map_type: MapType::LruHash, key_size: 4, value_size: 1, max_entries: None },
        _ => return None,
    };
    Some(shape)
}

/// Whether a map of shape `found` can be shared by programs expecting `want`.
pub fn compatible(found: &MapShape, want: &MapShape) -> bool {
    found.map_type == want.map_type
        && found.key_size == want.key_size
        && found.value_size == want.value_size
        && want.max_entries.is_none_or(|entries| found.max_entries == Some(entries))
}

/// The shape of the map pinned at `path`, or `None` if nothing is pinned there.
fn pinned_shape(path: &Path) -> Result<Option<(MapData, MapShape)>, BpfError> {
    if !path.exists() {
        return Ok(None);
    }
    let map_err = |source| BpfError::Adopt { path: path.display().to_string(), source };
    let data = MapData::from_pin(path).map_err(map_err)?;
    let info = data.info().map_err(map_err)?;
    let shape = MapShape {
        map_type: info.map_type().map_err(map_err)?,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: Some(info.max_entries()),
    };
    Ok(Some((data, shape)))
}

/// Before loading: removes the pins of shared maps this build cannot share. Returns the replaced ring buffer,
/// if any, so its events can be drained once the programs still writing into it are gone.
pub fn unpin_incompatible(pin_dir: &Path, ring_buffer_bytes: u32) -> Result<Option<MapData>, BpfError> {
    let mut replaced_ring = None;
    for name in SHARED_MAPS {
        let path = pin_dir.join(name);
        let Some((data, found)) = pinned_shape(&path)? else { continue };
        let want = expected_shape(name, ring_buffer_bytes).expect("every shared map has a shape");
        if compatible(&found, &want) {
            continue;
        }
        tracing::warn!(
            map = name,
            pinned = ?found,
            wanted = ?want,
            "the pinned map does not fit this agent's programs (ring buffer size changed, or an upgrade); replacing it"
        );
        std::fs::remove_file(&path).map_err(|source| BpfError::Unpin { path: path.display().to_string(), source })?;
        if name == maps::EVENTS {
            replaced_ring = Some(data);
        }
    }
    Ok(replaced_ring)
}

/// The traffic maps, pinned by name, that must be replaced together: an interface's totals are its counters
/// plus its base, and its counters are found through its slot, so keeping one without the others would count
/// from the wrong place. Replacing them loses nothing: each interface's base is measured again from the
/// kernel's own statistics when it is attached, so its totals go on equal to the kernel's.
pub const TRAFFIC_MAPS: [&str; 3] = [maps::TRAFFIC, maps::TRAFFIC_SLOTS, maps::TRAFFIC_BASE];

/// What this build's classifiers expect of each pinned traffic map, with `traffic`'s sizes.
pub fn expected_traffic_shape(name: &str, traffic: &super::TrafficOptions) -> Option<MapShape> {
    use netns_monitor_common::traffic::{ProtocolCounters, TrafficBase, TrafficCounters, TrafficKey};
    let array = |value_size: usize, entries: u32| MapShape {
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: value_size as u32,
        max_entries: Some(entries),
    };
    let hash = |value_size: usize| MapShape {
        map_type: MapType::Hash,
        key_size: size_of::<TrafficKey>() as u32,
        value_size: value_size as u32,
        max_entries: None,
    };
    let shape = match name {
        maps::TRAFFIC => array(size_of::<TrafficCounters>(), traffic.max_interfaces),
        maps::TRAFFIC_PROTOCOLS => array(size_of::<ProtocolCounters>(), traffic.protocol_entries()),
        maps::TRAFFIC_SLOTS => hash(size_of::<u32>()),
        maps::TRAFFIC_BASE => hash(size_of::<TrafficBase>()),
        maps::FILTERED_NETNS => MapShape { map_type: MapType::LruHash, key_size: 4, value_size: 1, max_entries: None },
        _ => return None,
    };
    Some(shape)
}

/// Before loading: removes the pinned traffic maps this build cannot use (another `--max-interfaces`, the
/// protocol split turned on or off, or an upgrade that changed a layout). Any of [`TRAFFIC_MAPS`] unfit removes
/// all of them; an unfit `TRAFFIC_PROTOCOLS` alone removes only itself (the split then starts from zero, the
/// totals carry on). Returns the names removed.
pub fn unpin_incompatible_traffic(
    pin_dir: &Path,
    traffic: &super::TrafficOptions,
) -> Result<Vec<&'static str>, BpfError> {
    let unfit = |name: &str| -> Result<bool, BpfError> {
        let want = expected_traffic_shape(name, traffic).expect("every traffic map has a shape");
        Ok(pinned_shape(&pin_dir.join(name))?.is_some_and(|(_, found)| !compatible(&found, &want)))
    };
    let mut remove = Vec::new();
    let mut any = false;
    for name in TRAFFIC_MAPS {
        any |= unfit(name)?;
    }
    if any {
        remove.extend(TRAFFIC_MAPS);
        remove.push(maps::TRAFFIC_PROTOCOLS);
    } else if unfit(maps::TRAFFIC_PROTOCOLS)? {
        remove.push(maps::TRAFFIC_PROTOCOLS);
    }
    for name in &remove {
        let path = pin_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(BpfError::Unpin { path: path.display().to_string(), source }),
        }
    }
    if !remove.is_empty() {
        tracing::warn!(
            maps = ?remove,
            max_interfaces = traffic.max_interfaces,
            protocols = traffic.protocols,
            "the pinned traffic maps do not fit this agent's settings (--max-interfaces, --traffic-protocols, or \
             an upgrade); replacing them and measuring every interface's base again"
        );
    }
    Ok(remove)
}

/// Pins `link` at `dir/<program>`, replacing (and so releasing) the link a previous agent pinned there. Returns
/// the id of the replaced link.
pub fn pin_replacing(link: aya::programs::links::FdLink, dir: &Path, program: &str) -> Result<Option<u32>, BpfError> {
    let path = dir.join(program);
    // Our handle on the old link closes at once; the pin holds it until the rename below.
    let old = aya::programs::links::PinnedLink::from_pin(&path)
        .ok()
        .and_then(|old| aya::programs::links::FdLink::from(old).info().ok())
        .map(|info| info.id());
    // bpffs refuses names with a dot (reserved for its own files), hence no ".new" suffix.
    let temporary = dir.join(format!("new-{program}"));
    // A temporary pin left by an agent that died between pin and rename holds a link nobody uses.
    let _ = std::fs::remove_file(&temporary);
    let failed = |source| BpfError::PinLink { path: path.display().to_string(), source };
    let pinned = link.pin(&temporary).map_err(|err| failed(io::Error::other(err)))?;
    std::fs::rename(&temporary, &path).map_err(failed)?;
    // The pin holds the link now; our handle can go.
    drop(pinned);
    Ok(old)
}

/// Removes pins in the transitions directory that this build does not make (a program an upgrade removed, or a
/// temporary pin of an agent that died mid-adoption): they would keep programs running that nobody reads.
pub fn remove_stale_links(dir: &Path, programs: &[&str]) -> Result<Vec<u32>, BpfError> {
    let mut released = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|source| BpfError::PinDir { path: dir.display().to_string(), source })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|name| programs.contains(&name)) {
            continue;
        }
        let path = entry.path();
        if let Ok(old) = aya::programs::links::PinnedLink::from_pin(&path)
            && let Ok(info) = aya::programs::links::FdLink::from(old).info()
        {
            released.push(info.id());
        }
        tracing::info!(pin = %path.display(), "removing a transition link this agent does not use");
        std::fs::remove_file(&path).map_err(|source| BpfError::Unpin { path: path.display().to_string(), source })?;
    }
    Ok(released)
}

/// Waits until none of the links `ids` exists any more (the kernel frees a link whose last reference went in a
/// deferred work item, so its program may run a moment after the pin is gone).
pub fn wait_links_released(ids: &[u32], deadline: Duration) -> bool {
    let start = Instant::now();
    loop {
        let alive = aya::programs::loaded_links().filter_map(Result::ok).any(|info| ids.contains(&info.id()));
        if !alive {
            return true;
        }
        if start.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An exclusive lock on a pin directory, held for as long as the agent uses it.
#[derive(Debug)]
pub struct PinDirLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

impl PinDirLock {
    /// Locks `dir` or fails at once (naming the directory) if another agent holds it.
    pub fn acquire(dir: &Path) -> Result<Self, BpfError> {
        let shown = || dir.display().to_string();
        let file = File::open(dir).map_err(|source| BpfError::PinDir { path: shown(), source })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock, path: dir.to_owned() }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(BpfError::PinDirBusy { path: shown() }),
            Err((_, errno)) => Err(BpfError::PinDir { path: shown(), source: errno.into() }),
        }
    }
}

/// Whether an agent holds the pin directory `dir` now (it keeps the lock for as long as it runs). A directory
/// that cannot be opened has no agent.
pub fn agent_running(dir: &Path) -> bool {
    let Ok(file) = File::open(dir) else { return false };
    matches!(Flock::lock(file, FlockArg::LockExclusiveNonblock), Err((_, nix::errno::Errno::EWOULDBLOCK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_decide_what_can_be_shared() {
        let ring = expected_shape(maps::EVENTS, 4096).unwrap();
        assert!(compatible(&ring, &ring));
        let bigger = MapShape { max_entries: Some(8192), ..ring };
        assert!(!compatible(&bigger, &ring), "another ring buffer size is not shared");
        let pending = expected_shape(maps::PENDING, 4096).unwrap();
        let any_size = MapShape { max_entries: Some(123), ..pending };
        assert!(compatible(&any_size, &pending), "the pending map's size does not matter");
        let old_layout = MapShape { value_size: 152, ..any_size };
        assert!(!compatible(&old_layout, &pending), "another event layout is not shared");
        let counters = expected_shape(maps::COUNTERS, 4096).unwrap();
        assert!(!compatible(&MapShape { max_entries: Some(5), ..counters }, &counters));
        assert!(!compatible(&ring, &counters));
        assert_eq!(expected_shape("TRAFFIC", 4096), None);
    }

    #[test]
    fn traffic_shapes_follow_the_settings() {
        use crate::bpf::TrafficOptions;
        let default = TrafficOptions::default();
        let counters = expected_traffic_shape(maps::TRAFFIC, &default).unwrap();
        assert_eq!(counters.max_entries, Some(default.max_interfaces));
        // The per-CPU hash TRAFFIC of agents before counter slots.
        let old = MapShape { map_type: MapType::PerCpuHash, key_size: 8, value_size: 128, max_entries: Some(65536) };
        assert!(!compatible(&old, &counters), "the old per-CPU hash is replaced");
        let larger = TrafficOptions { max_interfaces: 40_000, ..default };
        assert!(!compatible(&counters, &expected_traffic_shape(maps::TRAFFIC, &larger).unwrap()));
        let split = TrafficOptions { protocols: true, ..default };
        let off = expected_traffic_shape(maps::TRAFFIC_PROTOCOLS, &default).unwrap();
        let on = expected_traffic_shape(maps::TRAFFIC_PROTOCOLS, &split).unwrap();
        assert_eq!((off.max_entries, on.max_entries), (Some(1), Some(default.max_interfaces)));
        assert!(!compatible(&off, &on), "turning the split on resizes its map");
        let slots = expected_traffic_shape(maps::TRAFFIC_SLOTS, &default).unwrap();
        assert!(compatible(&MapShape { max_entries: Some(7), ..slots }, &slots), "hash sizes do not matter");
        assert_eq!(expected_traffic_shape(maps::EVENTS, &default), None);
    }
}
