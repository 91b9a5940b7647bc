//! The names `attach --all` gives to namespaces nobody named: `/run/netns/NAME` as a symlink to
//! `/proc/PID/ns/net`, never a bind mount.
//!
//! A bind mount holds the namespace: a container's name would keep its dead namespace alive after the
//! container stopped, and `ip netns exec NAME` would silently enter that corpse. A symlink holds nothing: when
//! the process exits, the name stops resolving (`ip netns exec` fails with "No such file or directory") until
//! the next `attach --all` points it at the container's new namespace or `--prune` removes it.
//!
//! Which names are ours is recorded under [`REGISTRY_DIR`] (one file per name, holding its owner, the
//! container's runtime and id or the process it was named after, and the inode of the symlink we made). A name
//! that is not recorded there, or that is no longer our symlink (another inode), was made by someone else and
//! is never touched.

use std::{
    collections::BTreeMap,
    io::{self, ErrorKind},
    path::{Path, PathBuf},
};

use super::netns::{self, NetnsError};
use crate::inventory::{
    Inventory, NETNS_RUN_DIR, Netns,
    container::{Containers, parent_of, start_time},
    nsfs_inode,
};

/// Our record of the names we made.
pub const REGISTRY_DIR: &str = "/run/netns-monitor/names";

/// Whom a name stands for: `RUNTIME ID` of a container, or `pid PID START` of a process (its start time tells
/// it from a later process with the same pid).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner(pub String);

impl Owner {
    pub fn container(runtime: &str, id: &str) -> Self {
        Self(format!("{runtime} {id}"))
    }

    pub fn process(pid: u32) -> Self {
        Self(format!("pid {pid} {}", start_time(pid).unwrap_or(0)))
    }
}

/// Errors keeping our names.
#[derive(Debug, thiserror::Error)]
pub enum AutonameError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot write {path}")]
    Registry {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot point {path} at process {pid}")]
    Link {
        path: PathBuf,
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`reconcile`] does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Also name namespaces in no container, `pid-PID` (the CLI does; the agent names containers only).
    pub processes: bool,
    /// Remove our names whose container or process is gone.
    pub prune: bool,
}

/// One thing [`reconcile`] did, or failed to do.
#[derive(Debug)]
pub enum Change {
    /// `name` was made, or moved, to lead to namespace `inode`.
    Named {
        name: String,
        inode: u32,
        outcome: Outcome,
    },
    Removed {
        name: String,
    },
    Failed {
        what: String,
        error: AutonameError,
    },
}

/// Makes sure names can be kept: `/run/netns` (a shared mount, as iproute2 makes it) and [`REGISTRY_DIR`]
/// exist and are writable. The agent checks this at start for `--name-containers` rather than warn at every
/// container (a read-only `/run` under systemd's `ProtectSystem=strict`, or a container's read-only root).
pub fn ready() -> Result<(), AutonameError> {
    use nix::unistd::{AccessFlags, access};
    netns::prepare_run_dir()?;
    let registry = Path::new(REGISTRY_DIR);
    std::fs::create_dir_all(registry).map_err(|source| AutonameError::Registry { path: registry.into(), source })?;
    for dir in [Path::new(NETNS_RUN_DIR), registry] {
        access(dir, AccessFlags::W_OK)
            .map_err(|errno| AutonameError::Registry { path: dir.into(), source: io::Error::from(errno) })?;
    }
    Ok(())
}

