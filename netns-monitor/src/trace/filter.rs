//! `netns-monitor trace` filters: parsed and checked before anything is loaded, then applied per event.

use netns_monitor_common::ns::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS,
};

use super::event::{Event, EventKind, NsType, Syscall};
use crate::inventory::Inventory;

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

    /// Whether `event` passes every criterion. Lifecycle events (no caller for a destruction) pass only the
    /// criteria they can be judged on: netns and type.
    pub fn matches(&self, event: &Event) -> bool {
        let destroyed = event.kind == EventKind::NetnsDestroyed;
        if !self.pids.is_empty() && (destroyed || !self.pids.contains(&event.pid)) {
            return false;
        }
        if !self.comms.is_empty() && (destroyed || !self.comms.contains(&event.comm)) {
            return false;
        }
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
