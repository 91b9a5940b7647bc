//! Who got into each namespace: the agent records every process that entered a network namespace (setns,
//! unshare) or was created in one (clone with CLONE_NEWNET), `list --who` and `stats --who` show them, and
//! `netns_monitor_netns_arrivals_total` counts them per namespace and syscall. The oracle is the process the
//! test made and the namespace /proc shows it in.

use std::{
    ffi::CString,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    agent::AgentProcess,
    inode,
    monitoring::http,
    netns::{ChildGuard, NetnsGuard, ok, wait_until},
    require_root, unique_name,
};
use serde_json::Value;

/// A child made by clone(CLONE_NEWNET) that becomes `sleep 60`; killed and reaped on drop.
struct Cloned(u32);

impl Cloned {
    fn start() -> Self {
        let program = CString::new("/bin/sleep").unwrap();
        let argument = CString::new("60").unwrap();
        let argv = [program.as_ptr(), argument.as_ptr(), std::ptr::null()];
        // SAFETY: clone with newsp 0 behaves like fork (x86_64 order: flags, newsp, parent_tid, child_tid, tls).
        let ret = unsafe { libc::syscall(libc::SYS_clone, (libc::CLONE_NEWNET | libc::SIGCHLD) as u64, 0, 0, 0, 0) };
        assert!(ret >= 0, "clone failed: {}", std::io::Error::last_os_error());
        if ret == 0 {
            // SAFETY: the child of a multi-threaded process makes only async-signal-safe calls: execv, _exit.
            unsafe {
                libc::execv(program.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        Cloned(ret as u32)
    }
}

impl Drop for Cloned {
    fn drop(&mut self) {
        // SAFETY: kill and reap our own child.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGKILL);
            libc::waitpid(self.0 as i32, std::ptr::null_mut(), 0);
        }
    }
}

fn listed(pin_dir: &str, inode: u32) -> Option<Value> {
    let rows: Value = serde_json::from_str(&ok(&["list", "--who", "--json", "--pin-dir", pin_dir])).expect("JSON");
    rows.as_array().unwrap().iter().find(|r| r["inode"] == inode).cloned()
}

fn last_arrival(row: &Value) -> Option<&Value> {
    row["arrivals"]["last"].as_array()?.last()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_that_got_into_a_namespace_is_named_and_counted() {
    require_root();
    let agent = AgentProcess::start(&[]).await;
    let (listen, pin_dir) = (agent.listen, agent.pin_dir.display().to_string());
    let name = unique_name("nsm-who");
    let _guard = NetnsGuard::new(&name);
    ok(&["add", &name]);
    let named = inode(Path::new("/run/netns").join(&name));

    // setns: `ip netns exec` enters and becomes the command, so the arrival is sleep's pid.
    let entered = ChildGuard(Command::new("ip").args(["netns", "exec", &name, "sleep", "60"]).spawn().expect("spawn"));
    // unshare: the caller moves into a namespace it made.
    let unshared = ChildGuard(Command::new("unshare").args(["-n", "sleep", "60"]).spawn().expect("spawn"));
    // clone: the child is created in a new namespace.
    let cloned = Cloned::start();
    let (entered_pid, unshared_pid, cloned_pid) = (entered.0.id(), unshared.0.id(), cloned.0);
    let inode_of = |pid: u32| {
        let mut netns = 0;
        wait_until(Duration::from_secs(10), &format!("process {pid} in its namespace as sleep"), || {
            netns = inode(format!("/proc/{pid}/ns/net"));
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with("sleep"))
        });
        netns
    };
    assert_eq!(inode_of(entered_pid), named);
    let (unshared_netns, cloned_netns) = (inode_of(unshared_pid), inode_of(cloned_pid));

    let expected = [(named, entered_pid, "setns", "ip"), (unshared_netns, unshared_pid, "unshare", "unshare")];
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(30), "list --who to show all three arrivals", || {
        rows = [named, unshared_netns, cloned_netns].map(|netns| listed(&pin_dir, netns)).to_vec();
        let pids = rows.iter().map(|row| row.as_ref().and_then(last_arrival).and_then(|a| a["pid"].as_u64()));
        pids.eq([entered_pid, unshared_pid, cloned_pid].map(|pid| Some(u64::from(pid))))
    });
    for ((netns, pid, syscall, comm), row) in expected.iter().zip(&rows) {
        let row = row.as_ref().unwrap();
        let last = last_arrival(row).unwrap();
        assert_eq!(last["pid"], *pid, "{netns}: {row:#}");
        assert_eq!(last["syscall"], *syscall, "{netns}: {row:#}");
        assert_eq!(last["comm"], *comm, "{netns}: {row:#}");
        assert_eq!(row["arrivals"]["counts"], serde_json::json!({ *syscall: 1 }), "exactly one: {row:#}");
    }
    let clone_row = rows[2].as_ref().unwrap();
    assert_eq!(last_arrival(clone_row).unwrap()["pid"], cloned_pid, "the clone's child: {clone_row:#}");
    assert_eq!(last_arrival(clone_row).unwrap()["syscall"], "clone");

    // netns-monitor's own workers enter namespaces to read them (list just did, several times): not arrivals.
    let again = listed(&pin_dir, named).unwrap();
    assert_eq!(again["arrivals"]["counts"], serde_json::json!({"setns": 1}), "{again:#}");
    let table = ok(&["list", "--who", "--pin-dir", &pin_dir]);
    let line = table.lines().find(|l| l.starts_with(&format!("{named} "))).expect("a row");
    assert!(line.contains(&format!("ip[{entered_pid}] setns ")), "WHO column: {line}");
    let stats: Value = serde_json::from_str(&ok(&["stats", &name, "--who", "--json", "--pin-dir", &pin_dir])).unwrap();
    assert_eq!(last_arrival(&stats[0]).expect("stats --who")["pid"], entered_pid, "{stats:#}");

    // Bounded metrics: per namespace and syscall.
    let series =
        format!("netns_monitor_netns_arrivals_total{{name=\"{name}\",netns=\"{named}\",syscall=\"setns\"}} 1\n");
    let clone_series = format!("netns=\"{cloned_netns}\",syscall=\"clone\"}} 1\n");
    let started = Instant::now();
    loop {
        let body = http::get(listen, "/metrics", Duration::from_secs(10)).expect("scrape").body;
        if body.contains(&series) && body.contains(&clone_series) {
            assert!(!body.lines().any(|l| l.starts_with("netns_monitor_netns_arrivals_total") && l.contains("pid=")));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no {series} or {clone_series} in:\n{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
