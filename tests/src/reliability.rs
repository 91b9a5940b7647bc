//! Fixtures for the reliability tests (restart under load, churn, saturation, bad input, least privilege): a
//! real agent whose log is drained continuously (so a chatty agent never blocks on a full pipe during a long
//! soak) and kept for the verdict, a parser for its `/metrics`, and the kernel's own views used as oracles:
//! `/proc/PID/{fd,status,task}`, `bpftool` (programs, links, map entries), `dmesg`.
//!
//! Soak sizes come from environment variables so that `cargo xtask test` runs reduced sizes and
//! `cargo xtask soak` the full ones, through the same code: [`size`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Child,
};

use crate::{agent::PinDir, monitoring, netns};

/// A size from the environment (`cargo xtask soak` sets them), else `default`.
pub fn size(variable: &str, default: u64) -> u64 {
    match std::env::var(variable) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{variable}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// A `netns-monitor run` with its own pin directory and a free loopback port, optionally started through a
/// wrapper command (e.g. `setpriv` with chosen capabilities). Its stderr is read continuously into
/// [`Self::log`]. Dropping it kills the agent and removes the pin directory.
pub struct Agent {
    pub pin_dir: PathBuf,
    pub listen: SocketAddr,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    wrapper: Vec<String>,
    args: Vec<String>,
    /// How many of `args` (at the end) came from the caller.
    extra_len: usize,
    _pins: PinDir,
}

impl Agent {
    /// Starts an agent and waits (up to 60 s) until it watches namespaces.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_wrapped(&[], extra).await
    }

    /// Starts `WRAPPER... netns-monitor run --pin-dir DIR --listen ADDR EXTRA...` (a free loopback port unless
    /// `extra` has a `--listen`).
    pub async fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Self {
        match extra.iter().position(|arg| *arg == "--listen") {
            Some(at) => {
                let listen = extra[at + 1].parse().expect("--listen takes an address");
                Self::launch(wrapper, extra, listen, false).await
            }
            None => {
                let listen = format!("127.0.0.1:{}", monitoring::free_port()).parse().expect("address");
                Self::launch(wrapper, extra, listen, true).await
            }
        }
    }

    /// Starts the agent without `--listen`, so it listens where it does by default (`127.0.0.1:10931`).
    pub async fn start_default_listen(wrapper: &[&str]) -> Self {
        Self::launch(wrapper, &[], netns_monitor::cli::DEFAULT_LISTEN.parse().expect("address"), false).await
    }

    async fn launch(wrapper: &[&str], extra: &[&str], listen: SocketAddr, add_listen: bool) -> Self {
        let pins = PinDir::new("nsm-rel");
        let mut args = vec!["run".to_owned(), "--pin-dir".to_owned(), pins.path.display().to_string()];
        if add_listen {
            args.extend(["--listen".to_owned(), listen.to_string()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut agent = Self {
            pin_dir: pins.path.clone(),
            listen,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            wrapper: wrapper.iter().map(|s| (*s).to_owned()).collect(),
            args,
            extra_len: extra.len(),
            _pins: pins,
        };
        agent.spawn().await;
        agent
    }

    async fn spawn(&mut self) {
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(rest).arg(netns::cli_path());
                command
            }
            None => tokio::process::Command::new(netns::cli_path()),
        };
        command
            .args(&self.args)
            .env("RUST_LOG", std::env::var("NSM_AGENT_LOG").unwrap_or_else(|_| "info".to_owned()))
            .kill_on_drop(true);
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start the agent");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::clone(&self.log);
        let from = log.lock().unwrap().len();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push(strip_ansi(&line));
            }
        });
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.log.lock().unwrap()[from..].iter().any(|line| line.contains("watching namespaces")) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("poll the agent") {
                panic!("the agent exited ({status}) while starting; its log: {:#?}", self.log());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the agent did not start; its log: {:#?}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every line the agent (every run of it) wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("the agent runs")
    }

    /// Whether the agent is still running (it has not exited or crashed).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().expect("poll the agent").is_none())
    }

    /// Kills the agent with SIGKILL and reaps it: no clean-up of any kind.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("the agent runs");
        child.start_kill().expect("SIGKILL the agent");
        child.wait().await.expect("reap the agent");
    }

    /// Starts the agent again with the same arguments and pin directory.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill9");
        self.spawn().await;
    }

    /// Starts the agent again on the same pin directory, with `extra` arguments instead of the first run's
    /// (after [`Self::kill9`]).
    pub async fn restart_with(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "restart after kill9");
        let keep = self.args.len() - self.extra_len;
        self.args.truncate(keep);
        self.args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.extra_len = extra.len();
        self.spawn().await;
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).expect("signal the agent");
    }

    /// One scrape of `/metrics` (generous timeout: a scrape walks every namespace of the machine, and other
    /// work on a shared machine may have made thousands).
    pub fn scrape(&self) -> Scrape {
        let response = monitoring::http::get(self.listen, "/metrics", Duration::from_secs(60)).expect("scrape");
        assert_eq!(response.status, 200, "{}", response.body);
        Scrape::parse(&response.body)
    }

    /// Open file descriptors of the agent (`/proc/PID/fd`).
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("read the agent's fds").count()
    }

    /// Resident memory of the agent in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        status_field(self.pid(), "VmRSS:")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS of the agent")
    }

    /// `netns-monitor stats --json` on this agent's pin directory.
    pub fn stats(&self) -> Vec<Value> {
        let pin = self.pin_dir.display().to_string();
        serde_json::from_str(&netns::ok(&["stats", "--json", "--pin-dir", &pin])).expect("stats --json is JSON")
    }

    /// Names of the classifier link pins (`links/<netns>-<ifindex>-<direction>`).
    pub fn link_pins(&self) -> Vec<String> {
        pin_names(&self.pin_dir.join("links"))
    }

    /// Every pinned object under the pin directory, as paths relative to it.
    pub fn pins(&self) -> Vec<String> {
        let mut all = Vec::new();
        let mut stack = vec![self.pin_dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                } else {
                    all.push(path.strip_prefix(&self.pin_dir).unwrap().display().to_string());
                }
            }
        }
        all.sort();
        all
    }

    /// Waits until the agent counts interface `device` of namespace `netns` (its link pins say so).
    pub fn wait_attached(&self, netns: u32, ifindex: u32, deadline: Duration) {
        let wanted = [format!("{netns}-{ifindex}-ingress"), format!("{netns}-{ifindex}-egress")];
        let start = Instant::now();
        while !wanted.iter().all(|pin| self.link_pins().contains(pin)) {
            if start.elapsed() >= deadline {
                let log = self.log();
                let tail = &log[log.len().saturating_sub(40)..];
                panic!("agent did not attach to {netns}/{ifindex} within {deadline:?}; the end of its log: {tail:#?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// The text of a log line without its colour escapes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn pin_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A line of `/proc/PID/status` after its key (e.g. `"VmRSS:"`).
pub fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(key)).map(|v| v.trim().to_owned())
}

/// One sample of the exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the Prometheus text format (the subset the agent writes: no timestamps, escaped label values).
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unparsable sample line {line:?}")))
            .collect();
        Self { samples }
    }

    /// The value of the series `name` with exactly these `labels`, if it exists.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
    }

    /// [`Self::get`], 0 when the series does not exist (counters that have not moved yet).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.get(name, labels).unwrap_or(0.0) as u64
    }

    /// Series that carry label `key`, grouped by its value.
    pub fn series_by(&self, key: &str) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for sample in &self.samples {
            if let Some(value) = sample.labels.get(key) {
                *by.entry(value.clone()).or_default() += 1;
            }
        }
        by
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name_and_labels, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let Some((name, rest)) = name_and_labels.split_once('{') else {
        return Some(Sample { name: name_and_labels.to_owned(), labels: BTreeMap::new(), value });
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.strip_suffix('}')?.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(Sample { name: name.to_owned(), labels, value })
}

