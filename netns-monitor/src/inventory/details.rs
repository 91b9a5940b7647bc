//! What the kernel says about each namespace beyond who holds it: its NSID as seen from the caller's namespace
//! (`RTM_GETNSID` with the namespace's fd) and its interfaces (a link dump from a thread inside it).
//!
//! `list` asks this of every namespace, so the work is one blocking socket per namespace on a few threads that
//! each enter one namespace after another, not a thread and a runtime per namespace (measured with `cargo
//! xtask bench list`).

use std::{collections::BTreeMap, fs::File, os::fd::AsFd as _};

use nix::sched::{CloneFlags, setns};

use super::{Inventory, Netns};
use crate::{lifecycle::nsid, manage::rtnl::RtnlError, route_socket::RouteSocket};

/// Kernel facts about one namespace; `None` where it could not be read (the namespace went away, or only a
/// bind mount in another mount namespace holds it and that could not be opened).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Details {
    /// NSID of the namespace in the caller's namespace; `None` if none is assigned.
    pub nsid: Option<i32>,
    /// Interface names, in ifindex order.
    pub interfaces: Option<Vec<String>>,
}

/// Errors reading details (per-namespace failures are not errors: they leave `None`s).
#[derive(Debug, thiserror::Error)]
pub enum DetailsError {
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
}

impl Netns {
    /// Opens the namespace through whichever reference still works: a name, a process, a bind mount, an fd
    /// another process holds.
    pub fn open(&self) -> Option<File> {
        self.open_path().and_then(|path| File::open(path).ok())
    }

    /// A path that currently leads to this namespace (checked by inode: a pid may have been reused, a path may
    /// now be something else).
    pub fn open_path(&self) -> Option<std::path::PathBuf> {
        let candidates = self
            .names
            .iter()
            .map(|name| std::path::Path::new(super::NETNS_RUN_DIR).join(name))
            .chain(self.pids.iter().map(|pid| format!("/proc/{pid}/ns/net").into()))
            .chain(self.bind_mounts.iter().cloned())
            .chain(self.bind_mount_pids.iter().flat_map(|pid| {
                self.bind_mounts.iter().map(move |path| {
                    let relative = path.strip_prefix("/").unwrap_or(path);
                    std::path::Path::new(&format!("/proc/{pid}/root")).join(relative)
                })
            }));
        let fds = self.fd_holders.iter().flat_map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten().map(|fd| fd.path())
        });
        candidates.chain(fds).find(|path| super::nsfs_inode(path) == Some(self.inode))
    }
}

/// Namespaces per worker thread below which one thread does them all (a thread costs more than a few
/// namespaces do).
const PER_THREAD: usize = 64;

/// Reads the details of every namespace in `inventory`. Runs on threads of its own (up to one per core, each
/// entering one namespace after another), so it may be called from anywhere, an async task included.
pub fn details(inventory: &Inventory) -> Result<BTreeMap<u32, Details>, DetailsError> {
    let namespaces: Vec<&Netns> = inventory.namespaces.values().collect();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = namespaces.len().div_ceil(PER_THREAD).clamp(1, cores.min(8));
    let chunk = namespaces.len().div_ceil(threads).max(1);
    let own = super::nsfs_inode(std::path::Path::new("/proc/thread-self/ns/net"));
    std::thread::scope(|scope| {
        let workers: Vec<_> = namespaces
            .chunks(chunk)
            .map(|part| {
                std::thread::Builder::new()
                    .name("netns-details".into())
                    .spawn_scoped(scope, move || details_of(part, own))
                    .map_err(|source| DetailsError::Rtnl(RtnlError::Thread(source)))
            })
            .collect();
        let mut all = BTreeMap::new();
        for worker in workers {
            let part = worker?.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            all.extend(part);
        }
        Ok(all)
    })
}

/// The details of `namespaces`, on a thread of its own that ends with it: it enters each namespace in turn.
/// `own` is the caller's namespace, which NSIDs are relative to.
fn details_of(namespaces: &[&Netns], own: Option<u32>) -> Result<Vec<(u32, Details)>, DetailsError> {
    // Opened before the thread moves: NSIDs are asked of the caller's namespace.
    let mut home = RouteSocket::open().map_err(|source| DetailsError::Rtnl(RtnlError::Connect(source)))?;
    let mut all = Vec::with_capacity(namespaces.len());
    for ns in namespaces {
        let Some(file) = ns.open() else {
            all.push((ns.inode, Details::default()));
            continue;
        };
        let details = if own == Some(ns.inode) {
            Details { nsid: None, interfaces: home.link_names().ok() }
        } else {
            let nsid = nsid::get_blocking(&mut home, file.as_fd()).ok().flatten();
            let interfaces = setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .ok()
                .and_then(|()| RouteSocket::open().ok())
                .and_then(|mut inside| inside.link_names().ok());
            Details { nsid, interfaces }
        };
        all.push((ns.inode, details));
    }
    Ok(all)
}
