//! The exact-lifecycle check shared by the host test (`tests/lifecycle_exact.rs`) and the kernel matrix
//! (`kernel-check`): many short-lived network namespaces, made by every syscall that can make one, must each be
//! reported created once and destroyed once by `netns-monitor trace --json`, with none left "unknown".
//!
//! The namespaces die as fast as the kernel can free them: a thread that unshares and exits, a clone/clone3
//! child that exits at once, and (where the binary exists) `unshare -n true`. The oracle is what this process
//! did: the number it made, and the inode each one had (`/proc/thread-self/ns/net` before the thread exits).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use netns_monitor_common::ns::CLONE_NEWNET;

/// How the namespaces of a run were made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Made {
    pub unshare_threads: usize,
    pub clone: usize,
    pub clone3: usize,
    pub unshare_command: usize,
}

impl Made {
    pub fn total(&self) -> usize {
        self.unshare_threads + self.clone + self.clone3 + self.unshare_command
    }
}

/// What the trace reported about the namespaces this run made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    pub made: Made,
    pub created: usize,
    pub destroyed: usize,
    pub unknown: usize,
    /// Inodes whose destructions (seen or unknown) do not match their creations, with both counts.
    pub unmatched: BTreeMap<u32, (usize, usize)>,
    pub took: Duration,
    /// What `trace` said on stderr after attaching (lost events, warnings).
    pub warnings: Vec<String>,
}

impl Reported {
    /// created == destroyed == made, nothing unknown, every inode matched.
    pub fn exact(&self) -> bool {
        let total = self.made.total();
        self.created == total && self.destroyed == total && self.unknown == 0 && self.unmatched.is_empty()
    }

    pub fn summary(&self) -> String {
        let m = &self.made;
        format!(
            "{} namespaces ({} unshare threads, {} clone, {} clone3, {} `unshare -n true`): created {}, destroyed \
             {}, unknown {}, unmatched inodes {} in {} ms",
            m.total(),
            m.unshare_threads,
            m.clone,
            m.clone3,
            m.unshare_command,
            self.created,
            self.destroyed,
            self.unknown,
            self.unmatched.len(),
            self.took.as_millis()
        ) + &if self.warnings.is_empty() { String::new() } else { format!("; trace said: {:?}", self.warnings) }
    }
}

/// A `trace --json` child and its stdout lines.
struct Trace {
    child: Child,
    lines: mpsc::Receiver<String>,
    warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_trace(binary: &Path, hooks: &str, env: &[(&str, &str)]) -> Result<Trace, String> {
    let mut child = Command::new(binary)
        .args(["trace", "--json", "--hooks", hooks])
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {} trace: {e}", binary.display()))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let said = std::sync::Arc::clone(&warnings);
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut attached = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("programs attached") {
                attached = true;
                let _ = ready_tx.send(Ok(line.clone()));
            } else if attached && (line.contains("WARN") || line.contains("warning")) {
                said.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
            }
            log.push(line);
        }
        let _ = ready_tx.send(Err(log.join("\n")));
    });
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let trace = Trace { child, lines, warnings };
    match ready_rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(_)) => Ok(trace),
        Ok(Err(log)) => Err(format!("trace --hooks {hooks} exited before attaching: {log}")),
        Err(_) => Err(format!("trace --hooks {hooks} did not attach within 120 s")),
    }
}

/// Makes `total` short-lived namespaces, in turn by each way there is; returns how, and the pids that made them.
fn make_namespaces(total: usize) -> (Made, BTreeSet<u32>) {
    let unshare_binary = ["/usr/bin/unshare", "/bin/unshare"].into_iter().find(|p| Path::new(p).exists());
    let ways = if unshare_binary.is_some() { 4 } else { 3 };
    let mut made = Made::default();
    let mut pids = BTreeSet::from([std::process::id()]);
    for n in 0..total {
        match n % ways {
            0 => {
                std::thread::spawn(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
                })
                .join()
                .expect("unshare thread");
                made.unshare_threads += 1;
            }
            1 => {
                clone_and_exit(false);
                made.clone += 1;
            }
            2 => {
                clone_and_exit(true);
                made.clone3 += 1;
            }
            _ => {
                let binary = unshare_binary.expect("only with the binary");
                let child = Command::new(binary).args(["-n", "true"]).spawn().expect("spawn unshare -n true");
                pids.insert(child.id());
                let status = child.wait_with_output().expect("wait for unshare").status;
                assert!(status.success(), "unshare -n true failed: {status}");
                made.unshare_command += 1;
            }
        }
    }
    (made, pids)
}

