//! The agent with many namespaces: N named namespaces, each with a veth pair (one end inside, one in the host
//! namespace, as a container runtime makes them), then `/metrics` scrape latency and the agent's memory, and
//! `netns-monitor list` against `lsns -t net`.
//!
//! The fixture is made with one `ip -batch` process (about 1 ms a namespace) and removed the same way. Order of
//! teardown matters: the namespaces go first (the kernel frees them and their veths in batches), the agent's
//! pins after, so that releasing its TCX links finds no device left to detach from.

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use super::{
    Ctx,
    agent::{self, Agent},
    fixture::{self, ExpeditedRcu},
    report::{Row, Target},
    stats::{median, percentile},
};

#[derive(Clone, Debug, clap::Args)]
pub struct ScrapeArgs {
    /// Namespaces, each with a veth pair [default: 1000, and 10000 too with --large].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub namespaces: Option<u32>,
}

impl ScrapeArgs {
    pub fn counts(&self, large: bool) -> Vec<u32> {
        match self.namespaces {
            Some(n) => vec![n],
            None if large => vec![1000, 10_000],
            None => vec![1000],
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct ListArgs {
    /// Namespaces, each with a veth pair.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub namespaces: u32,
}

/// Which measurements to take on one fixture.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub scrape: bool,
    pub list: bool,
}

/// Scrapes timed per fixture.
const SCRAPES: usize = 50;

/// N namespaces `nmbench-<pid>-s<i>`, each with veth `nb<tag>s<i>p` inside and `nb<tag>s<i>h` in the host.
struct Scale {
    names: Vec<String>,
    host_prefix: String,
}

impl Scale {
    fn create(n: u32) -> anyhow::Result<Self> {
        let mut fixture = Scale { names: Vec::new(), host_prefix: fixture::if_name("s") };
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            fixture::check()?;
            let mut script = String::new();
            for &i in chunk {
                let ns = fixture::netns_name(&format!("s{i}"));
                script.push_str(&format!(
                    "netns add {ns}\nlink add {} type veth peer name {} netns {ns}\n",
                    fixture::if_name(&format!("s{i}h")),
                    fixture::if_name(&format!("s{i}p"))
                ));
                fixture.names.push(ns);
            }
            fixture::ip_batch(&script, false).context("cannot create the scale fixture")?;
            if fixture.names.len().is_multiple_of(2000) {
                eprintln!("[bench]   {} namespaces ({:.0} s)", fixture.names.len(), started.elapsed().as_secs_f64());
            }
        }
        let host_ends = fixture::count_links(&fixture.host_prefix);
        ensure!(host_ends == n as usize, "{host_ends} host-side veth ends instead of {n}");
        Ok(fixture)
    }

    fn remove(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let started = Instant::now();
        fixture::delete_namespaces(&self.names);
        let gone = fixture::wait_until(Duration::from_secs(600), || fixture::count_links(&self.host_prefix) == 0);
        eprintln!(
            "[bench]   removed {} namespaces in {:.1} s{}",
            self.names.len(),
            started.elapsed().as_secs_f64(),
            if gone { "" } else { " (some veths are still going away)" }
        );
        self.names.clear();
    }
}

impl Drop for Scale {
    fn drop(&mut self) {
        self.remove();
    }
}

/// What limits a large fixture, as read before making it.
fn limits() -> String {
    let read = |path: &str| fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into());
    let available = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemAvailable:")).map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let mounts = fs::read_to_string("/proc/self/mountinfo").map(|m| m.lines().count()).unwrap_or(0);
    let mut nofile = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    format!(
        "MemAvailable {available}, user.max_net_namespaces {}, fs.mount-max {} ({mounts} mounts now), \
         RLIMIT_NOFILE {}, net.core.somaxconn {}",
        read("/proc/sys/user/max_net_namespaces"),
        read("/proc/sys/fs/mount-max"),
        nofile.rlim_cur,
        read("/proc/sys/net/core/somaxconn")
    )
}

