//! Least privilege, with the kernel as the oracle (`/proc/PID/task/*/status`): the agent started (with
//! util-linux `setpriv`) with exactly the capabilities it asks for attaches and counts, and afterwards every one
//! of its threads holds only what continuing work needs; with only the required ones it still works and says
//! what it cannot see; with any required one missing it refuses to start, naming it, before anything is made.
//! And it listens on loopback only unless told otherwise.

use std::{
    net::{TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use netns_monitor::privileges::{
    AGENT_OPTIONAL, AGENT_REQUIRED, AGENT_STARTUP_ONLY, CAP_NET_BIND_SERVICE, CapSet, Capability,
};
use netns_monitor_tests::{
    agent::{PinDir, VethPair, agent_stats, kernel_stats},
    monitoring::{free_port, require_program},
    netns::{self, addr, in_named, port},
    reliability::{Agent, status_field, thread_capabilities},
    require_root,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// `setpriv --bounding-set -all,+a,+b -- ` for these capabilities: as root, execve then grants exactly the
/// bounding set (permitted = effective = bounding; inheritable and ambient stay empty).
fn setpriv(caps: impl IntoIterator<Item = Capability>) -> Vec<String> {
    let setpriv = require_program("setpriv", "util-linux").display().to_string();
    let mut set = "-all".to_owned();
    for cap in caps {
        set.push_str(",+");
        set.push_str(&cap.name().trim_start_matches("CAP_").to_ascii_lowercase());
    }
    vec![setpriv, "--bounding-set".into(), set, "--".into()]
}

fn required() -> Vec<Capability> {
    AGENT_REQUIRED.iter().map(|need| need.cap).collect()
}

fn asked_for() -> Vec<Capability> {
    AGENT_REQUIRED.iter().chain(AGENT_OPTIONAL).map(|need| need.cap).collect()
}

/// Every thread of the agent holds exactly `expected` (effective and permitted), nothing inheritable or
/// ambient, a bounding set of `bounding`, and no_new_privs is set (so the bounding set could only matter to an
/// execve that cannot gain anything).
fn assert_holds_exactly(agent: &Agent, expected: CapSet, bounding: CapSet) {
    let threads = thread_capabilities(agent.pid());
    assert!(!threads.is_empty());
    for caps in &threads {
        for (set, want) in [("CapEff", expected), ("CapPrm", expected), ("CapBnd", bounding)] {
            assert_eq!(
                CapSet(caps[set]),
                want,
                "{set} of an agent thread: {} instead of {}",
                CapSet(caps[set]).names(),
                want.names()
            );
        }
        assert_eq!((caps["CapInh"], caps["CapAmb"]), (0, 0), "{caps:?}");
    }
    assert_eq!(status_field(agent.pid(), "NoNewPrivs:").as_deref(), Some("1"));
}

/// What the agent keeps after start-up out of `given`.
fn continuing(given: &[Capability]) -> CapSet {
    CapSet::of(given.iter().copied()).without(CapSet::of(AGENT_STARTUP_ONLY.iter().copied()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_it_drops_every_other_capability_from_every_set() {
    require_root();
    let agent = Agent::start(&[]).await;
    // Root holds CAP_SETPCAP, so the bounding set is narrowed too.
    assert_holds_exactly(&agent, continuing(&asked_for()), continuing(&asked_for()));
    let log = agent.log();
    let line = log.iter().find(|l| l.contains("start-up capabilities dropped")).expect("says what it kept");
    assert!(line.contains("CAP_BPF") && !line.contains("CAP_PERFMON"), "{line}");
}

/// Makes two namespaces and a veth after the agent started, sends datagrams across and waits until the agent's
/// counters of both ends equal the kernel's: link notifications, setns and attaching all work.
fn assert_counts_new_veths(agent: &Agent, index: u8) {
    let pair = VethPair::new(index);
    let ends = [(pair.a.clone(), pair.va.clone()), (pair.b.clone(), pair.vb.clone())];
    let target = addr(&format!("{}.2", pair.net), port(u16::from(index)));
    let receiver = in_named(&pair.b, move || UdpSocket::bind(target).expect("bind in B"));
    let start = Instant::now();
    for (ns, dev) in &ends {
        let inode = pair.inode(ns);
        while interface(agent, inode, dev).is_none() {
            assert!(start.elapsed() < DEADLINE, "{dev} in {ns} was never attached; log: {:#?}", agent.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    in_named(&pair.a, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..50 {
            socket.send_to(&[4u8; 200], target).unwrap();
        }
    });
    for (ns, dev) in &ends {
        let inode = pair.inode(ns);
        loop {
            let (kernel, ours) = (kernel_stats(ns, dev), interface(agent, inode, dev).map(|i| agent_stats(&i)));
            if Some(kernel) == ours && kernel[1] + kernel[3] >= 50 {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "{dev}: agent {ours:?}, kernel {kernel:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(receiver);
}

fn interface(agent: &Agent, netns: u32, device: &str) -> Option<serde_json::Value> {
    agent
        .stats()
        .into_iter()
        .find(|ns| ns["netns"] == netns)
        .and_then(|ns| ns["interfaces"].as_array()?.iter().find(|i| i["device"] == device).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_exactly_the_capabilities_it_asks_for_it_works_and_keeps_only_what_it_needs() {
    require_root();
    let wrapper = setpriv(asked_for());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = Agent::start_wrapped(&wrapper, &[]).await;
    // Without CAP_SETPCAP the bounding set stays what it was given.
    let given = CapSet::of(asked_for());
    assert_holds_exactly(&agent, continuing(&asked_for()), given);
    assert!(!agent.log().iter().any(|l| l.contains("optional capabilities")), "{:#?}", agent.log());
    assert_counts_new_veths(&agent, 71);
    // Still exactly that after the work (nothing was regained on the way).
    assert_holds_exactly(&agent, continuing(&asked_for()), given);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_the_required_capabilities_it_works_and_names_what_it_lacks() {
    require_root();
    let wrapper = setpriv(required());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = Agent::start_wrapped(&wrapper, &[]).await;
    let warning = agent.log().into_iter().find(|l| l.contains("optional capabilities")).expect("a warning");
    for need in AGENT_OPTIONAL {
        assert!(warning.contains(&need.cap.name()), "{warning}");
    }
    assert_holds_exactly(&agent, continuing(&required()), CapSet::of(required()));
    assert_counts_new_veths(&agent, 72);
}

#[test]
fn without_any_one_required_capability_it_refuses_to_start_naming_it() {
    require_root();
    for missing in AGENT_REQUIRED {
        let wrapper = setpriv(asked_for().into_iter().filter(|cap| *cap != missing.cap));
        let pins = PinDir::new("nsm-nocap");
        let listen = format!("127.0.0.1:{}", free_port());
        let out = std::process::Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(netns::cli_path())
            .args(["run", "--listen", &listen, "--pin-dir"])
            .arg(&pins.path)
            .output()
            .expect("run the agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "without {}: {stderr}", missing.cap);
        let expected = format!("missing capability: {} (to {})", missing.cap, missing.why);
        assert!(stderr.contains(&expected), "without {}: {stderr}", missing.cap);
        assert!(!pins.path.exists(), "without {}: nothing may be loaded or pinned", missing.cap);
        assert!(TcpListener::bind(&listen).is_ok(), "without {}: nothing may listen", missing.cap);
    }
}

/// A port below 1024 that nothing listens on now.
fn free_privileged_port() -> u16 {
    (900..1024).rev().find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok()).expect("a free port below 1024")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privileged_port_needs_cap_net_bind_service_only_until_it_is_bound() {
    require_root();
    let listen = format!("127.0.0.1:{}", free_privileged_port());
    let without = setpriv(asked_for());
    let out = std::process::Command::new(&without[0])
        .args(&without[1..])
        .arg(netns::cli_path())
        .args(["run", "--listen", &listen, "--pin-dir"])
        .arg(&PinDir::new("nsm-port").path)
        .output()
        .expect("run the agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing capability: CAP_NET_BIND_SERVICE"), "{stderr}");

    let with = setpriv(asked_for().into_iter().chain([CAP_NET_BIND_SERVICE]));
    let with: Vec<&str> = with.iter().map(String::as_str).collect();
    let agent = Agent::start_wrapped(&with, &["--listen", &listen]).await;
    assert_eq!(agent.listen.to_string(), listen);
    agent.scrape();
    let given: Vec<Capability> = asked_for().into_iter().chain([CAP_NET_BIND_SERVICE]).collect();
    assert_holds_exactly(&agent, continuing(&given), CapSet::of(given.iter().copied()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_it_listens_on_loopback_only() {
    require_root();
    // In a network namespace of its own, so the default port is free whatever else runs on this machine.
    let unshare = require_program("unshare", "util-linux").display().to_string();
    let wrapper = [unshare.as_str(), "--net", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"];
    let agent = Agent::start_default_listen(&wrapper).await;
    assert_eq!(agent.listen.to_string(), "127.0.0.1:10931");
    // The agent's own view of its listening sockets (TCP state 0A), IPv4 and IPv6.
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{}/net/{table}", agent.pid())).unwrap();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A") {
                listening.push(fields[1].to_owned());
            }
        }
    }
    // 127.0.0.1:10931 as the kernel writes it (little-endian address, port in hex).
    assert_eq!(listening, [format!("0100007F:{:04X}", 10931)], "listening sockets: {listening:?}");
}
