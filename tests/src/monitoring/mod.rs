//! Fixtures for the monitoring and deployment deliverables (`grafana/`, `deploy/`): the metrics contract
//! (`docs/metrics.md`) as data, a PromQL scanner that checks expressions against it, the dashboards as data,
//! a real Prometheus server, a tiny HTTP client, and the Python tools the set-up installs.
//!
//! The external programs are the oracles: Prometheus evaluates the dashboards' PromQL, `promtool` the alert
//! rules, `systemd-analyze` the unit, `kubernetes-validate` the manifests. What they need is installed by
//! `cargo xtask setup --tests` (which `cargo xtask test` runs); a missing tool is a failure that says so.

pub mod contract;
pub mod grafana;
pub mod http;
pub mod prometheus;
pub mod promql;
pub mod python;

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent directory").to_path_buf()
}

/// A file of the repository, by its path from the workspace root.
pub fn repo_file(relative: &str) -> PathBuf {
    workspace_root().join(relative)
}

/// Reads a repository file, panicking with its path.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The absolute path of `program` on PATH, or a panic naming the Debian package and the set-up command.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed: it comes with Debian's `{package}` package, which \
             `cargo xtask setup --tests` (run by `cargo xtask test`) installs"
        )
    })
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it; the short race until the
/// server binds it is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// A private directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(crate::unique_name(prefix));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A long-running child process (the agent, Prometheus) whose stdout and stderr go to a log file. Dropping
/// it sends SIGTERM, waits a bounded time for a clean exit, then kills it.
pub struct Daemon {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with its output appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self { name: name.to_owned(), child, log }
    }

    /// The exit status if the process has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for child")
    }

    /// The last `lines` lines of the process's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics with the log unless the process is still running.
    pub fn assert_running(&mut self, context: &str) {
        if let Some(status) = self.exited() {
            panic!("{} exited ({status}) {context}; its output ends with:\n{}", self.name, self.log_tail(40));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
