//! The cgroup directories the runtimes make (`docker/ID`, `libpod_parent/libpod-ID`, `lxc.payload.NAME`,
//! `lxc.pivot`, runc's `ID`, containerd's `NAMESPACE/ID`, nspawn's `payload` and `supervisor`), in every
//! mounted hierarchy: this machine has the hybrid layout (cgroup v1 controllers, `name=systemd`, and v2 at
//! `/sys/fs/cgroup/unified`), so each runtime makes its directories once per hierarchy.

use std::path::{Path, PathBuf};

/// A mounted cgroup hierarchy.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// v2, or the v1 hierarchy named `systemd` (the two systemd tools manage).
    pub systemd: bool,
}

/// Every mounted cgroup hierarchy (`/proc/self/mountinfo`).
pub fn hierarchies() -> Vec<Hierarchy> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            let mut fields = right.split_whitespace();
            let fstype = fields.next()?;
            let options = fields.nth(1).unwrap_or("");
            let systemd = fstype == "cgroup2" || options.split(',').any(|o| o == "name=systemd");
            matches!(fstype, "cgroup" | "cgroup2").then(|| Hierarchy { mount: PathBuf::from(mount), systemd })
        })
        .collect()
}

/// Removes `relative` (and every directory below it, deepest first) in every hierarchy. Only empty cgroups
/// can be removed: one that still has processes stays, silently.
pub fn remove(relative: &str) {
    for hierarchy in hierarchies() {
        remove_tree(&hierarchy.mount.join(relative.trim_start_matches('/')));
    }
}

fn remove_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Directories directly below the root of any hierarchy whose name satisfies `wanted` (deduplicated).
pub fn top_level(wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found: Vec<String> = hierarchies()
        .iter()
        .flat_map(|h| std::fs::read_dir(&h.mount).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| wanted(name))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Every process in `relative` or below it, in any hierarchy.
pub fn procs(relative: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for hierarchy in hierarchies() {
        collect_procs(&hierarchy.mount.join(relative.trim_start_matches('/')), &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn collect_procs(dir: &Path, pids: &mut Vec<u32>) {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    pids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&entry.path(), pids);
        }
    }
}

/// Makes `relative` in the hierarchies systemd tools manage (v2 and `name=systemd`) and returns the
/// `cgroup.procs` files a process writes its pid to in order to move itself in.
pub fn create_systemd(relative: &str) -> Vec<PathBuf> {
    hierarchies()
        .iter()
        .filter(|h| h.systemd)
        .map(|hierarchy| {
            let dir = hierarchy.mount.join(relative);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            dir.join("cgroup.procs")
        })
        .collect()
}
