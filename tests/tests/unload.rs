//! `netns-monitor unload`: a stopped agent leaves its programs running on purpose (pinned transition links, TCX
//! links or clsact filters); unload takes every one of them down, as the kernel shows (`bpftool`, `tc`), removes
//! the pin directory, and is refused while an agent runs.
//!
//! One test at a time ([`ONE_AT_A_TIME`]): unload searches every namespace for filters of ours, and another
//! test's agent here must not lose its filters to it (they are at the same place in each interface's chain).

use std::time::Duration;

use netns_monitor_tests::{
    agent::VethPair,
    netns::{self, wait_until},
    reliability::{Agent, KernelObjects, pinned_map_id},
    require_root,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stops the agent with SIGTERM and waits until it exited (a graceful stop, which keeps its programs).
fn stop(agent: &mut Agent) {
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    wait_until(DEADLINE, "the agent to exit after SIGTERM", || !agent.running());
}

/// Our filters on `device` in namespace `ns` in `direction`, as `tc` shows them.
fn our_filters(ns: &str, device: &str, direction: &str) -> usize {
    let out = netns::sh_ok("ip", &["netns", "exec", ns, "tc", "filter", "show", "dev", device, direction]);
    out.lines().filter(|line| line.contains("handle 0x4e4d0001")).count()
}

fn unload(agent: &Agent) -> Value {
    let pin_dir = agent.pin_dir.display().to_string();
    let out = netns::ok(&["unload", "--pin-dir", &pin_dir, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("unload --json printed {out:?}: {e}"))
}

/// Everything the stopped agent left is attached (the kernel's view), and after unload nothing of it is.
async fn stopped_agent_is_unloaded(wrapper: &[&str], clsact: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let pair = VethPair::new(if clsact { 61 } else { 60 });
    let mut agent = Agent::start_wrapped(wrapper, &[]).await;
    let counters = pinned_map_id(&agent.pin_dir.join("COUNTERS"));
    if !clsact {
        wait_until(DEADLINE, "both veth ends' TCX links pinned", || agent.link_pins().len() >= 4);
    }
    let ends = [(&pair.a, &pair.va), (&pair.b, &pair.vb)];
    if clsact {
        wait_until(DEADLINE, "both veth ends' filters", || {
            ends.iter().all(|(ns, dev)| our_filters(ns, dev, "ingress") == 1 && our_filters(ns, dev, "egress") == 1)
        });
    }
    stop(&mut agent);
    let left = KernelObjects::using_map(counters);
    assert!(left.programs.iter().any(|p| p == "sys_enter_setns"), "the stopped agent's programs stay: {left:?}");
    assert_eq!(left.transition_links, 10, "the transition links stay pinned: {left:?}");
    assert_eq!(left.classifier_links, if clsact { 0 } else { agent.link_pins().len() }, "{left:?}");

    let done = unload(&agent);
    assert_eq!(done["pinned"], true, "{done}");
    let links: Vec<&str> = done["transition_links"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(links.len(), 10, "{done}");
    assert!(links.contains(&"netns_exit_queued") && links.contains(&"sched_process_fork"), "{done}");
    assert!(done["maps"].as_array().unwrap().iter().any(|m| m == "TRAFFIC"), "{done}");
    if clsact {
        assert!(done["clsact_filters"].as_u64().unwrap() >= 4, "both directions of both ends: {done}");
        for (ns, dev) in ends {
            assert_eq!((our_filters(ns, dev, "ingress"), our_filters(ns, dev, "egress")), (0, 0), "{ns}/{dev}");
        }
    } else {
        assert!(done["classifier_links"].as_u64().unwrap() >= 4, "{done}");
    }
    assert_eq!(done["released"], true, "{done}");
    assert!(!agent.pin_dir.exists(), "the pin directory is gone");
    // The kernel's truth: no link running a program of the agent's; the programs themselves go once their last
    // reference does (freed after an RCU grace period: cls_bpf filters drop theirs that way).
    let after = KernelObjects::using_map(counters);
    assert_eq!((after.transition_links, after.classifier_links), (0, 0), "no link of the agent's: {after:?}");
    wait_until(DEADLINE, "the agent's programs to be freed", || {
        KernelObjects::using_map(counters) == KernelObjects::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_takes_down_what_a_stopped_agent_left_attached() {
    require_root();
    stopped_agent_is_unloaded(&[], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_deletes_the_clsact_filters_in_every_namespace() {
    require_root();
    stopped_agent_is_unloaded(&["env", "NETNS_MONITOR_TC=clsact"], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_is_refused_while_an_agent_runs() {
    require_root();
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut agent = Agent::start(&[]).await;
    let pin_dir = agent.pin_dir.display().to_string();
    let stderr = netns::fails(&["unload", "--pin-dir", &pin_dir], 1);
    assert!(stderr.contains("an agent is running on"), "{stderr}");
    assert!(agent.pin_dir.join("transitions").is_dir(), "nothing was removed");
    assert!(agent.running(), "the agent still runs");
    stop(&mut agent);
}

#[test]
fn unload_of_a_directory_with_nothing_pinned_says_so() {
    require_root();
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let missing = format!("/sys/fs/bpf/{}", netns_monitor_tests::unique_name("nsm-none"));
    let out = netns::ok(&["unload", "--pin-dir", &missing]);
    assert!(out.contains("nothing pinned there"), "{out}");
}
