//! Named network namespaces on disk, in iproute2's form: a file under `/run/netns` with the namespace's nsfs
//! file bind-mounted onto it, so `ip netns` sees ours and we see theirs. Follows iproute2's `ip/ipnetns.c`.
//!
//! Creation races resolve like iproute2's: the file is created with `O_EXCL`, so of two concurrent `add`s of
//! one name exactly one wins. A failed `add` or `attach` removes the file it created.

use std::{
    fs::File,
    io::{self, ErrorKind},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, open},
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
    sys::stat::Mode,
    unistd::unlink,
};
use rtnetlink::LinkUnspec;

use super::{
    BadInput,
    name::{NameError, validate_netns_name},
    rtnl::{Rtnl, RtnlError, in_netns},
};
use crate::inventory::{NETNS_RUN_DIR, nsfs_inode, parse_ns_link};

/// Errors managing named namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("namespace {name:?} already exists")]
    Exists { name: String },
    #[error("namespace {name:?} does not exist")]
    Missing { name: String },
    #[error("{path} exists but is not a network namespace (a stale file from an interrupted add?)")]
    Stale { path: PathBuf },
    #[error("process {pid} does not exist")]
    NoProcess { pid: u32 },
    #[error("cannot read the network namespace of process {pid}")]
    ProcessNs {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot make {dir} a shared mount point")]
    RunDir {
        dir: &'static str,
        #[source]
        source: Errno,
    },
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot create a network namespace for {name:?}")]
    Unshare {
        name: String,
        #[source]
        source: Errno,
    },
    #[error("cannot bind-mount the namespace onto {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot bring lo up in namespace {name:?}")]
    Loopback {
        name: String,
        #[source]
        source: LoopbackError,
    },
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot list {dir}")]
    List {
        dir: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Thread(#[from] RtnlError),
}

/// Why `lo` could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error(transparent)]
    Connect(#[from] RtnlError),
    #[error("netlink request failed")]
    Netlink(#[from] rtnetlink::Error),
}

impl BadInput for NetnsError {
    fn is_bad_input(&self) -> bool {
        matches!(
            self,
            NetnsError::Name(_)
                | NetnsError::Exists { .. }
                | NetnsError::Missing { .. }
                | NetnsError::Stale { .. }
                | NetnsError::NoProcess { .. }
        )
    }
}

/// `/run/netns/NAME`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Creates the named namespace `name` with `lo` up (`ip netns add NAME` + `ip -n NAME link set lo up`).
pub fn add(name: &str) -> Result<(), NetnsError> {
    validate_netns_name(name)?;
    let path = create_file(name)?;
    let made = in_netns(None, || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare { name: name.to_owned(), source })?;
        bind("/proc/thread-self/ns/net", &path)?;
        loopback_up().map_err(|source| NetnsError::Loopback { name: name.to_owned(), source })
    })
    .map_err(NetnsError::from)
    .and_then(|made| made);
    if made.is_err() {
        remove_file(&path);
    }
    made
}

/// Names the network namespace of process `pid` (`ip netns attach NAME PID`).
pub fn attach(name: &str, pid: u32) -> Result<(), NetnsError> {
    validate_netns_name(name)?;
    let source = format!("/proc/{pid}/ns/net");
    // Checked before creating anything, so an unknown PID leaves no file behind.
    process_netns(pid)?;
    let path = create_file(name)?;
    if let Err(err) = bind(&source, &path) {
        remove_file(&path);
        // The process may have exited between the check and the bind.
        return Err(if Path::new(&source).exists() { err } else { NetnsError::NoProcess { pid } });
    }
    Ok(())
}

/// Removes the name `name` (`ip netns del NAME`). The namespace itself lives on while anything else holds it.
pub fn del(name: &str) -> Result<(), NetnsError> {
    validate_netns_name(name)?;
    let path = path_of(name);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Err(NetnsError::Missing { name: name.to_owned() });
    };
    // A symlink (`attach --all`'s names, or `ln -s /proc/PID/ns/net`) is no mount point: unmounting would
    // follow it.
    if !meta.file_type().is_symlink() {
        // EINVAL: not a mount point (a stale file from an interrupted add); the unlink below still cleans it up.
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(source) => return Err(NetnsError::Remove { path, source }),
        }
    }
    unlink(&path).map_err(|source| NetnsError::Remove { path, source })?;
    super::autoname::forget_foreign();
    Ok(())
}

/// Names under `/run/netns`, sorted, with the inode of live ones (`None` for a stale file).
pub fn list() -> Result<Vec<(String, Option<u32>)>, NetnsError> {
    let dir = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => dir,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(NetnsError::List { dir: NETNS_RUN_DIR, source }),
    };
    let mut names: Vec<(String, Option<u32>)> = dir
        .flatten()
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, nsfs_inode(&entry.path()))))
        .collect();
    names.sort();
    Ok(names)
}