/// Names every namespace in `inventory` that has processes and no name a person gave it (the host's aside),
/// after its container, and moves our names to where their container is now; with [`Options::prune`], removes
/// ours whose owner is gone. Processes that exit meanwhile are skipped, not failures.
pub fn reconcile(inventory: &Inventory, options: &Options) -> Vec<Change> {
    let host = [1, std::process::id()].map(|pid| netns::process_netns(pid).ok());
    let containers = Containers::new();
    let container_of = |pid| containers.of_pid(pid).map(|hint| Owner::container(hint.runtime, &hint.id));
    forget_foreign();
    let ours = ours();
    let mut changes = Vec::new();
    for ns in inventory.namespaces.values() {
        if ns.pids.is_empty() || host.contains(&Some(ns.inode)) {
            continue;
        }
        // Named by a person, or by us and still right: leave it. Names a runtime made for itself do not count,
        // nor one of ours that leads here only because its process's pid was reused.
        let named = |name: &String| match ours.get(name) {
            Some(owner) => is_current(name, owner, container_of),
            None => !runtime_made(name),
        };
        if ns.names.iter().any(named) {
            continue;
        }
        match name_one(ns, &containers, options.processes) {
            Ok(Some((name, outcome))) if outcome != Outcome::Unchanged => {
                changes.push(Change::Named { name, inode: ns.inode, outcome });
            }
            Ok(_) => {}
            Err(error) => changes.push(Change::Failed { what: format!("name net:[{}]", ns.inode), error }),
        }
    }
    if options.prune {
        for (name, owner) in self::ours() {
            if is_current(&name, &owner, container_of) {
                continue;
            }
            match remove(&name) {
                Ok(true) => changes.push(Change::Removed { name }),
                Ok(false) => {}
                Err(error) => changes.push(Change::Failed { what: format!("remove {name}"), error }),
            }
        }
    }
    changes
}

/// Names one namespace after its container (or, with `processes`, its leading process). `None` when there is
/// nothing to name: no container, or its processes exited meanwhile.
fn name_one(ns: &Netns, containers: &Containers, processes: bool) -> Result<Option<(String, Outcome)>, AutonameError> {
    let hint = containers.of_pids(&ns.pids);
    let pid = leader(ns);
    let (preferred, owner) = match &hint {
        Some(hint) => (hint.netns_name(), Owner::container(hint.runtime, &hint.id)),
        None if processes => (format!("pid-{pid}"), Owner::process(pid)),
        None => return Ok(None),
    };
    let container_of = |pid| containers.of_pid(pid).map(|hint| Owner::container(hint.runtime, &hint.id));
    let mut name = preferred.clone();
    let mut result = point(&name, pid, &owner, container_of);
    if matches!(result, Err(AutonameError::Netns(NetnsError::Exists { .. }))) {
        // Someone else's name, ours for another owner (a reused pid), or ours for another namespace of the
        // same owner that is still alive (a container that made a namespace inside): qualify it.
        name = format!("{preferred}-{}", ns.inode);
        result = point(&name, pid, &owner, container_of);
    }
    match result {
        // The process may have exited after the link was made: then the name leads nowhere, take it back.
        Ok(outcome) if netns::inode_of(&name).ok() == Some(ns.inode) => Ok(Some((name, outcome))),
        Ok(_) => {
            remove(&name)?;
            Ok(None)
        }
        Err(AutonameError::Netns(NetnsError::NoProcess { .. })) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The process a name should lead to: the one that entered the namespace first among those whose parent is
/// outside it (a container's init, whose parent is the runtime), else the oldest. Not the lowest pid: pids
/// wrap, and a container's init outlives the processes it starts.
fn leader(ns: &Netns) -> u32 {
    let outside = |pid: u32| parent_of(pid).is_none_or(|parent| netns::process_netns(parent).ok() != Some(ns.inode));
    let oldest =
        |pids: &mut dyn Iterator<Item = u32>| pids.min_by_key(|&pid| (start_time(pid).unwrap_or(u64::MAX), pid));
    oldest(&mut ns.pids.iter().copied().filter(|&pid| outside(pid)))
        .or_else(|| oldest(&mut ns.pids.iter().copied()))
        .unwrap_or(ns.pids[0])
}

/// Our names whose `/run/netns` entry is still our symlink, with their owners.
pub fn ours() -> BTreeMap<String, Owner> {
    let entries = std::fs::read_dir(REGISTRY_DIR).into_iter().flatten().flatten();
    entries
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| Some((recorded(&name)?, name)))
        .map(|(owner, name)| (name, owner))
        .collect()
}

/// The owner of `name` if it is ours. The record holds the owner and the symlink's inode: a person who
/// replaced our name by a symlink of their own (`ln -sf /proc/PID/ns/net /run/netns/NAME`, a common recipe)
/// has a new inode there, and that name is theirs from then on.
fn recorded(name: &str) -> Option<Owner> {
    use std::os::unix::fs::MetadataExt as _;
    let text = std::fs::read_to_string(Path::new(REGISTRY_DIR).join(name)).ok()?;
    let mut lines = text.lines();
    let owner = lines.next().unwrap_or_default();
    let path = netns::path_of(name);
    // No inode yet: the link is being made (or the maker died in between); its shape is all there is.
    let same_link = match lines.next().and_then(|ino| ino.parse::<u64>().ok()) {
        Some(ino) => std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == ino),
        None => true,
    };
    (same_link && target_pid(&path).is_some()).then(|| Owner(owner.to_owned()))
}

