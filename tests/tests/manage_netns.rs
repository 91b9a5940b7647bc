//! Named namespaces: `add`/`del`/`exec`/`identify`/`pids`/`attach` interoperate with iproute2 in both
//! directions, `exec` has `ip netns exec`'s semantics, concurrent `add`s have one winner, and bad input is
//! refused with exit code 2 and nothing left behind. The oracle is the kernel and iproute2.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::Command,
    sync::{Arc, Barrier},
    time::Duration,
};

use netns_monitor_tests::{
    inode,
    netns::{ChildGuard, NetnsGuard, cli, fails, ip_netns_list, ok, run, sh, sh_ok, wait_until},
    require_root, unique_name,
};

fn run_dir_entry(name: &str) -> bool {
    Path::new("/run/netns").join(name).symlink_metadata().is_ok()
}

#[test]
fn add_is_seen_by_iproute2_and_del_removes_it() {
    require_root();
    let name = unique_name("nsm-add");
    let _guard = NetnsGuard::new(&name);
    ok(&["add", &name]);

    assert!(ip_netns_list().contains(&name), "ip netns list shows {name}");
    let lo = sh_ok("ip", &["-n", &name, "link", "show", "lo"]);
    assert!(lo.contains("UP"), "add brings lo up: {lo}");
    let identify = sh_ok("ip", &["netns", "exec", &name, "ip", "netns", "identify"]);
    assert_eq!(identify.trim(), name, "a process entered by iproute2 is in our namespace");
    let addr = sh_ok("ip", &["-n", &name, "addr"]);
    assert!(addr.contains("127.0.0.1/8"), "ip -n NAME addr works on ours: {addr}");

    ok(&["del", &name]);
    assert!(!ip_netns_list().contains(&name), "gone from ip netns list");
    assert!(!run_dir_entry(&name), "no file left under /run/netns");
}

#[test]
fn iproute2_namespaces_are_seen_by_ours() {
    require_root();
    let name = unique_name("nsm-ipr");
    let _guard = NetnsGuard::new(&name);
    sh_ok("ip", &["netns", "add", &name]);
    let expected_inode = inode(Path::new("/run/netns").join(&name));

    let list: serde_json::Value = serde_json::from_str(&ok(&["list", "--json"])).expect("list --json is JSON");
    let entry = list
        .as_array()
        .expect("an array")
        .iter()
        .find(|ns| ns["names"].as_array().is_some_and(|n| n.iter().any(|n| n == name.as_str())))
        .unwrap_or_else(|| panic!("{name} in list --json: {list:#}"));
    assert_eq!(entry["inode"], expected_inode, "inode as the kernel shows it");
    assert_eq!(entry["source"], "named");
    assert_eq!(entry["interfaces"], serde_json::json!(["lo"]), "a fresh namespace has only lo");

    let table = ok(&["list"]);
    let row = table.lines().find(|l| l.split_whitespace().nth(3) == Some(name.as_str())).expect("a table row");
    assert!(row.starts_with(&expected_inode.to_string()), "row starts with the inode: {row}");
    assert!(table.lines().next().unwrap().starts_with("INODE"), "header: {table}");

    let out = cli().args(["exec", &name, "--", "ip", "netns", "identify"]).output().expect("run exec");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name, "our exec enters their namespace");

    ok(&["del", &name]);
    assert!(!ip_netns_list().contains(&name), "our del removes their namespace");
}

#[test]
fn identify_and_pids_agree_with_iproute2() {
    require_root();
    let name = unique_name("nsm-pid");
    let _guard = NetnsGuard::new(&name);
    ok(&["add", &name]);
    // `ip netns exec` execs the command in place, so the child's pid is sleep's.
    let child = ChildGuard(Command::new("ip").args(["netns", "exec", &name, "sleep", "60"]).spawn().expect("spawn"));
    let pid = child.0.id().to_string();
    wait_until(Duration::from_secs(10), "the child to enter the namespace", || {
        sh_ok("ip", &["netns", "pids", &name]).lines().any(|l| l == pid)
    });

    assert_eq!(ok(&["pids", &name]), sh_ok("ip", &["netns", "pids", &name]), "pids NAME = ip netns pids NAME");
    assert_eq!(ok(&["identify", &pid]).trim(), name);
    assert_eq!(ok(&["identify", &pid]), sh_ok("ip", &["netns", "identify", &pid]), "identify = ip netns identify");
    // iproute2 prints an empty line for an unnamed namespace; we print no line.
    assert_eq!(ok(&["identify"]).trim(), sh_ok("ip", &["netns", "identify", &std::process::id().to_string()]).trim());
}

