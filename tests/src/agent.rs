//! Running the agent as a real process for the tests: its own pin directory (so tests never share pinned maps
//! or links with each other or with a real agent), started and killed like an operator would.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines},
    process::{Child, ChildStderr},
};

use crate::{netns, unique_name};

/// A bpffs directory for one agent's pins, removed (which detaches the classifiers pinned there) on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(prefix: &str) -> Self {
        Self { path: PathBuf::from(format!("/sys/fs/bpf/{}", unique_name(prefix))) }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `netns-monitor run`. Dropping it kills the agent and removes its pin directory (which detaches
/// the classifiers it left pinned).
pub struct AgentProcess {
    pub pin_dir: PathBuf,
    /// Where its metrics endpoint listens.
    pub listen: std::net::SocketAddr,
    _pins: PinDir,
    pub child: Child,
    pub stderr: Lines<BufReader<ChildStderr>>,
    extra: Vec<String>,
}

impl AgentProcess {
    /// Starts an agent with a fresh pin directory and a free local port for its endpoint (unless `extra` has a
    /// `--listen`), and waits until it has attached everything.
    pub async fn start(extra: &[&str]) -> Self {
        let pins = PinDir::new("nsm-agent");
        let pin_dir = pins.path.clone();
        let mut extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if !extra.iter().any(|arg| arg == "--listen") {
            extra.extend(["--listen".to_owned(), format!("127.0.0.1:{}", crate::monitoring::free_port())]);
        }
        let at = extra.iter().position(|arg| arg == "--listen").expect("--listen") + 1;
        let listen = extra[at].parse().expect("--listen takes an address");
        let (child, stderr) = spawn(&pin_dir, &extra).await;
        Self { pin_dir, listen, _pins: pins, child, stderr, extra }
    }

    /// Kills the agent with SIGKILL (no clean-up of any kind) and waits for it to be gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("SIGKILL the agent");
        self.child.wait().await.expect("reap the agent");
    }

    /// Starts the agent again on the same pin directory (after [`Self::kill9`]).
    pub async fn restart(&mut self) {
        let (child, stderr) = spawn(&self.pin_dir, &self.extra).await;
        self.child = child;
        self.stderr = stderr;
    }

    /// `netns-monitor stats --json` on this agent's pin directory.
    pub fn stats(&self) -> Vec<Value> {
        let pin = self.pin_dir.display().to_string();
        let out = netns::ok(&["stats", "--json", "--pin-dir", &pin]);
        serde_json::from_str(&out).expect("stats --json is JSON")
    }

    /// The stats entry of interface `device` in namespace `netns` (inode), if the agent counts it.
    pub fn interface(&self, netns: u32, device: &str) -> Option<Value> {
        self.stats()
            .into_iter()
            .find(|ns| ns["netns"] == netns)
            .and_then(|ns| ns["interfaces"].as_array()?.iter().find(|i| i["device"] == device).cloned())
    }

    /// Waits until the agent counts interface `device` of namespace `netns`.
    pub fn wait_counting(&self, netns: u32, device: &str, deadline: Duration) {
        let start = Instant::now();
        while self.interface(netns, device).is_none() {
            assert!(start.elapsed() < deadline, "agent did not start counting {device} in {netns} within {deadline:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn spawn(pin_dir: &std::path::Path, extra: &[String]) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = crate::cli_command()
        .arg("run")
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netns-monitor run");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.expect("read agent stderr") {
            let ready = line.contains("watching namespaces");
            log.push(line);
            if ready {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(ready, Ok(true)), "the agent did not start; its log: {log:#?}");
    (child, stderr)
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // Killed before its pin directory (a field, dropped after this) goes.
        let _ = self.child.start_kill();
    }
}

/// The kernel's own counters of `device` inside named namespace `netns`: (rx_bytes, rx_packets, tx_bytes,
/// tx_packets).
pub fn kernel_stats(netns: &str, device: &str) -> [u64; 4] {
    ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"].map(|counter| {
        let out = netns::sh_ok(
            "ip",
            &["netns", "exec", netns, "cat", &format!("/sys/class/net/{device}/statistics/{counter}")],
        );
        out.trim().parse().unwrap_or_else(|e| panic!("{counter} of {device} in {netns}: {e}: {out:?}"))
    })
}

/// The agent's counters of an interface in the same order as [`kernel_stats`].
pub fn agent_stats(interface: &Value) -> [u64; 4] {
    [&interface["rx"]["bytes"], &interface["rx"]["packets"], &interface["tx"]["bytes"], &interface["tx"]["packets"]]
        .map(|v| v.as_u64().expect("counter"))
}

/// Two named namespaces A and B, IPv6 off (no spontaneous traffic), and a veth between them: `va` in A with
/// NET.1, `vb` in B with NET.2. Made after the agent started, with the product's own CLI.
pub struct VethPair {
    _guards: (netns::NetnsGuard, netns::NetnsGuard),
    pub a: String,
    pub b: String,
    pub va: String,
    pub vb: String,
    /// The /24 prefix: `NET.1` is `va`, `NET.2` is `vb`.
    pub net: String,
}

impl VethPair {
    /// `index` picks the subnet (see [`netns::subnet`]); unique per test.
    pub fn new(index: u8) -> Self {
        let (a, b) = (unique_name("nsm-ta"), unique_name("nsm-tb"));
        let (va, vb) = (unique_name("va"), unique_name("vb"));
        let guards = (netns::NetnsGuard::new(&a), netns::NetnsGuard::new(&b));
        netns::ok(&["add", &a]);
        netns::ok(&["add", &b]);
        for ns in [&a, &b] {
            netns::sh_ok("ip", &["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            netns::sh_ok("ip", &["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        }
        let net = netns::subnet(index);
        netns::veth_between(&a, &va, &b, &vb, &net);
        Self { _guards: guards, a, b, va, vb, net }
    }

    /// The inode of namespace `ns` (`self.a` or `self.b`).
    pub fn inode(&self, ns: &str) -> u32 {
        crate::inode(format!("/run/netns/{ns}"))
    }
}
