//! `set NAME NSID|auto` and `list-id`: the ids this network namespace gives others (`ip netns set`, `ip netns
//! list-id`), over a blocking rtnetlink socket.
//!
//! An id is assigned once and lives as long as the namespace: the kernel refuses a second one (`EEXIST`, as
//! it refuses an id that is taken), so `set` says which of the two it was, and asking again for the id a
//! namespace already has is a success (scripts can run it twice).

use std::{io, os::fd::AsFd as _};

use super::{BadInput, netns::NetnsError};
use crate::{
    inventory::{Inventory, InventoryError, Namer, ScanOptions},
    lifecycle::nsid,
    route_socket::RouteSocket,
};

/// Errors setting or listing ids.
#[derive(Debug, thiserror::Error)]
pub enum NsidError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("invalid NSID {0:?}: expected a number from 0 to {max} or auto", max = i32::MAX)]
    Invalid(String),
    #[error("namespace {name:?} already has NSID {id}; the kernel keeps an id for the namespace's life")]
    AlreadySet { name: String, id: i32 },
    #[error("NSID {id} is already given to another namespace (`netns-monitor list-id` shows which)")]
    Taken { id: i32 },
    #[error("cannot open an rtnetlink socket")]
    Socket(#[source] io::Error),
    #[error("rtnetlink refused {request}")]
    Netlink {
        request: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

impl BadInput for NsidError {
    fn is_bad_input(&self) -> bool {
        match self {
            NsidError::Netns(err) => err.is_bad_input(),
            NsidError::Invalid(_) | NsidError::AlreadySet { .. } | NsidError::Taken { .. } => true,
            NsidError::Socket(_) | NsidError::Netlink { .. } | NsidError::Inventory(_) => false,
        }
    }
}

/// Parses `NSID|auto` (`None` for auto).
pub fn parse(value: &str) -> Result<Option<i32>, NsidError> {
    if value == "auto" {
        return Ok(None);
    }
    value.parse::<i32>().ok().filter(|id| *id >= 0).map(Some).ok_or_else(|| NsidError::Invalid(value.to_owned()))
}

/// Gives the named namespace the id `id` (`None`: the lowest free one) in the current namespace; returns the
/// id it has afterwards.
pub fn set(name: &str, id: Option<i32>) -> Result<i32, NsidError> {
    let netns = super::netns::open_named(name)?;
    let mut socket = RouteSocket::open().map_err(NsidError::Socket)?;
    let current = nsid::get_blocking(&mut socket, netns.as_fd())
        .map_err(|source| NsidError::Netlink { request: "RTM_GETNSID", source })?;
    match (current, id) {
        (Some(have), None) => return Ok(have),
        (Some(have), Some(want)) if have == want => return Ok(have),
        (Some(have), Some(_)) => return Err(NsidError::AlreadySet { name: name.to_owned(), id: have }),
        (None, _) => {}
    }
    match nsid::set_blocking(&mut socket, netns.as_fd(), id.unwrap_or(-1)) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
            // Either another process gave it one between our two requests, or the id is taken.
            return match nsid::get_blocking(&mut socket, netns.as_fd()) {
                Ok(Some(have)) if id.is_none_or(|want| want == have) => Ok(have),
                Ok(Some(have)) => Err(NsidError::AlreadySet { name: name.to_owned(), id: have }),
                Ok(None) => Err(NsidError::Taken { id: id.unwrap_or(-1) }),
                Err(source) => Err(NsidError::Netlink { request: "RTM_GETNSID", source }),
            };
        }
        Err(source) => return Err(NsidError::Netlink { request: "RTM_NEWNSID", source }),
    }
    nsid::get_blocking(&mut socket, netns.as_fd())
        .map_err(|source| NsidError::Netlink { request: "RTM_GETNSID", source })?
        .ok_or(NsidError::Netlink { request: "RTM_GETNSID", source: io::ErrorKind::NotFound.into() })
}

/// One id the current namespace has given, and the namespace it stands for where one of ours is it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IdEntry {
    pub nsid: i32,
    /// `None`: a namespace nothing in userspace holds (a dying one, or one kept by a kernel object only).
    pub inode: Option<u32>,
    /// The name `list` gives it.
    pub name: Option<String>,
    /// Its names under /run/netns.
    pub names: Vec<String>,
}

/// Every id of the current namespace (the kernel's dump), each joined to the namespace it stands for by
/// asking every namespace found for its id.
pub fn list_ids() -> Result<Vec<IdEntry>, NsidError> {
    let mut socket = RouteSocket::open().map_err(NsidError::Socket)?;
    let ids = nsid::dump_blocking(&mut socket)
        .map_err(|source| NsidError::Netlink { request: "RTM_GETNSID dump", source })?;
    let inventory = Inventory::scan(&ScanOptions { fds: true })?;
    let namer = Namer::new();
    let mut by_id = std::collections::BTreeMap::new();
    if !ids.is_empty() {
        for ns in inventory.namespaces.values() {
            if let Some(file) = ns.open()
                && let Ok(Some(id)) = nsid::get_blocking(&mut socket, file.as_fd())
            {
                by_id.insert(id, ns);
            }
        }
    }
    Ok(ids
        .into_iter()
        .map(|id| {
            let ns = by_id.get(&id);
            IdEntry {
                nsid: id,
                inode: ns.map(|ns| ns.inode),
                name: ns.and_then(|ns| namer.describe(ns).0),
                names: ns.map(|ns| ns.names.clone()).unwrap_or_default(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsid_values_are_numbers_or_auto() {
        assert_eq!(parse("auto").unwrap(), None);
        assert_eq!(parse("0").unwrap(), Some(0));
        assert_eq!(parse("2147483647").unwrap(), Some(i32::MAX));
        for bad in ["-1", "x", "", "2147483648", "1.5"] {
            assert!(matches!(parse(bad), Err(NsidError::Invalid(_))), "{bad:?}");
        }
    }
}
