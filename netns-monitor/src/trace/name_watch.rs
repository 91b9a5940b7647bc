//! Names appearing and disappearing under /run/netns, for `netns-monitor monitor` (`ip netns monitor`'s
//! `add NAME` / `delete NAME`).
//!
//! iproute2 reports inotify's IN_CREATE, which comes before the namespace is bind-mounted on the new file
//! (and an interrupted add leaves a file that never becomes one). Here a name is added when it first leads to
//! a network namespace and deleted when it stops leading to one, so every line carries the inode: the
//! directory is watched with inotify (creations, deletions, renames, `attach --all`'s symlinks) and our mount
//! table with `/proc/self/mountinfo`'s POLLPRI (the bind mount itself, and the unmount of `del`), and each
//! wake-up compares a fresh listing with the last one.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::Path,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{inventory::NETNS_RUN_DIR, manage::netns};

/// One change of the names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameChange {
    Added { name: String, inode: u32 },
    Removed { name: String, inode: u32 },
}

/// nix's inotify handle as tokio registers it (by raw fd).
struct Queue(Inotify);

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches /run/netns.
pub struct NameWatch {
    inotify: AsyncFd<Queue>,
    mountinfo: AsyncFd<File>,
    /// Names that lead to a namespace now, with its inode.
    known: BTreeMap<String, u32>,
}

impl NameWatch {
    /// Starts watching, creating /run/netns if it is missing (as `ip netns monitor` does).
    pub fn start() -> io::Result<Self> {
        std::fs::create_dir_all(NETNS_RUN_DIR)?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let events = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB;
        inotify.add_watch(Path::new(NETNS_RUN_DIR), events)?;
        let mountinfo = File::open("/proc/self/mountinfo")?;
        // SAFETY: both own their descriptor, which stays open and the same until the AsyncFd is dropped.
        let (inotify, mountinfo) = unsafe {
            (
                AsyncFd::register_with_interest(Queue(inotify), Interest::READABLE)?,
                AsyncFd::register_with_interest(mountinfo, Interest::PRIORITY)?,
            )
        };
        Ok(Self { inotify, mountinfo, known: Self::listing().unwrap_or_default() })
    }

    /// The names that lead to a namespace now; `None` if /run/netns cannot be read (then nothing is known to
    /// have changed: an empty answer would read as every name deleted).
    fn listing() -> Option<BTreeMap<String, u32>> {
        let names = netns::list().ok()?;
        Some(names.into_iter().filter_map(|(name, inode)| Some((name, inode?))).collect())
    }

    /// The names now leading to a namespace, for a first listing.
    pub fn names(&self) -> &BTreeMap<String, u32> {
        &self.known
    }

    /// Waits for the next change of the names; several that happened together come in one batch (removals
    /// first, then additions, each in name order).
    pub async fn changed(&mut self) -> io::Result<Vec<NameChange>> {
        loop {
            tokio::select! {
                ready = self.inotify.readable() => {
                    let mut guard = ready?;
                    // Drain the queue: what changed is read from the directory, not from the events.
                    loop {
                        match guard.get_inner().0.read_events() {
                            Ok(events) if !events.is_empty() => {}
                            Ok(_) | Err(nix::errno::Errno::EAGAIN) => break,
                            Err(err) => return Err(err.into()),
                        }
                    }
                    guard.clear_ready();
                }
                ready = self.mountinfo.ready(Interest::PRIORITY) => ready?.clear_ready(),
            }
            let Some(now) = Self::listing() else { continue };
            let changes = diff(&self.known, &now);
            self.known = now;
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}

/// What changed from `before` to `after`: a name whose namespace changed (deleted and added again between two
/// looks) is a removal and an addition.
fn diff(before: &BTreeMap<String, u32>, after: &BTreeMap<String, u32>) -> Vec<NameChange> {
    let removed = before
        .iter()
        .filter(|(name, inode)| after.get(*name) != Some(inode))
        .map(|(name, &inode)| NameChange::Removed { name: name.clone(), inode });
    let added = after
        .iter()
        .filter(|(name, inode)| before.get(*name) != Some(inode))
        .map(|(name, &inode)| NameChange::Added { name: name.clone(), inode });
    removed.chain(added).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_added_once_it_leads_somewhere_and_a_new_namespace_under_it_is_both() {
        let before = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]);
        let after = BTreeMap::from([("b".to_owned(), 3), ("c".to_owned(), 4)]);
        assert_eq!(
            diff(&before, &after),
            [
                NameChange::Removed { name: "a".into(), inode: 1 },
                NameChange::Removed { name: "b".into(), inode: 2 },
                NameChange::Added { name: "b".into(), inode: 3 },
                NameChange::Added { name: "c".into(), inode: 4 },
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }
}
