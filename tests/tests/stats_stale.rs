//! `stats` reads the pinned counters without an agent: it then says no agent is running, and marks the
//! namespaces that no longer exist as stale instead of listing them as live.

use std::time::Duration;

use netns_monitor_tests::{
    agent::{AgentProcess, VethPair},
    netns::{cli, run},
    require_root,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

fn stats(agent: &AgentProcess) -> (Vec<Value>, String) {
    let pins = agent.pin_dir.display().to_string();
    let out = run(&["stats", "--json", "--pin-dir", &pins]);
    assert!(out.status.success(), "stats failed: {}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).expect("stats --json is JSON"), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_without_an_agent_says_so_and_marks_gone_namespaces_stale() {
    require_root();
    let mut agent = AgentProcess::start(&[]).await;
    let pair = VethPair::new(71);
    let (ia, ib) = (pair.inode(&pair.a), pair.inode(&pair.b));
    agent.wait_counting(ia, &pair.va, DEADLINE);
    agent.wait_counting(ib, &pair.vb, DEADLINE);

    let (live, stderr) = stats(&agent);
    assert!(!stderr.contains("no agent is running"), "the agent runs: {stderr}");
    let entry = live.iter().find(|ns| ns["netns"] == ia).expect("counted");
    assert_eq!(entry["stale"], false, "{entry}");

    agent.kill9().await;
    drop(pair);
    let (after, stderr) = stats(&agent);
    assert!(stderr.contains("no agent is running on"), "{stderr}");
    for inode in [ia, ib] {
        let entry = after.iter().find(|ns| ns["netns"] == inode).expect("the counters are still pinned");
        assert_eq!(entry["stale"], true, "a deleted namespace is stale: {entry}");
    }
    let pins = agent.pin_dir.display().to_string();
    let table = cli().args(["stats", "--pin-dir", &pins]).output().expect("stats");
    let text = String::from_utf8_lossy(&table.stdout);
    let row = text.lines().find(|l| l.starts_with(&ia.to_string())).expect("a row for the deleted namespace");
    assert!(row.contains("(stale)"), "{text}");
}
