//! `netns-monitor trace` filters: parsed and checked before anything is loaded, then applied per event.

use netns_monitor_common::ns::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS,
};

use super::event::{Event, EventKind, NsType, Syscall};
use crate::inventory::Inventory;

/// A [`Filter`] that follows namespaces from their creation: under `--pid`/`--comm` the destruction of a network
/// namespace has no caller to judge (the last reference is often dropped by a kernel worker), so it passes when
/// the namespace's creation passed.
#[derive(Clone, Debug, Default)]
pub struct Lineage {
    filter: Filter,
    /// Network namespaces whose creation passed the caller criteria and whose end has not come yet.
    created: std::collections::HashSet<u32>,
}

impl Lineage {
    pub fn new(filter: Filter) -> Self {
        Self { filter, created: Default::default() }
    }

    /// Whether to show `event`.
    pub fn keep(&mut self, event: &Event) -> bool {
        let by_caller = !self.filter.pids.is_empty() || !self.filter.comms.is_empty();
        if !by_caller {
            return self.filter.matches(event);
        }
        let (_, new) = event.ns(NsType::Net);
        if event.kind == EventKind::NetnsCreated {
            let caller = (self.filter.pids.is_empty() || self.filter.pids.contains(&event.pid))
                && (self.filter.comms.is_empty() || self.filter.comms.contains(&event.comm));
            if caller {
                self.created.insert(new);
            }
        }
        if event.is_end() {
            let (old, _) = event.ns(NsType::Net);
            return self.created.remove(&old) && self.filter.matches_beyond_caller(event);
        }
        self.filter.matches(event)
    }
}

/// A filter value that is not valid; the CLI reports it with exit code 2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("unknown syscall {0:?}: expected one of setns, unshare, clone, clone3")]
    Syscall(String),
    #[error(
        "unknown namespace type {0:?}: expected one of net, mnt, pid, pid_for_children, uts, ipc, user, cgroup, \
         time, time_for_children"
    )]
    Type(String),
    #[error("no network namespace named {0:?} (not under /run/netns, not a bind mount, not an inode that exists)")]
    Netns(String),
    #[error("a command name is at most 15 bytes (the kernel's TASK_COMM_LEN - 1): {0:?}")]
    Comm(String),
}

/// Filters as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct FilterSpec {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub netns: Vec<String>,
    pub syscalls: Vec<String>,
    pub types: Vec<String>,
    pub failed: bool,
}

/// Checked filters; an event passes when it matches every given criterion (and any value within one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// Network namespace inodes; an event matches if its old or new net inode is one of them.
    pub netns: Vec<u32>,
    pub syscalls: Vec<Syscall>,
    pub types: Vec<NsType>,
    pub failed: bool,
}

impl FilterSpec {
    /// Checks every value; namespace names and inodes are resolved against `inventory`.
    pub fn resolve(&self, inventory: &Inventory) -> Result<Filter, FilterError> {
        let syscalls = self
            .syscalls
            .iter()
            .map(|s| Syscall::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| FilterError::Syscall(s.clone())))
            .collect::<Result<_, _>>()?;
        let types = self
            .types
            .iter()
            .map(|t| NsType::ALL.into_iter().find(|k| k.proc_name() == t).ok_or_else(|| FilterError::Type(t.clone())))
            .collect::<Result<_, _>>()?;
        let netns = self
            .netns
            .iter()
            .map(|key| inventory.find(key).map(|ns| ns.inode).ok_or_else(|| FilterError::Netns(key.clone())))
            .collect::<Result<_, _>>()?;
        if let Some(long) = self.comms.iter().find(|c| c.len() > 15) {
            return Err(FilterError::Comm(long.clone()));
        }
        Ok(Filter { pids: self.pids.clone(), comms: self.comms.clone(), netns, syscalls, types, failed: self.failed })
    }
}

