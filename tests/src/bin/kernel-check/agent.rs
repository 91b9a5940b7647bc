//! The agent on this kernel, as an operator runs it: `netns-monitor run` under the VM's default limits
//! (RLIMIT_MEMLOCK is 64 KiB before 5.11), its least-privilege start, two namespaces whose veth ends share an
//! ifindex with traffic in both and counters equal to the kernel's for every end, then `kill -9`, traffic while
//! it is down, a restart that takes over what the first left attached, and counters still equal.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use netns_monitor::privileges::{AGENT_OPTIONAL, AGENT_REQUIRED, AGENT_STARTUP_ONLY, CapSet};
use netns_monitor_tests::reliability::thread_capabilities;
use serde_json::Value;

use crate::{
    report::{Outcome, Reporter},
    sys::{self, kernel_stats, named},
};

/// The agent's pin directory; per process, as bpffs is shared with whatever else runs on the machine.
fn pin_dir() -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/nmk-agent-{}", std::process::id()))
}
const LISTEN: &str = "127.0.0.1:10931";
/// Generous: the verifier of 5.10 and 6.1 under software emulation takes tens of seconds.
const START_DEADLINE: Duration = Duration::from_secs(300);
const DEADLINE: Duration = Duration::from_secs(30);
const DATAGRAMS: usize = 50;

/// The two namespaces, each reached from the host by a veth whose inner end is `vp0` (ifindex 2 in both).
const SIDES: [(&str, &str, &str); 2] = [("nmk-a", "nmk-ha", "10.201.1"), ("nmk-b", "nmk-hb", "10.201.2")];
const INNER: &str = "vp0";

/// A container's namespace as runtimes make it: (namespace, host end, inner end once renamed, subnet).
const CONTAINER: (&str, &str, &str, &str) = ("nmk-c", "nmk-hc", "eth0", "10.201.3");

/// The checks of this scenario, in order.
const CHECKS: [&str; 7] = [
    "agent-start",
    "least-privilege",
    "traffic",
    "runtime-veth",
    "counting-while-down",
    "restart",
    "transitions-pinned",
];

pub fn run(report: &mut Reporter, binary: &Path) {
    if !CHECKS.iter().any(|check| report.wanted(check)) {
        return;
    }
    let mut scenario = Scenario { binary: binary.to_owned(), agent: None, log: Arc::default() };
    let started = Instant::now();
    let ready = scenario.start_agent();
    let ms = started.elapsed().as_millis();
    match ready {
        // Its stderr is a pipe here, as under systemd or in a log file: plain text, no colour escapes.
        Ok(()) if scenario.log_text().contains('\u{1b}') => {
            report.emit("agent-start", Outcome::Fail("colour escapes in a log written to a pipe".into()), Some(ms));
        }
        Ok(()) => report.emit("agent-start", Outcome::Pass(scenario.memlock_detail()), Some(ms)),
        Err(why) => {
            report.emit("agent-start", Outcome::Fail(why), Some(ms));
            for check in &CHECKS[1..] {
                report.emit(check, Outcome::Fail("the agent did not start".into()), None);
            }
            return;
        }
    }
    report.check("least-privilege", || scenario.least_privilege());
    report.check("traffic", || scenario.traffic());
    report.check("runtime-veth", || scenario.runtime_veth());
    report.check("counting-while-down", || scenario.counting_while_down());
    report.check("restart", || scenario.restart());
    report.check("transitions-pinned", || scenario.transitions_pinned());
}

