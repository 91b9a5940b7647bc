//! Docker 20.10: a dockerd of the test's own (private `--data-root`, `--exec-root`, `--pidfile` and `-H` unix
//! socket in the run directory, its own bridge instead of `docker0`, no iptables rules and IP forwarding left
//! as it is: Docker's FORWARD-drop policy would break the other tests' forwarding), the busybox image imported
//! with `docker import`, and containers on the default `bridge` network.
//!
//! The client is Debian's `/usr/bin/docker` (another client may come first on PATH). dockerd starts its own
//! containerd on `EXEC_ROOT/containerd/containerd.sock`, which [`super::ctr`] uses too. Docker keeps each
//! container's namespace bind-mounted at `EXEC_ROOT/netns/KEY` (its `SandboxKey`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use super::{Container, Inspected, Runtime, STEP, command, net, ok, output, quiet, scope, wait_for};

/// Debian's docker client.
pub const CLIENT: &str = "/usr/bin/docker";
const DAEMON: &str = "/usr/sbin/dockerd";
/// The busybox image, as `docker import` names it.
pub const IMAGE: &str = "nsmc-busybox:test";
/// What Docker leaves in /run even with a private exec root (dockerd's plugin directory; its containerd's
/// shim sockets, fifos and runc state).
const RUN_DIRS: [&str; 2] = ["/run/docker", "/run/containerd"];

/// A private dockerd; dropping it removes its containers, stops it and removes its bridge, cgroups and the
/// /run directories it made.
pub struct Docker {
    pub dir: PathBuf,
    socket: PathBuf,
    daemon: Mutex<Child>,
    /// The Linux bridge of Docker's `bridge` network, and its address (the containers' gateway).
    pub bridge: String,
    pub gateway: String,
    made_run_dirs: Vec<&'static str>,
    saved: OnceLock<PathBuf>,
}

impl Docker {
    /// The dockerd of this test process (started on first use, stopped at exit).
    pub fn shared() -> Arc<Docker> {
        static SLOT: Mutex<Option<Arc<Docker>>> = Mutex::new(None);
        scope::shared(&SLOT, Docker::start)
    }

    /// Starts a dockerd and imports the busybox image; panics with dockerd's log if it does not come up.
    pub fn start() -> Docker {
        let rootfs = super::rootfs::rootfs();
        let dir = scope::run_dir().join("docker");
        for sub in ["data", "exec"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        std::fs::write(dir.join("daemon.json"), "{}\n").expect("write daemon.json");
        let bridge = crate::unique_name(super::PREFIX);
        let net = net::next_subnet();
        let gateway = format!("{net}.1");
        ok(&mut command("ip", &["link", "add", &bridge, "type", "bridge"]));
        ok(&mut command("ip", &["addr", "add", &format!("{gateway}/24"), "dev", &bridge]));
        ok(&mut command("ip", &["link", "set", &bridge, "up"]));
        let made_run_dirs: Vec<&str> = RUN_DIRS.into_iter().filter(|d| !Path::new(d).exists()).collect();
        made_run_dirs.iter().for_each(|d| scope::note_made(Path::new(d)));
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("create dockerd.log");
        let socket = dir.join("docker.sock");
        let daemon = Command::new(DAEMON)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--bridge",
                &bridge,
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .args(["--userland-proxy=false", "--exec-opt", "native.cgroupdriver=cgroupfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DAEMON}: {e} (Debian's docker.io)"));
        let docker =
            Docker { dir, socket, daemon: Mutex::new(daemon), bridge, gateway, made_run_dirs, saved: OnceLock::new() };
        wait_for(STEP, "dockerd to answer on its socket", || {
            if let Some(status) = docker.daemon.lock().unwrap().try_wait().expect("poll dockerd") {
                panic!("dockerd exited ({status}) while starting; its log:\n{}", docker.log_tail(40));
            }
            let out = output(&mut docker.cli(&["version", "--format", "{{.Server.Version}}"]));
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
        });
        ok(docker.cli(&["import"]).arg(&rootfs.tarball).arg(IMAGE));
        docker
    }

    /// `docker -H SOCKET ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(CLIENT);
        cmd.arg("-H").arg(format!("unix://{}", self.socket.display())).args(args);
        cmd
    }

    /// The socket of the containerd this dockerd started.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("exec/containerd/containerd.sock")
    }

    /// The busybox image as `docker save` writes it (made once), for `ctr image import`.
    pub fn saved_image(&self) -> &Path {
        self.saved.get_or_init(|| {
            let path = self.dir.join("busybox-image.tar");
            ok(self.cli(&["save", IMAGE, "-o"]).arg(&path));
            path
        })
    }

    /// The last `lines` lines of dockerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `docker ps`'s NAMES for the container with full id `id`.
    pub fn ps_name(&self, id: &str) -> Option<String> {
        let out = output(&mut self.cli(&["ps", "--no-trunc", "--format", "{{.ID}}\t{{.Names}}"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix(id)?.strip_prefix('\t').map(str::to_owned))
    }

    fn describe(&self, name: &str) -> Container {
        let inspected = self.inspect_ref(name).unwrap_or_else(|| panic!("docker: {name} is not running"));
        let host_if = net::host_peer(inspected.pid, "eth0");
        Container {
            runtime: "docker",
            id: inspected.id,
            name: inspected.name,
            pid: inspected.pid,
            inner_if: "eth0".to_owned(),
            host_if,
            gateway: self.gateway.clone(),
        }
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
}

impl Runtime for Docker {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn start(&self, name: &str) -> Container {
        ok(&mut self.cli(&["run", "-d", "--name", name, "--network", "bridge", IMAGE, "sleep", "1000000"]));
        self.describe(name)
    }

    fn restart(&self, container: &Container) -> Container {
        ok(&mut self.cli(&["restart", "-t", "0", &container.id]));
        self.describe(&container.id)
    }

    fn remove(&self, container: &Container) {
        quiet(&mut self.cli(&["rm", "-f", &container.id]));
    }

    fn inspect(&self, container: &Container) -> Option<Inspected> {
        self.inspect_ref(&container.id)
    }

    fn exec(&self, container: &Container, args: &[&str]) -> Output {
        output(self.cli(&["exec", &container.id]).args(args))
    }

    fn exec_description(&self, container: &Container, args: &[&str]) -> String {
        format!("docker exec {} {}", container.name, args.join(" "))
    }

    fn netns_paths(&self, container: &Container) -> Vec<PathBuf> {
        let out = ok(&mut self.cli(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", &container.id]));
        vec![PathBuf::from(out.trim())]
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = output(&mut self.cli(&["ps", "-aq", "--no-trunc"]));
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            quiet(&mut self.cli(&["rm", "-f", id]));
        }
        let daemon = self.daemon.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        stop_child(daemon, Duration::from_secs(30));
        super::leftovers::kill_referencing(&self.dir);
        super::leftovers::unmount_below(&self.dir);
        quiet(&mut command("ip", &["link", "del", &self.bridge]));
        super::cgroups::remove("docker");
        let daemons_left = super::all_pids()
            .into_iter()
            .any(|pid| super::cmdline(pid).first().is_some_and(|a| a.contains("containerd") || a.ends_with("dockerd")));
        if !daemons_left {
            for dir in &self.made_run_dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
