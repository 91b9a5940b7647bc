//! The scan behind [`super::Inventory::scan`]: /run/netns, mountinfo of every mount namespace, /proc/*/ns/net
//! and, optionally, /proc/*/fd/*.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::ErrorKind,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{Inventory, InventoryError, Netns};
use crate::mountinfo;

/// Where iproute2 (and we) keep named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// What to scan beyond names, bind mounts and processes.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Also walk every process's open fds for namespace handles (finds namespaces held only by an fd).
    pub fds: bool,
}

/// Parses a namespace link target such as `net:[4026531833]` for namespace type `kind`.
pub fn parse_ns_link(link: &str, kind: &str) -> Option<u32> {
    link.strip_prefix(kind)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
}

pub(super) fn scan(options: &ScanOptions) -> Result<Inventory, InventoryError> {
    let mut namespaces = BTreeMap::<u32, Netns>::new();
    fn entry(namespaces: &mut BTreeMap<u32, Netns>, inode: u32) -> &mut Netns {
        namespaces.entry(inode).or_insert_with(|| Netns { inode, ..Netns::default() })
    }

    for (name, inode) in named()? {
        entry(&mut namespaces, inode).names.push(name);
    }

    let pids = pids()?;
    let mut mount_namespaces = HashSet::new();
    let mut unreadable = 0;
    let mut bind_mounts = BTreeMap::<u32, (Vec<PathBuf>, Vec<u32>)>::new();
    // Our own mount namespace first, then one process of every other: nsfs bind mounts live per mount namespace.
    for pid in std::iter::once("self".to_owned()).chain(pids.iter().map(u32::to_string)) {
        let Some(mnt) = ns_inode(&pid, "mnt") else {
            continue;
        };
        if !mount_namespaces.insert(mnt) {
            continue;
        }
        let Ok(mounts) = mountinfo::read(&pid) else {
            continue;
        };
        for mount in mounts.into_iter().filter(|m| m.fs_type == "nsfs") {
            let Some(inode) = parse_ns_link(&mount.root, "net") else {
                continue;
            };
            if mount.mount_point.parent() == Some(Path::new(NETNS_RUN_DIR)) {
                // A name; already found through the directory (or stale in another mount namespace).
                continue;
            }
            let (paths, holders) = bind_mounts.entry(inode).or_default();
            paths.push(mount.mount_point);
            let holder = if pid == "self" { std::process::id() } else { pid.parse().unwrap_or_default() };
            if holders.last() != Some(&holder) {
                holders.push(holder);
            }
        }
    }
    for (inode, (mut paths, mut holders)) in bind_mounts {
        paths.sort();
        paths.dedup();
        holders.sort_unstable();
        let ns = entry(&mut namespaces, inode);
        ns.bind_mounts = paths;
        ns.bind_mount_pids = holders;
    }

    for &pid in &pids {
        match ns_inode(&pid.to_string(), "net") {
            Some(inode) => entry(&mut namespaces, inode).pids.push(pid),
            None => unreadable += 1,
        }
        if options.fds {
            for inode in fd_namespaces(pid) {
                let holders = &mut entry(&mut namespaces, inode).fd_holders;
                if holders.last() != Some(&pid) {
                    holders.push(pid);
                }
            }
        }
    }
    for ns in namespaces.values_mut() {
        ns.names.sort();
    }
    Ok(Inventory { namespaces, unreadable_pids: unreadable })
}

/// `/run/netns` entries that are live nsfs bind mounts (a stale empty file from a crashed `add` is skipped).
fn named() -> Result<Vec<(String, u32)>, InventoryError> {
    let dir = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => dir,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(InventoryError::ReadDir { path: NETNS_RUN_DIR.into(), source }),
    };
    let mut names = Vec::new();
    for entry in dir.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(inode) = nsfs_inode(&entry.path()) {
            names.push((name, inode));
        }
    }
    Ok(names)
}

/// The nsfs inode behind `path`, if `path` is a live namespace file (bind mount or /proc link).
pub fn nsfs_inode(path: &Path) -> Option<u32> {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let statfs = nix::sys::statfs::statfs(path).ok()?;
    if statfs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return None;
    }
    u32::try_from(fs::metadata(path).ok()?.ino()).ok()
}

/// Numeric entries of /proc, ascending.
fn pids() -> Result<Vec<u32>, InventoryError> {
    let dir = fs::read_dir("/proc").map_err(|source| InventoryError::ReadDir { path: "/proc".into(), source })?;
    let mut pids: Vec<u32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Inode of `/proc/PID/ns/KIND`; `None` if the process is gone or we may not look.
fn ns_inode(pid: &str, kind: &str) -> Option<u32> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    parse_ns_link(link.to_str()?, kind)
}

/// Network namespaces `pid` holds open fds to.
fn fd_namespaces(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = dir
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|link| parse_ns_link(link.to_str()?, "net"))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_links() {
        assert_eq!(parse_ns_link("net:[4026531833]", "net"), Some(4_026_531_833));
        assert_eq!(parse_ns_link("mnt:[4026531833]", "net"), None);
        assert_eq!(parse_ns_link("net:[x]", "net"), None);
        assert_eq!(parse_ns_link("socket:[12]", "net"), None);
    }

    #[test]
    fn finds_own_namespace_as_process_held() {
        let own = ns_inode("self", "net").expect("own netns");
        let inventory = scan(&ScanOptions::default()).expect("scan");
        let ns = inventory.get(own).expect("own netns in the inventory");
        assert!(ns.pids.contains(&std::process::id()));
    }
}
