//! Orphaned namespaces: alive (a bind mount or an open file descriptor holds them) but with no process in them.
//! One that stays so is usually a leak: a container runtime or CNI plugin that died between creating the
//! namespace and cleaning it up, a test that forgot `ip netns del`, an fd inherited and never closed.
//!
//! The kernel keeps no record of when a namespace's last process left, so the time is observed: the first scan
//! that finds a namespace orphaned starts its clock, in a small state file that `list` and the agent share
//! ([`STATE_FILE`], on tmpfs: a reboot ends every namespace too), updated under a lock. A line is
//! `INODE SINCE HOW STAMP`: `SINCE` in seconds since the epoch, `HOW` `mount` or `fd`, the weakest hold seen, and
//! `STAMP` the change time of the namespace's nsfs inode in nanoseconds (set when the kernel made the inode for
//! the first path that led to it, and kept while a mount or an fd holds it): inodes are reused as soon as a
//! namespace is gone, and a new namespace behind an old inode (`ip netns del a; ip netns add b` between two
//! looks) has another stamp, so its clock starts afresh. The agent's per-scrape scan does not
//! walk file descriptors (too costly at every scrape), so it keeps `fd` lines it cannot see and judges only
//! the namespaces it sees; `list` walks them and judges all.

use std::{
    collections::BTreeMap,
    io::{self, ErrorKind},
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use super::{Inventory, Netns};

/// Where the clocks are kept.
pub const STATE_FILE: &str = "/run/netns-monitor/orphans";

/// How a namespace without processes is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// A bind mount (a name under /run/netns, Docker's /run/docker/netns/ID, ...).
    Mount,
    /// Only an open file descriptor.
    Fd,
}

impl Hold {
    fn of(ns: &Netns) -> Option<Self> {
        if !ns.pids.is_empty() {
            None
        } else if !ns.names.is_empty() || !ns.bind_mounts.is_empty() {
            Some(Hold::Mount)
        } else if !ns.fd_holders.is_empty() {
            Some(Hold::Fd)
        } else {
            None
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Hold::Mount => "mount",
            Hold::Fd => "fd",
        }
    }
}

/// When each orphaned namespace was first seen orphaned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    since: BTreeMap<u32, (u64, Hold, i64)>,
}

/// The change time of the nsfs inode behind whatever holds `ns`, in nanoseconds (0 if none can be read).
fn stamp(ns: &Netns) -> i64 {
    use std::os::unix::fs::MetadataExt as _;
    ns.open_path()
        .and_then(|path| std::fs::metadata(path).ok())
        .map_or(0, |m| m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec()))
}

/// Seconds since the epoch now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Orphans {
    /// Reads the state file (empty if there is none; lines that do not parse are dropped).
    pub fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let since = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let inode = words.next()?.parse().ok()?;
                let since = words.next()?.parse().ok()?;
                let hold = match words.next()? {
                    "mount" => Hold::Mount,
                    "fd" => Hold::Fd,
                    _ => return None,
                };
                let stamp = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                Some((inode, (since, hold, stamp)))
            })
            .collect();
        Self { since }
    }

    /// Brings the clocks up to date with a scan made at `now`: a namespace newly orphaned starts its clock, one
    /// with a process again (or gone) loses it. `fds_walked` says whether the scan saw fd-held namespaces; if
    /// not, the `fd` clocks of namespaces it did not see are kept. Returns whether anything changed.
    pub fn observe(&mut self, inventory: &Inventory, fds_walked: bool, now: u64) -> bool {
        let before = self.since.clone();
        self.since.retain(|inode, (_, hold, _)| match inventory.get(*inode) {
            Some(ns) => Hold::of(ns).is_some(),
            None => !fds_walked && *hold == Hold::Fd,
        });
        for ns in inventory.namespaces.values() {
            if let Some(hold) = Hold::of(ns) {
                let stamp = stamp(ns);
                let entry = self.since.entry(ns.inode).or_insert((now, hold, stamp));
                if entry.2 != stamp && entry.2 != 0 && stamp != 0 {
                    // Another namespace with the inode of one that is gone.
                    entry.0 = now;
                }
                entry.1 = hold;
                entry.2 = stamp;
            }
        }
        self.since != before
    }

    /// Seconds the namespace has been orphaned, as of `now`; `None` if it is not (known to be) orphaned.
    pub fn orphaned_for(&self, inode: u32, now: u64) -> Option<u64> {
        self.since.get(&inode).map(|(since, ..)| now.saturating_sub(*since))
    }

    /// Every orphaned namespace's inode and seconds orphaned.
    pub fn iter(&self, now: u64) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.since.iter().map(move |(inode, (since, ..))| (*inode, now.saturating_sub(*since)))
    }

    /// Writes the state file (a new file renamed over the old, so that a reader never sees half of it).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text: String = self
            .since
            .iter()
            .map(|(inode, (since, hold, stamp))| format!("{inode} {since} {} {stamp}\n", hold.as_str()))
            .collect();
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
    }

    /// Loads the shared state, observes `inventory` and saves it when it changed: what `list` and the agent do
    /// on each scan. A state file that cannot be written leaves the clocks in memory (logged at debug level:
    /// a read-only /run, or a user without the right to it).
    pub fn update_shared(inventory: &Inventory, fds_walked: bool) -> Self {
        let path = Path::new(STATE_FILE);
        // `list` and the agent update the file in turn: without the lock, one's save would drop what the other
        // just added, restarting those clocks. Released when `_lock` closes.
        let _lock = lock(&path.with_extension("lock"));
        let mut orphans = Self::load(path);
        if orphans.observe(inventory, fds_walked, now())
            && let Err(err) = orphans.save(path)
            && err.kind() != ErrorKind::NotFound
        {
            tracing::debug!(error = %err, path = STATE_FILE, "cannot save the orphan clocks");
        }
        orphans
    }
}

