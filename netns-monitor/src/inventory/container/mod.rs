//! Which container a namespace belongs to: runtime, id and the name the runtime shows.
//!
//! Three sources, most specific first:
//! - the cgroup path ([`cgroup`]): Docker, Podman, LXC, CRI runtimes, Kubernetes pods, registered nspawn
//!   machines;
//! - the supervising ancestor ([`process`]): containerd's shim (`ctr`, and Docker's own), Podman's conmon,
//!   systemd-nspawn, LXC's monitor; it also gives Podman's container name;
//! - the runtime's state on disk ([`runtimes`]): bare runc's containers, Docker's names.
//!
//! A [`Containers`] reads what is shared between namespaces (runc's state, where dockerd keeps its data) once,
//! when first needed, so one listing costs one read of each.

mod cgroup;
mod process;
pub mod runtimes;

use std::{cell::OnceCell, fmt, path::PathBuf};

use process::Supervisor;
pub use process::{cmdline, parent_of, runs_root_executable, start_time};
use runtimes::RuncStates;

/// Runtime, id and name of the container a process runs in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContainerHint {
    /// `docker`, `podman`, `lxc`, `runc`, `containerd`, `systemd-nspawn`, `cri-o`, `kubepods` (a pod's
    /// containers when only the pod is known), or `container` (an id-shaped cgroup of an unknown runtime).
    pub runtime: &'static str,
    /// The runtime's id: Docker's and Podman's 64 hex digits, LXC's container name, runc's and containerd's
    /// container id, nspawn's machine name, a pod uid.
    pub id: String,
    /// The name the runtime shows (`docker ps`, `podman ps`, `lxc-ls`, ...), where it records one.
    pub name: Option<String>,
}

impl ContainerHint {
    /// The id as `docker ps` shows it: 12 characters of a hex id, the whole of anything else.
    pub fn short_id(&self) -> &str {
        if self.id.len() > 12 && cgroup::is_hex(&self.id) { &self.id[..12] } else { &self.id }
    }

    /// A name for `/run/netns`: `RUNTIME-SHORTID`, with anything but `[A-Za-z0-9_.-]` replaced.
    pub fn netns_name(&self) -> String {
        format!("{}-{}", self.runtime, self.short_id())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' })
            .collect()
    }

    /// The name to show for the container: the runtime's, else `RUNTIME-SHORTID`.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.netns_name())
    }
}

impl fmt::Display for ContainerHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.runtime, self.name.as_deref().unwrap_or_else(|| self.short_id()))
    }
}

/// How many of a namespace's processes are asked which container they run in.
pub const PIDS_ASKED: usize = 8;

/// Looks up containers for one listing; see the module documentation.
#[derive(Default)]
pub struct Containers {
    runc: OnceCell<RuncStates>,
    docker_roots: OnceCell<Vec<PathBuf>>,
}

impl Containers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The container of the first of `pids` (at most [`PIDS_ASKED`] looked at) that is in one. A container's
    /// processes share its cgroup subtree and supervisor, so a few are enough; one limit for every caller
    /// keeps `list`, `stats`, `trace` and `/metrics` agreeing on a namespace's container.
    pub fn of_pids(&self, pids: &[u32]) -> Option<ContainerHint> {
        pids.iter().take(PIDS_ASKED).find_map(|&pid| self.of_pid(pid))
    }

    /// The container process `pid` runs in.
    pub fn of_pid(&self, pid: u32) -> Option<ContainerHint> {
        let from_cgroup =
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok().and_then(|t| cgroup::from_cgroup(&t));
        // The generic shapes (an id-shaped cgroup, a pod) say less than a supervisor does.
        let specific = from_cgroup.as_ref().is_some_and(|(runtime, _)| !matches!(*runtime, "container" | "kubepods"));
        let hint = |runtime, id: String, name| Some(ContainerHint { runtime, id, name });
        if let (true, Some((runtime, id))) = (specific, from_cgroup.clone()) {
            let name = match runtime {
                "docker" => self.docker_name(&id),
                "podman" => match process::supervisor(pid) {
                    Some(Supervisor::Conmon { id: cid, name }) if cid == id => name,
                    _ => None,
                },
                "lxc" | "systemd-nspawn" => Some(id.clone()),
                _ => None,
            };
            return hint(runtime, id, name);
        }
        for ancestor in process::ancestry(pid) {
            if let Some(id) = self.runc().container_of(ancestor) {
                return hint("runc", id.to_owned(), Some(id.to_owned()));
            }
            let Some(supervisor) = process::supervisor_of(ancestor) else { continue };
            return match supervisor {
                Supervisor::Shim { namespace, id } if namespace == "moby" => {
                    let name = self.docker_name(&id);
                    hint("docker", id, name)
                }
                Supervisor::Shim { id, .. } => hint("containerd", id.clone(), Some(id)),
                Supervisor::Conmon { id, name } => hint("podman", id, name),
                Supervisor::Nspawn { machine } => hint("systemd-nspawn", machine.clone(), Some(machine)),
                Supervisor::LxcMonitor { name } => hint("lxc", name.clone(), Some(name)),
            };
        }
        from_cgroup.and_then(|(runtime, id)| hint(runtime, id, None))
    }

    fn runc(&self) -> &RuncStates {
        self.runc.get_or_init(|| RuncStates::read(std::path::Path::new(runtimes::RUNC_ROOT)))
    }

    fn docker_name(&self, id: &str) -> Option<String> {
        let roots = self.docker_roots.get_or_init(|| {
            let pids: Vec<u32> = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            runtimes::docker_data_roots(&pids)
        });
        runtimes::docker_name(roots, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e9c0a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f8091a2b3c4d5";

    #[test]
    fn names_are_valid_namespace_names() {
        let h = ContainerHint { runtime: "docker", id: ID.to_owned(), name: None };
        assert_eq!(h.netns_name(), format!("docker-{}", &ID[..12]));
        assert_eq!(h.to_string(), format!("docker:{}", &ID[..12]));
        assert_eq!(h.label(), format!("docker-{}", &ID[..12]));
        let named = ContainerHint { name: Some("web1".into()), ..h };
        assert_eq!(named.to_string(), "docker:web1");
        assert_eq!(named.label(), "web1");
        let odd = ContainerHint { runtime: "lxc", id: "a/b c".into(), name: None };
        assert_eq!(odd.netns_name(), "lxc-a_b_c");
    }
}
