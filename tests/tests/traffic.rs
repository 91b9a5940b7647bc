//! Traffic counting end to end: known UDP and TCP traffic between two test namespaces, counted by the agent's
//! classifiers, equals what the kernel's own interface statistics say, exactly; namespaces appearing after the
//! agent started are counted, and their counters go when they go; `kill -9` and a restart lose nothing.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    agent::{AgentProcess, VethPair, agent_stats, kernel_stats},
    monitoring::http,
    netns::{addr, in_named, port},
    require_root,
};

const DEADLINE: Duration = Duration::from_secs(30);
const UDP_DATAGRAMS: usize = 200;
const UDP_SIZE: usize = 1000;
const TCP_BYTES: usize = 2 * 1024 * 1024;

/// A TCP stream from A to B, then UDP datagrams from A to a receiver in B; returns once B received them all.
/// TCP first: it resolves the neighbours, so no datagram waits (and gets dropped) in an unresolved ARP queue.
fn known_traffic(pair: &VethPair, udp_port: u16, tcp_port: u16) {
    let (a, b, net) = (pair.a.clone(), pair.b.clone(), pair.net.clone());
    let receiver_addr = addr(&format!("{net}.2"), udp_port);
    let receiver = in_named(&b, move || UdpSocket::bind(receiver_addr).expect("bind UDP in B"));
    // Room for every datagram at once: they are read only after the burst.
    nix::sys::socket::setsockopt(&receiver, nix::sys::socket::sockopt::RcvBufForce, &(4 << 20))
        .expect("SO_RCVBUFFORCE");
    let listener_addr = addr(&format!("{net}.2"), tcp_port);
    let listener = in_named(&b, move || TcpListener::bind(listener_addr).expect("bind TCP in B"));
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut received = Vec::new();
        stream.read_to_end(&mut received).expect("read TCP");
        received.len()
    });
    in_named(&a, move || {
        let mut stream = TcpStream::connect_timeout(&listener_addr, DEADLINE).expect("connect");
        stream.write_all(&vec![1u8; TCP_BYTES]).expect("send TCP");
    });
    assert_eq!(server.join().expect("TCP server"), TCP_BYTES);
    in_named(&a, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind UDP in A");
        for _ in 0..UDP_DATAGRAMS {
            socket.send_to(&[7u8; UDP_SIZE], receiver_addr).expect("send UDP");
        }
    });
    receiver.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..UDP_DATAGRAMS {
        assert_eq!(receiver.recv(&mut buf).expect("every datagram arrives"), UDP_SIZE);
    }
}