/// A clone/clone3 child in a new network namespace that exits at once.
fn clone_and_exit(clone3: bool) {
    let ret = if clone3 {
        let mut args = [0u64; 11];
        args[0] = CLONE_NEWNET;
        args[4] = libc::SIGCHLD as u64;
        // SAFETY: clone3 without a stack behaves like fork; `args` is a clone_args of the size passed.
        unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), size_of_val(&args)) }
    } else {
        // SAFETY: clone with newsp 0 behaves like fork (x86_64 order: flags, newsp, parent_tid, child_tid, tls).
        unsafe { libc::syscall(libc::SYS_clone, CLONE_NEWNET | libc::SIGCHLD as u64, 0, 0, 0, 0) }
    };
    assert!(ret >= 0, "clone with CLONE_NEWNET failed: {}", std::io::Error::last_os_error());
    if ret == 0 {
        // SAFETY: the child of a multi-threaded process only calls _exit.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reaps the child just made.
    unsafe { libc::waitpid(ret as i32, std::ptr::null_mut(), 0) };
}

/// Runs the check with `binary trace --json --hooks HOOKS`: makes `total` namespaces, then reads the trace until
/// every one has an end or `deadline` passes. Only an error to start or read the trace is an `Err`; a count that
/// does not match is in the report (see [`Reported::exact`]).
pub fn run(binary: &Path, hooks: &str, total: usize, deadline: Duration) -> Result<Reported, String> {
    run_with_env(binary, hooks, &[], total, deadline)
}

/// [`run`] with more environment variables for the trace (`NETNS_MONITOR_DESTRUCTION=netns-id`).
pub fn run_with_env(
    binary: &Path,
    hooks: &str,
    env: &[(&str, &str)],
    total: usize,
    deadline: Duration,
) -> Result<Reported, String> {
    let trace = start_trace(binary, hooks, env)?;
    let started = Instant::now();
    let (made, pids) = make_namespaces(total);
    let mut created: BTreeMap<u32, usize> = BTreeMap::new();
    let mut ended: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    let mut report = Reported { made, ..Reported::default() };
    let until = Instant::now() + deadline;
    let done = |created: &BTreeMap<u32, usize>, ended: &BTreeMap<u32, (usize, usize)>| {
        created.values().sum::<usize>() >= total
            && created.iter().all(|(inode, n)| ended.get(inode).is_some_and(|(d, u)| d + u >= *n))
    };
    while !done(&created, &ended) {
        let Some(left) = until.checked_duration_since(Instant::now()) else { break };
        let Ok(line) = trace.lines.recv_timeout(left) else { break };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            return Err(format!("trace printed a line that is not JSON: {line}"));
        };
        let net = |side: &str| event["namespaces"]["net"][side].as_u64().map(|i| i as u32);
        match event["event"].as_str() {
            Some("netns_created") => {
                let ours = event["pid"].as_u64().is_some_and(|pid| pids.contains(&(pid as u32)));
                if let (true, Some(inode)) = (ours, net("new")) {
                    *created.entry(inode).or_default() += 1;
                }
            }
            Some("netns_destroyed") => {
                if let Some(inode) = net("old") {
                    let entry = ended.entry(inode).or_default();
                    match event["destroyed"].as_str() {
                        Some("unknown") => entry.1 += 1,
                        _ => entry.0 += 1,
                    }
                }
            }
            _ => {}
        }
    }
    report.took = started.elapsed();
    report.warnings = trace.warnings.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.created = created.values().sum();
    for (inode, n) in &created {
        let (destroyed, unknown) = ended.get(inode).copied().unwrap_or_default();
        report.destroyed += destroyed;
        report.unknown += unknown;
        if destroyed + unknown != *n {
            report.unmatched.insert(*inode, (*n, destroyed + unknown));
        }
    }
    Ok(report)
}