/// What happened to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// It was ours, for the same owner, and now leads to the owner's current namespace.
    Retargeted,
    /// It already led there.
    Unchanged,
}

/// Makes `name` lead to the network namespace of `pid`, on behalf of `owner`. Refuses a name that exists and
/// is not ours for the same owner, or is ours and still leads to another live namespace of the owner
/// ([`NetnsError::Exists`]): a name is moved only once what it led to is gone, so two namespaces of one
/// container never take it from each other in turn.
fn point(
    name: &str,
    pid: u32,
    owner: &Owner,
    container_of: impl Fn(u32) -> Option<Owner>,
) -> Result<Outcome, AutonameError> {
    super::name::validate_netns_name(name).map_err(NetnsError::from)?;
    let inode = netns::process_netns(pid)?;
    let path = netns::path_of(name);
    let target = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let outcome = match std::fs::symlink_metadata(&path) {
        Err(err) if err.kind() == ErrorKind::NotFound => Outcome::Created,
        _ if recorded(name).as_ref() == Some(owner) => {
            if std::fs::read_link(&path).is_ok_and(|t| t == target) {
                return Ok(Outcome::Unchanged);
            }
            if is_current(name, owner, container_of) {
                if nsfs_inode(&path) == Some(inode) {
                    return Ok(Outcome::Unchanged);
                }
                return Err(NetnsError::Exists { name: name.to_owned() }.into());
            }
            Outcome::Retargeted
        }
        _ => return Err(NetnsError::Exists { name: name.to_owned() }.into()),
    };
    netns::prepare_run_dir()?;
    // Written before the link, so a link we made is never unrecorded (a crash between leaves a record whose
    // name does not exist, which `ours` ignores); taken back if the link cannot be made.
    record(name, owner, None)?;
    let link = |source| AutonameError::Link { path: path.clone(), pid, source };
    match outcome {
        Outcome::Created => std::os::unix::fs::symlink(&target, &path).map_err(|source| {
            forget(name);
            link(source)
        })?,
        // A new link renamed over the old one: the name never disappears in between. The temporary is this
        // call's own (the CLI and the agent may both be at it), and removed again if the rename fails.
        _ => {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temporary = Path::new(NETNS_RUN_DIR).join(format!(".{name}.{}-{n}.netns-monitor", std::process::id()));
            let made =
                std::os::unix::fs::symlink(&target, &temporary).and_then(|()| std::fs::rename(&temporary, &path));
            if made.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            made.map_err(link)?;
        }
    }
    // Now the link exists: its inode tells it from a link someone else puts there later.
    let ino = std::fs::symlink_metadata(&path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
    record(name, owner, ino)?;
    Ok(outcome)
}

/// Removes our name `name` and its record; a name that is not ours is left alone (returns false).
pub fn remove(name: &str) -> Result<bool, AutonameError> {
    if recorded(name).is_none() {
        return Ok(false);
    }
    let path = netns::path_of(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(source) => return Err(AutonameError::Remove { path, source }),
    }
    forget(name);
    Ok(true)
}

/// Drops the records of names that are no longer ours (removed, or replaced by someone else).
pub fn forget_foreign() {
    for entry in std::fs::read_dir(REGISTRY_DIR).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        if target_pid(&netns::path_of(&name)).is_none() {
            forget(&name);
        }
    }
}

