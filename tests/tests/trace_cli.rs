//! `netns-monitor trace` end to end: filters narrow the output, JSON lines follow the schema, bounds stop it,
//! bad filters are refused before anything is loaded.

use std::{fs::File, time::Duration};

use netns_monitor_tests::{NamedNetns, TraceProcess, cli_command, inode, netns, require_root, run_ok, sentinel};
use nix::sched::{CloneFlags, setns, unshare};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// On a thread named `comm`: setns into `target`, setns back, unshare(CLONE_NEWUTS), then a failed setns.
fn known_actions(comm: &str, target: &NamedNetns) -> u32 {
    let path = target.path();
    std::thread::Builder::new()
        .name(comm.to_owned())
        .spawn(move || {
            let home = File::open("/proc/thread-self/ns/net").unwrap();
            setns(File::open(&path).unwrap(), CloneFlags::CLONE_NEWNET).expect("setns into target");
            setns(&home, CloneFlags::CLONE_NEWNET).expect("setns back");
            unshare(CloneFlags::CLONE_NEWUTS).expect("unshare uts");
            sentinel()
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Starts a trace with `filters` limited to thread `comm`, runs the known actions, returns the JSON lines.
async fn traced(comm: &str, target: &NamedNetns, filters: &[&str], count: usize) -> Vec<Value> {
    require_root();
    let count_arg = count.to_string();
    let mut args = vec!["--json", "--comm", comm, "--count", count_arg.as_str()];
    args.extend_from_slice(filters);
    let trace = TraceProcess::start(&args).await;
    let tid = known_actions(comm, target);
    let (lines, status) = trace.finish(DEADLINE).await;
    assert!(status.success(), "trace exited with {status}");
    assert_eq!(lines.len(), count, "--count {count} prints exactly {count} lines: {lines:#?}");
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            check_schema(&value);
            assert_eq!(value["tid"], tid, "{value}");
            assert_eq!(value["comm"], comm);
            value
        })
        .collect()
}

/// The documented schema (docs/trace-json.md) for transition events.
fn check_schema(v: &Value) {
    for key in ["time", "event", "syscall", "comm", "errno"] {
        assert!(v[key].is_string() || v[key].is_null(), "{key}: {v}");
    }
    for key in ["ts_boot_ns", "pid", "tid", "ppid", "uid", "flags", "ret"] {
        assert!(v[key].is_u64() || v[key].is_i64(), "{key} must be a number: {v}");
    }
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC: {v}");
    assert!(v["flag_names"].is_array() && v["changed"].is_array(), "{v}");
    let namespaces = v["namespaces"].as_object().expect("namespaces object");
    assert_eq!(namespaces.len(), 10, "all ten namespace types: {v}");
    for (ty, ns) in namespaces {
        assert!(ns["old"].is_u64() && ns["new"].is_u64(), "{ty} has old and new inodes: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_filters_all_four_in_order() {
    let target = NamedNetns::new("nsm-tc");
    let lines = traced("nsmt-all", &target, &[], 4).await;
    let syscalls: Vec<&str> = lines.iter().map(|v| v["syscall"].as_str().unwrap()).collect();
    assert_eq!(syscalls, ["setns", "setns", "unshare", "setns"]);
    assert_eq!(lines[0]["namespaces"]["net"]["new"], target.inode());
    assert_eq!(lines[0]["namespaces"]["net"]["new_name"], target.name.as_str(), "named from the inventory");
    assert_eq!(lines[1]["namespaces"]["net"]["old_name"], target.name.as_str());
    assert_eq!(lines[2]["flag_names"], serde_json::json!(["CLONE_NEWUTS"]));
    assert_eq!(lines[3]["errno"], "EBADF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syscall_filter() {
    let target = NamedNetns::new("nsm-tc");
    let lines = traced("nsmt-sys", &target, &["--syscall", "unshare"], 1).await;
    assert_eq!(lines[0]["syscall"], "unshare");
    assert_eq!(lines[0]["changed"], serde_json::json!(["uts"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_filter() {
    let target = NamedNetns::new("nsm-tc");
    let lines = traced("nsmt-fail", &target, &["--failed"], 1).await;
    assert_eq!(lines[0]["errno"], "EBADF");
    assert_eq!(lines[0]["ret"], -libc::EBADF);
    assert_eq!(lines[0]["fd"], -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_filter_by_name_and_inode() {
    let target = NamedNetns::new("nsm-tc");
    let lines = traced("nsmt-ns", &target, &["--netns", &target.name], 2).await;
    assert_eq!(lines[0]["namespaces"]["net"]["new"], target.inode());
    assert_eq!(lines[1]["namespaces"]["net"]["old"], target.inode());
    let inode = target.inode().to_string();
    let lines = traced("nsmt-ino", &target, &["--netns", &inode], 2).await;
    assert!(lines.iter().all(|v| v["syscall"] == "setns"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_filter() {
    let target = NamedNetns::new("nsm-tc");
    let lines = traced("nsmt-type", &target, &["--type", "uts"], 1).await;
    assert_eq!(lines[0]["syscall"], "unshare");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_filter_in_the_kernel() {
    let target = NamedNetns::new("nsm-tc");
    let pid = std::process::id().to_string();
    let lines = traced("nsmt-pid", &target, &["--pid", &pid, "--syscall", "setns"], 3).await;
    assert!(lines.iter().all(|v| v["pid"] == std::process::id() && v["syscall"] == "setns"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_ends_the_trace() {
    require_root();
    let trace = TraceProcess::start(&["--duration", "1", "--comm", "nsmt-nobody"]).await;
    let (lines, status) = trace.finish(DEADLINE).await;
    assert!(status.success());
    assert_eq!(lines.len(), 1, "only the table header: {lines:?}");
    assert!(lines[0].starts_with("TIME") && lines[0].contains("OLD -> NEW") && lines[0].ends_with("RESULT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_names_namespaces_created_after_start() {
    require_root();
    let trace = TraceProcess::start(&["--comm", "nsmt-late", "--count", "2"]).await;
    // Named only now, after the trace started.
    let late = NamedNetns::new("nsm-late");
    known_actions("nsmt-late", &late);
    let (lines, status) = trace.finish(DEADLINE).await;
    assert!(status.success());
    assert_eq!(lines.len(), 3, "header and two rows: {lines:#?}");
    let into = &lines[1];
    assert!(into.contains(" setns ") && into.contains(&format!("-> {}({})", late.inode(), late.name)), "{into}");
    assert!(into.trim_end().ends_with("ok"), "{into}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_of_a_named_namespace() {
    require_root();
    let trace = TraceProcess::start(&["--json", "--type", "net"]).await;
    let target = NamedNetns::new("nsm-life");
    let inode = target.inode();
    drop(target);
    let mut trace = trace;
    let (mut created, mut destroyed) = (false, false);
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = trace.stdout.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap();
            let net = &v["namespaces"]["net"];
            match v["event"].as_str() {
                Some("netns_created") if net["new"] == inode => created = true,
                Some("netns_destroyed") if net["old"] == inode => {
                    assert!(v["pid"].is_null(), "no caller for a destruction: {v}");
                    destroyed = true;
                }
                _ => {}
            }
            if created && destroyed {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "created seen: {created}, destroyed seen: {destroyed}");
}

/// Runs `netns-monitor ARGS` to completion and returns (exit code, stderr).
async fn run_cli(args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(DEADLINE, cli_command().args(args).output()).await.expect("exits").expect("runs");
    (out.status.code().expect("exit code"), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_exit_2_before_loading() {
    require_root();
    let cases: &[(&[&str], &str)] = &[
        (&["trace", "--syscall", "fork"], "unknown syscall \"fork\""),
        (&["trace", "--type", "network"], "unknown namespace type \"network\""),
        (&["trace", "--netns", "nsm-no-such-namespace"], "no network namespace named \"nsm-no-such-namespace\""),
        (&["trace", "--netns", "4294967295"], "no network namespace named \"4294967295\""),
        (&["trace", "--comm", "a-name-longer-than-15"], "at most 15 bytes"),
        (&["trace", "--duration", "0"], "--duration must be a positive number"),
        (&["trace", "--duration=-1"], "--duration must be a positive number"),
        (&["trace", "--ring-buffer-bytes", "5000"], "power of two"),
        (&["trace", "--pid", "x"], "invalid value 'x'"),
    ];
    for (args, message) in cases {
        let (code, stderr) = run_cli(args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: expected {message:?} in {stderr}");
        assert!(!stderr.contains("programs attached"), "{args:?} loaded programs before refusing: {stderr}");
    }
}

#[test]
fn help_documents_the_filters() {
    let out = run_ok(netns::cli().args(["trace", "--help"]));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--json", "--pid", "--comm", "--netns", "--syscall", "--type", "--failed", "--count", "--duration"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_setns_is_hidden_unless_asked_for() {
    require_root();
    let agent = netns_monitor_tests::agent::AgentProcess::start(&[]).await;
    let agent_pid = agent.child.id().expect("agent pid").to_string();
    let own_pid = std::process::id().to_string();
    // Both traces see the agent's calls; only the second may print them. The first also lets this process's
    // calls through (other tests' as well as the sentinel, which comes after the agent's calls): none of what
    // it prints up to the sentinel may be the agent's.
    let mut hidden =
        TraceProcess::start(&["--json", "--syscall", "setns", "--pid", &agent_pid, "--pid", &own_pid]).await;
    let shown =
        TraceProcess::start(&["--json", "--syscall", "setns", "--pid", &agent_pid, "--include-agent", "--count", "1"])
            .await;
    // The agent enters both new namespaces to attach to their veth ends (or first another test's, made meanwhile).
    let _pair = netns_monitor_tests::agent::VethPair::new(41);
    let (lines, status) = shown.finish(DEADLINE).await;
    assert!(status.success(), "{lines:?}");
    let event: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(event["pid"].to_string(), agent_pid, "{event}");
    let entered = event["namespaces"]["net"]["new"].as_u64().unwrap();
    assert_ne!(entered as u32, inode("/proc/self/ns/net"), "into another namespace than the host's: {event}");

    let tid = sentinel();
    let mut printed = Vec::new();
    let reached = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = hidden.stdout.next_line().await.expect("read trace stdout") {
            let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let done = event["tid"] == tid;
            printed.push(event);
            if done {
                return;
            }
        }
        panic!("trace ended before the sentinel");
    })
    .await;
    let _ = hidden.child.start_kill();
    assert!(reached.is_ok(), "no sentinel (tid {tid}) within {DEADLINE:?}; printed {printed:#?}");
    let agent_pid: u64 = agent_pid.parse().expect("a pid");
    let agents: Vec<&Value> = printed.iter().filter(|event| event["pid"] == agent_pid).collect();
    assert!(agents.is_empty(), "the agent's setns calls are hidden by default: {agents:#?}");
}

/// A call that changes four namespace types is four table lines, one per type, each under the header's TYPE and
/// OLD -> NEW columns, and none wider than a single-type row (one line of 392 characters before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_changing_several_types_is_one_aligned_line_per_type() {
    require_root();
    let trace = TraceProcess::start(&["--comm", "nsmt-wide", "--syscall", "unshare", "--count", "1"]).await;
    let flags =
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWCGROUP;
    let (before, after) = std::thread::Builder::new()
        .name("nsmt-wide".into())
        .spawn(move || {
            let before = ["net", "uts", "ipc", "cgroup"].map(|t| inode(format!("/proc/thread-self/ns/{t}")));
            unshare(flags).expect("unshare four types");
            (before, ["net", "uts", "ipc", "cgroup"].map(|t| inode(format!("/proc/thread-self/ns/{t}"))))
        })
        .unwrap()
        .join()
        .unwrap();
    let (lines, status) = trace.finish(DEADLINE).await;
    assert!(status.success(), "trace exited with {status}");
    let header = &lines[0];
    let (type_at, moves_at) = (header.find("TYPE").unwrap(), header.find("OLD -> NEW").unwrap());
    let first = lines.iter().position(|l| l.contains(" unshare ")).unwrap_or_else(|| panic!("no unshare: {lines:#?}"));
    let rows = &lines[first..first + 4];
    let mut shown = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        assert!(row.len() <= 150, "row {index} is {} characters: {row:?}", row.len());
        if index > 0 {
            assert!(row[..type_at].trim().is_empty(), "a continuation line has only TYPE and OLD -> NEW: {row:?}");
        }
        let kind = row[type_at..moves_at].trim().to_owned();
        let moved = row[moves_at..].split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        shown.push((kind, moved));
    }
    shown.sort();
    let mut expected: Vec<(String, String)> = ["net", "uts", "ipc", "cgroup"]
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), format!("{} -> {}", before[i], after[i])))
        .collect();
    expected.sort();
    // A net inode may carry its name in parentheses; these are anonymous.
    assert_eq!(shown, expected, "{lines:#?}");
    assert!(rows[0].trim_end().ends_with("ok"), "the result is on the first line: {:?}", rows[0]);
}
