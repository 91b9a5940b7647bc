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
//! packet before another program can drop it), egress last (counts what is handed to the device). Older
//! kernels get a clsact qdisc and netlink filters, which cannot be pinned: there counting stops with the agent.

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
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
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
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if !tcx {
        // No TCX: a clsact qdisc (EEXIST if someone made it already is fine) and a netlink filter.
        let _ = tc::qdisc_add_clsact(name);
        classifier.attach_with_options(name, tc_type(direction), TcAttachOptions::Netlink(NlOptions::default()))?;
        return Ok(true);
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
