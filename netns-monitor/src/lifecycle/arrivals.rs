//! Who got into each network namespace: the processes that entered it (setns, unshare) or were created in it
//! (clone/clone3 with `CLONE_NEWNET`), as the agent sees them in the transition events. It answers "traffic jumped
//! in this namespace: which process got in there?" (`list --who`, `stats --who`, and
//! `netns_monitor_netns_arrivals_total`, per namespace and syscall, never per process).
//!
//! Per namespace the agent keeps a count per syscall and the last [`KEEP`] arrivals; a namespace's record goes
//! with the namespace. The agent writes the records to [`STATE_FILE`] (a new file renamed over the old, at most
//! about once a second) for the CLI to read without its HTTP endpoint, and reads it back at start, keeping the
//! namespaces that one of its recorded processes is still in ([`Arrivals::keep_proven`]), so a restart keeps the
//! history. netns-monitor's own helper threads entering namespaces are left out ([`HELPER_THREADS`]).

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::trace::event::{Event, EventKind, NsType, Syscall};

/// Where the agent keeps the records.
pub const STATE_FILE: &str = "/run/netns-monitor/arrivals.json";
/// Arrivals kept per namespace (the counts cover all).
pub const KEEP: usize = 8;
/// Namespaces with records at most (a bound on the agent's memory; the oldest-numbered are dropped first).
const MAX_NAMESPACES: usize = 65_536;

/// Names of netns-monitor's own threads that enter namespaces to do netlink work there (`list`'s details, the
/// management verbs' netlink worker, the agent's attach and unload sweeps): never a workload, so not an
/// arrival. `exec` enters from its main thread, and that is one.
pub const HELPER_THREADS: [&str; 4] = ["netns-attach", "netns-details", "netns-unload", "netns-worker"];

/// One process that got into a namespace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Arrival {
    /// The process now in the namespace: the caller of setns/unshare, or the child of clone/clone3.
    pub pid: u32,
    /// Who made the call (for clone, the parent: the child has the same command name until it execs).
    pub comm: String,
    pub uid: u32,
    pub syscall: String,
    /// Milliseconds since the epoch.
    pub unix_ms: u64,
}

/// One namespace's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetnsArrivals {
    /// Arrivals by syscall name, since the first agent saw the namespace.
    pub counts: BTreeMap<String, u64>,
    /// The latest arrivals, oldest first.
    pub last: VecDeque<Arrival>,
}

impl NetnsArrivals {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Every namespace's record, by inode.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Arrivals {
    pub namespaces: BTreeMap<u32, NetnsArrivals>,
}

impl Arrivals {
    /// Records `event` if it put a process into a network namespace (a successful call that changed the net
    /// namespace), with `wall` its wall-clock time. Returns the namespace it was recorded for.
    pub fn record(&mut self, event: &Event, wall: SystemTime) -> Option<u32> {
        let EventKind::Transition(syscall) = event.kind else { return None };
        let (old, new) = event.ns(NsType::Net);
        if event.errno().is_some() || old == new || new == 0 {
            return None;
        }
        if event.uid == 0 && HELPER_THREADS.contains(&event.comm.as_str()) {
            return None;
        }
        let pid = match syscall {
            Syscall::Clone | Syscall::Clone3 => event.child?.0,
            Syscall::Setns | Syscall::Unshare => event.pid,
        };
        if self.namespaces.len() >= MAX_NAMESPACES && !self.namespaces.contains_key(&new) {
            self.namespaces.pop_first();
        }
        let record = self.namespaces.entry(new).or_default();
        *record.counts.entry(syscall.name().to_owned()).or_default() += 1;
        if record.last.len() == KEEP {
            record.last.pop_front();
        }
        let unix_ms = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        record.last.push_back(Arrival {
            pid,
            comm: event.comm.clone(),
            uid: event.uid,
            syscall: syscall.name().into(),
            unix_ms,
        });
        Some(new)
    }

    /// Drops a namespace's record (it is gone; its inode may come back for another one).
    pub fn forget(&mut self, inode: u32) {
        self.namespaces.remove(&inode);
    }

    /// Keeps the records of namespaces that are provably the ones recorded: one of their recorded processes is
    /// still in a namespace of that inode. An inode is reused once its namespace is gone, and one that died while
    /// no agent ran would otherwise pass its history to a stranger; a namespace whose recorded processes all
    /// left loses its history on restart instead.
    pub fn keep_proven(&mut self) {
        self.namespaces.retain(|&inode, record| {
            record.last.iter().any(|arrival| {
                crate::inventory::nsfs_inode(Path::new(&format!("/proc/{}/ns/net", arrival.pid))) == Some(inode)
            })
        });
    }

    /// Reads the state file; an absent or unreadable one is no records.
    pub fn load(path: &Path) -> Self {
        std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&temporary, serde_json::to_vec(self).map_err(io::Error::other)?)?;
        std::fs::rename(&temporary, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
    }
}

/// `HH:MM:SS` (UTC) of a record's time, or the date too when it is not today.
pub fn shown_time(unix_ms: u64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    let today = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // 2026-12-03T18:01:02Z
    if text.get(..10) == today.get(..10) { text.get(11..19).unwrap_or(&text).to_owned() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(syscall: Syscall, old: u32, new: u32, ret: i64, child: Option<(u32, u32)>) -> Event {
        let mut event = Event::destroyed(0, 0);
        event.kind = EventKind::Transition(syscall);
        event.pid = 10;
        event.comm = "ip".into();
        event.old_ns[NsType::Net.index()] = old;
        event.new_ns[NsType::Net.index()] = new;
        event.ret = ret;
        event.child = child;
        event
    }

    #[test]
    fn only_calls_that_moved_a_process_into_a_namespace_count() {
        let mut arrivals = Arrivals::default();
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1000);
        assert_eq!(arrivals.record(&transition(Syscall::Setns, 1, 2, 0, None), now), Some(2));
        assert_eq!(arrivals.record(&transition(Syscall::Clone, 1, 3, 77, Some((77, 77))), now), Some(3));
        assert_eq!(arrivals.record(&transition(Syscall::Setns, 1, 2, -1, None), now), None, "failed");
        assert_eq!(arrivals.record(&transition(Syscall::Setns, 2, 2, 0, None), now), None, "no move");
        assert_eq!(arrivals.record(&Event::destroyed(2, 0), now), None);
        let mut helper = transition(Syscall::Setns, 1, 2, 0, None);
        helper.comm = "netns-details".into();
        assert_eq!(arrivals.record(&helper, now), None, "list's own worker entering to read interfaces");
        assert_eq!(arrivals.namespaces[&3].last[0].pid, 77, "a clone's arrival is the child");
        assert_eq!(arrivals.namespaces[&2].last[0].unix_ms, 1_000_000);
        for _ in 0..20 {
            arrivals.record(&transition(Syscall::Setns, 1, 2, 0, None), now);
        }
        assert_eq!(arrivals.namespaces[&2].counts["setns"], 21);
        assert_eq!(arrivals.namespaces[&2].last.len(), KEEP, "bounded");
        arrivals.forget(2);
        assert!(!arrivals.namespaces.contains_key(&2));
    }

    #[test]
    fn the_state_file_round_trips() {
        let path = std::env::temp_dir().join(format!("nsm-arrivals-{}.json", std::process::id()));
        let mut arrivals = Arrivals::default();
        arrivals.record(&transition(Syscall::Unshare, 1, 9, 0, None), SystemTime::now());
        arrivals.save(&path).unwrap();
        assert_eq!(Arrivals::load(&path), arrivals);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(Arrivals::load(&path), Arrivals::default());
    }
}
