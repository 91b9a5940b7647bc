//! Network-namespace lifecycle, as seen from userspace.
//!
//! Creation is reported by the kernel programs on both hook tiers. Destruction is too, on tier 1
//! (`fentry/netdev_exit`) and on tier 2 where its probe can be attached (`workqueue_queue_work`, see
//! `crate::bpf::hooks`); the tracker then keeps netns ids only for what else needs them (link notifications name
//! namespaces by id) and reports nothing itself ([`Tracker::kernel_reports_destruction`]).
//! Without a kernel probe (tier 2 where `/proc/kallsyms` hides addresses, or forced with
//! `NETNS_MONITOR_DESTRUCTION=netns-id`), destruction is observed through the kernel's own
//! notification: every namespace the [`Tracker`] knows gets a netns id in
//! the current namespace (lowest free, as `ip netns set NAME auto`), and when a namespace with an id dies the
//! kernel sends `RTM_DELNSID` to `RTNLGRP_NSID` listeners. No polling; the cost is one id per namespace,
//! visible in `ip netns list` as `(id: N)`.
//!
//! Notifications can be lost when the socket's buffer overflows (a storm of namespaces dying at once): the
//! tracker then asks the kernel for every netns id it still has (`RTM_GETNSID` dump) and reports each tracked
//! namespace whose id is gone as destroyed, so nothing the agent holds for it leaks. (An id freed and already
//! given to a new namespace during the overflow looks alive; the agent's rescans after lost link notifications
//! catch what that hides.)
//!
//! A namespace must be reachable when the tracker learns of it. On Linux >= 6.18 the creation event carries the
//! namespace's id, and an nsfs file handle reopens it without pinning it ([`handle`]): either it is alive and
//! gets a netns id, or the handle is stale and the namespace is reported destroyed there and then, so a
//! namespace made and dropped before the agent looked (`unshare -n true`) gets its destruction too. Before 6.18,
//! one that is gone from every path userspace can reach (a name, a bind mount, a process, an fd) cannot get an
//! id: it is counted in [`Tracker::untracked`] and reported as [`End::Unknown`], never silently.

pub mod arrivals;
pub mod handle;
pub mod nsid;

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File},
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
};

use futures::{StreamExt as _, channel::mpsc::UnboundedReceiver};
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::SocketAddr;
pub use nsid::NsidError;
use rtnetlink::{Handle, MulticastGroup};

use crate::inventory::{Inventory, Netns, parse_ns_link};

/// Errors starting the tracker.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot open an rtnetlink socket subscribed to netns id notifications")]
    Socket(#[source] std::io::Error),
    #[error("the rtnetlink connection for netns id notifications closed")]
    Closed,
}

/// How a tracked namespace's life ended, as far as userspace can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// It was destroyed.
    Destroyed(u32),
    /// Its creation was reported but it could not be watched: its destruction will not be seen.
    Unknown(u32),
}

/// Follows namespaces from creation to destruction.
pub struct Tracker {
    handle: Handle,
    notifications: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    by_id: HashMap<i32, u32>,
    by_inode: HashMap<u32, i32>,
    own_inode: Option<u32>,
    untracked: u64,
    /// Destroyed namespaces found by a resync or by an id's reuse, not returned yet.
    gone: VecDeque<u32>,
    /// `RTM_DELNSID`s still on their way for ids the kernel already gave to a new namespace (see `track`): each
    /// is about the namespace that had the id before, and must not untrack the new one.
    stale_deletions: HashMap<i32, u32>,
    resyncs: u64,
    /// Namespaces whose creation was reported but that cannot be watched, not returned yet.
    unknown: VecDeque<u32>,
    /// Reopens namespaces from the id in their creation event (Linux >= 6.18).
    handles: Option<handle::Opener>,
    /// The kernel programs report destruction (tier 1): the tracker keeps ids but reports no end itself.
    kernel_reports: bool,
}

impl Tracker {
    /// Subscribes to netns id notifications (first, so no death between the scan and the subscription is
    /// missed) and tracks every namespace in `inventory`. Must run inside a tokio runtime.
    pub async fn start(inventory: &Inventory) -> Result<Self, LifecycleError> {
        Self::start_with(inventory, 4 << 20).await
    }

