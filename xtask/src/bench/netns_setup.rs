//! `cargo xtask bench netns-setup [--count N]`: how long it takes to give N namespaces a veth pair, addresses,
//! `lo` up and a default route, with netns-monitor (2 commands a namespace: `add`, `veth add`) versus iproute2
//! (9 commands a namespace, the usual recipe). Commands are started the way a shell loop starts them
//! (fork + exec, one after the other); the shell's own interpretation cost is left out for both.
//!
//! The two sides alternate namespace by namespace (and which goes first alternates too), so both see the same
//! number of existing namespaces and interfaces: the kernel's per-namespace costs grow with that number.
//! Every namespace is checked (its default route is there) and everything is deleted at the end, also on error.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::stats::Summary;
use crate::cmd::{self, cargo, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of namespaces each side sets up.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=16_000))]
    pub count: u32,
    /// Use this netns-monitor binary instead of building target/release/netns-monitor.
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// The two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ours,
    Iproute2,
}

/// One namespace of one side: its names and addresses.
struct Target {
    netns: String,
    host_if: String,
    peer_if: String,
    host_addr: Ipv4Addr,
    peer_addr: Ipv4Addr,
}

impl Target {
    /// Namespace `i` of `side`: a /30 in 172.30.0.0/16 (ours) or 172.31.0.0/16 (iproute2).
    fn new(side: Side, tag: u32, i: u32) -> Self {
        let (letter, second) = match side {
            Side::Ours => ('o', 30),
            Side::Iproute2 => ('i', 31),
        };
        let base = u32::from(Ipv4Addr::new(172, second, 0, 0)) + i * 4;
        Target {
            netns: format!("nmbench{tag}-{letter}{i}"),
            host_if: format!("b{tag}{letter}{i}h"),
            peer_if: format!("b{tag}{letter}{i}p"),
            host_addr: Ipv4Addr::from(base + 1),
            peer_addr: Ipv4Addr::from(base + 2),
        }
    }

    fn commands(&self, side: Side, binary: &Path) -> Vec<Command> {
        let (ns, host, peer) = (self.netns.as_str(), self.host_if.as_str(), self.peer_if.as_str());
        let (host_cidr, peer_cidr, gateway) =
            (format!("{}/30", self.host_addr), format!("{}/30", self.peer_addr), self.host_addr.to_string());
        let command = |program: &Path, args: &[&str]| {
            let mut c = Command::new(program);
            c.args(args).stdin(Stdio::null()).stdout(Stdio::null());
            c
        };
        match side {
            Side::Ours => vec![
                command(binary, &["add", ns]),
                command(
                    binary,
                    &[
                        "veth",
                        "add",
                        host,
                        peer,
                        "--netns",
                        ns,
                        "--address",
                        &host_cidr,
                        "--peer-address",
                        &peer_cidr,
                        "--peer-gateway",
                        &gateway,
                    ],
                ),
            ],
            Side::Iproute2 => {
                let ip = Path::new("ip");
                vec![
                    command(ip, &["netns", "add", ns]),
                    command(ip, &["link", "add", host, "type", "veth", "peer", "name", peer]),
                    command(ip, &["link", "set", peer, "netns", ns]),
                    command(ip, &["addr", "add", &host_cidr, "dev", host]),
                    command(ip, &["link", "set", host, "up"]),
                    command(ip, &["-n", ns, "addr", "add", &peer_cidr, "dev", peer]),
                    command(ip, &["-n", ns, "link", "set", peer, "up"]),
                    command(ip, &["-n", ns, "link", "set", "lo", "up"]),
                    command(ip, &["-n", ns, "route", "add", "default", "via", &gateway]),
                ]
            }
        }
    }
}

/// Deletes every namespace (and so every veth pair) it was told about, on drop.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        eprintln!("[bench] removing {} namespaces", self.0.len());
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("creating namespaces and veths needs root: `sudo -E cargo xtask bench netns-setup`");
    }
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => {
            cmd::run(cargo().args(["build", "--release", "--package", "netns-monitor"]))?;
            workspace_root().join("target/release/netns-monitor")
        }
    };
    ensure!(binary.exists(), "{} does not exist", binary.display());
    // A tag per run keeps names apart from a concurrent or crashed earlier run.
    let tag = std::process::id() % 1000;
    let count = args.count;
    eprintln!("[bench] netns-setup: {count} namespaces per side, interleaved, binary {}", binary.display());

    let mut cleanup = Cleanup(Vec::new());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..count {
        let order = if i % 2 == 0 { [Side::Ours, Side::Iproute2] } else { [Side::Iproute2, Side::Ours] };
        for side in order {
            let target = Target::new(side, tag, i);
            cleanup.0.push(target.netns.clone());
            let elapsed = time_commands(target.commands(side, &binary))
                .with_context(|| format!("setting up {} with {side:?}", target.netns))?;
            match side {
                Side::Ours => ours.push(elapsed),
                Side::Iproute2 => theirs.push(elapsed),
            }
        }
    }
    let wall = started.elapsed();
    for side in [Side::Ours, Side::Iproute2] {
        for i in 0..count {
            verify(&Target::new(side, tag, i)).with_context(|| format!("{side:?} namespace {i} is incomplete"))?;
        }
    }
    report(count, &Summary::of(&ours), &Summary::of(&theirs), wall);
    drop(cleanup);
    Ok(())
}

fn time_commands(commands: Vec<Command>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for mut command in commands {
        let status = command.status().with_context(|| format!("cannot start `{}`", cmd::display(&command)))?;
        ensure!(status.success(), "`{}` failed ({status})", cmd::display(&command));
    }
    Ok(start.elapsed())
}

/// The namespace has the peer up with its address, and the default route via the host end.
fn verify(target: &Target) -> anyhow::Result<()> {
    let route = cmd::output(Command::new("ip").args(["-n", &target.netns, "route", "show", "default"]))
        .context("ip route show failed")?;
    ensure!(
        route.contains(&format!("default via {} dev {}", target.host_addr, target.peer_if)),
        "no default route in {}: {route:?}",
        target.netns
    );
    Ok(())
}

fn report(count: u32, ours: &Summary, theirs: &Summary, wall: Duration) {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!("netns-setup: {count} namespaces per side (veth pair, 2 addresses, lo up, default route)");
    println!(
        "{:<14}  {:>10}  {:>12}  {:>12}  {:>12}  {:>9}",
        "", "total (s)", "p50/ns (ms)", "p90/ns (ms)", "max/ns (ms)", "commands"
    );
    for (label, s, commands) in [("netns-monitor", ours, 2), ("iproute2", theirs, 9)] {
        println!(
            "{label:<14}  {:>10.2}  {:>12}  {:>12}  {:>12}  {:>9}",
            s.total.as_secs_f64(),
            ms(s.p50),
            ms(s.p90),
            ms(s.max),
            commands * count
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON);
    println!(
        "iproute2 / netns-monitor: total {:.2}x, p50 {:.2}x  (whole interleaved run: {:.1}s)",
        ratio(theirs.total, ours.total),
        ratio(theirs.p50, ours.p50),
        wall.as_secs_f64()
    );
}
