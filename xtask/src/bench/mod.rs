//! Benchmarks: `cargo xtask bench [NAME] [--large]`. Benchmarks, not tests: nothing here asserts a time.
//!
//! Every benchmark measures its side and its baseline in the same run, alternating them round by round (and
//! which goes first) so that drift of a shared VM hits both alike, and reports medians. The results go to
//! `target/bench/results.md` and `target/bench/results.json` (and the table to stdout), one row per figure
//! with its baseline, ratio (ours / baseline), target and whether it is met, the repetitions, and the machine.
//!
//! One file per family: [`traffic`] (iperf3 throughput, tc program run time), [`syscalls`] (getpid, setns
//! and unshare storms), [`scale`] (scrape latency and RSS with N namespaces, `list` against `lsns`),
//! [`netns_setup`] (set-up of N namespaces against iproute2). [`agent`] runs the real agent, [`prometheus`] a real
//! Prometheus against it, [`fixture`] makes
//! and removes namespaces (also what a crashed run left behind), [`report`] writes the results.

mod agent;
mod bpf;
mod fixture;
mod netns_setup;
mod prometheus;
mod report;
mod scale;
mod stats;
mod syscalls;
mod traffic;

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use clap::Subcommand;

pub use self::fixture::remove_leftovers;
use self::report::{Machine, Report};
use crate::{
    cmd::{self, cargo, workspace_root},
    setup,
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// One benchmark; without it the default suite runs (about 10 minutes on 2 cores).
    #[command(subcommand)]
    pub which: Option<Which>,
    /// Add the 10,000-namespace runs (scrape latency and agent RSS) to the default suite.
    #[arg(long, global = true)]
    pub large: bool,
    /// Repetitions of each interleaved measurement (each benchmark has its own default).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: Option<u32>,
    /// Use this netns-monitor binary instead of building target/release/netns-monitor.
    #[arg(long, global = true)]
    pub binary: Option<PathBuf>,
    /// Seconds each setns/unshare storm run lasts [default: 3 for setns, 10 for unshare].
    #[arg(long, global = true)]
    pub seconds: Option<f64>,
    /// Leave /sys/kernel/rcu_expedited alone during scale fixtures (see `scale`).
    #[arg(long, global = true)]
    pub no_expedite_rcu: bool,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Which {
    /// TCP single-stream throughput between two namespaces over a veth pair (iperf3), agent versus none.
    Tcp,
    /// 64-byte UDP packets/s between two namespaces (iperf3 -u -l 64 -b 0), agent versus none.
    Udp,
    /// Run time per packet of the tc classifiers (kernel BPF stats), and of an empty classifier beside them.
    TcRuntime,
    /// ns per getpid() with the agent's transition programs attached versus none (and one ftrace tracepoint).
    Getpid,
    /// setns() back and forth on one core for a few seconds, agent consuming versus none; lost events.
    Setns,
    /// unshare(CLONE_NEWNET) + exit as fast as possible for a few seconds, agent consuming; lost events.
    Unshare,
    /// ns of the parent's CPU per fork (clone without namespace flags, which the clone hooks see too), agent
    /// versus none.
    Clone,
    /// /metrics scrape latency (p50/p99) and agent RSS with N namespaces, each with a veth pair.
    Scrape(scale::ScrapeArgs),
    /// `netns-monitor list` versus `lsns -t net` with N namespaces.
    List(scale::ListArgs),
    /// Set up N namespaces with veth, addresses and route: netns-monitor versus the iproute2 recipe.
    NetnsSetup(netns_setup::Args),
}

/// What every benchmark gets: the binary under test, the options, and where rows go.
pub struct Ctx {
    pub binary: PathBuf,
    pub rounds: Option<u32>,
    pub seconds: Option<f64>,
    pub expedite_rcu: bool,
    pub report: Report,
}

impl Ctx {
    /// Rounds of an interleaved measurement: `--rounds`, else the benchmark's default.
    pub fn rounds(&self, default: u32) -> usize {
        self.rounds.unwrap_or(default) as usize
    }

    /// Duration of a storm run: `--seconds`, else the benchmark's default.
    pub fn seconds(&self, default: f64) -> f64 {
        self.seconds.unwrap_or(default)
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "benchmarks load eBPF programs and create namespaces, so they must run as root: `sudo -E cargo xtask bench`"
        );
    }
    // iperf3 for traffic, iproute2 for fixtures and the baseline recipe, util-linux for `lsns`.
    setup::ensure_debian_packages(&["iperf3", "iproute2", "util-linux"])?;
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => {
            cmd::run(cargo().args(["build", "--release", "--package", "netns-monitor"]))?;
            workspace_root().join("target/release/netns-monitor")
        }
    };
    ensure!(binary.exists(), "{} does not exist", binary.display());
    fixture::install_interrupt_handler()?;
    remove_leftovers();

    let machine = Machine::detect(&binary);
    eprintln!("[bench] machine: {}", machine.summary());
    let mut ctx = Ctx {
        binary,
        rounds: args.rounds,
        seconds: args.seconds,
        expedite_rcu: !args.no_expedite_rcu,
        report: Report::new(machine),
    };
    let started = std::time::Instant::now();
    let result = run(&mut ctx, args);
    ctx.report.wall_seconds = started.elapsed().as_secs_f64();
    remove_leftovers();
    // Whatever was measured is written, also when a later benchmark failed.
    let out = workspace_root().join("target/bench");
    let written = ctx.report.write(&out).context("cannot write the results");
    print!("{}", ctx.report.markdown());
    written?;
    eprintln!("[bench] results in {}/results.{{md,json}}", out.display());
    result
}