#[test]
fn exec_has_ip_netns_exec_semantics() {
    require_root();
    let name = unique_name("nsm-exec");
    let _guard = NetnsGuard::new(&name);
    ok(&["add", &name]);
    let etc = Path::new("/etc/netns").join(&name);
    std::fs::create_dir_all(&etc).expect("mkdir /etc/netns/NAME");
    struct RemoveDir(std::path::PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _etc_guard = RemoveDir(etc.clone());
    let marker = format!("10.9.9.9 {name}-host");
    std::fs::write(etc.join("hosts"), format!("{marker}\n")).expect("write hosts");

    let script = "cat /etc/hosts; echo ---; ls /sys/class/net; echo ---; readlink /proc/self/ns/net; exit 7";
    let out = cli().args(["exec", &name, "--", "sh", "-c", script]).output().expect("run exec");
    assert_eq!(out.status.code(), Some(7), "the command's exit code is passed through");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parts: Vec<&str> = stdout.split("---\n").collect();
    assert_eq!(parts[0].trim(), marker, "/etc/netns/NAME/hosts is bound over /etc/hosts");
    assert_eq!(parts[1].split_whitespace().collect::<Vec<_>>(), ["lo"], "/sys shows the namespace's interfaces");
    let expected = format!("net:[{}]", inode(Path::new("/run/netns").join(&name)));
    assert_eq!(parts[2].trim(), expected, "the command runs in the namespace");
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(!host_hosts.contains(&marker), "the bind mount did not leak to the host");

    let killed = run(&["exec", &name, "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.signal(), Some(15), "killed by SIGTERM, as `ip netns exec` reports it");
    // exec becomes the command: a signal sent to it reaches the command, which leaves nothing running.
    let mut sleeper = ChildGuard(cli().args(["exec", &name, "--", "sleep", "60"]).spawn().expect("start exec sleep"));
    let pid = sleeper.0.id();
    wait_until(Duration::from_secs(10), "sleep runs in the namespace", || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with("sleep"))
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = sleeper.0.wait().expect("wait for exec");
    assert_eq!(status.signal(), Some(15), "SIGTERM ended the command");
    assert!(ok(&["pids", &name]).trim().is_empty(), "nothing left running in the namespace");
    let missing = run(&["exec", &name, "--", "/nonexistent/program"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/program"), "names the program");
}

#[test]
fn concurrent_adds_of_one_name_have_one_winner() {
    require_root();
    let name = unique_name("nsm-race");
    let _guard = NetnsGuard::new(&name);
    const RACERS: usize = 6;
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (barrier, name) = (barrier.clone(), name.clone());
            std::thread::spawn(move || {
                let mut command = cli();
                command.args(["add", &name]);
                barrier.wait();
                command.output().expect("run add")
            })
        })
        .collect();
    let outputs: Vec<_> = racers.into_iter().map(|r| r.join().expect("racer")).collect();
    let winners = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "exactly one add wins: {outputs:#?}");
    for loser in outputs.iter().filter(|o| !o.status.success()) {
        assert_eq!(loser.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&loser.stderr);
        assert!(stderr.contains(&format!("namespace {name:?} already exists")), "clear error: {stderr}");
    }
    assert_eq!(ip_netns_list().iter().filter(|n| **n == name).count(), 1);
    assert!(sh_ok("ip", &["-n", &name, "link", "show", "lo"]).contains("UP"), "the winner's namespace is whole");
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    require_root();
    let long = "x".repeat(256);
    for (bad, reason) in
        [("", "it is empty"), (".", "not allowed"), ("..", "not allowed"), ("a/b", "'/'"), (long.as_str(), "longer")]
    {
        let stderr = fails(&["add", bad], 2);
        assert!(stderr.contains("invalid namespace name") && stderr.contains(reason), "{bad:?}: {stderr}");
    }
    assert!(!run_dir_entry("a"), "a/b made nothing");

    let name = unique_name("nsm-bad");
    let _guard = NetnsGuard::new(&name);
    let missing = format!("{name}-missing");
    let stderr = fails(&["del", &missing], 2);
    assert!(stderr.contains(&format!("namespace {missing:?} does not exist")), "{stderr}");
    for args in [vec!["exec", missing.as_str(), "true"], vec!["pids", missing.as_str()]] {
        assert!(fails(&args, 2).contains("does not exist"), "{args:?}");
    }
    assert!(!run_dir_entry(&missing));

    ok(&["add", &name]);
    let before = inode(Path::new("/run/netns").join(&name));
    assert!(fails(&["add", &name], 2).contains("already exists"));
    assert_eq!(inode(Path::new("/run/netns").join(&name)), before, "the existing namespace is untouched");

    // A pid that does not exist (above the kernel's maximum).
    let stderr = fails(&["identify", "99999999"], 2);
    assert!(stderr.contains("process 99999999 does not exist"), "{stderr}");
    let attach_name = format!("{name}-att");
    let _attach_guard = NetnsGuard::new(&attach_name);
    let stderr = fails(&["attach", &attach_name, "99999999"], 2);
    assert!(stderr.contains("process 99999999 does not exist"), "{stderr}");
    assert!(!run_dir_entry(&attach_name), "a failed attach leaves no file under /run/netns");
    assert!(fails(&["attach", &name, &std::process::id().to_string()], 2).contains("already exists"));

    // Usage errors from the parser are exit 2 as well.
    fails(&["identify", "not-a-pid"], 2);
    fails(&["attach", &attach_name], 2);
}

#[test]
fn del_all_removes_every_name() {
    require_root();
    // In a private mount namespace with its own empty /run/netns, so other tests' namespaces are not touched.
    let bin = env!("CARGO_BIN_EXE_netns-monitor-cli");
    assert_eq!(Path::new(bin), netns_monitor_tests::netns::cli_path(), "the binary the other tests run");
    let script = format!(
        "set -e; mkdir -p /run/netns; mount -t tmpfs tmpfs /run/netns; {bin} add one; {bin} add two; \
         ip netns list | sort | tr '\\n' ' '; echo; {bin} del --all; ls -A /run/netns | wc -l"
    );
    let out = sh("unshare", &["--mount", "--propagation", "private", "sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "script failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0].trim(), "one two", "both created and visible to iproute2");
    assert_eq!(lines[1].trim(), "0", "del --all leaves /run/netns empty");
}

/// A process in namespaces of its own (net, uts, ipc, mnt, pid), as a container's first process is: `unshare`
/// forks the namespace's init, which sets a hostname and becomes `sleep`.
struct Isolated {
    _unshare: ChildGuard,
    pid: u32,
}

impl Isolated {
    fn start() -> Self {
        let unshare = ChildGuard(
            Command::new("unshare")
                .args(["-n", "-u", "-i", "-m", "-p", "--fork", "--mount-proc", "sh", "-c"])
                .arg("hostname nsm-isolated && exec sleep 120")
                .spawn()
                .expect("spawn unshare"),
        );
        let pid = child_running(unshare.0.id(), "sleep");
        Isolated { _unshare: unshare, pid }
    }

    fn ns(&self, kind: &str) -> String {
        std::fs::read_link(format!("/proc/{}/ns/{kind}", self.pid)).expect("readlink ns").display().to_string()
    }
}

/// The first child of `parent` once it runs `program` (waited for with a deadline).
fn child_running(parent: u32, program: &str) -> u32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(10), &format!("a child of {parent} to run {program}"), || {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        pid = children.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
        pid != 0 && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with(program))
    });
    pid
}