/// Opens the named namespace, for `setns` or netlink's `IFLA_NET_NS_FD`.
pub fn open_named(name: &str) -> Result<File, NetnsError> {
    validate_netns_name(name)?;
    let path = path_of(name);
    let file = File::open(&path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => NetnsError::Missing { name: name.to_owned() },
        _ => NetnsError::Open { path: path.clone(), source },
    })?;
    if nsfs_inode(&path).is_none() {
        return Err(NetnsError::Stale { path });
    }
    Ok(file)
}

/// Inode of the named namespace.
pub fn inode_of(name: &str) -> Result<u32, NetnsError> {
    open_named(name)?;
    nsfs_inode(&path_of(name)).ok_or_else(|| NetnsError::Stale { path: path_of(name) })
}

/// Inode of the network namespace of `pid`.
pub fn process_netns(pid: u32) -> Result<u32, NetnsError> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).map_err(|source| match source.kind() {
        ErrorKind::NotFound => NetnsError::NoProcess { pid },
        _ => NetnsError::ProcessNs { pid, source },
    })?;
    link.to_str().and_then(|l| parse_ns_link(l, "net")).ok_or_else(|| NetnsError::ProcessNs {
        pid,
        source: io::Error::new(ErrorKind::InvalidData, format!("unexpected link {}", link.display())),
    })
}

/// Names of the namespace of `pid` (`ip netns identify PID`).
pub fn identify(pid: u32) -> Result<Vec<String>, NetnsError> {
    let inode = process_netns(pid)?;
    Ok(list()?.into_iter().filter(|(_, i)| *i == Some(inode)).map(|(name, _)| name).collect())
}

/// Processes in the named namespace, ascending (`ip netns pids NAME`).
pub fn pids(name: &str) -> Result<Vec<u32>, NetnsError> {
    let inode = inode_of(name)?;
    let dir = std::fs::read_dir("/proc").map_err(|source| NetnsError::List { dir: "/proc", source })?;
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| process_netns(pid).ok() == Some(inode))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Makes `/run/netns` exist and be a shared mount, so that unmounting a name in one mount namespace unmounts it
/// in all of them and the namespace can be freed (iproute2 does the same).
pub(crate) fn prepare_run_dir() -> Result<(), NetnsError> {
    let dir = NETNS_RUN_DIR;
    match nix::unistd::mkdir(dir, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(source) => return Err(NetnsError::RunDir { dir, source }),
    }
    let make_shared = |flags| mount(None::<&str>, dir, Some("none"), MsFlags::MS_SHARED | flags, None::<&str>);
    // Not recursive (iproute2 uses MS_REC every time): the names below it were mounted while it was shared and
    // are shared already, and a recursive change walks every one of them, which makes N adds cost O(N^2).
    match make_shared(MsFlags::empty()) {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then make it and anything below it shared.
        Err(Errno::EINVAL) => mount(Some(dir), dir, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .and_then(|()| make_shared(MsFlags::MS_REC))
            .map_err(|source| NetnsError::RunDir { dir, source }),
        Err(source) => Err(NetnsError::RunDir { dir, source }),
    }
}

/// Creates the empty mount point `/run/netns/NAME`; `O_EXCL` makes one of two racing creators fail.
fn create_file(name: &str) -> Result<PathBuf, NetnsError> {
    prepare_run_dir()?;
    let path = path_of(name);
    match open(&path, OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(_fd) => Ok(path),
        Err(Errno::EEXIST) => Err(NetnsError::Exists { name: name.to_owned() }),
        Err(source) => Err(NetnsError::Create { path, source }),
    }
}

fn bind(source: &str, path: &Path) -> Result<(), NetnsError> {
    mount(Some(source), path, Some("none"), MsFlags::MS_BIND, None::<&str>)
        .map_err(|source| NetnsError::Bind { path: path.to_owned(), source })
}

/// Best-effort undo of [`create_file`] (and of a bind onto it); the original error is what gets reported.
fn remove_file(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    if let Err(err) = unlink(path) {
        tracing::warn!("cannot remove {} after a failed add: {err}", path.display());
    }
}

/// Brings `lo` up in the calling thread's namespace. In a new namespace it is always ifindex 1.
fn loopback_up() -> Result<(), LoopbackError> {
    const LOOPBACK_IFINDEX: u32 = 1;
    let rtnl = Rtnl::connect()?;
    rtnl.run(rtnl.handle.link().set(LinkUnspec::new_with_index(LOOPBACK_IFINDEX).up().build()).execute())?;
    Ok(())
}