fn mem_available_kib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub fn run(ctx: &mut Ctx, n: u32, parts: Parts) -> anyhow::Result<()> {
    eprintln!("[bench] scale fixture of {n} namespaces; limits: {}", limits());
    let rcu = ExpeditedRcu::enable(ctx.expedite_rcu);
    let available_before = mem_available_kib();
    let started = Instant::now();
    let mut scale = Scale::create(n)?;
    let setup = started.elapsed().as_secs_f64();
    let per_netns_kib = available_before.saturating_sub(mem_available_kib()) as f64 / f64::from(n);
    eprintln!("[bench]   fixture up in {setup:.1} s, about {per_netns_kib:.0} KiB of kernel memory per namespace");
    if parts.list {
        list(ctx, n)?;
    }
    if parts.scrape {
        scrape(ctx, n, &mut scale, setup, per_netns_kib, rcu.active())?;
    }
    scale.remove();
    drop(rcu);
    Ok(())
}

fn scrape(
    ctx: &mut Ctx,
    n: u32,
    scale: &mut Scale,
    setup: f64,
    per_netns_kib: f64,
    expedited: bool,
) -> anyhow::Result<()> {
    let floor = attach_floor(n);
    // Both ends of every pair are counted, plus whatever the host has: sized as an operator would
    // (--max-interfaces, the default 16384 when that is enough).
    let max_interfaces = (2 * n + 1024).clamp(16 * 1024, 65_535).to_string();
    let agent = Agent::start_with(&ctx.binary, Duration::from_secs(3600), &["--max-interfaces", &max_interfaces])?;
    let start = agent.start_time.as_secs_f64();
    let first = agent.metrics()?;
    let attached = agent::sample(&first, "netns_monitor_attached_interfaces", &[]);
    let failures = agent::sample(&first, "netns_monitor_attach_failures_total", &[]);
    ensure!(attached >= f64::from(2 * n), "the agent attached to {attached} interfaces, expected at least {}", 2 * n);
    let idle_rss = agent.rss_at_ready;
    // Agent::start made the first scrape; one more to warm up, then the timed ones, back to back.
    agent.scrape()?;
    // Identity and gzip (as Prometheus asks) alternate, so both see the same machine.
    let (mut latencies, mut gzip_latencies) = (Vec::new(), Vec::new());
    let (mut bytes, mut wire) = (0, 0);
    let mut body = String::new();
    for _ in 0..SCRAPES {
        fixture::check()?;
        let (elapsed, text) = agent.scrape()?;
        latencies.push(elapsed.as_secs_f64() * 1e3);
        bytes = text.len();
        body = text;
        let (elapsed, sent, text) = agent.scrape_gzip()?;
        gzip_latencies.push(elapsed.as_secs_f64() * 1e3);
        wire = sent;
        ensure!(agent::series(&text) > 0, "the gzipped scrape has no series");
    }
    let collect_ms = agent::sample(&body, "netns_monitor_scrape_duration_seconds", &[]) * 1e3;
    let (rss, hwm) = agent.rss_kib()?;
    let series = agent::series(&body);
    // The check of a fleet's view: a real Prometheus for a minute (only in the large run).
    let seen =
        if n >= 10_000 { Some(super::prometheus::scrape_for(agent.addr, Duration::from_secs(60))) } else { None };
    // Stop the agent but keep its pins until the namespaces are gone (see the module comment).
    let pin_dir = agent.pin_dir.clone();
    agent.stop_keeping_pins()?;
    scale.remove();
    let _ = fs::remove_dir_all(&pin_dir);
    fixture::wait_for_link_releases(Duration::from_secs(600));

    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let (gzip_p50, gzip_p99) = (percentile(&gzip_latencies, 0.5), percentile(&gzip_latencies, 0.99));
    let large = n >= 10_000;
    let mut row = Row::new(
        format!("scrape-gzip-p99-{n}"),
        format!(
            "GET /metrics with Accept-Encoding: gzip, as Prometheus scrapes (connect to the last compressed byte, \
             a new connection each; decoding is the scraper's), with {n} namespaces each with a veth pair, \
             {SCRAPES} scrapes alternating with the identity ones; p99 by nearest rank"
        ),
        "ms",
        gzip_p99,
    )
    .samples(&gzip_latencies, &[])
    .note(format!(
        "p50 {gzip_p50:.1} ms; {:.2} MB on the wire for {:.1} MB of text ({:.1}x)",
        wire as f64 / 1e6,
        bytes as f64 / 1e6,
        bytes as f64 / wire.max(1) as f64
    ))
    .extra("p50_ms", gzip_p50)
    .extra("wire_bytes", wire);
    if large {
        row = row.target(Target::Max(50.0));
    }
    ctx.report.push(row);
    let row = Row::new(
        format!("scrape-p99-{n}"),
        format!(
            "GET /metrics latency without compression (connect to last byte, a new connection each) with {n} \
             namespaces each with a \
             veth pair (2 x {n} interfaces counted), {SCRAPES} scrapes back to back after one warm-up; p99 by \
             nearest rank (the largest of {SCRAPES})"
        ),
        "ms",
        p99,
    )
    .samples(&latencies, &[])
    .note(format!(
        "p50 {p50:.1} ms; {series} series, {:.1} MB per scrape; collect {collect_ms:.1} ms (agent's own figure)",
        bytes as f64 / 1e6
    ))
    .extra("p50_ms", p50)
    .extra("series", series)
    .extra("bytes", bytes)
    .extra("collect_ms", collect_ms);
    ctx.report.push(row);
    ctx.report.push(
        Row::new(format!("scrape-p50-{n}"), format!("The median of the same {SCRAPES} scrapes"), "ms", p50)
            .samples(&latencies, &[])
            .reps(SCRAPES),
    );
    let mut row = Row::new(
        format!("agent-rss-{n}"),
        format!(
            "Agent VmRSS (/proc/PID/status) after {} scrapes with {n} namespaces each with a veth pair",
            SCRAPES + 2
        ),
        "MB",
        rss as f64 / 1024.0,
    )
    .note(format!(
        "peak (VmHWM) {:.0} MB; {:.0} MB once started, before any scrape",
        hwm as f64 / 1024.0,
        idle_rss as f64 / 1024.0
    ))
    .extra("vmhwm_mib", hwm as f64 / 1024.0)
    .extra("idle_rss_mib", idle_rss as f64 / 1024.0);
    if large {
        row = row.target(Target::Max(100.0));
    }
    ctx.report.push(row);
    let mut row = Row::new(
        format!("agent-start-{n}"),
        format!(
            "From starting the agent to its first /metrics answer with {n} namespaces (2 x {n} \
                 veth ends to attach, 2 TCX links each){}",
            if expedited { ", with /sys/kernel/rcu_expedited=1" } else { "" }
        ),
        "s",
        start,
    )
    .note(format!(
        "{attached:.0} interfaces attached, {failures:.0} failures; fixture made in {setup:.1} s (~{per_netns_kib:.0} \
             KiB kernel memory per namespace)"
    ));
    if large {
        row = row.target(Target::Max(3.0));
    }
    ctx.report.push(row);
    match seen {
        Some(Ok(seen)) => ctx.report.push(
            Row::new(
                format!("prometheus-failed-scrapes-{n}"),
                format!(
                    "A real Prometheus (Debian's package) scraping the agent with {n} namespaces every 15 s (10 s \
                     timeout) for a minute: scrapes with up == 0, from its own query API"
                ),
                "scrapes",
                seen.failed,
            )
            .target(Target::Max(0.0))
            .note(format!(
                "{:.0} scrapes; scrape_duration_seconds max {:.0} ms, mean {:.0} ms; {:.0} samples a scrape",
                seen.scrapes,
                seen.duration_max_s * 1e3,
                seen.duration_avg_s * 1e3,
                seen.samples
            ))
            .extra("scrapes", seen.scrapes)
            .extra("duration_max_ms", seen.duration_max_s * 1e3)
            .extra("duration_avg_ms", seen.duration_avg_s * 1e3),
        ),
        Some(Err(err)) => {
            eprintln!("[bench]   the real Prometheus run failed: {err:#}");
            ctx.report.failures.push(format!("prometheus-failed-scrapes-{n}: {err:#}"));
        }
        None => {}
    }
    match floor {
        Ok((seconds, links)) => {
            let per_link = seconds / links as f64;
            // The agent makes 4 links a pair (2 devices, 2 directions), one after another.
            let agent_links = 4 * u64::from(n);
            ctx.report.push(
                Row::new(
                    format!("tcx-attach-floor-{n}"),
                    format!(
                        "The kernel's floor under agent-start-{n}: an empty classifier attached by TCX \
                         (BPF_LINK_CREATE, one thread, no agent) in both directions to each host-side veth end (as \
                         many as RLIMIT_NOFILE allows, one fd a link), timed, and scaled to the {agent_links} links \
                         the agent makes; each first attach to a device waits for an RCU grace period under the rtnl \
                         lock (tcx_link_attach, 6.6+), so they do not overlap"
                    ),
                    "s",
                    per_link * agent_links as f64,
                )
                .note(format!("{links} links in {seconds:.2} s, {:.0} µs a link", per_link * 1e6))
                .extra("per_link_us", per_link * 1e6),
            );
        }
        Err(err) => eprintln!("[bench]   no TCX attach floor: {err:#}"),
    }
    Ok(())
}