    /// [`Self::start`] with a notification socket buffer of `receive_buffer` bytes (tests make it tiny to
    /// force lost notifications).
    pub async fn start_with(inventory: &Inventory, receive_buffer: usize) -> Result<Self, LifecycleError> {
        let (mut connection, handle, notifications) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Nsid]).map_err(LifecycleError::Socket)?;
        // Room for a storm of deaths (an RTM_DELNSID is about 30 bytes); lost ones are recovered by a resync
        // (see `next_destroyed`), but that costs a dump. Above the rmem_max sysctl needs CAP_NET_ADMIN.
        {
            use std::os::fd::{AsRawFd as _, BorrowedFd};
            // SAFETY: the connection owns the socket and outlives this borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(connection.socket_mut().as_raw_fd()) };
            if nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &receive_buffer).is_err() {
                tracing::debug!("cannot enlarge the netns id notification buffer; lost notifications trigger resyncs");
            }
        }
        tokio::spawn(connection);
        let own_inode = fs::read_link("/proc/self/ns/net").ok().and_then(|link| parse_ns_link(link.to_str()?, "net"));
        let mut tracker = Self {
            handle,
            notifications,
            by_id: HashMap::new(),
            by_inode: HashMap::new(),
            own_inode,
            untracked: 0,
            gone: VecDeque::new(),
            stale_deletions: HashMap::new(),
            resyncs: 0,
            unknown: VecDeque::new(),
            handles: handle::Opener::probe(),
            kernel_reports: false,
        };
        for ns in inventory.namespaces.values() {
            // One that cannot be opened any more died since the scan: nothing to watch, and no creation of it
            // was reported, so no end is owed.
            if let Some(file) = ns.open() {
                tracker.track(ns.inode, Some(file)).await;
            }
        }
        Ok(tracker)
    }

    /// The kernel programs report every namespace's destruction (tier 1): from now on the tracker reports no
    /// [`End`] (its ids still serve [`Self::inode_of`]) and counts nothing as untracked.
    pub fn kernel_reports_destruction(&mut self) {
        self.kernel_reports = true;
        // What the start-up tracking could not watch is the kernel's to report too.
        self.unknown.clear();
        self.untracked = 0;
    }

    /// Whether this kernel lets the tracker reopen namespaces by nsfs file handle (Linux >= 6.18).
    pub fn has_handles(&self) -> bool {
        self.handles.is_some()
    }

    /// Tracks a namespace announced by a creation event of process `pid`, thread `tid`, with the kernel's id
    /// `cookie` for it (0 where there is none): its namespace files first (the creator is usually still
    /// inside), then its file handle, then whatever `rescan` finds. Returns the namespace, opened, when it could
    /// be reached (for the caller to look inside before letting it go).
    pub async fn track_created(
        &mut self,
        inode: u32,
        cookie: u64,
        pid: u32,
        tid: u32,
        rescan: impl FnOnce() -> Option<Inventory>,
    ) -> Option<File> {
        let from_creator = [format!("/proc/{pid}/task/{tid}/ns/net"), format!("/proc/{pid}/ns/net")]
            .into_iter()
            .find_map(|path| open_if(&path, inode));
        if let Some(file) = from_creator {
            return self.track(inode, Some(file)).await;
        }
        if let (Some(opener), true) = (&self.handles, cookie != 0) {
            match opener.open(cookie, inode) {
                Ok(handle::Reopened::Alive(file)) => return self.track(inode, Some(file)).await,
                Ok(handle::Reopened::Gone) => {
                    // Made and destroyed before we looked: its end is known, and it is now. Tracked already
                    // (found by a scan before its creation was read), its RTM_DELNSID must not end it again.
                    if let Some(old_id) = self.by_inode.remove(&inode) {
                        self.by_id.remove(&old_id);
                        *self.stale_deletions.entry(old_id).or_default() += 1;
                    }
                    if !self.kernel_reports {
                        self.gone.push_back(inode);
                    }
                    return None;
                }
                Err(err) => tracing::debug!(inode, %err, "cannot reopen a namespace by its file handle"),
            }
        }
        let file = rescan().and_then(|inventory| inventory.get(inode).and_then(Netns::open));
        self.track(inode, file).await
    }

    /// Tracks the namespace behind `file` (already open, e.g. found by a scan). Returns it back.
    pub async fn track_file(&mut self, inode: u32, file: File) -> Option<File> {
        self.track(inode, Some(file)).await
    }

    async fn track(&mut self, inode: u32, file: Option<File>) -> Option<File> {
        if Some(inode) == self.own_inode {
            return file;
        }
        let known = self.by_inode.get(&inode).copied();
        let Some(file) = file.filter(|f| f.metadata().is_ok_and(|m| m.ino() == u64::from(inode))) else {
            if let Some(old_id) = known {
                // A namespace made with the inode of one we track: the kernel frees an inode only after it sent
                // the old namespace's RTM_DELNSID, so that one is gone (its notification, still unread, is not
                // about the new one), and the new one is a namespace of its own. Found by the matrix on 6.12:
                // 45 of 1,000 short-lived namespaces had no end at all while one inode's notification lagged.
                self.by_id.remove(&old_id);
                self.by_inode.remove(&inode);
                self.gone.push_back(inode);
                *self.stale_deletions.entry(old_id).or_default() += 1;
            }
            if !self.kernel_reports {
                self.untracked += 1;
                self.unknown.push_back(inode);
                tracing::debug!(inode, "namespace not reachable from userspace; its destruction will not be seen");
            }
            return None;
        };
        if let Some(old_id) = known {
            // Inode numbers are reused as soon as a namespace is freed, which is after its RTM_DELNSID was sent
            // but maybe before the agent read it: the namespace behind `file` may be a new one with a dead
            // one's inode. The kernel's id for it tells.
            match nsid::get(&mut self.handle, file.as_fd()).await {
                Ok(Some(id)) if id == old_id => return Some(file),
                Ok(_) => {
                    self.by_id.remove(&old_id);
                    self.by_inode.remove(&inode);
                    self.gone.push_back(inode);
                    *self.stale_deletions.entry(old_id).or_default() += 1;
                }
                Err(err) => {
                    tracing::warn!(inode, error = %crate::bpf::error_chain(&err), "cannot read a netns id");
                    return Some(file);
                }
            }
        }
        match nsid::ensure(&mut self.handle, file.as_fd()).await {
            Ok(id) => {
                // The kernel frees a dying namespace's id before it sends the RTM_DELNSID, so a namespace created
                // meanwhile can get the same id while that notification is still unread. The old namespace is
                // gone (its id was free); its notification, when it comes, is not about this one.
                if let Some(old) = self.by_id.insert(id, inode)
                    && old != inode
                {
                    self.by_inode.remove(&old);
                    self.gone.push_back(old);
                    *self.stale_deletions.entry(id).or_default() += 1;
                }
                self.by_inode.insert(inode, id);
            }
            Err(err) => {
                if !self.kernel_reports {
                    self.untracked += 1;
                    self.unknown.push_back(inode);
                }
                tracing::warn!(inode, error = %crate::bpf::error_chain(&err), "cannot assign a netns id");
            }
        }
        Some(file)
    }

    /// The namespace the agent's own namespace knows as netns id `nsid`.
    pub fn inode_of(&self, nsid: i32) -> Option<u32> {
        self.by_id.get(&nsid).copied()
    }

    /// The netns id of a tracked namespace.
    pub fn nsid_of(&self, inode: u32) -> Option<i32> {
        self.by_inode.get(&inode).copied()
    }

    /// Every tracked namespace and its netns id.
    pub fn nsids(&self) -> impl Iterator<Item = (u32, i32)> + '_ {
        self.by_inode.iter().map(|(&inode, &id)| (inode, id))
    }

    /// The agent's own network namespace.
    pub fn own_inode(&self) -> Option<u32> {
        self.own_inode
    }

    /// Waits for the next tracked namespace to be destroyed, or to be found unwatchable, and says which. `None`
    /// when the netlink connection is gone. With [`Self::kernel_reports_destruction`] it only keeps the ids up to
    /// date and never returns otherwise.
    pub async fn next_end(&mut self) -> Option<End> {
        loop {
            if self.kernel_reports {
                self.gone.clear();
            }
            if let Some(inode) = self.gone.pop_front() {
                return Some(End::Destroyed(inode));
            }
            if let Some(inode) = self.unknown.pop_front() {
                return Some(End::Unknown(inode));
            }
            let (message, _) = self.notifications.next().await?;
            if nsid::is_overrun(&message) {
                tracing::warn!("netns id notifications were lost; checking which tracked namespaces are gone");
                self.resync().await;
                continue;
            }
            let Some(id) = nsid::deleted_id(&message) else { continue };
            if let Some(pending) = self.stale_deletions.get_mut(&id) {
                *pending -= 1;
                if *pending == 0 {
                    self.stale_deletions.remove(&id);
                }
                continue;
            }
            if let Some(inode) = self.by_id.remove(&id) {
                self.by_inode.remove(&inode);
                if !self.kernel_reports {
                    return Some(End::Destroyed(inode));
                }
            }
        }
    }

    /// Namespaces found dead while tracking others (their ids or inodes were reused), for the caller to forget
    /// before it looks at what it just tracked: a new namespace may have the inode of one of them.
    pub fn take_gone(&mut self) -> VecDeque<u32> {
        let gone = std::mem::take(&mut self.gone);
        if self.kernel_reports { VecDeque::new() } else { gone }
    }

    /// How many times notifications were lost and the tracker resynchronised with the kernel.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// After lost notifications: every tracked namespace whose id the kernel no longer has is gone.
    async fn resync(&mut self) {
        self.resyncs += 1;
        // Some of the notifications still expected may be among the lost ones; the dump below is the truth.
        self.stale_deletions.clear();
        let alive = match nsid::dump(&mut self.handle).await {
            Ok(alive) => alive,
            Err(err) => {
                tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot list the netns ids");
                return;
            }
        };
        let dead: Vec<(i32, u32)> =
            self.by_id.iter().filter(|(id, _)| !alive.contains(id)).map(|(&id, &inode)| (id, inode)).collect();
        for (id, inode) in dead {
            self.by_id.remove(&id);
            self.by_inode.remove(&inode);
            self.gone.push_back(inode);
        }
    }

    /// Namespaces currently tracked.
    pub fn tracked(&self) -> usize {
        self.by_inode.len()
    }

    /// Namespaces that could not be tracked (not reachable, or no id could be assigned).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

/// Opens `path` if it is the namespace with `inode`.
fn open_if(path: &str, inode: u32) -> Option<File> {
    let file = File::open(path).ok()?;
    (file.metadata().ok()?.ino() == u64::from(inode)).then_some(file)
}
