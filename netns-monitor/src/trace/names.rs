//! Names for namespace inodes, kept correct for namespaces named after the trace started.
//!
//! Names come from the [`Inventory`]. Rescanning on every unknown inode would cost a /proc walk per event for
//! anonymous namespaces, so the inventory is refreshed only when the mount table changed since the last look:
//! `/proc/self/mountinfo` signals POLLPRI on every mount or unmount (`mounts_poll` in fs/proc_namespace.c),
//! and a name under /run/netns is a mount. A namespace named by `ip netns add` just before it is entered is
//! therefore named in the setns event that follows.

use std::{fs::File, io, os::fd::AsFd as _};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::inventory::{Inventory, InventoryError, ScanOptions};

/// Inode -> name lookups backed by an inventory that refreshes on mount-table changes.
pub struct Names {
    inventory: Inventory,
    mountinfo: File,
}

impl Names {
    /// Starts from `inventory` (already scanned by the caller).
    pub fn new(inventory: Inventory) -> io::Result<Self> {
        Ok(Self { inventory, mountinfo: File::open("/proc/self/mountinfo")? })
    }

    /// The best name of the namespace with this inode, if it has one.
    pub fn name(&mut self, inode: u32) -> Option<&str> {
        if inode != 0
            && self.inventory.name_of(inode).is_none()
            && self.mounts_changed()
            && let Err(err) = self.refresh()
        {
            tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot refresh namespace names");
        }
        self.inventory.name_of(inode)
    }

    /// The current inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Rescans now (names, bind mounts and processes).
    pub fn refresh(&mut self) -> Result<&Inventory, InventoryError> {
        self.inventory = Inventory::scan(&ScanOptions::default())?;
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
