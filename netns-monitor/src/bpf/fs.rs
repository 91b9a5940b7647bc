//! Mounts the kernel filesystems the agent needs when they are missing, as real agents do:
//! tracefs (tracepoint ids for attaching, format files for checking record layouts) and bpffs (pins that keep
//! programs and maps alive across agent restarts).

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::mountinfo::{self, MountInfoError};

/// Where tracefs is mounted when missing; aya also accepts the legacy debugfs location below.
pub const TRACEFS: &str = "/sys/kernel/tracing";
const TRACEFS_LEGACY: &str = "/sys/kernel/debug/tracing";
/// Where bpffs is mounted when missing; pins live under it.
pub const BPFFS: &str = "/sys/fs/bpf";
/// `f_type` of bpffs in statfs (`BPF_FS_MAGIC`, linux/magic.h).
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

/// Whether `dir`, or the nearest existing directory above it (where it would be created), is on bpffs: pins
/// can only live there, so anything else is refused before any directory is made.
pub fn on_bpffs(dir: &Path) -> std::io::Result<bool> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Ok(false),
        }
    }
    let stat = nix::sys::statfs::statfs(existing)?;
    Ok(stat.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Errors mounting tracefs/bpffs.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    MountInfo(#[from] MountInfoError),
    #[error("{fs_type} is not mounted and mounting it at {target} failed (needs CAP_SYS_ADMIN)")]
    Mount {
        fs_type: &'static str,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A filesystem this call mounted (so the caller can say so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounted {
    pub fs_type: &'static str,
    pub target: PathBuf,
}

/// Where tracefs is mounted, if anywhere aya looks.
pub fn tracefs_path() -> Result<Option<PathBuf>, MountError> {
    let mounts = mountinfo::read("self")?;
    Ok([TRACEFS, TRACEFS_LEGACY]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| mounts.iter().any(|m| m.fs_type == "tracefs" && m.mount_point == *p)))
}

/// Mounts tracefs and bpffs where they are missing; returns what it mounted.
pub fn ensure_kernel_filesystems() -> Result<Vec<Mounted>, MountError> {
    let mounts = mountinfo::read("self")?;
    let has = |fs_type: &str, paths: &[&str]| {
        mounts.iter().any(|m| m.fs_type == fs_type && paths.iter().any(|p| m.mount_point == Path::new(p)))
    };
    let mut mounted = Vec::new();
    for (fs_type, target, accepted) in
        [("tracefs", TRACEFS, &[TRACEFS, TRACEFS_LEGACY][..]), ("bpf", BPFFS, &[BPFFS][..])]
    {
        if has(fs_type, accepted) {
            continue;
        }
        mount(
            Some(fs_type),
            target,
            Some(fs_type),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|source| MountError::Mount { fs_type, target: target.into(), source })?;
        mounted.push(Mounted { fs_type, target: target.into() });
    }
    Ok(mounted)
}
