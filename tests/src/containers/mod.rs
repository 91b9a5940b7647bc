//! Real container runtimes for the container tests (tests/tests/containers.rs): Docker, LXC, Podman, bare runc,
//! containerd's `ctr` and systemd-nspawn, each running the same busybox root filesystem, with the runtime's own
//! tools and the kernel as oracles.
//!
//! - [`rootfs`]: the busybox root filesystem (and its tarball), made once per test process;
//! - [`scope`]: the run's directory and lock, process-wide fixtures stopped at process exit, the serial lock of
//!   the tests, and removal of what an earlier, killed run left;
//! - [`cgroups`]: the cgroup directories the runtimes make, found and removed in every hierarchy;
//! - [`net`]: kernel oracles inside a container's namespace (links, addresses, counters) and veths by hand;
//! - one file per runtime: [`docker`], [`lxc`], [`podman`], [`runc`], [`ctr`], [`nspawn`].
//!
//! Every runtime implements [`Runtime`]; a test starts a container with [`Running::start`], whose `Drop`
//! removes it with the runtime's own tool even when the test fails. Runtime daemons and networks (dockerd, the
//! LXC bridge, Podman's CNI bridge) are made once per test process and removed when it exits. Every name starts
//! with [`PREFIX`], so what a killed run left is recognisable and removed by the next one.
//!
//! A runtime that cannot run on this machine makes its fixture panic with the runtime's own error message.

pub mod cgroups;
pub mod ctr;
pub mod docker;
pub mod leftovers;
pub mod lxc;
pub mod net;
pub mod nspawn;
pub mod podman;
pub mod rootfs;
pub mod runc;
pub mod scope;

use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Command, Output},
    sync::Arc,
    time::{Duration, Instant},
};

/// The first letters of every container, bridge, veth, cgroup and directory the fixtures make.
pub const PREFIX: &str = "nsmc";

/// How long a runtime may take for one step (start a daemon, a container, get an address).
pub const STEP: Duration = Duration::from_secs(60);

/// One running container as its runtime and the kernel describe it.
#[derive(Clone, Debug)]
pub struct Container {
    /// What `netns-monitor` reports as `container.runtime`: `docker`, `podman`, `lxc`, `runc`, `containerd`,
    /// `systemd-nspawn`.
    pub runtime: &'static str,
    /// The runtime's full id: Docker's and Podman's 64 hex digits, LXC's name, runc's and containerd's id,
    /// nspawn's machine name.
    pub id: String,
    /// The name the runtime shows (`docker ps`, `podman ps`, `lxc-ls`, the runc/ctr id, the machine name).
    pub name: String,
    /// The container's init process, as the host sees it.
    pub pid: u32,
    /// The container's interface to the host (`eth0`, nspawn's `host0`).
    pub inner_if: String,
    /// Its veth peer in the host namespace.
    pub host_if: String,
    /// An address on the host side of that link (the bridge, or the veth), for traffic from inside.
    pub gateway: String,
}

impl Container {
    /// The nsfs inode of its network namespace (`/proc/PID/ns/net`).
    pub fn inode(&self) -> u32 {
        crate::inode(format!("/proc/{}/ns/net", self.pid))
    }

    /// The name `netns-monitor attach --all` gives its namespace: `RUNTIME-ID`, the id cut to 12 characters
    /// when it is a long hex id (as `docker ps` shows it).
    pub fn netns_name(&self) -> String {
        let id = if self.id.len() == 64 && self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            &self.id[..12]
        } else {
            &self.id
        };
        format!("{}-{id}", self.runtime)
    }
}

/// What the runtime itself says about a container (its oracle command: `docker inspect`, `lxc-info`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub id: String,
    pub name: String,
    pub pid: u32,
}

/// A container runtime driven through its own command-line tools.
pub trait Runtime: Send + Sync {
    /// The `container.runtime` value netns-monitor should report for its containers.
    fn kind(&self) -> &'static str;
    /// Creates and starts a container called `name` (made with [`crate::unique_name`] from [`PREFIX`]) with a
    /// veth to the host, and returns it once its address is up.
    fn start(&self, name: &str) -> Container;
    /// Stops and starts `container` again (a new init process, a new network namespace); returns it anew.
    fn restart(&self, container: &Container) -> Container;
    /// Stops and deletes `container` and what the runtime made for it; quiet, and safe to call twice.
    fn remove(&self, container: &Container);
    /// The runtime's own view of `container` (`None` once it is gone or stopped).
    fn inspect(&self, container: &Container) -> Option<Inspected>;
    /// Runs `args` inside `container` with the runtime's own way in (`docker exec`, `lxc-attach`, ...;
    /// `nsenter` where the runtime has none).
    fn exec(&self, container: &Container, args: &[&str]) -> Output;
    /// The command line [`Self::exec`] runs, for messages.
    fn exec_description(&self, container: &Container, args: &[&str]) -> String;
    /// Where the runtime itself says it keeps the namespace mounted (Docker's and Podman's `SandboxKey`).
    fn netns_paths(&self, _container: &Container) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// A container that is removed (with its runtime's tools) on drop, even if the test fails.
pub struct Running {
    pub runtime: Arc<dyn Runtime>,
    pub container: Container,
}

impl Running {
    /// Starts a container with a fresh unique name.
    pub fn start(runtime: Arc<dyn Runtime>) -> Self {
        let name = crate::unique_name(PREFIX);
        let container = runtime.start(&name);
        Self { runtime, container }
    }

    /// Restarts the container (see [`Runtime::restart`]).
    pub fn restart(&mut self) {
        self.container = self.runtime.restart(&self.container);
    }

    /// Removes the container now (the drop does nothing more).
    pub fn remove(&self) {
        self.runtime.remove(&self.container);
    }

    /// Runs `args` inside the container and panics with its output unless it succeeds.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.runtime.exec(&self.container, args);
        assert!(
            out.status.success(),
            "{} failed ({}): {}{}",
            self.runtime.exec_description(&self.container, args),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.runtime.remove(&self.container);
    }
}

/// Runs a runtime's command and returns its output; a command that cannot be started at all is a panic naming
/// the Debian package set-up installs.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {cmd:?}: {e} (the container runtimes come from Debian packages that \
             `cargo xtask setup --tests` installs)"
        )
    })
}

/// Runs a runtime's command, panicking with the runtime's own error message unless it succeeds; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&crate::run_ok(cmd).stdout).into_owned()
}

/// Runs a clean-up command, ignoring whether it succeeds (it may have nothing left to do).
pub fn quiet(cmd: &mut Command) {
    let _ = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
}

/// A command with its arguments.
pub fn command(program: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// Polls `probe` until it returns `Some`, or panics after `deadline` with `what` and the last `failure`.
pub fn wait_for<T>(deadline: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The parent process of `pid` (field 4 of `/proc/PID/stat`).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// The children of `pid` (from `/proc/PID/task/*/children`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    children
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').map(|at| stat[at + 2..].chars().next()))
        .is_some_and(|state| state != Some('Z') && state != Some('X'))
}

/// The command line of `pid`, argument by argument.
pub fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Every process id in `/proc`.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// Where this process keeps everything the runtimes write (see [`scope::run_dir`]).
pub fn run_dir() -> PathBuf {
    scope::run_dir()
}