/// Attaches an empty classifier by TCX in both directions to every host-side end of the fixture, one after
/// another from one thread, and releases them again: (seconds the attaches took, links made).
fn attach_floor(n: u32) -> anyhow::Result<(f64, usize)> {
    // One fd a link: raise the soft limit as far as the hard one allows (the agent pins instead).
    let mut nofile = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile);
        nofile.rlim_cur = nofile.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &nofile);
    }
    let program = super::bpf::load_empty_classifier()?;
    // Within the fd limit, keeping room for what else is open: a subset of the ends when it is too low.
    let devices = n.min(u32::try_from(nofile.rlim_max.saturating_sub(256) / 2).unwrap_or(u32::MAX));
    let ifindexes: Vec<u32> = (0..devices)
        .map(|i| super::bpf::ifindex(&fixture::if_name(&format!("s{i}h"))))
        .collect::<anyhow::Result<_>>()?;
    let mut links = Vec::with_capacity(2 * ifindexes.len());
    let started = Instant::now();
    for &ifindex in &ifindexes {
        for ingress in [true, false] {
            links.push(super::bpf::attach_tcx(&program, ifindex, ingress)?);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let made = links.len();
    drop(links);
    fixture::wait_for_link_releases(Duration::from_secs(600));
    eprintln!("[bench]   TCX attach floor: {made} links in {seconds:.2} s");
    Ok((seconds, made))
}

/// `netns-monitor list` versus `lsns -t net`, interleaved, output discarded.
fn list(ctx: &mut Ctx, n: u32) -> anyhow::Result<()> {
    let rounds = ctx.rounds(5);
    let binary = ctx.binary.clone();
    let ours = || {
        let mut c = Command::new(&binary);
        c.arg("list");
        c
    };
    let lsns = || {
        let mut c = Command::new("lsns");
        c.args(["-t", "net"]);
        c
    };
    let lines = |mut c: Command| fixture::stdout_of(&mut c).map(|o| o.lines().count().saturating_sub(1));
    let (our_rows, lsns_rows) = (lines(ours())?, lines(lsns())?);
    let time = |mut c: Command| -> anyhow::Result<f64> {
        fixture::check()?;
        let started = Instant::now();
        let status = c.stdout(Stdio::null()).stderr(Stdio::null()).stdin(Stdio::null()).status()?;
        ensure!(status.success(), "`{}` failed ({status})", crate::cmd::display(&c));
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    let (mut with, mut base) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            with.push(time(ours())?);
            base.push(time(lsns())?);
        } else {
            base.push(time(lsns())?);
            with.push(time(ours())?);
        }
    }
    let row = Row::new(
        format!("list-{n}"),
        format!(
            "Wall time of `netns-monitor list` (every namespace with NSID and interface names, entering each) \
                 versus `lsns -t net`, output discarded, with {n} named namespaces each with a veth pair; median \
                 of {rounds} interleaved runs"
        ),
        "ms",
        median(&with),
    )
    .baseline(median(&base))
    .samples(&with, &base)
    .note(format!("list printed {our_rows} namespaces, lsns {lsns_rows}"));
    // The target is for 1,000 namespaces.
    ctx.report.push(if n == 1000 { row.target(Target::Max(50.0)) } else { row });
    Ok(())
}
