//! Attaching the classifiers to interfaces in any namespace, pinning the links, and adopting the pins a
//! previous agent left.
//!
//! aya resolves an interface (and the kernel its ifindex) in the calling thread's network namespace, so every
//! attach runs on a short-lived thread that entered the interface's namespace (`manage::rtnl::in_netns`).
//!
//! With TCX (Linux >= 6.6) each attachment is a bpf link, pinned at
//! `PIN_DIR/links/<netns inode>-<ifindex>-<ingress|egress>`: the programs keep counting while the agent is down,
//! and a restarted agent replaces the program inside each pinned link (`bpf_link_update`, atomic, same place in
//! the chain) instead of attaching a second one. Link order: ingress first in the chain (sees every received
//! packet before another program can drop it), egress last (counts what is handed to the device).
//!
//! Older kernels (no TCX) get a clsact qdisc and a cls_bpf filter per direction, at a fixed place
//! ([`legacy_priority`], [`LEGACY_HANDLE`]). Such a filter is no bpf link and cannot be pinned, but it lives in
//! the kernel until it is deleted or its interface goes, whatever happens to the agent: so the agent never
//! deletes it (a graceful stop keeps counting, as TCX pins do), and a restarted agent swaps its program in
//! place (an `RTM_NEWTFILTER` without `NLM_F_CREATE` at the same priority and handle, atomic in cls_bpf) instead
//! of adding a second filter. aya keeps the netlink attachments of a program in a map keyed by (ifindex,
//! direction, priority, handle) with no namespace in the key, so two interfaces with the same ifindex in two
//! namespaces collide there ("already attached"); the attachment is therefore taken out of aya's map at once.

use std::{
    collections::BTreeMap,
    io,
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use netns_monitor_common::traffic::TrafficKey;

use super::{TrafficError, counters::TrafficMap};
use crate::{
    bpf::{Direction, Probes},
    manage::rtnl::in_netns,
};

/// An interface with both classifiers attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub name: String,
    /// Whether the links were adopted from pins a previous agent left.
    pub adopted: bool,
}

/// The interfaces this agent counts, keyed by (netns inode, ifindex).
pub struct Attachments {
    links_dir: PathBuf,
    map: TrafficMap,
    attached: BTreeMap<TrafficKey, Attached>,
}

fn tc_type(direction: Direction) -> TcAttachType {
    match direction {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    }
}

/// Handle of our cls_bpf filters ("NM"), the same in both directions: with the priority it is how a restarted
/// agent finds the filters a previous one left.
pub const LEGACY_HANDLE: TcHandle = TcHandle::new(0x4e4d, 1);

/// Priority of our cls_bpf filter in `direction` (lower runs first). Ingress runs early: before the kernel's
/// default for filters added without a priority (49152 and down), yet above 1, so that a tool asking the kernel
/// for "the next priority" still gets a valid one. Egress runs last.
pub fn legacy_priority(direction: Direction) -> u16 {
    match direction {
        Direction::Ingress => 0x100,
        Direction::Egress => 0xffff,
    }
}

fn order(direction: Direction) -> LinkOrder {
    match direction {
        Direction::Ingress => LinkOrder::first(),
        Direction::Egress => LinkOrder::last(),
    }
}

impl Attachments {
    /// Opens the pinned traffic map and the links directory of `probes`.
    pub fn new(probes: &Probes) -> Result<Self, TrafficError> {
        let links_dir = probes.pin_dir.join("links");
        std::fs::create_dir_all(&links_dir)
            .map_err(|source| TrafficError::Pin { path: links_dir.display().to_string(), source })?;
        Ok(Self { map: TrafficMap::open(&probes.pin_dir)?, links_dir, attached: BTreeMap::new() })
    }

    /// The interfaces currently counted.
    pub fn attached(&self) -> &BTreeMap<TrafficKey, Attached> {
        &self.attached
    }

    /// The traffic map.
    pub fn map(&self) -> &TrafficMap {
        &self.map
    }

