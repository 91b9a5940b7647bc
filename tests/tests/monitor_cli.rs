//! `netns-monitor monitor`: names under /run/netns appearing and going (ours and iproute2's), and every network
//! namespace's creation and destruction, named or not. The oracle is the inode the kernel shows for each.

use std::{collections::HashSet, path::Path, time::Duration};

use netns_monitor_tests::{
    TraceProcess, inode,
    netns::{NetnsGuard, ok, sh_ok},
    require_root, unique_name,
};
use serde_json::Value;

/// Reads JSON lines until `done` says every expected one came (or fails after `deadline`); returns them.
async fn read_until(
    monitor: &mut TraceProcess,
    deadline: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        while let Some(line) = monitor.stdout.next_line().await.expect("read monitor stdout") {
            seen.push(serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
            if done(&seen) {
                return;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "not everything came within {deadline:?}; saw {seen:#?}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_every_namespace_lifecycle_are_reported_with_their_inodes() {
    require_root();
    let ours = unique_name("nsm-mon");
    let theirs = unique_name("nsm-mon-ip");
    let _guards = (NetnsGuard::new(&ours), NetnsGuard::new(&theirs));
    let mut monitor = TraceProcess::start_verb("monitor", &["--json"], "programs attached").await;

    ok(&["add", &ours]);
    sh_ok("ip", &["netns", "add", &theirs]);
    let ours_inode = inode(Path::new("/run/netns").join(&ours));
    let theirs_inode = inode(Path::new("/run/netns").join(&theirs));
    // An anonymous namespace: iproute2's list never shows it; its inode comes from inside it.
    let anonymous: u32 =
        sh_ok("unshare", &["-n", "stat", "-L", "-c", "%i", "/proc/self/ns/net"]).trim().parse().unwrap();
    // A process inside ours, entering with setns: a transition, which monitor leaves to trace.
    sh_ok("ip", &["netns", "exec", &ours, "true"]);
    ok(&["del", &ours]);
    sh_ok("ip", &["netns", "del", &theirs]);

    let inodes = [ours_inode, theirs_inode, anonymous];
    let ended = |seen: &[Value]| {
        let gone: HashSet<u64> = seen
            .iter()
            .filter(|v| v["event"] == "netns_destroyed")
            .filter_map(|v| v["namespaces"]["net"]["old"].as_u64())
            .collect();
        inodes.iter().all(|i| gone.contains(&u64::from(*i)))
    };
    let seen = read_until(&mut monitor, Duration::from_secs(60), ended).await;
    let mine: Vec<&Value> = seen
        .iter()
        .filter(|v| {
            let net = &v["namespaces"]["net"];
            [&v["inode"], &net["old"], &net["new"]]
                .iter()
                .any(|i| i.as_u64().is_some_and(|i| inodes.contains(&(i as u32))))
        })
        .collect();
    let find = |event: &str, inode: u32| {
        mine.iter().position(|v| {
            v["event"] == event
                && [&v["inode"], &v["namespaces"]["net"]["new"], &v["namespaces"]["net"]["old"]]
                    .iter()
                    .any(|i| i.as_u64() == Some(u64::from(inode)))
        })
    };
    for (name, inode) in [(&ours, ours_inode), (&theirs, theirs_inode)] {
        let added = find("name_added", inode).unwrap_or_else(|| panic!("add {name}: {mine:#?}"));
        let removed = find("name_removed", inode).unwrap_or_else(|| panic!("delete {name}: {mine:#?}"));
        assert_eq!(mine[added]["name"], name.as_str());
        assert_eq!(mine[removed]["name"], name.as_str());
        let destroyed = find("netns_destroyed", inode).expect("destroyed");
        assert!(added < removed && removed < destroyed, "add, delete, then the end, for {name}: {mine:#?}");
        assert_eq!(mine[destroyed]["namespaces"]["net"]["old_name"], name.as_str(), "the end keeps the name it had");
        let created = find("netns_created", inode).unwrap_or_else(|| panic!("creation of {name}: {mine:#?}"));
        assert!(created < destroyed);
    }
    let created = find("netns_created", anonymous).unwrap_or_else(|| panic!("the anonymous one's creation: {mine:#?}"));
    assert_eq!(mine[created]["comm"], "unshare", "who made it");
    assert!(find("name_added", anonymous).is_none(), "an anonymous namespace has no name");
    assert!(seen.iter().all(|v| v["event"] != "transition"), "no transitions: {seen:#?}");
    monitor.child.kill().await.expect("stop monitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_only_is_ip_netns_monitor_with_inodes() {
    require_root();
    let name = unique_name("nsm-mon-n");
    let _guard = NetnsGuard::new(&name);
    let mut monitor = TraceProcess::start_verb("monitor", &["--names-only"], "watching /run/netns").await;
    sh_ok("ip", &["netns", "add", &name]);
    let expected = format!("net:[{}]", inode(Path::new("/run/netns").join(&name)));
    // Other tests make names too: only this one's lines count.
    let mut next_line_of_ours = async || {
        let line = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = monitor.stdout.next_line().await.expect("read").expect("monitor ended");
                if line.split_whitespace().nth(2) == Some(name.as_str()) {
                    return line;
                }
            }
        });
        line.await.expect("a line about our name within 30 s")
    };
    // The add is read before the delete is made: a name made and removed between two looks is no change.
    let added = next_line_of_ours().await;
    sh_ok("ip", &["netns", "del", &name]);
    let deleted = next_line_of_ours().await;
    let words = |line: &str| line.split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(words(&added), ["add", name.as_str(), expected.as_str()], "{added}");
    assert_eq!(words(&deleted), ["delete", name.as_str(), expected.as_str()], "{deleted}");
    monitor.child.kill().await.expect("stop monitor");
}