/// An exclusive `flock` on `path` (created if missing), held while the file stays open; `None` if it cannot be
/// had (a read-only /run): the update then goes ahead unlocked.
fn lock(path: &Path) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    std::fs::create_dir_all(path.parent()?).ok()?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).ok()?;
    // SAFETY: flock on a descriptor `file` owns; the lock goes with the descriptor.
    (unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0).then_some(file)
}

/// `3d4h`, `2h5m`, `4m10s`, `42s`: a duration at a glance.
pub fn short_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(inode: u32, pids: &[u32], names: &[&str], fds: &[u32]) -> Netns {
        Netns {
            inode,
            pids: pids.to_vec(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            fd_holders: fds.to_vec(),
            ..Netns::default()
        }
    }

    fn inventory(namespaces: Vec<Netns>) -> Inventory {
        Inventory { namespaces: namespaces.into_iter().map(|ns| (ns.inode, ns)).collect(), unreadable_pids: 0 }
    }

    #[test]
    fn a_clock_starts_when_the_last_process_is_gone_and_stops_when_one_is_back() {
        let mut orphans = Orphans::default();
        let scan = inventory(vec![ns(1, &[10], &[], &[]), ns(2, &[], &["a"], &[]), ns(3, &[], &[], &[99])]);
        assert!(orphans.observe(&scan, true, 100));
        assert_eq!(orphans.orphaned_for(1, 150), None, "has a process");
        assert_eq!(orphans.orphaned_for(2, 150), Some(50), "named, empty");
        assert_eq!(orphans.orphaned_for(3, 150), Some(50), "held by an fd only");
        assert!(!orphans.observe(&scan, true, 200), "the same state later is no change: the clocks keep running");
        assert_eq!(orphans.orphaned_for(2, 200), Some(100));

        // The agent's scan sees no fds: the fd-held one is kept, the named one is judged.
        let agent = inventory(vec![ns(1, &[10], &[], &[]), ns(2, &[11], &["a"], &[])]);
        assert!(orphans.observe(&agent, false, 300));
        assert_eq!(orphans.orphaned_for(2, 300), None, "a process is back");
        assert_eq!(orphans.orphaned_for(3, 300), Some(200), "kept: that scan could not see it");
        // A full scan without it: it is gone (and its inode may come back for another namespace).
        assert!(orphans.observe(&inventory(vec![]), true, 400));
        assert_eq!(orphans.orphaned_for(3, 400), None);
    }

    #[test]
    fn the_state_file_round_trips_and_bad_lines_are_dropped() {
        let dir = std::env::temp_dir().join(format!("nsm-orphans-{}", std::process::id()));
        let path = dir.join("orphans");
        let mut orphans = Orphans::default();
        orphans.observe(&inventory(vec![ns(7, &[], &["x"], &[]), ns(8, &[], &[], &[5])]), true, 1000);
        orphans.save(&path).unwrap();
        assert_eq!(Orphans::load(&path), orphans);
        std::fs::write(&path, "7 1000 mount\ngarbage\n9 x fd\n8 1000 fd\n").unwrap();
        assert_eq!(Orphans::load(&path), orphans);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(short_duration(42), "42s");
        assert_eq!(short_duration(250), "4m10s");
        assert_eq!(short_duration(7_500), "2h5m");
        assert_eq!(short_duration(273_600), "3d4h");
    }
}