#[test]
fn exec_reaches_a_namespace_by_path_pid_and_inode() {
    require_root();
    let name = unique_name("nsm-tgt");
    let _guard = NetnsGuard::new(&name);
    ok(&["add", &name]);
    let named = format!("net:[{}]", inode(Path::new("/run/netns").join(&name)));
    let isolated = Isolated::start();
    let held = isolated.ns("net");
    let held_inode = inode(format!("/proc/{}/ns/net", isolated.pid));
    let path = format!("/proc/{}/ns/net", isolated.pid);
    let named_path = format!("/run/netns/{name}");
    let pid = isolated.pid.to_string();
    let held_inode_arg = held_inode.to_string();
    let held_link = format!("net:[{held_inode}]");
    for (args, expected) in [
        (vec![named_path.as_str()], &named),
        (vec![path.as_str()], &held),
        (vec!["--pid", &pid], &held),
        (vec!["--inode", &held_inode_arg], &held),
        (vec!["--inode", &held_link], &held),
    ] {
        let mut full = vec!["exec"];
        full.extend(&args);
        full.extend(["--", "sh", "-c", "readlink /proc/self/ns/net; ls /sys/class/net"]);
        let out = ok(&full);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first(), Some(&expected.as_str()), "{args:?} enters {expected}: {out}");
        assert_eq!(&lines[1..], ["lo"], "{args:?}: /sys is the namespace's: {out}");
    }
    // Without --type, only the network namespace is entered (ip netns exec's semantics): the hostname is ours.
    let ours = sh_ok("hostname", &[]);
    assert_eq!(ok(&["exec", "--pid", &pid, "hostname"]), ours);

    let stderr = fails(&["exec", "/etc/hostname", "true"], 2);
    assert!(stderr.contains("/etc/hostname is not a network namespace"), "{stderr}");
    let uts = format!("/proc/{}/ns/uts", isolated.pid);
    assert!(fails(&["exec", &uts, "true"], 2).contains("is not a network namespace"), "another type of nsfs file");
    assert!(fails(&["exec", "--inode", "12", "true"], 2).contains("no network namespace has inode 12"));
    assert!(fails(&["exec", "--inode", "x", "true"], 2).contains("--inode takes a number"));
    assert!(fails(&["exec", "/nonexistent/ns", "true"], 2).contains("/nonexistent/ns does not exist"));
    assert!(fails(&["exec", &name, "--type", "mnt", "true"], 2).contains("needs --pid"));
    assert!(fails(&["exec", "--pid", &pid, "--type", "net,mount", "true"], 2).contains("unknown namespace type"));
    assert!(fails(&["exec", "--pid", &pid], 2).contains("a command is required"));
    assert!(fails(&["exec", "--pid", "99999999", "true"], 2).contains("process 99999999 does not exist"));
}