/// The pid our symlink at `path` leads to; `None` when `path` is not such a symlink.
pub fn target_pid(path: &Path) -> Option<u32> {
    let target = std::fs::read_link(path).ok()?;
    target.to_str()?.strip_prefix("/proc/")?.strip_suffix("/ns/net")?.parse().ok()
}

/// Whether our name `name` still leads to a namespace of its owner: the process it points at exists and is
/// the owner (same start time) or is in the owner's container (`container_of` gives that).
pub fn is_current(name: &str, owner: &Owner, container_of: impl Fn(u32) -> Option<Owner>) -> bool {
    let path = netns::path_of(name);
    let Some(pid) = target_pid(&path) else { return false };
    if nsfs_inode(&path).is_none() {
        return false;
    }
    if owner.0.starts_with("pid ") { Owner::process(pid) == *owner } else { container_of(pid).as_ref() == Some(owner) }
}

fn record(name: &str, owner: &Owner, link_inode: Option<u64>) -> Result<(), AutonameError> {
    let path = Path::new(REGISTRY_DIR).join(name);
    let text = match link_inode {
        Some(ino) => format!("{}\n{ino}\n", owner.0),
        None => format!("{}\n", owner.0),
    };
    std::fs::create_dir_all(REGISTRY_DIR)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|source| AutonameError::Registry { path, source })
}

fn forget(name: &str) {
    let _ = std::fs::remove_file(Path::new(REGISTRY_DIR).join(name));
}

/// Whether a `/run/netns` name is one a runtime made for itself (Podman's and CNI's `netns-UUID`, `cni-UUID`):
/// not a name a person chose, so a container's own name is shown before it.
pub fn runtime_made(name: &str) -> bool {
    let uuid = name.strip_prefix("netns-").or_else(|| name.strip_prefix("cni-"));
    uuid.is_some_and(|u| {
        u.len() == 36
            && u.chars()
                .enumerate()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_made_names_are_uuid_shaped() {
        assert!(runtime_made("netns-1c3b4a2e-5f6d-7a8b-9c0d-1e2f3a4b5c6d"));
        assert!(runtime_made("cni-1c3b4a2e-5f6d-7a8b-9c0d-1e2f3a4b5c6d"));
        assert!(!runtime_made("netns-web"));
        assert!(!runtime_made("blue"));
        assert!(!runtime_made("cni-1c3b4a2e_5f6d-7a8b-9c0d-1e2f3a4b5c6d"));
    }

    #[test]
    fn symlink_targets_name_a_pid() {
        let dir = std::env::temp_dir().join(format!("nm-autoname-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("ours");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/proc/42/ns/net", &link).unwrap();
        assert_eq!(target_pid(&link), Some(42));
        let other = dir.join("theirs");
        let _ = std::fs::remove_file(&other);
        std::os::unix::fs::symlink("/var/run/docker/netns/abc", &other).unwrap();
        assert_eq!(target_pid(&other), None);
        assert_eq!(target_pid(&dir), None, "not a symlink");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn owners_of_processes_carry_the_start_time() {
        let me = Owner::process(std::process::id());
        assert!(me.0.starts_with(&format!("pid {} ", std::process::id())));
        assert_ne!(me.0, format!("pid {} 0", std::process::id()));
    }
}
