//! A container hint for a namespace: which container runtime and id its processes' cgroup path names.
//!
//! Read from `/proc/PID/cgroup` (v2 `0::/path`, or any v1 hierarchy). The shapes recognised are those of the
//! common runtimes and their systemd or cgroupfs drivers:
//! - Docker: `/system.slice/docker-ID.scope`, `/docker/ID`
//! - containerd (CRI): `.../cri-containerd-ID.scope`; CRI-O: `.../crio-ID.scope`
//! - Podman (libpod): `.../libpod-ID.scope`, `/libpod_parent/libpod-ID`
//! - Kubernetes with cgroupfs: `/kubepods/QOS/podUID/ID`; a pod slice alone (`...-podUID.slice`) gives the pod
//! - LXC: `/lxc/NAME`, `/lxc.payload.NAME`
//!
//! Runtime helper processes (`*-conmon-*`) are skipped: they run outside the container's namespaces.

use std::fmt;

/// Runtime and id of the container a process runs in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContainerHint {
    /// `docker`, `containerd`, `cri-o`, `libpod`, `kubepods`, `lxc`.
    pub runtime: &'static str,
    /// Full container id (or pod uid, or LXC name).
    pub id: String,
}

impl ContainerHint {
    /// The id as `docker ps` shows it: 12 characters of a hex id, the whole of anything else.
    pub fn short_id(&self) -> &str {
        if self.id.len() > 12 && is_hex(&self.id) { &self.id[..12] } else { &self.id }
    }

    /// A name for `/run/netns`: `RUNTIME-SHORTID`, with anything but `[A-Za-z0-9_.-]` replaced.
    pub fn netns_name(&self) -> String {
        format!("{}-{}", self.runtime, self.short_id())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' })
            .collect()
    }
}

impl fmt::Display for ContainerHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.runtime, self.short_id())
    }
}

/// The hint for process `pid`, if its cgroup names a container.
pub fn of_pid(pid: u32) -> Option<ContainerHint> {
    from_cgroup(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The hint of the first of `pids` (at most `limit` looked at) whose cgroup names a container.
pub fn of_pids(pids: &[u32], limit: usize) -> Option<ContainerHint> {
    pids.iter().take(limit).find_map(|&pid| of_pid(pid))
}

/// Parses the content of `/proc/PID/cgroup`.
pub fn from_cgroup(text: &str) -> Option<ContainerHint> {
    text.lines().filter_map(|line| line.splitn(3, ':').nth(2)).find_map(from_path)
}

fn from_path(path: &str) -> Option<ContainerHint> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // Innermost first: a container scope sits below its pod slice.
    for (i, part) in parts.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if let Some(hint) = from_component(part, parent, path) {
            return Some(hint);
        }
    }
    parts.iter().rev().find_map(|part| pod_uid(part)).map(|id| ContainerHint { runtime: "kubepods", id })
}

fn from_component(part: &str, parent: Option<&str>, path: &str) -> Option<ContainerHint> {
    let hint = |runtime, id: &str| Some(ContainerHint { runtime, id: id.to_owned() });
    let unit = part.strip_suffix(".scope").unwrap_or(part);
    if unit.contains("-conmon-") {
        return None;
    }
    for (prefix, runtime) in
        [("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-", "cri-o"), ("libpod-", "libpod")]
    {
        if let Some(id) = unit.strip_prefix(prefix).filter(|id| id.len() >= 12 && is_hex(id)) {
            return hint(runtime, id);
        }
    }
    if let Some(name) = part.strip_prefix("lxc.payload.") {
        return hint("lxc", name);
    }
    if parent == Some("lxc") {
        return hint("lxc", part);
    }
    if part.len() == 64 && is_hex(part) {
        let runtime = match parent {
            Some("docker") => "docker",
            _ if path.contains("kubepods") => "kubepods",
            _ if path.contains("libpod") => "libpod",
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

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e9c0a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f8091a2b3c4d5";

    fn hint(text: &str) -> Option<String> {
        from_cgroup(text).map(|h| format!("{}:{}", h.runtime, h.id))
    }

    #[test]
    fn recognises_runtimes() {
        assert_eq!(hint(&format!("0::/system.slice/docker-{ID}.scope\n")), Some(format!("docker:{ID}")));
        assert_eq!(hint(&format!("12:pids:/docker/{ID}\n0::/\n")), Some(format!("docker:{ID}")));
        let k8s = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ab_cdef_1234567890ab.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(hint(&k8s), Some(format!("containerd:{ID}")));
        assert_eq!(hint(&format!("0::/machine.slice/libpod-{ID}.scope/container")), Some(format!("libpod:{ID}")));
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
        assert_eq!(hint("0::/lxc.payload.web1/init.scope"), Some("lxc:web1".to_owned()));
    }

    #[test]
    fn host_processes_and_helpers_have_no_hint() {
        assert_eq!(hint("0::/init.scope\n"), None);
        assert_eq!(hint("0::/user.slice/user-0.slice/session-1.scope\n"), None);
        assert_eq!(hint(&format!("0::/machine.slice/libpod-conmon-{ID}.scope")), None);
        assert_eq!(hint("0::/system.slice/docker.service"), None);
    }

    #[test]
    fn names_are_valid_namespace_names() {
        let h = ContainerHint { runtime: "docker", id: ID.to_owned() };
        assert_eq!(h.netns_name(), format!("docker-{}", &ID[..12]));
        assert_eq!(h.to_string(), format!("docker:{}", &ID[..12]));
        assert_eq!(ContainerHint { runtime: "lxc", id: "a/b c".into() }.netns_name(), "lxc-a_b_c");
    }
}
