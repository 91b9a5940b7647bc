//! What the kernel says about each namespace beyond who holds it: its NSID as seen from the caller's namespace
//! (`RTM_GETNSID` with the namespace's fd) and its interfaces (a link dump from a thread inside it).

use std::{collections::BTreeMap, fs::File, os::fd::AsFd as _};

use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::LinkAttribute;

use super::{Inventory, Netns};
use crate::manage::rtnl::{Rtnl, RtnlError, in_netns};

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

/// Reads the details of every namespace in `inventory`. Runs on threads of its own, so it may be called from
/// anywhere, an async task included.
pub fn details(inventory: &Inventory) -> Result<BTreeMap<u32, Details>, DetailsError> {
    in_netns(None, || details_here(inventory))?
}

fn details_here(inventory: &Inventory) -> Result<BTreeMap<u32, Details>, DetailsError> {
    let own = super::nsfs_inode(std::path::Path::new("/proc/thread-self/ns/net"));
    let rtnl = Rtnl::connect()?;
    let mut all = BTreeMap::new();
    for ns in inventory.namespaces.values() {
        let Some(file) = ns.open() else {
            all.insert(ns.inode, Details::default());
            continue;
        };
        let nsid = if own == Some(ns.inode) {
            None
        } else {
            let mut handle = rtnl.handle.clone();
            rtnl.run(async { crate::lifecycle::nsid::get(&mut handle, file.as_fd()).await.ok().flatten() })
        };
        let interfaces = if own == Some(ns.inode) {
            rtnl.run(link_names(&rtnl))
        } else {
            in_netns(Some(file.as_fd()), || Rtnl::connect().ok().and_then(|inner| inner.run(link_names(&inner))))
                .ok()
                .flatten()
        };
        all.insert(ns.inode, Details { nsid, interfaces });
    }
    Ok(all)
}

async fn link_names(rtnl: &Rtnl) -> Option<Vec<String>> {
    let links: Vec<_> = rtnl.handle.link().get().execute().try_collect().await.ok()?;
    let mut named: Vec<(u32, String)> = links
        .into_iter()
        .filter_map(|link| {
            let name = link.attributes.iter().find_map(|attr| match attr {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })?;
            Some((link.header.index, name))
        })
        .collect();
    named.sort();
    Some(named.into_iter().map(|(_, name)| name).collect())
}