/// Waits until the agent's counters of every interface of `pair` equal the kernel's (the last packets of a TCP
/// close may still be in flight), or fails showing both.
fn assert_counters_equal_kernel(agent: &AgentProcess, pair: &VethPair) {
    for (ns, dev) in [(&pair.a, &pair.va), (&pair.b, &pair.vb)] {
        let start = Instant::now();
        loop {
            let kernel = kernel_stats(ns, dev);
            let ours = agent_stats(&agent.interface(pair.inode(ns), dev).expect("interface counted"));
            if ours == kernel {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{dev} in {ns}: agent [rx_bytes, rx_packets, tx_bytes, tx_packets] = {ours:?}, kernel = {kernel:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_equal_kernel_statistics_exactly() {
    require_root();
    // Started first: the namespaces and the veth below appear while it runs. With the protocol split, which
    // is checked below too.
    let agent = AgentProcess::start(&["--traffic-protocols"]).await;
    let pair = VethPair::new(41);
    agent.wait_counting(pair.inode(&pair.a), &pair.va, DEADLINE);
    agent.wait_counting(pair.inode(&pair.b), &pair.vb, DEADLINE);
    assert_eq!(kernel_stats(&pair.a, &pair.va), [0, 0, 0, 0], "IPv6 is off: nothing flowed before our traffic");

    known_traffic(&pair, port(41), port(42));
    assert_counters_equal_kernel(&agent, &pair);

    // The protocol split adds up and sees exactly our datagrams.
    let vb = agent.interface(pair.inode(&pair.b), &pair.vb).unwrap();
    let udp = &vb["rx"]["protocols"]["udp"];
    assert_eq!(udp["packets"], UDP_DATAGRAMS as u64, "{vb}");
    assert_eq!(udp["bytes"], (UDP_DATAGRAMS * (UDP_SIZE + 8 + 20 + 14)) as u64, "payload + UDP + IPv4 + Ethernet");
    let protocols = vb["rx"]["protocols"].as_object().unwrap();
    let sum: u64 = protocols.values().map(|p| p["packets"].as_u64().unwrap()).sum();
    assert_eq!(sum, vb["rx"]["packets"].as_u64().unwrap());
    assert!(vb["rx"]["protocols"]["tcp"]["bytes"].as_u64().unwrap() > TCP_BYTES as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_namespaces_lose_their_counters_series_and_pins() {
    require_root();
    let agent = AgentProcess::start(&[]).await;
    let listen = agent.listen;
    let pair = VethPair::new(43);
    let (ia, ib) = (pair.inode(&pair.a), pair.inode(&pair.b));
    agent.wait_counting(ia, &pair.va, DEADLINE);
    agent.wait_counting(ib, &pair.vb, DEADLINE);
    let pins = || -> Vec<String> {
        std::fs::read_dir(agent.pin_dir.join("links"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    assert!(pins().iter().any(|p| p.starts_with(&format!("{ia}-"))), "links pinned: {:?}", pins());
    let series_of = |inode: u32| {
        let scrape = http::get(listen, "/metrics", Duration::from_secs(10)).expect("scrape");
        scrape.body.lines().filter(|l| l.contains(&format!("netns=\"{inode}\""))).count()
    };
    assert!(series_of(ib) > 0, "the namespace has series while it lives");
    // Without --traffic-protocols there is no protocol split, in `stats` or in /metrics.
    let vb = agent.interface(ib, &pair.vb).expect("interface counted");
    assert!(vb["rx"].get("protocols").is_none() && vb["tx"].get("protocols").is_none(), "{vb}");
    let scrape = http::get(listen, "/metrics", Duration::from_secs(10)).expect("scrape");
    assert!(!scrape.body.contains("_protocol_"), "protocol families without the split");
    assert!(scrape.body.contains("netns_monitor_network_receive_bytes_total{"), "the totals are there");

    drop(pair);
    let start = Instant::now();
    loop {
        let listed = agent.stats().iter().any(|ns| ns["netns"] == ia || ns["netns"] == ib);
        let pinned = pins().iter().any(|p| p.starts_with(&format!("{ia}-")) || p.starts_with(&format!("{ib}-")));
        let series = series_of(ia) + series_of(ib);
        if !listed && !pinned && series == 0 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "counters listed: {listed}, links pinned: {pinned}, series: {series}: {:?}",
            pins()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_lose_nothing() {
    require_root();
    let mut agent = AgentProcess::start(&[]).await;
    let pair = VethPair::new(45);
    let (ia, ib) = (pair.inode(&pair.a), pair.inode(&pair.b));
    agent.wait_counting(ia, &pair.va, DEADLINE);
    agent.wait_counting(ib, &pair.vb, DEADLINE);

    // Traffic keeps flowing from A to B the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (a, b, net) = (pair.a.clone(), pair.b.clone(), pair.net.clone());
    let target = addr(&format!("{net}.2"), port(46));
    let receiver = in_named(&b, move || UdpSocket::bind(target).expect("bind"));
    let sender = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            in_named(&a, move || {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    socket.send_to(&[9u8; 200], target).unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
    };
    let rx_packets = |agent: &AgentProcess| agent.interface(ib, &pair.vb).map(|i| agent_stats(&i)[1]).unwrap_or(0);
    let wait_for_more = |agent: &AgentProcess, than: u64| {
        let start = Instant::now();
        loop {
            let now = rx_packets(agent);
            if now > than {
                return now;
            }
            assert!(start.elapsed() < DEADLINE, "counter stuck at {now}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let before = wait_for_more(&agent, 0);
    agent.kill9().await;
    // Down: the pinned links keep counting into the pinned map.
    let while_down = wait_for_more(&agent, before);
    agent.restart().await;
    let after = wait_for_more(&agent, while_down);
    assert!(before < while_down && while_down < after, "{before} < {while_down} < {after}");

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    drop(receiver);
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert_counters_equal_kernel(&agent, &pair);
    // No duplicate attachment piled up: one pinned link per interface and direction.
    let links: Vec<String> = std::fs::read_dir(agent.pin_dir.join("links"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("{ib}-")))
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
}

/// Interfaces attached while traffic flows through them start exactly at the kernel's counters: the start-up
/// attach of three agents in turn, each on a fresh pin directory (so each measures the base again), while a
/// sender keeps a datagram going from A to B every 50 µs (plus the time the send takes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_attached_under_traffic_start_at_the_kernels_counters() {
    require_root();
    let pair = VethPair::new(47);
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b, net) = (pair.a.clone(), pair.b.clone(), pair.net.clone());
    let target = addr(&format!("{net}.2"), port(47));
    let receiver = in_named(&b, move || UdpSocket::bind(target).expect("bind"));
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            in_named(&a, move || {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    socket.send_to(&[5u8; 64], target).unwrap();
                    std::thread::sleep(Duration::from_micros(50));
                }
            })
        })
    };
    // Whatever happens below, the sender stops (its namespaces go with `pair`).
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stopping = Stop(Arc::clone(&stop));
    // Traffic is flowing before the first agent starts.
    let flowing = Instant::now();
    while kernel_stats(&pair.b, &pair.vb)[1] < 1000 {
        assert!(flowing.elapsed() < DEADLINE, "the sender's datagrams do not reach B");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut agents = Vec::new();
    for _ in 0..3 {
        let agent = AgentProcess::start(&[]).await;
        agent.wait_counting(pair.inode(&pair.a), &pair.va, DEADLINE);
        agent.wait_counting(pair.inode(&pair.b), &pair.vb, DEADLINE);
        agents.push(agent);
    }
    drop(stopping);
    sender.join().unwrap();
    drop(receiver);
    for agent in &agents {
        assert_counters_equal_kernel(agent, &pair);
    }
}
