//! Namespaces, veths and kernel settings the benchmarks need, and their removal: by guards when a benchmark
//! ends or fails, after Ctrl-C (the handler only sets a flag; loops check it and return, so the guards run),
//! and by a pass over names at the start and end of every run that removes what a killed run left behind.
//!
//! Names: namespaces `nmbench-<pid>-<what>`, pin directories `/sys/fs/bpf/nmbench-<pid>-<n>`, interfaces
//! `nb<pid % 10000><what>` (IFNAMSIZ is 16). The pid says whether the run that made them is still alive.

use std::{
    fs,
    io::Write as _,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::cmd;

const PREFIX: &str = "nmbench-";
const BPFFS: &str = "/sys/fs/bpf";
const RUN_NETNS: &str = "/run/netns";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so guards get to clean up.
pub fn install_interrupt_handler() -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic (async-signal-safe).
        let ok = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
        };
        ensure!(ok, "cannot install a handler for signal {signal}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once the run was interrupted.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, but returns early (with an error) when interrupted.
pub fn sleep(duration: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        check()?;
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    check()
}

/// `nmbench-<pid>-<what>`.
pub fn netns_name(what: &str) -> String {
    format!("{PREFIX}{}-{what}", std::process::id())
}

/// `nb<pid % 10000><what>`: at most 15 bytes for `what` up to 9 bytes.
pub fn if_name(what: &str) -> String {
    let name = format!("nb{}{what}", std::process::id() % 10_000);
    debug_assert!(name.len() < 16, "{name} is too long for an interface name");
    name
}

/// A fresh bpffs directory name for one agent run: `/sys/fs/bpf/nmbench-<pid>-<n>`.
pub fn pin_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Path::new(BPFFS).join(format!("{PREFIX}{}-{n}", std::process::id()))
}

/// The pid in `nmbench-<pid>-...`, if the name is one of ours.
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split_once('-')?.0.parse().ok()
}

/// True when `name` belongs to this run or to a run that is gone.
fn removable(name: &str) -> bool {
    owner(name).is_some_and(|pid| pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes what this run or a dead earlier run left: processes inside our namespaces (iperf3 servers), agents
/// pinning into our directories, the namespaces (and with them their veth pairs), then the pin directories.
pub fn remove_leftovers() {
    let namespaces: Vec<String> = fs::read_dir(RUN_NETNS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| removable(n))
        .collect();
    let pin_dirs: Vec<PathBuf> = fs::read_dir(BPFFS)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(removable))
        .map(|e| e.path())
        .collect();
    if namespaces.is_empty() && pin_dirs.is_empty() {
        return;
    }
    eprintln!("[bench] removing leftovers: {} namespaces, {} pin directories", namespaces.len(), pin_dirs.len());
    let inodes: Vec<u64> =
        namespaces.iter().filter_map(|n| fs::metadata(Path::new(RUN_NETNS).join(n)).ok()).map(|m| m.ino()).collect();
    for pid in own_processes(&inodes, &pin_dirs) {
        // SAFETY: kill has no memory preconditions; the pid was just found running in our namespace or with
        // our pin directory on its command line.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    delete_namespaces(&namespaces);
    wait_until(Duration::from_secs(120), || namespaces.iter().all(|n| !Path::new(RUN_NETNS).join(n).exists()));
    for dir in pin_dirs {
        if let Err(err) = fs::remove_dir_all(&dir) {
            eprintln!("[bench] cannot remove {}: {err}", dir.display());
        }
    }
}

/// Processes living in one of `inodes` (network namespaces) or running with one of `pin_dirs` as argument.
fn own_processes(inodes: &[u64], pin_dirs: &[PathBuf]) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid as u32 == std::process::id() {
            continue;
        }
        let in_ours = fs::metadata(entry.path().join("ns/net")).is_ok_and(|m| inodes.contains(&m.ino()));
        let pinning = fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
            cmdline.split(|b| *b == 0).any(|arg| pin_dirs.iter().any(|d| arg == d.as_os_str().as_encoded_bytes()))
        });
        if in_ours || pinning {
            found.push(pid);
        }
    }
    found
}

/// `ip netns del` for each, in one `ip -batch` process (deleting a name is quick; the kernel frees the
/// namespace and its veth pairs asynchronously).
pub fn delete_namespaces(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let script: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    if let Err(err) = ip_batch(&script, true) {
        eprintln!("[bench] deleting namespaces: {err:#}");
    }
}

/// Runs `ip [-force] -batch -` with `script` on stdin.
pub fn ip_batch(script: &str, force: bool) -> anyhow::Result<()> {
    let mut ip = Command::new("ip");
    if force {
        ip.arg("-force");
    }
    ip.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = ip.spawn().context("cannot start `ip -batch`")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(script.as_bytes()).context("cannot feed `ip -batch`")?;
    drop(stdin);
    let status = child.wait().context("waiting for `ip -batch`")?;
    ensure!(status.success(), "`ip -batch` failed ({status})");
    Ok(())
}