fn run(ctx: &mut Ctx, args: &BenchArgs) -> anyhow::Result<()> {
    let large = args.large;
    match &args.which {
        Some(Which::Tcp) => traffic::tcp(ctx),
        Some(Which::Udp) => traffic::udp(ctx),
        Some(Which::TcRuntime) => traffic::tc_runtime(ctx),
        Some(Which::Getpid) => syscalls::getpid(ctx),
        Some(Which::Setns) => syscalls::setns(ctx),
        Some(Which::Unshare) => syscalls::unshare(ctx),
        Some(Which::Clone) => syscalls::clone(ctx),
        Some(Which::Scrape(scrape)) => {
            for n in scrape.counts(large) {
                scale::run(ctx, n, scale::Parts { scrape: true, list: false })?;
            }
            Ok(())
        }
        Some(Which::List(list)) => scale::run(ctx, list.namespaces, scale::Parts { scrape: false, list: true }),
        Some(Which::NetnsSetup(setup)) => netns_setup::run(ctx, setup.count),
        None => suite(ctx, large),
    }
}

/// The default suite: every benchmark once; a failed one is reported and the others still run (an
/// interruption stops everything).
fn suite(ctx: &mut Ctx, large: bool) -> anyhow::Result<()> {
    type Step = (&'static str, Box<dyn Fn(&mut Ctx) -> anyhow::Result<()>>);
    let both = scale::Parts { scrape: true, list: true };
    let mut steps: Vec<Step> = vec![
        ("tcp", Box::new(traffic::tcp)),
        ("udp", Box::new(traffic::udp)),
        ("tc-runtime", Box::new(traffic::tc_runtime)),
        ("getpid", Box::new(syscalls::getpid)),
        ("setns", Box::new(syscalls::setns)),
        ("unshare", Box::new(syscalls::unshare)),
        ("clone", Box::new(syscalls::clone)),
        ("scale 1000", Box::new(move |ctx| scale::run(ctx, 1000, both))),
    ];
    if large {
        steps
            .push(("scale 10000", Box::new(|ctx| scale::run(ctx, 10_000, scale::Parts { scrape: true, list: false }))));
    }
    steps.push(("netns-setup 100", Box::new(|ctx| netns_setup::run(ctx, 100))));
    steps.push(("netns-setup 1000", Box::new(|ctx| netns_setup::run(ctx, 1000))));
    let mut failed = Vec::new();
    for (name, step) in steps {
        eprintln!("[bench] === {name} ===");
        if let Err(err) = step(ctx) {
            if fixture::interrupted() {
                return Err(err);
            }
            eprintln!("[bench] {name} failed: {err:#}");
            ctx.report.failures.push(format!("{name}: {err:#}"));
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("{} benchmark(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
