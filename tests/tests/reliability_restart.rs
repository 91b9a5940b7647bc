//! Restart under load: traffic flowing and transitions happening, the agent is killed with SIGKILL and started
//! again, `NSM_RESTARTS` times (5 here, 20 in `cargo xtask soak`). Each round proves:
//! - no transition is lost uncounted or counted twice, while the agent runs, while it is down, and while it
//!   restarts and takes over the pinned programs: received + `netns_monitor_events_lost_total` = generated,
//!   exactly, with a one-page ring buffer so that the kernel does drop events;
//! - events queued while the agent was down are delivered by the next one, and the lost count lives on (same
//!   pinned map, never going backwards);
//! - nothing piles up: the kernel holds exactly one generation of programs (11) and one link per transition
//!   program and per pinned classifier link;
//! - traffic counters only go up, and at the end equal the kernel's interface statistics exactly.
//!
//! Its own test binary: the agent traces only this process (`--filter-pid`, a kernel-side filter), so that
//! nothing else on the machine enters the counts.

use std::{
    fs::File,
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    agent::{VethPair, agent_stats, kernel_stats},
    anonymous_netns,
    netns::{addr, in_named, port},
    reliability::{Accounting, Agent, KernelObjects, pinned_map_id, size, wait_accounted},
    require_root, sentinel, setns_burst,
};
use nix::sched::{CloneFlags, setns};

const DEADLINE: Duration = Duration::from_secs(60);
const BURST_UP: u64 = 3_000;
const BURST_DOWN: u64 = 3_000;
/// The programs of one agent generation, sorted.
const PROGRAMS: [&str; 12] = [
    "netns_exit_queued",
    "sched_process_fork",
    "sys_enter_clone",
    "sys_enter_clone3",
    "sys_enter_setns",
    "sys_enter_unshare",
    "sys_exit_clone",
    "sys_exit_clone3",
    "sys_exit_setns",
    "sys_exit_unshare",
    "tc_egress",
    "tc_ingress",
];

fn clone2(files: &(File, File)) -> (File, File) {
    (files.0.try_clone().unwrap(), files.1.try_clone().unwrap())
}

