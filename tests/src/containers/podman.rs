//! Podman 4.3 as root: a `CONTAINERS_CONF` of the fixture's own (runc, cgroupfs, file events, lower default
//! ulimits than Podman's: root here cannot raise its rlimits; crun refuses this host's hybrid cgroup layout),
//! private `--root`/`--runroot` with the vfs storage driver, and a CNI network of its own (bridge plugin
//! only: no masquerade or firewall rules) as the default network. Containers run under conmon, whose command
//! line names them; Podman keeps their namespaces mounted at `/run/netns/netns-UUID`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use super::{Container, Inspected, Runtime, command, net, ok, output, quiet, scope};

/// The busybox image, as `podman import` names it.
pub const IMAGE: &str = "localhost/nsmc-busybox:test";
/// What rootful Podman and CNI write outside the given roots (CNI's result cache, the blob-info cache).
const OUTSIDE_DIRS: [&str; 3] = ["/var/lib/cni", "/var/lib/containers", "/run/containers"];

/// A private Podman set-up; dropping it removes its containers, its bridge and cgroups, and the directories it
/// made outside its roots.
pub struct Podman {
    dir: PathBuf,
    pub bridge: String,
    pub gateway: String,
    made_dirs: Vec<&'static str>,
}

impl Podman {
    /// Podman for this test process (configured on first use, removed at exit).
    pub fn shared() -> Arc<Podman> {
        static SLOT: Mutex<Option<Arc<Podman>>> = Mutex::new(None);
        scope::shared(&SLOT, Podman::start)
    }

    /// Writes the configuration and imports the busybox image.
    pub fn start() -> Podman {
        let rootfs = super::rootfs::rootfs();
        let dir = scope::run_dir().join("podman");
        for sub in ["root", "runroot", "tmp", "cni", "ipam"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        let bridge = crate::unique_name(super::PREFIX);
        let net = net::next_subnet();
        let gateway = format!("{net}.1");
        let network = format!("{}-pod", super::PREFIX);
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{tmp}"

[network]
network_backend = "cni"
network_config_dir = "{cni}"
default_network = "{network}"
"#,
            tmp = dir.join("tmp").display(),
            cni = dir.join("cni").display(),
        );
        std::fs::write(dir.join("containers.conf"), conf).expect("write containers.conf");
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": network,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": format!("{net}.0/24"), "gateway": gateway}]],
                    "dataDir": dir.join("ipam"),
                },
            }],
        });
        std::fs::write(dir.join("cni").join(format!("{network}.conflist")), conflist.to_string())
            .expect("write the CNI network");
        let made_dirs: Vec<&str> = OUTSIDE_DIRS.into_iter().filter(|d| !Path::new(d).exists()).collect();
        made_dirs.iter().for_each(|d| scope::note_made(Path::new(d)));
        let podman = Podman { dir, bridge, gateway, made_dirs };
        ok(podman.cli(&["import"]).arg(&rootfs.tarball).arg(IMAGE));
        podman
    }

    /// `podman --root R --runroot RR --storage-driver vfs ARGS...` with the fixture's `CONTAINERS_CONF`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        cmd
    }

    /// `podman ps`'s NAMES for the container with full id `id`.
    pub fn ps_name(&self, id: &str) -> Option<String> {
        let out = output(&mut self.cli(&["ps", "--no-trunc", "--format", "{{.ID}}\t{{.Names}}"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix(id)?.strip_prefix('\t').map(str::to_owned))
    }

    fn inspect_ref(&self, reference: &str) -> Option<Inspected> {
        let out = output(&mut self.cli(&["inspect", "-f", "{{.Id}}\t{{.State.Running}}\t{{.State.Pid}}", reference]));
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.trim().split('\t').collect();
        match fields[..] {
            [id, "true", pid] if out.status.success() => Some(Inspected {
                id: id.to_owned(),
                name: self.ps_name(id)?,
                pid: pid.parse().ok().filter(|&p| p > 0)?,
            }),
            _ => None,
        }
    }

    fn describe(&self, reference: &str) -> Container {
        let inspected = self.inspect_ref(reference).unwrap_or_else(|| panic!("podman: {reference} is not running"));
        Container {
            runtime: "podman",
            host_if: net::host_peer(inspected.pid, "eth0"),
            id: inspected.id,
            name: inspected.name,
            pid: inspected.pid,
            inner_if: "eth0".to_owned(),
            gateway: self.gateway.clone(),
        }
    }
}

impl Runtime for Podman {
    fn kind(&self) -> &'static str {
        "podman"
    }

    fn start(&self, name: &str) -> Container {
        ok(&mut self.cli(&["run", "-d", "--name", name, IMAGE, "sleep", "1000000"]));
        self.describe(name)
    }

    fn restart(&self, container: &Container) -> Container {
        ok(&mut self.cli(&["restart", "-t", "0", &container.id]));
        self.describe(&container.id)
    }

    fn remove(&self, container: &Container) {
        quiet(&mut self.cli(&["rm", "-f", "-t", "0", &container.id]));
    }

    fn inspect(&self, container: &Container) -> Option<Inspected> {
        self.inspect_ref(&container.id)
    }

    fn exec(&self, container: &Container, args: &[&str]) -> Output {
        output(self.cli(&["exec", &container.id]).args(args))
    }

    fn exec_description(&self, container: &Container, args: &[&str]) -> String {
        format!("podman exec {} {}", container.name, args.join(" "))
    }

    fn netns_paths(&self, container: &Container) -> Vec<PathBuf> {
        let out = ok(&mut self.cli(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", &container.id]));
        vec![PathBuf::from(out.trim())]
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        quiet(&mut self.cli(&["rm", "-a", "-f", "-t", "0"]));
        super::leftovers::kill_referencing(&self.dir);
        super::leftovers::unmount_below(&self.dir);
        quiet(&mut command("ip", &["link", "del", &self.bridge]));
        super::cgroups::remove("libpod_parent");
        for dir in &self.made_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Podman's runc keeps its state in runc's default root; empty once the containers are gone.
        let _ = std::fs::remove_dir("/run/runc");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
