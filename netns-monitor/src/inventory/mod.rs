//! Discovers every network namespace on the host and what points at it.
//!
//! A namespace is identified by its nsfs inode (`net:[INODE]`); names are labels on top. Sources, in the
//! order a name is chosen from them:
//! - named: a bind-mounted nsfs file under `/run/netns` (iproute2's and our on-disk form),
//! - bind mount: any other nsfs bind mount of a network namespace in any mount namespace (Docker's
//!   `/run/docker/netns/*`, CNI's `/var/run/netns/cni-*` seen from another mount namespace, ...),
//! - process: a process whose `/proc/PID/ns/net` is it,
//! - fd: a process holding an open file descriptor to it (optional, costs a walk of every fd).
//!
//! Threads that moved to another namespace than their process are not scanned (as `lsns`), nor are
//! namespaces kept alive only by kernel objects (a socket, a child user namespace).
//!
//! Beyond discovery: [`container`] reads a container hint from a process's cgroup path, [`details`]
//! asks the kernel for each namespace's NSID and interfaces, and [`orphans`] times namespaces no process uses.

pub mod container;
pub mod details;
mod naming;
pub mod orphans;
mod scan;

use std::{collections::BTreeMap, path::PathBuf};

pub use container::ContainerHint;
pub use details::{Details, details};
pub use naming::Namer;
pub use scan::{NETNS_RUN_DIR, ScanOptions, is_netns, nsfs_inode, parse_ns_link};

/// Errors discovering namespaces. Per-process failures (a process that exits mid-scan, or one whose
/// namespace we may not read) are not errors: they are counted in [`Inventory::unreadable_pids`].
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot list {path}")]
    ReadDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    MountInfo(#[from] crate::mountinfo::MountInfoError),
}

/// How a namespace was found; ordered from most to least specific.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Named,
    BindMount,
    Process,
    Fd,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Named => "named",
            Source::BindMount => "bind-mount",
            Source::Process => "process",
            Source::Fd => "fd",
        }
    }
}

/// One network namespace and everything that refers to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Netns {
    /// nsfs inode: the identity.
    pub inode: u32,
    /// Names under `/run/netns`, sorted.
    pub names: Vec<String>,
    /// Other nsfs bind mounts (mount point as seen in the mount namespace that holds it), sorted.
    pub bind_mounts: Vec<PathBuf>,
    /// One process per mount namespace that showed a bind mount, to open it via `/proc/PID/root` when it is
    /// not visible from ours. Ascending.
    pub bind_mount_pids: Vec<u32>,
    /// Processes whose network namespace this is, ascending.
    pub pids: Vec<u32>,
    /// Processes holding an fd to it (only with [`ScanOptions::fds`]), ascending.
    pub fd_holders: Vec<u32>,
}

impl Netns {
    /// The most specific way the namespace was found.
    pub fn source(&self) -> Source {
        if !self.names.is_empty() {
            Source::Named
        } else if !self.bind_mounts.is_empty() {
            Source::BindMount
        } else if !self.pids.is_empty() {
            Source::Process
        } else {
            Source::Fd
        }
    }

    /// The one name `list`, `stats`, `trace` and `/metrics` give the namespace: a name a person gave it under /run/netns,
    /// else its container's (the runtime's name, else `RUNTIME-SHORTID`), else a name `attach --all` or the
    /// runtime gave it, else the last component of a bind mount (Docker's sandbox key).
    pub fn display_name(&self, container: Option<&ContainerHint>, ours: impl Fn(&str) -> bool) -> Option<String> {
        let chosen = self.names.iter().find(|name| !ours(name) && !crate::manage::autoname::runtime_made(name));
        chosen.cloned().or_else(|| container.map(ContainerHint::label)).or_else(|| self.best_name().map(str::to_owned))
    }

    /// The best label: the first `/run/netns` name, else the last path component of a bind mount.
    pub fn best_name(&self) -> Option<&str> {
        self.names
            .first()
            .map(String::as_str)
            .or_else(|| self.bind_mounts.first().and_then(|p| p.file_name()).and_then(|n| n.to_str()))
    }
}

/// A snapshot of every network namespace found.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub namespaces: BTreeMap<u32, Netns>,
    /// Processes whose namespace could not be read (exited mid-scan, or access denied).
    pub unreadable_pids: usize,
}

impl Inventory {
    /// Scans the host.
    pub fn scan(options: &ScanOptions) -> Result<Self, InventoryError> {
        scan::scan(options)
    }

    /// The namespace with this inode.
    pub fn get(&self, inode: u32) -> Option<&Netns> {
        self.namespaces.get(&inode)
    }

    /// Looks a namespace up by `/run/netns` name, bind-mount path, decimal inode or `net:[INODE]`.
    pub fn find(&self, key: &str) -> Option<&Netns> {
        if let Some(ns) = self.namespaces.values().find(|ns| ns.names.iter().any(|n| n == key)) {
            return Some(ns);
        }
        if let Some(ns) = self.namespaces.values().find(|ns| ns.bind_mounts.iter().any(|p| p.as_os_str() == key)) {
            return Some(ns);
        }
        key.parse().ok().or_else(|| parse_ns_link(key, "net")).and_then(|inode| self.get(inode))
    }

    /// The best label of the namespace with this inode.
    pub fn name_of(&self, inode: u32) -> Option<&str> {
        self.get(inode).and_then(Netns::best_name)
    }
}