    fn pin_path(&self, key: TrafficKey, direction: Direction) -> PathBuf {
        self.links_dir.join(format!("{}-{}-{}", key.netns, key.ifindex, direction.as_str()))
    }

    /// Attaches both classifiers to interface `ifindex` named `name` in namespace `netns` (held open by
    /// `netns_fd`), adopting pinned links where they exist. Idempotent.
    pub fn attach(
        &mut self,
        probes: &mut Probes,
        netns_fd: BorrowedFd<'_>,
        key: TrafficKey,
        name: &str,
    ) -> Result<&Attached, TrafficError> {
        if self.attached.get(&key).is_some_and(|a| a.name == name) {
            return Ok(&self.attached[&key]);
        }
        self.map.ensure(key)?;
        let mut adopted = true;
        for direction in Direction::BOTH {
            let pin = self.pin_path(key, direction);
            let classifier = probes.classifier(direction).map_err(TrafficError::Bpf)?;
            let fresh = in_netns(Some(netns_fd), || attach_one(classifier, name, direction, &pin))
                .map_err(TrafficError::Thread)?
                .map_err(|source| TrafficError::Attach { name: name.to_owned(), direction, source })?;
            adopted &= !fresh;
        }
        self.attached.insert(key, Attached { name: name.to_owned(), adopted });
        Ok(&self.attached[&key])
    }

    /// Forgets an interface that is gone: removes its pins (the kernel already detached the programs) and its
    /// counters.
    pub fn remove(&mut self, key: TrafficKey) -> Result<(), TrafficError> {
        self.attached.remove(&key);
        for direction in Direction::BOTH {
            remove_pin(&self.pin_path(key, direction))?;
        }
        self.map.remove(&key)
    }

    /// Removes every interface of namespace `netns`.
    pub fn remove_netns(&mut self, netns: u32) -> Result<(), TrafficError> {
        let keys: Vec<TrafficKey> = self.attached.keys().filter(|k| k.netns == netns).copied().collect();
        for key in keys {
            self.remove(key)?;
        }
        Ok(())
    }

    /// After the start-up scan: removes pins and counters of interfaces that no longer exist (left by a
    /// previous agent). Returns how many interfaces were cleaned up.
    pub fn remove_stale(&mut self) -> Result<usize, TrafficError> {
        let mut stale = std::collections::BTreeSet::new();
        let entries = std::fs::read_dir(&self.links_dir)
            .map_err(|source| TrafficError::Pin { path: self.links_dir.display().to_string(), source })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let key = name.to_str().and_then(parse_pin_name);
            match key {
                Some(key) if self.attached.contains_key(&key) => {}
                Some(key) => {
                    stale.insert(key);
                }
                // Not ours: leave it.
                None => {}
            }
        }
        stale.extend(self.map.keys().into_iter().filter(|k| !self.attached.contains_key(k)));
        for key in &stale {
            self.remove(*key)?;
        }
        Ok(stale.len())
    }
}

/// `<netns>-<ifindex>-<direction>` back to its key.
fn parse_pin_name(name: &str) -> Option<TrafficKey> {
    let mut parts = name.splitn(3, '-');
    let netns = parts.next()?.parse().ok()?;
    let ifindex = parts.next()?.parse().ok()?;
    matches!(parts.next()?, "ingress" | "egress").then_some(TrafficKey { netns, ifindex })
}

fn remove_pin(path: &Path) -> Result<(), TrafficError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TrafficError::Pin { path: path.display().to_string(), source }),
    }
}