/// One failing setns, then waits until the agent counted it: every earlier event of this process has been
/// received or counted lost by then (a thread's events reach the ring buffer in order). Only used while
/// nothing else is generating, so the sentinel itself always fits in the ring buffer.
fn settle(agent: &Agent) -> Accounting {
    let before = Accounting::of(&agent.scrape());
    std::thread::spawn(sentinel).join().unwrap();
    let start = Instant::now();
    loop {
        let now = Accounting::of(&agent.scrape());
        if now.none > before.none {
            return now;
        }
        assert!(start.elapsed() < DEADLINE, "the agent never counted the sentinel: {before:?} -> {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls setns alternately into the two namespaces on a new thread until `stop` is set; returns how many.
fn setns_until(files: (File, File), stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut count = 0u64;
        while !stop.load(Ordering::Relaxed) {
            setns(if count.is_multiple_of(2) { &files.0 } else { &files.1 }, CloneFlags::CLONE_NEWNET).expect("setns");
            count += 1;
        }
        count
    })
}

/// The agent's [rx_bytes, rx_packets, tx_bytes, tx_packets] of `device` in namespace `netns`.
fn counted(agent: &Agent, netns: u32, device: &str) -> Option<[u64; 4]> {
    agent
        .stats()
        .into_iter()
        .find(|ns| ns["netns"] == netns)
        .and_then(|ns| ns["interfaces"].as_array()?.iter().find(|i| i["device"] == device).map(agent_stats))
}

/// Waits until the kernel holds exactly one generation of the agent's programs and links (the replaced ones
/// are freed in deferred work, so this can take a moment).
fn assert_one_generation(agent: &Agent, counters_map: u64) {
    let start = Instant::now();
    loop {
        let objects = KernelObjects::using_map(counters_map);
        let pins = agent.link_pins().len();
        if objects.programs == PROGRAMS && objects.transition_links == 10 && objects.classifier_links == pins {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "expected 12 programs, 10 transition links and {pins} classifier links (one per pin), the kernel has \
             {objects:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_under_load_lose_nothing_and_pile_nothing_up() {
    require_root();
    let restarts = size("NSM_RESTARTS", 5);
    // Everything this process does that the agent would trace happens before the first settle.
    let namespaces = (anonymous_netns(), anonymous_netns());
    let pair = VethPair::new(51);
    let (ia, ib) = (pair.inode(&pair.a), pair.inode(&pair.b));
    let pid = std::process::id().to_string();
    let mut agent = Agent::start(&["--filter-pid", &pid, "--ring-buffer-bytes", "4096"]).await;
    let wait_counted = |agent: &Agent, netns: u32, device: &str| {
        let start = Instant::now();
        while counted(agent, netns, device).is_none() {
            assert!(start.elapsed() < DEADLINE, "{device} in {netns} is not counted");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_counted(&agent, ia, &pair.va);
    wait_counted(&agent, ib, &pair.vb);

    // Traffic from A to B for the whole test.
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let target = addr(&format!("{}.2", pair.net), port(51));
    let receiver = in_named(&pair.b, move || UdpSocket::bind(target).expect("bind in B"));
    let sender = {
        let (stop, sent, a) = (Arc::clone(&stop_traffic), Arc::clone(&sent), pair.a.clone());
        std::thread::spawn(move || {
            in_named(&a, move || {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    socket.send_to(&[5u8; 300], target).unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(500));
                }
            })
        })
    };

    // The sender entered A with a setns of its own: let that be over before counting starts.
    let start = Instant::now();
    while sent.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < DEADLINE, "the sender never sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    let counters_map = pinned_map_id(&agent.pin_dir.join("COUNTERS"));
    let mut accounting = settle(&agent);
    let mut last_rx = counted(&agent, ib, &pair.vb).unwrap();
    let (mut drained, mut lost_down) = (0, 0);
    for round in 1..=restarts {
        // Up: a burst while the agent reads.
        setns_burst(namespaces.0.try_clone().unwrap(), namespaces.1.try_clone().unwrap(), BURST_UP);
        accounting = wait_accounted(&agent, accounting, BURST_UP, DEADLINE);

        // Down: SIGKILL, a burst while nothing reads, and transitions all through the restart and adoption.
        agent.kill9().await;
        setns_burst(namespaces.0.try_clone().unwrap(), namespaces.1.try_clone().unwrap(), BURST_DOWN);
        let stop = Arc::new(AtomicBool::new(false));
        let during = setns_until(clone2(&namespaces), Arc::clone(&stop));
        agent.restart().await;
        stop.store(true, Ordering::Relaxed);
        let during = during.join().unwrap();
        // A fresh agent counts from zero; the lost count carries on in the pinned map.
        let fresh = Accounting { net: 0, none: 0, lost: accounting.lost };
        let now = wait_accounted(&agent, fresh, BURST_DOWN + during, DEADLINE);
        assert!(now.lost >= accounting.lost, "the lost count went backwards: {accounting:?} -> {now:?}");
        assert!(now.net > 0, "round {round}: the events queued while the agent was down were not delivered");
        drained += now.net;
        lost_down += now.lost - accounting.lost;
        accounting = now;
        assert_eq!(pinned_map_id(&agent.pin_dir.join("COUNTERS")), counters_map, "the counters map was adopted");
        assert_one_generation(&agent, counters_map);

        let rx = counted(&agent, ib, &pair.vb).expect("still counted after the restart");
        assert!(
            rx.iter().zip(&last_rx).all(|(now, before)| now >= before),
            "counters went backwards: {last_rx:?} -> {rx:?}"
        );
        assert!(rx[1] > last_rx[1], "round {round}: no packet counted since the last round: {rx:?}");
        last_rx = rx;
        eprintln!("round {round}: {during} transitions during the restart; received {} lost {}", now.net, now.lost);
    }

    stop_traffic.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    drop(receiver);
    for (ns, dev, inode) in [(&pair.a, &pair.va, ia), (&pair.b, &pair.vb, ib)] {
        let start = Instant::now();
        loop {
            let (kernel, ours) = (kernel_stats(ns, dev), counted(&agent, inode, dev).unwrap());
            if kernel == ours {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "{dev}: agent {ours:?} != kernel {kernel:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(agent.running(), "the agent is still running");
    eprintln!(
        "{restarts} restarts: {} datagrams sent; after restarts the agents received {drained} queued events and \
         {lost_down} were counted lost",
        sent.load(Ordering::Relaxed)
    );
}
