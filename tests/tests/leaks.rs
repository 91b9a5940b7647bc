//! Orphaned namespaces (no process in them, kept alive by a bind mount or an fd): `list` times and flags them,
//! the clock is shared with the agent through /run/netns-monitor/orphans, and the agent exports it as
//! `netns_monitor_netns_orphaned_seconds`. One test, so that nothing else in this binary writes the shared file
//! while it is backdated.

use std::{
    fs::File,
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use netns_monitor_tests::{
    agent::AgentProcess,
    inode,
    monitoring::{free_port, http},
    netns::{ChildGuard, NetnsGuard, ok, sh_ok, wait_until},
    require_root, unique_name,
};
use serde_json::Value;

const STATE: &str = "/run/netns-monitor/orphans";

fn rows(args: &[&str]) -> Vec<Value> {
    let mut full = vec!["list", "--json"];
    full.extend(args);
    serde_json::from_str::<Value>(&ok(&full)).expect("JSON").as_array().expect("an array").clone()
}

fn row(rows: &[Value], inode: u32) -> Option<&Value> {
    rows.iter().find(|r| r["inode"] == inode)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_timed_flagged_and_exported() {
    require_root();
    let (empty, used, held) = (unique_name("nsm-leak"), unique_name("nsm-used"), unique_name("nsm-fd"));
    let _guards = (NetnsGuard::new(&empty), NetnsGuard::new(&used), NetnsGuard::new(&held));
    for name in [&empty, &used, &held] {
        ok(&["add", name]);
    }
    let ino = |name: &str| inode(Path::new("/run/netns").join(name));
    let (empty_inode, used_inode, held_inode) = (ino(&empty), ino(&used), ino(&held));
    let sleeper = ChildGuard(Command::new("ip").args(["netns", "exec", &used, "sleep", "120"]).spawn().expect("spawn"));
    let pid = sleeper.0.id().to_string();
    wait_until(Duration::from_secs(10), "sleep to run in the namespace", || {
        sh_ok("ip", &["netns", "pids", &used]).lines().any(|l| l == pid)
    });
    // Held only by this test's file descriptor once its name is gone.
    let fd = File::open(Path::new("/run/netns").join(&held)).expect("open the namespace");
    ok(&["del", &held]);

    let first = rows(&[]);
    let orphaned = |rows: &[Value], inode: u32| row(rows, inode).and_then(|r| r["orphaned_seconds"].as_u64());
    assert!(orphaned(&first, empty_inode).is_some(), "named, no process: an orphan");
    assert!(orphaned(&first, held_inode).is_some(), "held by an fd only: an orphan");
    assert_eq!(row(&first, used_inode).expect("listed")["orphaned_seconds"], Value::Null, "a process is in it");
    assert_eq!(row(&first, used_inode).unwrap()["leaked"], false);
    assert_eq!(row(&first, empty_inode).unwrap()["leaked"], false, "not yet 10 minutes");
    assert!(row(&rows(&["--no-fds"]), held_inode).is_none(), "without the fd walk it is not seen at all");

    // The clock is the shared file's: backdated by two hours, the namespace is a leak (default 10m), and it
    // keeps running rather than starting again.
    let state = std::fs::read_to_string(STATE).expect("list saved the clocks");
    let backdated: String = state
        .lines()
        .map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [inode, _, how, stamp] if inode == empty_inode.to_string() => {
                format!("{inode} {} {how} {stamp}\n", now() - 7200)
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_ne!(state, backdated, "our namespace is in the file: {state}");
    std::fs::write(STATE, backdated).unwrap();
    let leaked = rows(&["--leaked"]);
    let entry = row(&leaked, empty_inode).unwrap_or_else(|| panic!("--leaked lists it: {leaked:#?}"));
    assert!(entry["orphaned_seconds"].as_u64().unwrap() >= 7200, "{entry}");
    assert_eq!(entry["leaked"], true);
    assert!(leaked.iter().all(|r| r["leaked"] == true), "--leaked lists only leaks");
    assert!(row(&leaked, used_inode).is_none() && row(&leaked, held_inode).is_none());
    let table = ok(&["list", "-o", "NS,PROCS,ORPHANED,LEAK", "-n"]);
    let line = table.lines().find(|l| l.starts_with(&empty_inode.to_string())).expect("a row");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert!(cells[2].starts_with("2h") && cells[3] == cells[2], "ORPHANED and LEAK say 2h: {line}");
    assert!(row(&rows(&["--leaked", "--leak-after", "3h"]), empty_inode).is_none(), "under a longer threshold");

    // The agent exports the same clock, and only for orphans a mount holds (its scrape walks no fds).
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _agent = AgentProcess::start(&["--listen", &listen.to_string()]).await;
    let series = format!("netns_monitor_netns_orphaned_seconds{{name=\"{empty}\",netns=\"{empty_inode}\"}} ");
    let started = Instant::now();
    let body = loop {
        let scrape = http::get(listen, "/metrics", Duration::from_secs(10)).expect("scrape");
        if scrape.body.contains(&series) {
            break scrape.body;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no {series} in the scrape");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value: u64 =
        body.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok()).expect("a value");
    assert!(value >= 7200, "the shared clock: {value}");
    let used_series = format!("netns_monitor_netns_orphaned_seconds{{name=\"{used}\",netns=\"{used_inode}\"}}");
    assert!(!body.contains(&used_series), "a namespace with a process has no series");
    let held_label = format!("netns=\"{held_inode}\"");
    assert!(
        !body.lines().any(|l| l.starts_with("netns_monitor_netns_orphaned_seconds{") && l.contains(&held_label)),
        "fd-held: not exported"
    );

    // A process back in it stops the clock; when it leaves, a new one starts from zero.
    let visitor =
        ChildGuard(Command::new("ip").args(["netns", "exec", &empty, "sleep", "120"]).spawn().expect("spawn"));
    let visitor_pid = visitor.0.id().to_string();
    wait_until(Duration::from_secs(10), "the visitor to arrive", || {
        sh_ok("ip", &["netns", "pids", &empty]).lines().any(|l| l == visitor_pid)
    });
    assert_eq!(row(&rows(&[]), empty_inode).unwrap()["orphaned_seconds"], Value::Null);
    drop(visitor);
    let again = orphaned(&rows(&[]), empty_inode).expect("an orphan again");
    assert!(again < 600, "a new clock: {again}");
    drop(fd);
}