/// Runs inside the interface's namespace. Returns whether a new link was made (false: a pin was adopted).
fn attach_one(
    classifier: &mut SchedClassifier,
    name: &str,
    direction: Direction,
    pin: &Path,
) -> Result<bool, aya::programs::ProgramError> {
    if !tcx_available() {
        return attach_legacy(classifier, name, direction);
    }
    if let Ok(pinned) = PinnedLink::from_pin(pin) {
        let link = SchedClassifierLink::try_from(FdLink::from(pinned));
        match link.map(|link| classifier.attach_to_link(link)) {
            Ok(Ok(id)) => {
                // The pin keeps the link (now running our program); our handle can go.
                drop(classifier.take_link(id)?);
                return Ok(false);
            }
            // A defunct link (its interface went away and came back with the same index) or not TCX: replace.
            _ => {
                let _ = std::fs::remove_file(pin);
            }
        }
    }
    let id = classifier.attach_with_options(name, tc_type(direction), TcAttachOptions::TcxOrder(order(direction)))?;
    let link = FdLink::try_from(classifier.take_link(id)?)
        .map_err(|err| aya::programs::ProgramError::IOError(io::Error::other(err)))?;
    link.pin(pin).map_err(|err| aya::programs::ProgramError::IOError(io::Error::other(err)))?;
    Ok(true)
}

/// Set to `clsact` to use the clsact/cls_bpf path on a kernel that has TCX: the path kernels before 6.6 take,
/// so that it can be exercised (and compared) on a newer kernel too.
pub const TC_MODE_ENV: &str = "NETNS_MONITOR_TC";

/// Whether classifiers attach with TCX (Linux >= 6.6, unless [`TC_MODE_ENV`] says `clsact`); otherwise they go
/// through clsact and cls_bpf. Decided once per process: it is asked for every interface attached.
pub fn tcx_available() -> bool {
    static TCX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TCX.get_or_init(|| {
        let forced_legacy = std::env::var_os(TC_MODE_ENV).is_some_and(|mode| mode == "clsact");
        !forced_legacy && KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
    })
}

/// The clsact + cls_bpf path (no TCX). Returns whether a new filter was made (false: a previous agent's filter
/// now runs our program).
fn attach_legacy(
    classifier: &mut SchedClassifier,
    name: &str,
    direction: Direction,
) -> Result<bool, aya::programs::ProgramError> {
    // EEXIST when the qdisc is there already (ours from before, or someone else's): either is fine.
    let _ = tc::qdisc_add_clsact(name);
    let (attach_type, priority) = (tc_type(direction), legacy_priority(direction));
    let existing = SchedClassifierLink::attached(name, attach_type, priority, LEGACY_HANDLE, None)?;
    let (id, fresh) = match classifier.attach_to_link(existing) {
        Ok(id) => (id, false),
        // No filter at our place: none was left behind, make it.
        Err(err) if has_errno(&err, libc::ENOENT) => {
            let options = NlOptions { priority, handle: LEGACY_HANDLE, classid: None };
            (classifier.attach_with_options(name, attach_type, TcAttachOptions::Netlink(options))?, true)
        }
        Err(err) => return Err(err),
    };
    // Out of aya's map (see the module comment), and never detached by us: dropping the link would delete the
    // filter, so it is forgotten; the kernel deletes it with its interface.
    std::mem::forget(classifier.take_link(id)?);
    Ok(fresh)
}

/// Whether a netlink request failed with `errno`. aya's errors are transparent wrappers all the way down, so
/// the code is only reachable by matching the variants.
fn has_errno(err: &aya::programs::ProgramError, errno: i32) -> bool {
    use aya::programs::{ProgramError, tc::TcError};
    match err {
        ProgramError::TcError(TcError::NetlinkError(err)) | ProgramError::NetlinkError(err) => {
            err.raw_os_error() == Some(errno)
        }
        ProgramError::TcError(TcError::IoError(err)) | ProgramError::IOError(err) => err.raw_os_error() == Some(errno),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        assert_eq!(parse_pin_name("4026532300-7-ingress"), Some(TrafficKey { netns: 4026532300, ifindex: 7 }));
        assert_eq!(parse_pin_name("4026532300-7-egress"), Some(TrafficKey { netns: 4026532300, ifindex: 7 }));
        assert_eq!(parse_pin_name("4026532300-7-sideways"), None);
        assert_eq!(parse_pin_name("notes.txt"), None);
    }
}