/// Polls `done` every 50 ms until it holds or `timeout` passes (or the run is interrupted); returns whether
/// it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > end || interrupted() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().context("cannot start `ip`")?;
    ensure!(out.status.success(), "`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Two namespaces joined by a veth pair, addressed 10.213.<x>.1/30 (A) and .2/30 (B), both ends up; deleted
/// on drop.
pub struct Pair {
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
}

impl Pair {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let subnet = (std::process::id() % 250) as u8;
        let pair = Pair {
            a: netns_name(&format!("{what}-a")),
            b: netns_name(&format!("{what}-b")),
            a_if: if_name(&format!("{what}a")),
            b_if: if_name(&format!("{what}b")),
            a_addr: Ipv4Addr::new(10, 213, subnet, 1),
            b_addr: Ipv4Addr::new(10, 213, subnet, 2),
        };
        let (a_cidr, b_cidr) = (format!("{}/30", pair.a_addr), format!("{}/30", pair.b_addr));
        let script = format!(
            "netns add {a}\nnetns add {b}\nlink add {ai} netns {a} type veth peer name {bi} netns {b}\n",
            a = pair.a,
            b = pair.b,
            ai = pair.a_if,
            bi = pair.b_if
        );
        ip_batch(&script, false).context("cannot create the namespace pair")?;
        for (ns, dev, cidr) in [(&pair.a, &pair.a_if, &a_cidr), (&pair.b, &pair.b_if, &b_cidr)] {
            ip(&["-n", ns, "addr", "add", cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        delete_namespaces(&[self.a.clone(), self.b.clone()]);
    }
}

/// Sets /sys/kernel/rcu_expedited to 1 while it lives (then restores it). Attaching or detaching a TCX program
/// waits for an RCU grace period under rtnl_lock (`tcx_link_attach` -> `tcx_entry_sync` ->
/// `synchronize_rcu`): about 15 ms each on this VM, so an agent attaching 20,000 veth ends takes 10 minutes
/// and blocks all of the host's networking configuration meanwhile. Expedited grace periods take microseconds.
/// Used only around scale fixtures, whose figures (scrape latency, RSS) do not involve grace periods.
pub struct ExpeditedRcu {
    previous: Option<String>,
}

const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

impl ExpeditedRcu {
    pub fn enable(enabled: bool) -> Self {
        if !enabled {
            return ExpeditedRcu { previous: None };
        }
        let previous = fs::read_to_string(RCU_EXPEDITED).ok().map(|s| s.trim().to_owned());
        match previous.as_deref() {
            Some("0") => match fs::write(RCU_EXPEDITED, "1") {
                Ok(()) => {
                    eprintln!("[bench] {RCU_EXPEDITED}: 0 -> 1 while the scale fixture exists (restored after)");
                    ExpeditedRcu { previous }
                }
                Err(err) => {
                    eprintln!("[bench] cannot set {RCU_EXPEDITED}: {err}; attaching will be slow");
                    ExpeditedRcu { previous: None }
                }
            },
            _ => ExpeditedRcu { previous: None },
        }
    }

    pub fn active(&self) -> bool {
        self.previous.is_some()
    }
}

impl Drop for ExpeditedRcu {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            match fs::write(RCU_EXPEDITED, previous) {
                Ok(()) => eprintln!("[bench] {RCU_EXPEDITED} restored to {previous}"),
                Err(err) => eprintln!("[bench] cannot restore {RCU_EXPEDITED} to {previous}: {err}"),
            }
        }
    }
}

/// Waits until no kernel worker is releasing a TCX link any more (work queued when the last reference to a
/// link goes, e.g. when an agent's pin directory is removed), so the next measurement does not compete with
/// it for rtnl_lock and the CPUs.
pub fn wait_for_link_releases(timeout: Duration) -> bool {
    wait_until(timeout, || {
        !fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
            fs::read_to_string(e.path().join("wchan")).is_ok_and(|w| w.starts_with("tcx_link_release"))
                || fs::read_to_string(e.path().join("stack")).is_ok_and(|s| s.contains("tcx_link_release"))
        })
    })
}

/// Interfaces whose name starts with `prefix` in the current namespace.
pub fn count_links(prefix: &str) -> usize {
    fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)))
        .count()
}

/// Runs `program ARGS` and returns its stdout, failing with its stderr.
pub fn stdout_of(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot start `{}`", cmd::display(cmd)))?;
    ensure!(
        out.status.success(),
        "`{}` failed ({}): {}",
        cmd::display(cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner() {
        let me = std::process::id();
        assert_eq!(owner(&netns_name("s12")), Some(me));
        assert_eq!(owner(&format!("nmbench-{me}-3")), Some(me));
        assert_eq!(owner("nmbench12-o3"), None);
        assert_eq!(owner("other-1-2"), None);
        assert!(removable(&netns_name("x")));
        assert!(if_name("s9999h").len() < 16);
    }
}
