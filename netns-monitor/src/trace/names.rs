//! Names for namespace inodes, kept correct for namespaces named after the trace started.
//!
//! Names are the ones `list` shows ([`Namer`]: a person's `/run/netns` name, else the container's, else a
//! bind mount's). Rescanning on every unknown inode would cost a /proc walk per event for anonymous
//! namespaces, so the inventory is refreshed when the mount table changed since the last look and an inode
//! has no name (`/proc/self/mountinfo` signals POLLPRI on every mount or unmount, `mounts_poll` in
//! fs/proc_namespace.c, and `ip netns add|attach` names are mounts: a namespace named just before it is
//! entered is named in the setns event that follows), and otherwise at most every [`MAX_AGE`] while events
//! come: what mounts do not show (a container's first process joining a namespace its runtime made earlier,
//! the symlinks of `attach --all`) shows within that time.

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::inventory::{Inventory, InventoryError, Namer, ScanOptions};

/// How old the names may get while events come.
pub const MAX_AGE: Duration = Duration::from_secs(2);

/// Inode -> name lookups backed by an inventory that refreshes on mount-table changes.
pub struct Names {
    inventory: Inventory,
    refreshed: Instant,
    namer: Namer,
    /// Names worked out so far (container lookups read /proc): valid until the next refresh.
    shown: HashMap<u32, Option<String>>,
    /// Names namespaces had before their names were removed ([`Self::remember`]).
    former: HashMap<u32, String>,
    mountinfo: File,
}

/// Bound on [`Names::remember`]'s memory (a name is needed for a moment, until its namespace's end).
const MAX_FORMER: usize = 4096;

impl Names {
    /// Starts from `inventory` (already scanned by the caller).
    pub fn new(inventory: Inventory) -> io::Result<Self> {
        Ok(Self {
            inventory,
            refreshed: Instant::now(),
            namer: Namer::new(),
            shown: HashMap::new(),
            former: HashMap::new(),
            mountinfo: File::open("/proc/self/mountinfo")?,
        })
    }

    /// The name `list` gives the namespace with this inode, if it has one.
    pub fn name(&mut self, inode: u32) -> Option<&str> {
        if inode != 0
            && (self.refreshed.elapsed() >= MAX_AGE || (self.lookup(inode).is_none() && self.mounts_changed()))
            && let Err(err) = self.refresh()
        {
            tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot refresh namespace names");
        }
        self.lookup(inode)
    }

    fn lookup(&mut self, inode: u32) -> Option<&str> {
        let Self { inventory, namer, shown, former, .. } = self;
        shown
            .entry(inode)
            .or_insert_with(|| {
                inventory.get(inode).and_then(|ns| namer.describe(ns).0).or_else(|| former.get(&inode).cloned())
            })
            .as_deref()
    }

    /// Forgets a remembered name: a new namespace has the inode now.
    pub fn forget_former(&mut self, inode: u32) {
        if self.former.remove(&inode).is_some() {
            self.shown.remove(&inode);
        }
    }

    /// Remembers a name the namespace had, for when nothing names it any more (its destruction follows the
    /// removal of its last name).
    pub fn remember(&mut self, inode: u32, name: &str) {
        if self.former.len() >= MAX_FORMER {
            self.former.clear();
        }
        self.former.insert(inode, name.to_owned());
    }

    /// The current inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Rescans now (names, bind mounts, processes, and which containers they run in).
    pub fn refresh(&mut self) -> Result<&Inventory, InventoryError> {
        self.inventory = Inventory::scan(&ScanOptions::default())?;
        self.refreshed = Instant::now();
        self.namer = Namer::new();
        self.shown.clear();
        Ok(&self.inventory)
    }

    /// Whether a mount or unmount happened since the last call (the poll consumes the notification).
    fn mounts_changed(&self) -> bool {
        let mut fds = [PollFd::new(self.mountinfo.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
            Ok(_) => false,
            // If we cannot tell, look: correctness over cost.
            Err(_) => true,
        }
    }
}
