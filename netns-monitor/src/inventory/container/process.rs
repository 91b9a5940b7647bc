//! Container hints from a process's ancestry: the runtime's supervisor stays the parent (or grandparent) of
//! the container's processes, and its command line names the container.
//!
//! - containerd's shim (`containerd-shim-runc-v2 -namespace NS -id ID ...`; Docker's containers have NS
//!   `moby`, Kubernetes' `k8s.io`)
//! - Podman's conmon (`conmon ... -c ID ... -n NAME ...`)
//! - systemd-nspawn (`-M NAME`, else the base name of `-D DIR`)
//! - LXC's monitor (`[lxc monitor] LXCPATH NAME`, its command name still `lxc-start`)
//!
//! A bare `runc run -d` leaves no supervisor: its containers are found by their init process in runc's state
//! directory instead ([`super::runtimes::RuncStates`]).
//!
//! A process can call itself anything, so an ancestor only counts while its executable's file name says the
//! same as its command name, it runs as root and its executable is root's and writable by root only: an
//! unprivileged user's copy of `conmon` cannot pass its namespace off as someone's container (a rootless
//! runtime's containers are therefore not recognised by their supervisor).

use std::path::Path;

/// What a supervising ancestor says about the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Supervisor {
    Shim { namespace: String, id: String },
    Conmon { id: String, name: Option<String> },
    Nspawn { machine: String },
    LxcMonitor { name: String },
}

/// How far up the process tree to look: a container's processes sit a few levels below its init.
const MAX_DEPTH: usize = 12;

/// The process itself, then its parent, grandparent, ... up to (not including) PID 1.
pub fn ancestry(pid: u32) -> impl Iterator<Item = u32> {
    std::iter::successors(Some(pid), |&pid| parent_of(pid)).take_while(|&pid| pid > 1).take(MAX_DEPTH)
}

/// The nearest supervisor of `pid` (the process itself included).
pub fn supervisor(pid: u32) -> Option<Supervisor> {
    ancestry(pid).find_map(supervisor_of)
}

/// What process `pid` says if it is a supervisor.
pub fn supervisor_of(pid: u32) -> Option<Supervisor> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let comm = comm.trim_end();
    // comm is cut at 15 bytes: `containerd-shim-runc-v2` reads `containerd-shim`.
    let known = comm.starts_with("containerd-shim") || matches!(comm, "conmon" | "systemd-nspawn" | "lxc-start");
    if !known || !exe_matches(pid, comm) || !runs_root_executable(pid) {
        return None;
    }
    let args = cmdline(pid)?;
    parse(comm, &args)
}

/// Whether `/proc/PID/exe`'s file name starts with `comm` (LXC's monitor is `lxc-start` itself).
fn exe_matches(pid: u32, comm: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| exe.file_name().and_then(|n| n.to_str()).map(|n| n.starts_with(comm)))
        .unwrap_or(false)
}

/// Whether process `pid` runs as root (real uid 0, as seen from our user namespace) an executable owned by root
/// that no one else may write.
pub fn runs_root_executable(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let root = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next())
        .is_some_and(|uid| uid == "0");
    // `/proc/PID/exe` resolves to the executable's inode even if its path was replaced since.
    root && std::fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// The arguments of process `pid` (`/proc/PID/cmdline`), `None` for a kernel thread or a process gone.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> =
        raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    (!args.is_empty()).then_some(args)
}

/// The parent of `pid` from `/proc/PID/stat` (the field after the parenthesised command name, which may itself
/// hold spaces and parentheses).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`): tells a process from
/// a later one with the same pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Reads a supervisor's command line (`args[0]` is the program).
pub fn parse(comm: &str, args: &[String]) -> Option<Supervisor> {
    if comm.starts_with("containerd-shim") {
        let namespace = option(args, &["-namespace", "--namespace"])?;
        let id = option(args, &["-id", "--id"])?;
        return Some(Supervisor::Shim { namespace, id });
    }
    match comm {
        "conmon" => {
            Some(Supervisor::Conmon { id: option(args, &["-c", "--cid"])?, name: option(args, &["-n", "--name"]) })
        }
        "systemd-nspawn" => {
            let machine = option(args, &["-M", "--machine"]).or_else(|| {
                let dir = option(args, &["-D", "--directory"]).or_else(|| option(args, &["-i", "--image"]))?;
                Path::new(dir.trim_end_matches('/')).file_name()?.to_str().map(str::to_owned)
            })?;
            Some(Supervisor::Nspawn { machine })
        }
        // `[lxc monitor] /var/lib/lxc NAME`: the title LXC gives its monitor, one string or three.
        "lxc-start" => {
            let title = args.join(" ");
            let name = title.strip_prefix("[lxc monitor]")?.split_whitespace().nth(1)?.to_owned();
            Some(Supervisor::LxcMonitor { name })
        }
        _ => None,
    }
}

/// The value of the first of `names` in `args`: `NAME VALUE` or `NAME=VALUE`.
pub(super) fn option(args: &[String], names: &[&str]) -> Option<String> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        for name in names {
            if arg == name {
                return iter.next().cloned();
            }
            if let Some(value) = arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
                return Some(value.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn reads_each_supervisor() {
        assert_eq!(
            parse(
                "containerd-shim",
                &args("/usr/bin/containerd-shim-runc-v2 -namespace default -id web -address /run/containerd.sock")
            ),
            Some(Supervisor::Shim { namespace: "default".into(), id: "web".into() })
        );
        assert_eq!(
            parse(
                "conmon",
                &args("/usr/bin/conmon --api-version 1 -c abc -u abc -r /usr/bin/runc -n web1 --exit-dir x")
            ),
            Some(Supervisor::Conmon { id: "abc".into(), name: Some("web1".into()) })
        );
        assert_eq!(
            parse("systemd-nspawn", &args("systemd-nspawn --register=no --keep-unit -D /tmp/roots/box1/ -q")),
            Some(Supervisor::Nspawn { machine: "box1".into() })
        );
        assert_eq!(
            parse("systemd-nspawn", &args("systemd-nspawn -D /tmp/r --machine=web")),
            Some(Supervisor::Nspawn { machine: "web".into() })
        );
        assert_eq!(
            parse("lxc-start", &args("[lxc monitor] /var/lib/lxc c3")),
            Some(Supervisor::LxcMonitor { name: "c3".into() })
        );
        assert_eq!(parse("lxc-start", &args("lxc-start -n c3")), None, "the starting client, not the monitor");
        assert_eq!(parse("containerd-shim", &args("containerd-shim -id x")), None);
    }

    #[test]
    fn ancestry_walks_up_to_init() {
        let chain: Vec<u32> = ancestry(std::process::id()).collect();
        assert_eq!(chain[0], std::process::id());
        assert!(!chain.contains(&1));
    }
}