#[test]
fn exec_type_enters_a_process_namespaces_as_nsenter_does() {
    require_root();
    let isolated = Isolated::start();
    let pid = isolated.pid.to_string();
    let kinds = ["net", "uts", "ipc", "mnt", "pid"];
    let script = "hostname; for t in net uts ipc mnt pid; do readlink /proc/self/ns/$t; done; echo $$";
    let out = ok(&["exec", "--pid", &pid, "--type", "all", "--", "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "nsm-isolated", "the process's UTS namespace: {out}");
    for (kind, line) in kinds.iter().zip(&lines[1..6]) {
        assert_eq!(*line, isolated.ns(kind), "{kind} is the process's: {out}");
    }
    // In the PID namespace the command is a child of the entering process (sleep is 1 there).
    let inner_pid: u32 = lines[6].parse().expect("a pid");
    assert!(inner_pid > 1, "a new process in the namespace: {out}");
    // Its mount namespace, as is (no /sys remount): /proc there is the namespace's own (--mount-proc).
    // The shell counts /proc's pid entries itself (a glob, no child): sleep and the shell, as nsenter sees it.
    let count = "set -- /proc/[0-9]*; echo $#";
    let procs = ok(&["exec", "--pid", &pid, "--type", "mnt,pid", "--", "sh", "-c", count]);
    let oracle = sh_ok("nsenter", &["-t", &pid, "-m", "-p", "sh", "-c", count]);
    assert_eq!((procs.trim(), oracle.trim()), ("2", "2"), "only the namespace's processes, as nsenter shows them");

    // A signal sent to netns-monitor reaches the command running in the PID namespace, and the exit says so.
    let killed = run(&["exec", "--pid", &pid, "--type", "pid", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.signal(), Some(15), "dies of the command's signal");
    let mut sleeper = ChildGuard(
        cli().args(["exec", "--pid", &pid, "--type", "net,pid", "--", "sleep", "60"]).spawn().expect("start exec"),
    );
    let supervisor = sleeper.0.id();
    let inner = child_running(supervisor, "sleep");
    assert_eq!(std::fs::read_link(format!("/proc/{inner}/ns/pid")).unwrap().display().to_string(), isolated.ns("pid"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = sleeper.0.wait().expect("wait for exec");
    assert_eq!(status.signal(), Some(15), "the supervisor dies of the signal its command died of");
    wait_until(Duration::from_secs(10), "the command to be gone", || !Path::new(&format!("/proc/{inner}")).exists());
}

#[test]
fn exec_all_runs_in_every_named_namespace_in_turn() {
    require_root();
    // In a private mount namespace with its own empty /run/netns, so that other tests' names are not entered.
    let bin = netns_monitor_tests::netns::cli_path();
    let bin = bin.display();
    let script = format!(
        "set -e; mkdir -p /run/netns; mount -t tmpfs tmpfs /run/netns; {bin} add one; {bin} add two; \
         for n in one two; do echo \"expect $n $(stat -L -c %i /run/netns/$n)\"; done; \
         {bin} exec --all -- sh -c 'stat -L -c %i /proc/self/ns/net; ls /sys/class/net'; \
         echo \"rc=$?\"; {bin} exec --all -- sh -c 'test \"$(stat -L -c %i /proc/self/ns/net)\" = \"$(stat -L -c %i /run/netns/one)\"' \
         || echo \"failed=$?\""
    );
    let out = sh("unshare", &["--mount", "--propagation", "private", "sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed: {stdout} {stderr}");
    let expect: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("expect ")).collect();
    let (one, two) = (expect[0].split(' ').nth(1).unwrap(), expect[1].split(' ').nth(1).unwrap());
    let walk: Vec<&str> = stdout.lines().skip(2).take_while(|l| !l.starts_with("rc=")).collect();
    assert_eq!(walk, ["", "netns: one", one, "lo", "", "netns: two", two, "lo"], "as ip -all netns exec: {stdout}");
    assert!(stdout.contains("rc=0"), "every command succeeded: {stdout}");
    assert!(stdout.contains("failed=1"), "one command failed, so the exit is 1: {stdout}");
    assert!(stderr.contains("two: \"sh\" exit status: 1"), "names the namespace that failed: {stderr}");
}

#[test]
fn set_and_list_id_agree_with_iproute2_and_reach_beyond_run_netns() {
    require_root();
    let name = unique_name("nsm-nsid");
    let other = format!("{name}-b");
    let _guards = (NetnsGuard::new(&name), NetnsGuard::new(&other));
    ok(&["add", &name]);
    ok(&["add", &other]);
    // Ids are the host namespace's, shared with every other test: one of our own.
    let id = 100_000 + std::process::id() % 100_000;
    let id_arg = id.to_string();
    assert_eq!(ok(&["set", &name, &id_arg]), "", "a given id prints nothing, as ip netns set");
    let ip = sh_ok("ip", &["netns", "list-id"]);
    assert!(ip.lines().any(|l| l == format!("nsid {id} (iproute2 netns name: {name})")), "ip sees it: {ip}");
    assert_eq!(ok(&["set", &name, &id_arg]), "", "asking again for the id it has is no error");
    let stderr = fails(&["set", &name, "7"], 2);
    assert!(stderr.contains(&format!("{name:?} already has NSID {id}")), "{stderr}");
    let stderr = fails(&["set", &other, &id_arg], 2);
    assert!(stderr.contains(&format!("NSID {id} is already given to another namespace")), "{stderr}");
    for bad in ["-5", "x", "2147483648"] {
        let args = ["set", other.as_str(), "--", bad];
        assert!(fails(&args, 2).contains("invalid NSID"), "{bad}");
    }
    let auto: i32 = ok(&["set", &other, "auto"]).trim().parse().expect("auto prints the id");
    let listed = ip_netns_list_ids();
    assert_eq!(listed.get(&other), Some(&auto), "ip netns list shows the id auto gave: {listed:?}");

    // A namespace held only by a process, with an id: ip netns list-id cannot name it; ours gives its inode.
    let held = ChildGuard(Command::new("unshare").args(["-n", "sleep", "60"]).spawn().expect("spawn"));
    let pid = held.0.id().to_string();
    wait_until(Duration::from_secs(10), "unshare to become sleep", || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with("sleep"))
    });
    let temporary = format!("{name}-t");
    let _temporary_guard = NetnsGuard::new(&temporary);
    ok(&["attach", &temporary, &pid]);
    let held_id: i64 = ok(&["set", &temporary, "auto"]).trim().parse().unwrap();
    ok(&["del", &temporary]);
    let held_inode = inode(format!("/proc/{pid}/ns/net"));

    let ids: serde_json::Value = serde_json::from_str(&ok(&["list-id", "--json"])).expect("JSON");
    let entry = |nsid: i64| {
        ids.as_array().unwrap().iter().find(|e| e["nsid"] == nsid).unwrap_or_else(|| panic!("{nsid} in {ids:#}"))
    };
    assert_eq!(entry(i64::from(id))["inode"], inode(Path::new("/run/netns").join(&name)));
    assert_eq!(entry(i64::from(id))["names"], serde_json::json!([name]));
    assert_eq!(entry(i64::from(auto))["inode"], inode(Path::new("/run/netns").join(&other)));
    assert_eq!(entry(held_id)["inode"], held_inode, "the process-held one, by inode");
    assert_eq!(entry(held_id)["names"], serde_json::json!([]));
    let table = ok(&["list-id"]);
    assert!(
        table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == [
                id_arg.as_str(),
                &inode(Path::new("/run/netns").join(&name)).to_string(),
                name.as_str(),
                name.as_str()
            ]),
        "{table}"
    );
}

/// `ip netns list`'s `NAME (id: N)` entries.
fn ip_netns_list_ids() -> std::collections::HashMap<String, i32> {
    sh_ok("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" (id: ")?;
            Some((name.to_owned(), rest.strip_suffix(')')?.parse().ok()?))
        })
        .collect()
}
