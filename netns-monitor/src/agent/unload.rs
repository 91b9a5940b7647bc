//! `netns-monitor unload`: takes down what a stopped agent leaves running on purpose (its programs outlive it so
//! that a restart loses nothing): the pinned transition links, the classifiers' TCX links and, on kernels
//! without TCX, their clsact/cls_bpf filters in every namespace, and the pinned maps.
//!
//! Refused while an agent uses the pin directory (it holds the directory's lock), and the lock is held for the
//! whole unload, so no agent can start half-way through. A link goes when its pin does (nothing else holds it
//! once the agent is gone); the kernel frees it in deferred work, which the unload waits for, so that when it
//! returns no program of ours runs any more.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

use crate::{
    bpf::{BpfError, persist},
    inventory::{Inventory, InventoryError, ScanOptions},
    route_socket::RouteSocket,
    traffic::attach::{LINKS_DIR, detach_pinned, remove_legacy_filters},
};

/// What an unload took down.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Unloaded {
    pub pin_dir: PathBuf,
    /// Whether the pin directory existed.
    pub pinned: bool,
    /// Transition programs whose pinned links were removed, by program name.
    pub transition_links: Vec<String>,
    /// Classifier TCX links detached and unpinned.
    pub classifier_links: usize,
    /// clsact/cls_bpf filters deleted (kernels without TCX, or `NETNS_MONITOR_TC=clsact`).
    pub clsact_filters: usize,
    /// Namespaces searched for those filters.
    pub namespaces_searched: usize,
    /// Namespaces that could not be entered (their filters, if any, stay).
    pub namespaces_unreachable: usize,
    /// Pinned maps removed, by name.
    pub maps: Vec<String>,
    /// Whether every removed link was gone from the kernel before the deadline.
    pub released: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UnloadError {
    #[error("an agent is running on {path}: stop it first (systemctl stop netns-monitor, or SIGTERM)")]
    AgentRunning { path: String },
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("cannot remove {path}")]
    Remove {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list the pin directory {path}")]
    List {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list the network namespaces to remove the clsact filters")]
    Inventory(#[from] InventoryError),
    #[error("cannot start a thread to enter the namespaces")]
    Thread(#[source] std::io::Error),
}

/// How long the kernel gets to free the links whose pins went.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// Unloads everything pinned under `pin_dir`, and every clsact filter of ours in any namespace.
pub fn unload(pin_dir: &Path) -> Result<Unloaded, UnloadError> {
    let mut unloaded = Unloaded { pin_dir: pin_dir.to_owned(), released: true, ..Unloaded::default() };
    let lock = if pin_dir.is_dir() {
        unloaded.pinned = true;
        match persist::PinDirLock::acquire(pin_dir) {
            Ok(lock) => Some(lock),
            Err(BpfError::PinDirBusy { path }) => return Err(UnloadError::AgentRunning { path }),
            Err(other) => return Err(other.into()),
        }
    } else {
        None
    };
    let mut released = Vec::new();
    if lock.is_some() {
        let transitions = pin_dir.join(persist::TRANSITIONS_DIR);
        for (name, path) in entries(&transitions)? {
            if let Some(id) = link_id(&path) {
                released.push(id);
            }
            remove(&path)?;
            unloaded.transition_links.push(name);
        }
        for (_, path) in entries(&pin_dir.join(LINKS_DIR))? {
            if let Some(id) = link_id(&path) {
                released.push(id);
            }
            // At once, not when the kernel gets round to the released link: TCX links move with their device.
            detach_pinned(&path);
            remove(&path)?;
            unloaded.classifier_links += 1;
        }
    }
    // Filters outlive both the agent and its pins: search every namespace, pinned or not.
    let (searched, unreachable, filters) = remove_clsact_filters()?;
    (unloaded.namespaces_searched, unloaded.namespaces_unreachable, unloaded.clsact_filters) =
        (searched, unreachable, filters);
    if lock.is_some() {
        for (name, path) in entries(pin_dir)? {
            if path.is_dir() {
                std::fs::remove_dir(&path)
                    .map_err(|source| UnloadError::Remove { path: path.display().to_string(), source })?;
            } else {
                remove(&path)?;
                unloaded.maps.push(name);
            }
        }
        std::fs::remove_dir(pin_dir)
            .map_err(|source| UnloadError::Remove { path: pin_dir.display().to_string(), source })?;
    }
    unloaded.released = persist::wait_links_released(&released, RELEASE_DEADLINE);
    unloaded.transition_links.sort();
    unloaded.maps.sort();
    drop(lock);
    Ok(unloaded)
}

/// The entries of `dir` (none if it does not exist), by name.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, UnloadError> {
    let listed = match std::fs::read_dir(dir) {
        Ok(listed) => listed,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(UnloadError::List { path: dir.display().to_string(), source }),
    };
    let mut found: Vec<(String, PathBuf)> =
        listed.flatten().map(|entry| (entry.file_name().to_string_lossy().into_owned(), entry.path())).collect();
    found.sort();
    Ok(found)
}

fn remove(path: &Path) -> Result<(), UnloadError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UnloadError::Remove { path: path.display().to_string(), source }),
    }
}

/// The id of the link pinned at `path`, if it is one.
fn link_id(path: &Path) -> Option<u32> {
    let pinned = aya::programs::links::PinnedLink::from_pin(path).ok()?;
    aya::programs::links::FdLink::from(pinned).info().ok().map(|info| info.id())
}

/// Enters every network namespace in turn (one worker thread) and deletes our filters on each of its interfaces.
/// Returns (namespaces searched, namespaces that could not be entered, filters deleted).
fn remove_clsact_filters() -> Result<(usize, usize, usize), UnloadError> {
    let inventory = Inventory::scan(&ScanOptions { fds: true })?;
    let files: Vec<(u32, Option<std::fs::File>)> =
        inventory.namespaces.values().map(|netns| (netns.inode, netns.open())).collect();
    let counts = std::thread::scope(|scope| {
        let worker = std::thread::Builder::new().name("netns-unload".into()).spawn_scoped(scope, || {
            let (mut searched, mut unreachable, mut filters) = (0, 0, 0);
            for (inode, file) in &files {
                let entered = file.as_ref().is_some_and(|file| setns(file.as_fd(), CloneFlags::CLONE_NEWNET).is_ok());
                let names = if entered {
                    RouteSocket::open().and_then(|mut socket| socket.link_names())
                } else {
                    Err(std::io::Error::other("not entered"))
                };
                let Ok(names) = names else {
                    tracing::warn!(inode, "cannot enter the namespace or list its interfaces: its filters stay");
                    unreachable += 1;
                    continue;
                };
                searched += 1;
                filters +=
                    names.iter().filter(|name| *name != "lo").map(|name| remove_legacy_filters(name)).sum::<usize>();
            }
            (searched, unreachable, filters)
        });
        worker.map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    counts.map_err(UnloadError::Thread)
}
