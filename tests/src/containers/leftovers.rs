//! Removal of what a container test run that was killed left behind (a run that ends normally removes its own
//! at exit). Called with the run lock held ([`super::scope`]), so every run directory but ours and everything
//! named with [`super::PREFIX`] is stale. The runtimes' own tools go first (they know their state), then
//! whatever is still there by process, cgroup, mount and link.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    mount::{MntFlags, umount2},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::{PREFIX, alive, all_pids, cgroups, cmdline, command, quiet, scope::BASE};

/// Removes every stale run directory and everything named with [`PREFIX`].
pub fn remove() {
    let own = std::process::id().to_string();
    let stale: Vec<PathBuf> = std::fs::read_dir(BASE)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name().to_str() != Some(own.as_str()))
        .map(|e| e.path())
        .collect();
    for dir in &stale {
        remove_run(dir);
    }
    for entry in std::fs::read_dir(super::runc::ROOT).into_iter().flatten().flatten() {
        if let Some(id) = entry.file_name().to_str().filter(|id| id.starts_with(PREFIX)) {
            quiet(&mut command("runc", &["--root", super::runc::ROOT, "kill", id, "KILL"]));
            quiet(&mut command("runc", &["--root", super::runc::ROOT, "delete", "-f", id]));
        }
    }
    let ours = |name: &str| {
        name.starts_with(PREFIX)
            || name.strip_prefix("lxc.payload.").is_some_and(|n| n.starts_with(PREFIX))
            || name.strip_prefix("lxc.monitor.").is_some_and(|n| n.starts_with(PREFIX))
    };
    for cgroup in cgroups::top_level(ours) {
        kill_all(&cgroups::procs(&cgroup));
        cgroups::remove(&cgroup);
    }
    let links = super::output(&mut command("ip", &["-o", "link"]));
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        let name = line.split(": ").nth(1).and_then(|n| n.split('@').next()).unwrap_or("");
        if name.starts_with(PREFIX) || name.starts_with(&format!("ve-{PREFIX}")) {
            quiet(&mut command("ip", &["link", "del", name]));
        }
    }
    for name in ["docker", "libpod_parent", "lxc.pivot"] {
        cgroups::remove(name);
    }
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        if let Some(name) = entry.file_name().to_str().filter(|n| n.contains(PREFIX)) {
            let _ = umount2(&entry.path(), MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(entry.path());
            quiet(&mut command("ip", &["netns", "del", name]));
        }
    }
}

/// One stale run directory: its Podman and LXC containers through their tools, Docker's by cgroup, then every
/// process that names the directory (dockerd, containerd and its shims, conmon, LXC monitors, nspawn), its
/// mounts and the directory itself.
fn remove_run(dir: &Path) {
    let podman_conf = dir.join("podman/containers.conf");
    if podman_conf.exists() {
        quiet(
            std::process::Command::new("podman")
                .env("CONTAINERS_CONF", &podman_conf)
                .arg("--root")
                .arg(dir.join("podman/root"))
                .arg("--runroot")
                .arg(dir.join("podman/runroot"))
                .args(["--storage-driver", "vfs", "rm", "-a", "-f", "-t", "0"]),
        );
    }
    let lxc_path = dir.join("lxc");
    if lxc_path.is_dir() {
        for entry in std::fs::read_dir(&lxc_path).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            quiet(command("lxc-stop", &["-k", "-n", &name]).arg("-P").arg(&lxc_path));
            quiet(command("lxc-destroy", &["-f", "-n", &name]).arg("-P").arg(&lxc_path));
        }
    }
    for entry in std::fs::read_dir(dir.join("docker/data/containers")).into_iter().flatten().flatten() {
        let cgroup = format!("docker/{}", entry.file_name().to_string_lossy());
        kill_all(&cgroups::procs(&cgroup));
        cgroups::remove(&cgroup);
    }
    kill_referencing(dir);
    unmount_below(dir);
    if let Ok(ip_forward) = std::fs::read_to_string(dir.join(super::lxc::NET_STARTED)) {
        super::lxc::stop_net(ip_forward.trim());
    }
    let daemons = ["dockerd", "containerd", "conmon", "systemd-nspawn", "lxc-start"];
    let daemon_left = all_pids().into_iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| daemons.contains(&c.trim())) && alive(pid)
    });
    if !daemon_left {
        // Only if empty: a system directory a killed run made may have been used for real since.
        for made in std::fs::read_to_string(dir.join(super::scope::MADE)).unwrap_or_default().lines() {
            let _ = std::fs::remove_dir(made);
        }
    }
    if let Err(err) = std::fs::remove_dir_all(dir) {
        eprintln!("cannot remove the stale run directory {}: {err}", dir.display());
    }
}

/// SIGKILLs every process (but this one) whose command line names a path under `dir`, and waits until they are
/// gone.
pub fn kill_referencing(dir: &Path) {
    let dir = dir.display().to_string();
    let below = format!("{dir}/");
    let own = std::process::id();
    let names = |arg: &String| arg.contains(&below) || arg.ends_with(&dir);
    let pids: Vec<u32> = all_pids().into_iter().filter(|&pid| pid != own && cmdline(pid).iter().any(names)).collect();
    kill_all(&pids);
}

fn kill_all(pids: &[u32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let start = std::time::Instant::now();
    while pids.iter().any(|&pid| alive(pid)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches every mount at or below `dir` (netns bind mounts, overlay and shm mounts), deepest first.
pub fn unmount_below(dir: &Path) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|point| PathBuf::from(unescape(point)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        let _ = umount2(&point, MntFlags::MNT_DETACH);
    }
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}
