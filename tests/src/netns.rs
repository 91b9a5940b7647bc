//! Fixtures for the namespace-management tests: running the CLI, guards that remove what a test made (with
//! iproute2, independently of the code under test), and TCP exchanges across namespaces.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Output},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

/// Path of the CLI under test: the product's entry point, built as this package's `netns-monitor-cli` binary,
/// which cargo puts next to the `deps/` directory holding the test executables.
pub fn cli_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = dir.join("netns-monitor-cli");
    assert!(path.exists(), "{} is missing: run the tests with cargo, which builds it", path.display());
    path
}

/// The CLI under test, as a command.
pub fn cli() -> Command {
    Command::new(cli_path())
}

/// Runs the CLI with `args` and returns its output, whatever the exit code.
pub fn run(args: &[&str]) -> Output {
    cli().args(args).output().unwrap_or_else(|e| panic!("cannot run netns-monitor {args:?}: {e}"))
}

/// Runs the CLI and panics (with its stderr) unless it succeeds; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "netns-monitor {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs the CLI expecting failure with `code`; returns stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "netns-monitor {args:?}: expected exit {code}, stderr: {stderr}");
    stderr
}

/// Runs an oracle command (iproute2, nft, ...) and returns its output.
pub fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"))
}

/// Runs an oracle command, panicking unless it succeeds; returns stdout.
pub fn sh_ok(program: &str, args: &[&str]) -> String {
    let out = sh(program, args);
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Names in `ip netns list` (which prints `NAME` or `NAME (id: N)`).
pub fn ip_netns_list() -> Vec<String> {
    sh_ok("ip", &["netns", "list"]).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// A child process killed and reaped on drop (so a failed assertion leaves nothing running).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a named namespace, its nat/forward rules and host links on drop, with iproute2 and nft.
pub struct NetnsGuard {
    pub name: String,
    links: Vec<String>,
}

impl NetnsGuard {
    /// Guards `name` (whoever creates it).
    pub fn new(name: impl Into<String>) -> Self {
        NetnsGuard { name: name.into(), links: Vec::new() }
    }

    /// Also deletes host interface `link` on drop.
    pub fn link(mut self, link: impl Into<String>) -> Self {
        self.links.push(link.into());
        self
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = sh("ip", &["link", "del", link]);
        }
        for handle in nft_rule_handles(&self.name) {
            let _ = sh("nft", &["delete", "rule", "ip", "netns_monitor", &handle.0, "handle", &handle.1]);
        }
        // symlink_metadata: `attach --all`'s names are symlinks, which dangle once their process is gone.
        if std::fs::symlink_metadata(Path::new("/run/netns").join(&self.name)).is_ok() {
            let _ = sh("ip", &["netns", "del", &self.name]);
        }
        let _ = std::fs::remove_file(Path::new(AUTONAME_REGISTRY).join(&self.name));
    }
}

/// Where `attach --all` records the names it made.
pub const AUTONAME_REGISTRY: &str = "/run/netns-monitor/names";

/// Removes, on drop, every name `attach --all` made that leads to one of `pids` (made before the command
/// runs, so a failing test leaves none of its names behind, whatever the command printed).
pub struct AttachAllGuard {
    pub pids: Vec<u32>,
}

impl AttachAllGuard {
    /// The `/run/netns` names that are symlinks to `/proc/PID/ns/net` of one of the guarded pids.
    pub fn names(&self) -> Vec<String> {
        let entries = std::fs::read_dir("/run/netns").into_iter().flatten().flatten();
        entries
            .filter(|entry| {
                let target = std::fs::read_link(entry.path()).unwrap_or_default();
                self.pids.iter().any(|pid| target == Path::new(&format!("/proc/{pid}/ns/net")))
            })
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect()
    }
}

impl Drop for AttachAllGuard {
    fn drop(&mut self) {
        for name in self.names() {
            drop(NetnsGuard::new(name));
        }
    }
}

/// Lines of `nft -a list table ip netns_monitor` that belong to namespace `name` (tags `nat/NAME`,
/// `forward/NAME/...`), with their chain.
pub fn nft_rules_of(name: &str) -> Vec<(String, String)> {
    let out = sh("nft", &["-a", "list", "table", "ip", "netns_monitor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let (nat, forward) = (format!("comment \"nat/{name}\""), format!("comment \"forward/{name}/"));
    let mut chain = String::new();
    let mut rules = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches(" {").split_whitespace().next().unwrap_or("").to_owned();
        } else if line.contains(&nat) || line.contains(&forward) {
            rules.push((chain.clone(), line.to_owned()));
        }
    }
    rules
}

