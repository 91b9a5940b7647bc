//! A restart with another ring buffer size: the agent cannot share the pinned ring buffer, so it makes a new one,
//! and reads what the old one still held once the old programs are gone. Events queued while the agent was down
//! are still all either delivered or counted lost, and the new size is in force.
//!
//! Its own test binary: the agent traces only this process (`--filter-pid`).

use std::time::Duration;

use netns_monitor_tests::{
    anonymous_netns,
    reliability::{Accounting, Agent, wait_accounted},
    require_root, sentinel, setns_burst,
};

const BURST: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ring_buffer_size_takes_effect_and_the_old_contents_are_delivered() {
    require_root();
    let (a, b) = (anonymous_netns(), anonymous_netns());
    let pid = std::process::id().to_string();
    let mut agent = Agent::start(&["--filter-pid", &pid, "--ring-buffer-bytes", "4096"]).await;
    let before = Accounting::of(&agent.scrape());
    std::thread::spawn(sentinel).join().unwrap();
    let before = wait_accounted(&agent, before, 1, Duration::from_secs(60));

    agent.kill9().await;
    // About 24 events fit in one page; the rest of the burst is counted lost.
    setns_burst(a, b, BURST);
    agent.restart_with(&["--filter-pid", &pid, "--ring-buffer-bytes", "16384"]).await;
    let fresh = Accounting { net: 0, none: 0, lost: before.lost };
    let after = wait_accounted(&agent, fresh, BURST, Duration::from_secs(60));
    assert!(after.net > 0, "the old ring buffer's events were delivered: {after:?}");
    let log = agent.log();
    let replaced = log.iter().any(|l| l.contains("does not fit this agent's programs") && l.contains("EVENTS"));
    assert!(replaced, "the agent says it replaced the ring buffer: {log:#?}");
    let drained = log.iter().find(|l| l.contains("drained the replaced ring buffer")).expect("drained");
    assert!(drained.contains(&format!("events={}", after.net)), "{drained} (received {after:?})");
    assert_eq!(agent.scrape().get("netns_monitor_ringbuf_size_bytes", &[]), Some(16384.0));
    // The new ring buffer works.
    std::thread::spawn(sentinel).join().unwrap();
    wait_accounted(&agent, after, 1, Duration::from_secs(60));
}
