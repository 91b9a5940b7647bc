//! The scan behind [`super::Inventory::scan`]: /run/netns, mountinfo of every mount namespace, /proc/*/ns/net
//! and, optionally, /proc/*/fd/*.
//!
//! The agent scans at every scrape, so the scan avoids per-namespace syscalls where it can (measured with
//! `cargo xtask bench scrape`, 10,000 named namespaces): names come from our own mountinfo, which the scan
//! reads anyway, rather than a statfs + stat of every /run/netns entry (only entries that are no mount point,
//! such as a symlink to /proc/PID/ns/net, are still checked that way); and each mount namespace's mountinfo
//! (10,000 lines there) is parsed again only when the kernel says its mount table changed ([`MountCache`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    fs::{self, File},
    io::{ErrorKind, Read as _, Seek as _},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{Inventory, InventoryError, Netns};
use crate::mountinfo::{self, MountEntry};

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

    let pids = pids()?;
    let mut mount_namespaces = HashSet::new();
    let mut unreadable = 0;
    let mut bind_mounts = BTreeMap::<u32, (Vec<PathBuf>, Vec<u32>)>::new();
    // What our own mount namespace has mounted on /run/netns entries.
    let mut run_netns = None;
    // Our own mount namespace first, then one process of every other: nsfs bind mounts live per mount namespace.
    for pid in std::iter::once("self".to_owned()).chain(pids.iter().map(u32::to_string)) {
        let Some(mnt) = ns_inode(&pid, "mnt") else {
            continue;
        };
        if !mount_namespaces.insert(mnt) {
            continue;
        }
        let Some(mounts) = MountCache::mounts(&pid, mnt) else {
            continue;
        };
        let own = pid == "self";
        if own {
            // Names; another mount namespace's /run/netns entries may be stale copies.
            run_netns = Some(Arc::clone(&mounts));
        }
        for (mount_point, inode) in &mounts.bind_mounts {
            let (paths, holders) = bind_mounts.entry(*inode).or_default();
            paths.push(mount_point.clone());
            let holder = if own { std::process::id() } else { pid.parse().unwrap_or_default() };
            if holders.last() != Some(&holder) {
                holders.push(holder);
            }
        }
    }
    MountCache::keep_only(&mount_namespaces);

    for (name, inode) in named(run_netns.as_ref().map(|m| &m.run_netns))? {
        entry(&mut namespaces, inode).names.push(name);
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

/// What the scan needs from one mount namespace's mountinfo.
#[derive(Debug, Default)]
struct Mounts {
    /// What is mounted on each `/run/netns/NAME` (by NAME): a network namespace's inode, or `None` for
    /// anything else. Mounted over one another, the last one is what the path shows.
    run_netns: HashMap<OsString, Option<u32>>,
    /// Other nsfs mounts of network namespaces: mount point and inode.
    bind_mounts: Vec<(PathBuf, u32)>,
}

impl Mounts {
    fn of(entries: Vec<MountEntry>) -> Self {
        let mut mounts = Mounts::default();
        for entry in entries {
            let inode = (entry.fs_type == "nsfs").then(|| parse_ns_link(&entry.root, "net")).flatten();
            if entry.mount_point.parent() == Some(Path::new(NETNS_RUN_DIR)) {
                if let Some(name) = entry.mount_point.file_name() {
                    mounts.run_netns.insert(name.to_owned(), inode);
                }
            } else if let Some(inode) = inode {
                mounts.bind_mounts.push((entry.mount_point, inode));
            }
        }
        mounts
    }
}

/// [`Mounts`] of each mount namespace, kept with its mountinfo file open. The kernel marks an open mountinfo
/// file with POLLPRI when its mount namespace's table changes (proc(5), `mounts_poll`), so a parse is reused
/// until then. The open file holds a reference to its mount namespace, so entries of namespaces a scan no
/// longer finds are dropped at once ([`MountCache::keep_only`]).
struct MountCache;

struct CachedMounts {
    file: File,
    mounts: Arc<Mounts>,
}

static MOUNT_CACHE: Mutex<BTreeMap<u32, CachedMounts>> = Mutex::new(BTreeMap::new());

impl MountCache {
    /// The mounts of mount namespace `mnt`, seen through process `pid` (or "self").
    fn mounts(pid: &str, mnt: u32) -> Option<Arc<Mounts>> {
        let mut cache = MOUNT_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = cache.get_mut(&mnt) {
            if !changed(&cached.file) {
                return Some(Arc::clone(&cached.mounts));
            }
            // Read again through the same file: the change that was just reported is then consumed.
            match read_mounts(&mut cached.file) {
                Some(mounts) => {
                    cached.mounts = Arc::new(mounts);
                    return Some(Arc::clone(&cached.mounts));
                }
                None => {
                    cache.remove(&mnt);
                }
            }
        }
        let mut file = File::open(format!("/proc/{pid}/mountinfo")).ok()?;
        let mounts = Arc::new(read_mounts(&mut file)?);
        // Only cache it if `pid` was still in `mnt` once the file was open (it may have moved or exited).
        if ns_inode(pid, "mnt") == Some(mnt) {
            cache.insert(mnt, CachedMounts { file, mounts: Arc::clone(&mounts) });
        }
        Some(mounts)
    }

    /// Forgets (and closes) every mount namespace not in `seen`.
    fn keep_only(seen: &HashSet<u32>) {
        MOUNT_CACHE.lock().unwrap_or_else(|p| p.into_inner()).retain(|mnt, _| seen.contains(mnt));
    }
}

/// Whether the mount table behind an open mountinfo file changed since it was opened or last reported.
fn changed(file: &File) -> bool {
    let mut poll = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call; a zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    // On error, assume a change (a re-read is always correct).
    ready != 0 || poll.revents & (libc::POLLPRI | libc::POLLERR) != 0
}

/// Reads the whole file from its start.
fn read_mounts(file: &mut File) -> Option<Mounts> {
    file.rewind().ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(Mounts::of(mountinfo::parse(&text).ok()?))
}

/// `/run/netns` entries that are live nsfs bind mounts (a stale empty file from a crashed `add` is skipped).
/// `mounted` is what our mountinfo shows mounted on `/run/netns/NAME`; entries that are no mount point there
/// (a symlink to a /proc/PID/ns/net file, a stale file) are checked with statfs.
fn named(mounted: Option<&HashMap<OsString, Option<u32>>>) -> Result<Vec<(String, u32)>, InventoryError> {
    let dir = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => dir,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(InventoryError::ReadDir { path: NETNS_RUN_DIR.into(), source }),
    };
    let mut names = Vec::new();
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().map(str::to_owned) else {
            continue;
        };
        let inode = match mounted.and_then(|m| m.get(&file_name)) {
            Some(inode) => *inode,
            None => nsfs_inode(&entry.path()),
        };
        if let Some(inode) = inode {
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

/// The network namespace behind an fd whose mount is gone (its link reads "/"), if it is one: on nsfs (the
/// device of every namespace file) and of type net (`NS_GET_NSTYPE`, Linux 4.11+).
fn detached_netns(fd: &Path) -> Option<u32> {
    static NSFS_DEV: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let nsfs = (*NSFS_DEV.get_or_init(|| fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev())))?;
    let meta = fs::metadata(fd).ok()?;
    if meta.dev() != nsfs {
        return None;
    }
    let file = File::open(fd).ok()?;
    is_netns(&file).then(|| u32::try_from(meta.ino()).ok()).flatten()
}

/// Whether `file` is a network namespace (`ioctl(NS_GET_NSTYPE)`, Linux 4.11+; false for any other file).
pub fn is_netns(file: &File) -> bool {
    /// `_IO(0xb7, 0x3)` (include/uapi/linux/nsfs.h).
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which `file` keeps open.
    unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) == libc::CLONE_NEWNET }
}

/// Network namespaces `pid` holds open fds to.
fn fd_namespaces(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = dir
        .flatten()
        .filter_map(|fd| {
            let link = fs::read_link(fd.path()).ok()?;
            let link = link.to_str()?;
            // An fd opened through a bind mount (`/run/netns/NAME`, a CNI plugin's path) reads as that path,
            // and as "/" once the mount is gone (`ip netns del` detaches it): then only the fd holds it.
            if link == "/" { detached_netns(&fd.path()) } else { parse_ns_link(link, "net") }
        })
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