fn nft_rule_handles(name: &str) -> Vec<(String, String)> {
    nft_rules_of(name)
        .into_iter()
        .filter_map(|(chain, line)| Some((chain, line.rsplit("# handle ").next()?.trim().to_owned())))
        .collect()
}

/// Runs `work` on a thread inside the named namespace; sockets it creates stay in that namespace.
pub fn in_named<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(Path::new("/run/netns").join(name)).unwrap_or_else(|e| panic!("open netns {name}: {e}"));
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
        work()
    })
    .join()
    .expect("namespace thread panicked")
}

/// A listener bound inside namespace `netns` (`None`: the test's own namespace).
pub fn listen(netns: Option<&str>, addr: SocketAddr) -> TcpListener {
    let bind = move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    match netns {
        Some(name) => in_named(name, bind),
        None => bind(),
    }
}

/// Connects from inside `netns` (`None`: the test's namespace), retrying until `deadline` while the path comes
/// up (DAD, neighbour resolution); returns the last error if it never connects.
pub fn connect(netns: Option<&str>, to: SocketAddr, deadline: Duration) -> std::io::Result<TcpStream> {
    let attempt = move || -> std::io::Result<TcpStream> {
        let start = Instant::now();
        loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                Ok(stream) => return Ok(stream),
                Err(err) if start.elapsed() >= deadline => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    match netns {
        Some(name) => in_named(name, attempt),
        None => attempt(),
    }
}

/// Accepts one connection on `listener` within `deadline`, reads a line, answers `reply`, and returns what it
/// read and the peer address it saw.
pub fn serve_once(
    listener: TcpListener,
    reply: &'static str,
    deadline: Duration,
) -> mpsc::Receiver<(String, SocketAddr)> {
    let (tx, rx) = mpsc::channel();
    listener.set_nonblocking(true).expect("nonblocking listener");
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(_) if start.elapsed() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return,
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream.set_read_timeout(Some(deadline)).expect("read timeout");
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap_or(0);
        let _ = stream.write_all(reply.as_bytes());
        let _ = tx.send((String::from_utf8_lossy(&buf[..n]).into_owned(), peer));
    });
    rx
}

/// Sends `message` on `stream` and reads the answer.
pub fn exchange(mut stream: TcpStream, message: &str) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    stream.write_all(message.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("receive");
    answer
}

/// A /24 no other test (in this or another concurrently running test binary) uses: `10.A.B`, with `A` from the
/// process id and `B` the caller's index.
pub fn subnet(index: u8) -> String {
    format!("10.{}.{index}", 100 + std::process::id() % 150)
}

/// Joins existing named namespaces `a` and `b` with a veth made by the CLI under test: `va` in `a` with
/// `NET.1/24`, `vb` in `b` with `NET.2/24` (`net` as from [`subnet`]).
pub fn veth_between(a: &str, va: &str, b: &str, vb: &str, net: &str) {
    let (address, peer_address) = (format!("{net}.1/24"), format!("{net}.2/24"));
    ok(&[
        "veth",
        "add",
        va,
        vb,
        "--host-netns",
        a,
        "--netns",
        b,
        "--address",
        &address,
        "--peer-address",
        &peer_address,
    ]);
}

/// A TCP port unlikely to be used by anything else: 20000 + a process-derived offset + `index`.
pub fn port(index: u16) -> u16 {
    20_000 + (std::process::id() % 400) as u16 * 100 + index
}

/// Waits until `condition` holds, polling, or panics with `what` after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A socket address from an IP and a port.
pub fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("socket address")
}

/// A named namespace plus a veth to it from the host, addressed `NET.1/24` (host) / `NET.2/24` (namespace),
/// with a default route via the host. Returns its guard and the host-side interface name.
pub fn attached(prefix: &str, net: &str) -> (NetnsGuard, String) {
    let name = crate::unique_name(prefix);
    let host_if = crate::unique_name("h");
    let guard = NetnsGuard::new(&name).link(&host_if);
    ok(&["add", &name]);
    ok(&[
        "veth",
        "add",
        &host_if,
        "eth0",
        "--netns",
        &name,
        "--address",
        &format!("{net}.1/24"),
        "--peer-address",
        &format!("{net}.2/24"),
        "--peer-gateway",
        &format!("{net}.1"),
    ]);
    (guard, host_if)
}