struct Scenario {
    binary: PathBuf,
    agent: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Scenario {
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.binary).args(args).output().expect("run netns-monitor");
        assert!(
            out.status.success(),
            "netns-monitor {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `netns-monitor run` (after killing one still running) and waits for "watching namespaces".
    fn start_agent(&mut self) -> Result<(), String> {
        self.kill_agent();
        let mut command = Command::new(&self.binary);
        command.arg("run").arg("--pin-dir").arg(pin_dir()).args(["--listen", LISTEN]);
        command.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
        sys::with_original_memlock(&mut command);
        let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&self.log);
        let mark = log.lock().unwrap().len();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.agent = Some(child);
        let started = Instant::now();
        loop {
            if self.log.lock().unwrap()[mark..].iter().any(|l| l.contains("watching namespaces")) {
                return Ok(());
            }
            let exited = self.agent.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > START_DEADLINE {
                let log = self.log.lock().unwrap()[mark..].join("\n");
                let how = exited.map_or_else(|| format!("not ready within {START_DEADLINE:?}"), |s| format!("{s}"));
                return Err(format!("{how}; its log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.agent.as_ref().expect("agent running").id()
    }

    fn memlock_detail(&self) -> String {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap_or_default();
        let memlock = limits.lines().find(|l| l.starts_with("Max locked memory")).unwrap_or("").to_owned();
        format!(
            "started with RLIMIT_MEMLOCK {} (soft hard); the agent runs with [{}]",
            sys::original_memlock(),
            squeeze(&memlock)
        )
    }

    fn least_privilege(&mut self) -> Outcome {
        let asked = CapSet::of(AGENT_REQUIRED.iter().chain(AGENT_OPTIONAL).map(|need| need.cap));
        let expected = asked.without(CapSet::of(AGENT_STARTUP_ONLY.iter().copied()));
        let threads = thread_capabilities(self.pid());
        assert!(!threads.is_empty(), "no threads of the agent");
        for caps in &threads {
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                let held = CapSet(caps[set]);
                assert_eq!(
                    held,
                    expected,
                    "{set} of an agent thread: {} instead of {}",
                    held.names(),
                    expected.names()
                );
            }
            assert_eq!((caps["CapInh"], caps["CapAmb"]), (0, 0), "{caps:?}");
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        assert!(status.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')), "no_new_privs is set");
        Outcome::Pass(format!("{} threads hold exactly {}", threads.len(), expected.names()))
    }

    /// The four veth ends: (namespace file, device, label).
    fn ends() -> Vec<(Option<PathBuf>, String)> {
        let mut ends = Vec::new();
        for (ns, host, _) in SIDES {
            ends.push((None, host.to_owned()));
            ends.push((Some(named(ns)), INNER.to_owned()));
        }
        ends
    }

    /// Makes the namespaces and veths (IPv6 off first: nothing spontaneous flows), waits until the agent counts
    /// every end, sends traffic both ways on both sides and compares every end with the kernel.
    fn traffic(&mut self) -> Outcome {
        for (ns, host, net) in SIDES {
            self.cli(&["add", ns]);
            sys::in_netns(Some(&named(ns)), sys::disable_ipv6);
            let (address, peer) = (format!("{net}.1/24"), format!("{net}.2/24"));
            self.cli(&["veth", "add", host, INNER, "--netns", ns, "--address", &address, "--peer-address", &peer]);
        }
        let indexes: Vec<u32> = SIDES.iter().map(|(ns, _, _)| sys::ifindex(Some(&named(ns)), INNER)).collect();
        assert_eq!(indexes[0], indexes[1], "the inner ends should share an ifindex: {indexes:?}");
        let started = Instant::now();
        for (ns, device) in Self::ends() {
            while self.agent_stats(ns.as_deref(), &device).is_none() {
                assert!(
                    started.elapsed() < DEADLINE,
                    "the agent never counted {device} in {ns:?}; log: {}",
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        exchange();
        let detail = self.assert_equal_kernel();
        Outcome::Pass(format!("inner ends share ifindex {}; {detail}", indexes[0]))
    }

    /// A veth made the way Docker, Podman and LXC make theirs (created here, the peer moved into the container's
    /// namespace and renamed `eth0` there, IPv6 on so packets flow the moment it is up) while the agent runs:
    /// no attach failure, and both ends' totals equal the kernel's from the first packet. The move waits until
    /// the agent has attached to the peer here, the order a slow host (or a TCG guest) sees.
    fn runtime_veth(&mut self) -> Outcome {
        let (ns, host, inner, net) = CONTAINER;
        self.cli(&["add", ns]);
        let address = |last: &str| (format!("{net}.{last}").parse().expect("address"), 24);
        // The agent attaches to the peer while it is still here: its classifiers (a TCX link, or clsact filters)
        // move with it, and attaching in the container's namespace must neither fail nor count twice.
        let started = Instant::now();
        sys::runtime_style_veth(host, "nmk-tmp", &named(ns), inner, [address("1"), address("2")], || {
            while self.agent_stats(None, "nmk-tmp").is_none() {
                assert!(started.elapsed() < DEADLINE, "the agent never counted nmk-tmp; log: {}", self.log_text());
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let ends = [(None, host.to_owned()), (Some(named(ns)), inner.to_owned())];
        for (ns, device) in &ends {
            while self.agent_stats(ns.as_deref(), device).is_none() {
                assert!(started.elapsed() < DEADLINE, "the agent never counted {device}; log: {}", self.log_text());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        exchange_with(ns, net);
        let detail = self.wait_equal_kernel(&ends);
        let log = self.log_text();
        assert!(!log.contains("cannot attach"), "a renamed and moved interface is no attach failure: {log}");
        let failures = metric_sum("netns_monitor_attach_failures_total");
        assert_eq!(failures, 0.0, "netns_monitor_attach_failures_total");
        Outcome::Pass(format!("created, moved, renamed {inner}, up: no attach failure; {detail}"))
    }

    /// `kill -9`, traffic, then the pinned counters (read without an agent) must still equal the kernel's.
    fn counting_while_down(&mut self) -> Outcome {
        assert!(self.agent.is_some(), "no agent running");
        self.kill_agent();
        exchange();
        let detail = self.assert_equal_kernel();
        Outcome::Pass(format!("after kill -9: {detail}"))
    }

    /// A second agent on the same pin directory takes over: traffic, counters equal, and exactly one program
    /// of each classifier is loaded (the old ones were replaced in place, not attached beside).
    fn restart(&mut self) -> Outcome {
        self.start_agent().unwrap_or_else(|why| panic!("the agent did not start again: {why}"));
        exchange();
        let detail = self.assert_equal_kernel();
        let started = Instant::now();
        let counts = loop {
            // A replaced program is freed after an RCU grace period.
            let counts = ["tc_ingress", "tc_egress"].map(our_programs_named);
            if counts == [1, 1] || started.elapsed() > DEADLINE {
                break counts;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(counts, [1, 1], "programs loaded [tc_ingress, tc_egress] after the restart");
        let pins = std::fs::read_dir(pin_dir().join("links")).map(|d| d.count()).unwrap_or(0);
        let how = if netns_monitor::traffic::attach::tcx_available() {
            format!("{pins} pinned TCX links taken over")
        } else {
            "clsact/cls_bpf filters taken over in place".to_owned()
        };
        Outcome::Pass(format!("{how}, one program per direction; {detail}"))
    }

    /// Whether the transition links outlive the agent on this kernel.
    fn transitions_pinned(&mut self) -> Outcome {
        let pinned = std::fs::read_dir(pin_dir().join("transitions")).map(|d| d.count()).unwrap_or(0);
        if pinned > 0 {
            return Outcome::Pass(format!(
                "{pinned} transition links pinned: transitions are traced while the agent is down"
            ));
        }
        let log = self.log_text();
        assert!(
            log.contains("cannot pin tracepoint links"),
            "no pinned transition links and the log does not say why: {log}"
        );
        Outcome::Degraded(
            "tracepoint links cannot be pinned (perf-event bpf links need 5.15): transitions are not traced while the \
             agent is down; the agent logs this at start"
                .into(),
        )
    }

    /// Waits until the agent's counters of every end equal the kernel's; returns them.
    fn assert_equal_kernel(&self) -> String {
        self.wait_equal_kernel(&Self::ends())
    }

    /// Waits until the agent's counters of each of `ends` equal the kernel's; returns them.
    fn wait_equal_kernel(&self, ends: &[(Option<PathBuf>, String)]) -> String {
        let started = Instant::now();
        loop {
            let mut differ = Vec::new();
            let mut equal = Vec::new();
            for (ns, device) in ends {
                let kernel = kernel_stats(ns.as_deref(), device);
                let ours = self.agent_stats(ns.as_deref(), device);
                let label = format!("{}/{device}", ns.as_ref().map_or("host".into(), |p| p.display().to_string()));
                if ours == Some(kernel) {
                    equal.push(format!("{label} {kernel:?}"));
                } else {
                    differ.push(format!("{label}: agent {ours:?}, kernel {kernel:?}"));
                }
            }
            if differ.is_empty() {
                return format!(
                    "[rx_bytes, rx_packets, tx_bytes, tx_packets] equal the kernel's: {}",
                    equal.join(", ")
                );
            }
            assert!(started.elapsed() < DEADLINE, "counters differ: {}", differ.join("; "));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `[rx_bytes, rx_packets, tx_bytes, tx_packets]` of `device` in `netns` from `netns-monitor stats --json`.
    fn agent_stats(&self, netns: Option<&Path>, device: &str) -> Option<[u64; 4]> {
        let inode = netns_monitor_tests::inode(netns.unwrap_or(Path::new("/proc/self/ns/net")));
        let pins = pin_dir().display().to_string();
        let stats: Value = serde_json::from_str(&self.cli(&["stats", "--json", "--pin-dir", &pins])).ok()?;
        let interface = stats
            .as_array()?
            .iter()
            .find(|ns| ns["netns"] == inode)?
            .get("interfaces")?
            .as_array()?
            .iter()
            .find(|i| i["device"] == device)?
            .clone();
        let get = |dir: &str, what: &str| interface[dir][what].as_u64();
        Some([get("rx", "bytes")?, get("rx", "packets")?, get("tx", "bytes")?, get("tx", "packets")?])
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    fn clean_up(&mut self) {
        self.kill_agent();
        for ns in SIDES.map(|(ns, _, _)| ns).into_iter().chain([CONTAINER.0]) {
            let _ = Command::new(&self.binary).args(["del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(pin_dir());
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// From the host to an echo socket in each namespace and back: `DATAGRAMS` each way on both sides.
fn exchange() {
    for (ns, _, net) in SIDES {
        exchange_with(ns, net);
    }
}

/// `DATAGRAMS` from the host to an echo socket at `NET.2` in namespace `ns`, and back.
fn exchange_with(ns: &str, net: &str) {
    let target: SocketAddr = format!("{net}.2:7000").parse().expect("address");
    let echo = sys::in_netns(Some(&named(ns)), move || UdpSocket::bind(target).expect("bind the echo socket"));
    echo.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..DATAGRAMS {
            let (len, from) = echo.recv_from(&mut buf).expect("a datagram reaches the namespace");
            echo.send_to(&buf[..len], from).expect("echo");
        }
    });
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind the sender");
    socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 2048];
    for n in 0..DATAGRAMS {
        socket.send_to(&[n as u8; 300], target).expect("send");
        // One at a time: the first waits for ARP, and nothing is dropped in its queue.
        socket.recv(&mut buf).expect("the echo comes back");
    }
    server.join().expect("echo thread");
}

/// The sum of every series of `family` on the agent's endpoint.
fn metric_sum(family: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(LISTEN).expect("connect to the agent's endpoint");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {LISTEN}\r\n\r\n").expect("send the request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .filter(|line| line.starts_with(family) && line[family.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many programs named `name` that count into this scenario's pinned traffic map the kernel has loaded.
fn our_programs_named(name: &str) -> usize {
    let map = aya::maps::MapData::from_pin(pin_dir().join("TRAFFIC")).expect("open the pinned TRAFFIC map");
    let id = map.info().expect("TRAFFIC map info").id();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|info| info.name_as_str() == Some(name))
        .filter(|info| info.map_ids().ok().flatten().is_some_and(|ids| ids.contains(&id)))
        .count()
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
