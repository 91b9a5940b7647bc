//! Container hints from a process's cgroup path (`/proc/PID/cgroup`: v2 `0::/path`, or any v1 hierarchy).
//!
//! The shapes recognised are those of the common runtimes and their systemd or cgroupfs drivers:
//! - Docker: `/system.slice/docker-ID.scope`, `/docker/ID`
//! - containerd (CRI): `.../cri-containerd-ID.scope`; CRI-O: `.../crio-ID.scope`
//! - Podman (libpod): `.../libpod-ID.scope`, `/libpod_parent/libpod-ID`
//! - Kubernetes with cgroupfs: `/kubepods/QOS/podUID/ID`; a pod slice alone (`...-podUID.slice`) gives the pod
//! - LXC: `/lxc/NAME`, `/lxc.payload.NAME`, `/lxc.payload/NAME` (never `lxc.monitor.NAME`: the monitor runs in
//!   the host's namespaces)
//! - systemd-nspawn registered as a machine: `/machine.slice/machine-NAME.scope`
//!
//! Runtime helper processes (`*-conmon-*`) are skipped: they run outside the container's namespaces.

/// Runtime and id a cgroup path names.
pub type Hint = (&'static str, String);

/// Parses the content of `/proc/PID/cgroup`.
pub fn from_cgroup(text: &str) -> Option<Hint> {
    text.lines().filter_map(|line| line.splitn(3, ':').nth(2)).find_map(from_path)
}

fn from_path(path: &str) -> Option<Hint> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // Innermost first: a container scope sits below its pod slice.
    for (i, part) in parts.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if let Some(hint) = from_component(part, parent, path) {
            return Some(hint);
        }
    }
    parts.iter().rev().find_map(|part| pod_uid(part)).map(|id| ("kubepods", id))
}

fn from_component(part: &str, parent: Option<&str>, path: &str) -> Option<Hint> {
    let hint = |runtime, id: &str| Some((runtime, id.to_owned()));
    let unit = part.strip_suffix(".scope").unwrap_or(part);
    if unit.contains("-conmon-") {
        return None;
    }
    for (prefix, runtime) in
        [("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-", "cri-o"), ("libpod-", "podman")]
    {
        if let Some(id) = unit.strip_prefix(prefix).filter(|id| id.len() >= 12 && is_hex(id)) {
            return hint(runtime, id);
        }
    }
    if let Some(name) = part.strip_prefix("lxc.payload.") {
        return hint("lxc", name);
    }
    if matches!(parent, Some("lxc" | "lxc.payload")) {
        return hint("lxc", part);
    }
    if let Some(machine) = unit.strip_prefix("machine-").filter(|_| part.ends_with(".scope")) {
        return Some(("systemd-nspawn", unescape_unit(machine)));
    }
    if part.len() == 64 && is_hex(part) {
        let runtime = match parent {
            Some("docker") => "docker",
            _ if path.contains("kubepods") => "kubepods",
            _ if path.contains("libpod") => "podman",
            _ => "container",
        };
        return hint(runtime, part);
    }
    None
}

/// The pod uid of a Kubernetes pod cgroup (`pod<UID>` or `kubepods-QOS-pod<UID>.slice`).
fn pod_uid(part: &str) -> Option<String> {
    if !part.contains("kubepods") && !part.starts_with("pod") {
        return None;
    }
    let unit = part.strip_suffix(".slice").unwrap_or(part);
    let uid = &unit[unit.rfind("pod")? + 3..];
    (uid.len() >= 32 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_'))
        .then(|| uid.replace('_', "-"))
}

/// systemd's unit name escaping (`\x2d` for `-`) undone.
fn unescape_unit(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 2..at + 4).and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push_str("\\x");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e9c0a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f8091a2b3c4d5";

    fn hint(text: &str) -> Option<String> {
        from_cgroup(text).map(|(runtime, id)| format!("{runtime}:{id}"))
    }

    #[test]
    fn recognises_runtimes() {
        assert_eq!(hint(&format!("0::/system.slice/docker-{ID}.scope\n")), Some(format!("docker:{ID}")));
        assert_eq!(hint(&format!("12:pids:/docker/{ID}\n0::/\n")), Some(format!("docker:{ID}")));
        let k8s = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ab_cdef_1234567890ab.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(hint(&k8s), Some(format!("containerd:{ID}")));
        assert_eq!(hint(&format!("0::/machine.slice/libpod-{ID}.scope/container")), Some(format!("podman:{ID}")));
        assert_eq!(hint(&format!("3:memory:/libpod_parent/libpod-{ID}\n")), Some(format!("podman:{ID}")));
        assert_eq!(
            hint(&format!("0::/kubepods.slice/kubepods-pod1234abcd_5678_90ab_cdef_1234567890ab.slice/crio-{ID}.scope")),
            Some(format!("cri-o:{ID}"))
        );
        assert_eq!(
            hint(&format!("4:memory:/kubepods/besteffort/pod1234abcd-5678-90ab-cdef-1234567890ab/{ID}")),
            Some(format!("kubepods:{ID}"))
        );
        assert_eq!(
            hint(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234abcd_5678_90ab_cdef_1234567890ab.slice"
            ),
            Some("kubepods:1234abcd-5678-90ab-cdef-1234567890ab".to_owned())
        );
        assert_eq!(hint("0::/machine.slice/machine-web\\x2d1.scope/payload"), Some("systemd-nspawn:web-1".to_owned()));
    }

    #[test]
    fn recognises_every_lxc_layout() {
        // cgroup v2 (LXC >= 4), hybrid and v1 with the same names per hierarchy, and LXC 3's layout.
        assert_eq!(hint("0::/lxc.payload.web1/init.scope"), Some("lxc:web1".to_owned()));
        assert_eq!(
            hint("12:pids:/lxc.payload.web1\n1:name=systemd:/lxc.payload.web1\n0::/\n"),
            Some("lxc:web1".to_owned())
        );
        assert_eq!(hint("4:memory:/lxc/web1\n"), Some("lxc:web1".to_owned()));
        assert_eq!(hint("4:memory:/lxc.payload/web1\n"), Some("lxc:web1".to_owned()));
        assert_eq!(hint("0::/lxc.monitor.web1\n"), None, "the monitor is on the host");
    }

    #[test]
    fn host_processes_and_helpers_have_no_hint() {
        assert_eq!(hint("0::/init.scope\n"), None);
        assert_eq!(hint("0::/user.slice/user-0.slice/session-1.scope\n"), None);
        assert_eq!(hint(&format!("0::/machine.slice/libpod-conmon-{ID}.scope")), None);
        assert_eq!(hint("0::/system.slice/docker.service"), None);
    }

    #[test]
    fn unit_escapes_are_undone() {
        assert_eq!(unescape_unit("a\\x2db"), "a-b");
        assert_eq!(unescape_unit("plain"), "plain");
        assert_eq!(unescape_unit("bad\\xzz"), "bad\\xzz");
    }
}
