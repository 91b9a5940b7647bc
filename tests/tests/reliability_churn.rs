//! Churn: namespaces with veths, attached classifiers and traffic, created and deleted in a loop
//! (`NSM_CHURN_CYCLES`: 30 here, 500 in `cargo xtask soak`, 10,000 with `--large`) under one running agent.
//! Afterwards the agent is back where it started: no more open fds, and nothing (link pins, traffic map
//! entries, metric series) refers to a namespace that no longer exists; the kernel logged no WARN/BUG; the
//! agent never crashed.
//!
//! Other processes on the machine may create and delete namespaces and veths meanwhile, and the agent rightly
//! follows them too, so the checks are stated per namespace, against the kernel's own list of the namespaces
//! that exist ([`live_netns_inodes`]), rather than as totals.

use std::{
    collections::BTreeSet,
    net::UdpSocket,
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    netns::{self, NetnsGuard, addr, in_named, port, subnet},
    reliability::{
        Agent, Scrape, ifindex, kernel_log, live_netns_inodes, new_kernel_problems, pins_by_netns, size,
        traffic_entries,
    },
    require_root, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// Series with a `netns` label, by namespace, and the number of the others (per metric family, except the two
/// whose label sets are bounded by syscalls, namespace types and errnos, not by namespaces).
fn series(scrape: &Scrape) -> (std::collections::BTreeMap<String, usize>, usize) {
    let global = scrape
        .samples
        .iter()
        .filter(|s| !s.labels.contains_key("netns"))
        .filter(|s| !s.name.starts_with("netns_monitor_transition"))
        .count();
    (scrape.series_by("netns"), global)
}

/// Everything that must come back: what refers to namespaces that are gone, and the agent's fds.
#[derive(Debug)]
struct Leftovers {
    dead_pins: Vec<u32>,
    dead_entries: Vec<u32>,
    dead_series: Vec<String>,
    fds: usize,
    global_series: usize,
}

fn leftovers(agent: &Agent) -> Leftovers {
    let scrape = agent.scrape();
    let live = live_netns_inodes();
    let (by_netns, global_series) = series(&scrape);
    Leftovers {
        dead_pins: pins_by_netns(&agent.link_pins()).into_keys().filter(|i| !live.contains(i)).collect(),
        dead_entries: traffic_entries(&agent.pin_dir).into_keys().filter(|i| !live.contains(i)).collect(),
        dead_series: by_netns.into_keys().filter(|i| !i.parse().is_ok_and(|i: u32| live.contains(&i))).collect(),
        fds: agent.fds(),
        global_series,
    }
}

/// Waits until nothing refers to a namespace that is gone, the agent has at most `fds` open and at most
/// `global_series` series without a namespace label; fails after the deadline showing what is left.
fn wait_clean(agent: &Agent, fds: usize, global_series: usize) -> Leftovers {
    let start = Instant::now();
    loop {
        let now = leftovers(agent);
        let clean = now.dead_pins.is_empty()
            && now.dead_entries.is_empty()
            && now.dead_series.is_empty()
            && now.fds <= fds
            && now.global_series <= global_series;
        if clean {
            return now;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not back to baseline after {DEADLINE:?}: {now:?} (baseline: {fds} fds, {global_series} global series); \
             the end of the agent's log: {:#?}",
            agent.log().iter().rev().take(20).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    require_root();
    let cycles = size("NSM_CHURN_CYCLES", 30);
    let kernel_before = kernel_log();
    let mut agent = Agent::start(&[]).await;
    // Baseline: the fewest fds over a few samples (a scrape in flight holds one more). Namespaces other processes
    // deleted while the agent started may still be referred to for a moment.
    let baseline = wait_clean(&agent, usize::MAX, usize::MAX);
    let base_fds = (0..5).map(|_| agent.fds()).min().unwrap();
    let rss_before = agent.rss_kib();

    let net = subnet(61);
    let target = addr(&format!("{net}.2"), port(61));
    let mut ours = BTreeSet::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let (a, b) = (unique_name("nsm-ca"), unique_name("nsm-cb"));
        let (va, vb) = (unique_name("ca"), unique_name("cb"));
        let _guards = (NetnsGuard::new(&a), NetnsGuard::new(&b));
        netns::ok(&["add", &a]);
        netns::ok(&["add", &b]);
        netns::veth_between(&a, &va, &b, &vb, &net);
        let (ia, ib) = (
            netns_monitor_tests::inode(format!("/run/netns/{a}")),
            netns_monitor_tests::inode(format!("/run/netns/{b}")),
        );
        ours.extend([ia, ib]);
        agent.wait_attached(ia, ifindex(&a, &va), DEADLINE);
        agent.wait_attached(ib, ifindex(&b, &vb), DEADLINE);
        in_named(&a, move || {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind in A");
            for _ in 0..3 {
                socket.send_to(&[1u8; 100], target).expect("send");
            }
        });
        netns::ok(&["del", &a]);
        netns::ok(&["del", &b]);
        assert!(agent.running(), "cycle {cycle}: the agent died; its log: {:#?}", agent.log());
        if cycle % 100 == 99 {
            eprintln!("{} cycles in {:.0?}, agent RSS {} KiB", cycle + 1, started.elapsed(), agent.rss_kib());
        }
    }
    let elapsed = started.elapsed();

    // Back to baseline.
    let after = wait_clean(&agent, base_fds, baseline.global_series);
    assert!(agent.running(), "the agent died; its log: {:#?}", agent.log());
    let log = agent.log();
    assert!(!log.iter().any(|l| l.contains("panicked")), "the agent panicked: {log:#?}");
    let problems = new_kernel_problems(&kernel_before);
    assert!(problems.is_empty(), "the kernel logged problems during the churn: {problems:#?}");
    eprintln!(
        "{cycles} cycles ({} namespaces) in {elapsed:.1?} ({:.1} ms/cycle); agent fds {base_fds} -> {}, RSS {rss_before} \
         -> {} KiB",
        ours.len(),
        elapsed.as_secs_f64() * 1000.0 / cycles.max(1) as f64,
        after.fds,
        agent.rss_kib()
    );
    agent.kill9().await;
}