/// The `CLONE_NEW*` flag that asks for a namespace of this type.
pub fn clone_flag(ty: NsType) -> u64 {
    match ty {
        NsType::Net => CLONE_NEWNET,
        NsType::Mnt => CLONE_NEWNS,
        NsType::Pid | NsType::PidForChildren => CLONE_NEWPID,
        NsType::Uts => CLONE_NEWUTS,
        NsType::Ipc => CLONE_NEWIPC,
        NsType::User => CLONE_NEWUSER,
        NsType::Cgroup => CLONE_NEWCGROUP,
        NsType::Time | NsType::TimeForChildren => CLONE_NEWTIME,
    }
}

impl Filter {
    /// The single process to filter on in the kernel, when exactly one is asked for.
    pub fn kernel_pid(&self) -> Option<u32> {
        match self.pids.as_slice() {
            [pid] => Some(*pid),
            _ => None,
        }
    }

    /// Whether `event` passes every criterion. The end of a namespace (no caller for a destruction) is judged
    /// on netns and type only; [`Lineage`] keeps it under `--pid`/`--comm` when the creation passed.
    pub fn matches(&self, event: &Event) -> bool {
        let end = event.is_end();
        if !self.pids.is_empty() && (end || !self.pids.contains(&event.pid)) {
            return false;
        }
        if !self.comms.is_empty() && (end || !self.comms.contains(&event.comm)) {
            return false;
        }
        self.matches_beyond_caller(event)
    }

    /// Every criterion but the caller's pid and comm.
    fn matches_beyond_caller(&self, event: &Event) -> bool {
        if !self.syscalls.is_empty() && !event.syscall().is_some_and(|s| self.syscalls.contains(&s)) {
            return false;
        }
        if self.failed && event.errno().is_none() {
            return false;
        }
        if !self.netns.is_empty() {
            let (old, new) = event.ns(NsType::Net);
            if !self.netns.contains(&old) && !self.netns.contains(&new) {
                return false;
            }
        }
        if !self.types.is_empty() {
            let requested = |ty: NsType| event.syscall().is_some() && event.flags & clone_flag(ty) != 0;
            if !self.types.iter().any(|&ty| event.changed().any(|c| c == ty) || requested(ty)) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(pid: u32, comm: &str, inode: u32) -> Event {
        let mut event = Event::destroyed(0, 0);
        event.kind = EventKind::NetnsCreated;
        event.pid = pid;
        event.comm = comm.to_owned();
        event.old_ns = [0; netns_monitor_common::ns::NS_COUNT];
        event.new_ns[NsType::Net.index()] = inode;
        event
    }

    #[test]
    fn pid_filter_keeps_the_end_of_what_the_process_created_once() {
        let mut lineage = Lineage::new(Filter { pids: vec![7], ..Filter::default() });
        assert!(lineage.keep(&created(7, "a", 100)));
        assert!(!lineage.keep(&created(8, "b", 200)), "another process's creation");
        assert!(!lineage.keep(&Event::destroyed(200, 0)), "the end of another process's namespace");
        assert!(lineage.keep(&Event::destroyed(100, 0)), "the end of ours, though it has no caller");
        assert!(!lineage.keep(&Event::destroyed(100, 0)), "a namespace ends once; a reused inode is not ours");
        assert!(lineage.keep(&created(7, "a", 300)));
        assert!(lineage.keep(&Event::end_unknown(300, 0)), "an unknown end is an end too");
    }

    #[test]
    fn comm_filter_follows_creations_too_and_no_filter_keeps_every_end() {
        let mut lineage = Lineage::new(Filter { comms: vec!["ip".into()], ..Filter::default() });
        assert!(lineage.keep(&created(9, "ip", 5)));
        assert!(lineage.keep(&Event::destroyed(5, 0)));
        assert!(!lineage.keep(&Event::destroyed(6, 0)));
        let mut all = Lineage::new(Filter::default());
        assert!(all.keep(&Event::destroyed(6, 0)));
        // The other criteria still apply to an end: --syscall has none to match.
        let mut syscalls = Lineage::new(Filter { pids: vec![1], syscalls: vec![Syscall::Setns], ..Filter::default() });
        assert!(!syscalls.keep(&created(1, "x", 5)));
        assert!(!syscalls.keep(&Event::destroyed(5, 0)));
    }
}