/// The transition counters of an agent that only sees this test process (`--filter-pid`): what it received
/// and what the kernel dropped. Every event the process generates ends up in exactly one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    /// setns calls that changed the network namespace (bursts).
    pub net: u64,
    /// setns calls that changed nothing (the failing sentinels).
    pub none: u64,
    /// `netns_monitor_events_lost_total` (kernel-side, pinned: survives restarts).
    pub lost: u64,
}

impl Accounting {
    pub fn of(scrape: &Scrape) -> Self {
        Self {
            net: scrape.counter("netns_monitor_transitions_total", &[("syscall", "setns"), ("type", "net")]),
            none: scrape.counter("netns_monitor_transitions_total", &[("syscall", "setns"), ("type", "none")]),
            lost: scrape.counter("netns_monitor_events_lost_total", &[]),
        }
    }

    /// Events received or lost.
    pub fn total(&self) -> u64 {
        self.net + self.none + self.lost
    }
}

/// Waits until `received + lost` (relative to `base`, or absolute for a fresh agent with `base.net = none = 0`)
/// equals `generated`; fails if it ever exceeds it (an event counted twice) or never gets there (an event
/// neither received nor counted as lost).
pub fn wait_accounted(agent: &Agent, base: Accounting, generated: u64, deadline: Duration) -> Accounting {
    let start = Instant::now();
    loop {
        let now = Accounting::of(&agent.scrape());
        assert!(now.lost >= base.lost, "the lost count went backwards: {base:?} -> {now:?}");
        let accounted = now.total() - base.total();
        assert!(
            accounted <= generated,
            "{accounted} events received or lost, more than the {generated} generated: {base:?} -> {now:?}"
        );
        if accounted == generated {
            return now;
        }
        assert!(
            start.elapsed() < deadline,
            "after {deadline:?} only {accounted} of {generated} events were received or counted lost: {base:?} -> \
             {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `bpftool ARGS -j` and parses its JSON.
pub fn bpftool(args: &[&str]) -> Value {
    let program = monitoring::require_program("bpftool", "bpftool");
    let out = std::process::Command::new(program).args(args).arg("-j").output().expect("run bpftool");
    assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?} JSON: {e}"))
}

/// The kernel id of the map pinned at `path`.
pub fn pinned_map_id(path: &Path) -> u64 {
    bpftool(&["map", "show", "pinned", &path.display().to_string()])["id"].as_u64().expect("map id")
}

/// The kernel's view of one agent's BPF objects: every program that uses the map `map_id` (each generation
/// of the agent's programs uses its pinned `COUNTERS`), and the links running them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelObjects {
    /// Program names, sorted (one per program loaded).
    pub programs: Vec<String>,
    /// Links of the transition programs (perf-event and raw-tracepoint links).
    pub transition_links: usize,
    /// Links of the classifiers (TCX).
    pub classifier_links: usize,
}

impl KernelObjects {
    pub fn using_map(map_id: u64) -> Self {
        let programs = bpftool(&["prog", "show"]);
        let ours: BTreeMap<u64, String> = programs
            .as_array()
            .expect("program list")
            .iter()
            .filter(|p| p["map_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id.as_u64() == Some(map_id))))
            .map(|p| (p["id"].as_u64().unwrap(), p["name"].as_str().unwrap_or("").to_owned()))
            .collect();
        let links = bpftool(&["link", "show"]);
        let mut objects = Self { programs: ours.values().cloned().collect(), ..Self::default() };
        objects.programs.sort();
        for link in links.as_array().expect("link list") {
            if !link["prog_id"].as_u64().is_some_and(|id| ours.contains_key(&id)) {
                continue;
            }
            match link["type"].as_str() {
                Some("perf_event" | "raw_tracepoint") => objects.transition_links += 1,
                _ => objects.classifier_links += 1,
            }
        }
        objects
    }
}

/// The kernel log's lines now, to compare with later ([`new_kernel_problems`]).
pub fn kernel_log() -> Vec<String> {
    let out = std::process::Command::new("dmesg").output().expect("run dmesg");
    assert!(out.status.success(), "dmesg must be readable: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Lines of the kernel log that were not in `before` and report a kernel problem (WARN, BUG, oops, lockdep,
/// refcount or KASAN reports, hung tasks).
pub fn new_kernel_problems(before: &[String]) -> Vec<String> {
    let seen: std::collections::HashSet<&String> = before.iter().collect();
    const PATTERNS: &[&str] = &[
        "WARNING:",
        "BUG:",
        "Oops",
        "general protection fault",
        "Call Trace",
        "refcount_t:",
        "KASAN",
        "possible circular locking",
        "blocked for more than",
        "kernel BUG",
    ];
    kernel_log()
        .into_iter()
        .filter(|line| !seen.contains(line))
        .filter(|line| PATTERNS.iter().any(|p| line.contains(p)))
        .collect()
}

/// Entries of the TRAFFIC_SLOTS and TRAFFIC_BASE maps (keyed by interface) per namespace inode, from the kernel
/// (bpftool dumps the pinned maps; the key's first four bytes are the inode, little-endian).
pub fn traffic_entries(pin_dir: &Path) -> BTreeMap<u32, usize> {
    let mut by = BTreeMap::new();
    for map in ["TRAFFIC_SLOTS", "TRAFFIC_BASE"] {
        count_entries(pin_dir, map, &mut by);
    }
    by
}

fn count_entries(pin_dir: &Path, map: &str, by: &mut BTreeMap<u32, usize>) {
    let dump = bpftool(&["map", "dump", "pinned", &pin_dir.join(map).display().to_string()]);
    for entry in dump.as_array().unwrap_or_else(|| panic!("{map} dump")) {
        let key = &entry["key"];
        let bytes: Vec<u8> = key
            .as_array()
            .expect("key bytes")
            .iter()
            .map(|b| {
                let text = b.as_str().expect("hex byte");
                u8::from_str_radix(text.trim_start_matches("0x"), 16).expect("hex byte")
            })
            .collect();
        let inode = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        *by.entry(inode).or_default() += 1;
    }
}

/// Link pins per namespace inode.
pub fn pins_by_netns(pins: &[String]) -> BTreeMap<u32, usize> {
    let mut by = BTreeMap::new();
    for pin in pins {
        if let Some(inode) = pin.split('-').next().and_then(|n| n.parse().ok()) {
            *by.entry(inode).or_default() += 1;
        }
    }
    by
}

/// The capability sets of every thread of `pid` (`CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb` as masks).
pub fn thread_capabilities(pid: u32) -> Vec<BTreeMap<String, u64>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let caps = status
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.starts_with("Cap").then(|| (key.to_owned(), u64::from_str_radix(value.trim(), 16).ok()))
            })
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        threads.push(caps);
    }
    threads
}

/// Every network namespace that exists now, from the kernel's own views (independently of the code under
/// test): the namespace of every thread, every namespace file descriptor of every process, and every nsfs
/// bind mount (`net:[INODE]` as its root in mountinfo). PID 1 is unreadable here; its namespace is the host's,
/// which this process's threads have too.
pub fn live_netns_inodes() -> std::collections::BTreeSet<u32> {
    let mut live = std::collections::BTreeSet::new();
    let parse = |link: &str| link.strip_prefix("net:[")?.strip_suffix(']')?.parse::<u32>().ok();
    for proc_entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let dir = proc_entry.path();
        if !proc_entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for task in std::fs::read_dir(dir.join("task")).into_iter().flatten().flatten() {
            if let Ok(link) = std::fs::read_link(task.path().join("ns/net"))
                && let Some(inode) = parse(&link.to_string_lossy())
            {
                live.insert(inode);
            }
        }
        for fd in std::fs::read_dir(dir.join("fd")).into_iter().flatten().flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && let Some(inode) = parse(&link.to_string_lossy())
            {
                live.insert(inode);
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in mountinfo.lines() {
        if line.contains(" - nsfs ")
            && let Some(inode) = line.split_whitespace().nth(3).and_then(parse)
        {
            live.insert(inode);
        }
    }
    live
}

/// The interface index of `device` inside named namespace `netns` (asked with iproute2).
pub fn ifindex(netns: &str, device: &str) -> u32 {
    let out = netns::sh_ok("ip", &["-n", netns, "-o", "link", "show", "dev", device]);
    out.split(':').next().and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("ifindex in {out:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exposition_format() {
        let scrape = Scrape::parse(
            "# HELP x y\n# TYPE x counter\nx_total 3\nnetns_monitor_netns_info{netns=\"42\",name=\"a \\\"b\\\"\",\
             nsid=\"\",source=\"named\"} 1\nf{a=\"1\",b=\"2\"} 0.5\n",
        );
        assert_eq!(scrape.get("x_total", &[]), Some(3.0));
        assert_eq!(
            scrape.get(
                "netns_monitor_netns_info",
                &[("netns", "42"), ("name", "a \"b\""), ("nsid", ""), ("source", "named")]
            ),
            Some(1.0)
        );
        assert_eq!(scrape.get("f", &[("a", "1"), ("b", "2")]), Some(0.5));
        assert_eq!(scrape.counter("missing", &[]), 0);
        assert_eq!(strip_ansi("\u{1b}[2mevents\u{1b}[0m\u{1b}[2m=\u{1b}[0m24"), "events=24");
        assert_eq!(scrape.series_by("netns").get("42"), Some(&1));
        assert_eq!(pins_by_netns(&["7-2-ingress".into(), "7-2-egress".into(), "9-1-egress".into()]).get(&7), Some(&2));
    }
}
