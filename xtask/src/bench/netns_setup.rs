//! `cargo xtask bench netns-setup [--count N]`: how long it takes to give N namespaces a veth pair, addresses,
//! `lo` up and a default route, with netns-monitor (2 commands a namespace: `add`, `veth add`) versus iproute2
//! (9 commands a namespace, the usual recipe). Commands are started the way a shell loop starts them
//! (fork + exec, one after the other); the shell's own interpretation cost is left out for both.
//!
//! The two sides alternate namespace by namespace (and which goes first alternates too), so both see the same
//! number of existing namespaces and interfaces: the kernel's per-namespace costs grow with that number.
//! Every namespace is checked (its default route is there) and everything is deleted at the end, also on error.
//! Reported: the median time per namespace of each side (target: ours at least 3x faster and at most 10 ms).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use super::{
    Ctx, fixture,
    report::{self, Row},
    stats::Summary,
};
use crate::cmd;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Number of namespaces each side sets up.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=16_000))]
    pub count: u32,
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
    fn new(side: Side, i: u32) -> Self {
        let (letter, second) = match side {
            Side::Ours => ('o', 30),
            Side::Iproute2 => ('i', 31),
        };
        let base = u32::from(Ipv4Addr::new(172, second, 0, 0)) + i * 4;
        Target {
            netns: fixture::netns_name(&format!("{letter}{i}")),
            host_if: fixture::if_name(&format!("{letter}{i}h")),
            peer_if: fixture::if_name(&format!("{letter}{i}p")),
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

/// Deletes every namespace (and so every veth pair) it was told about, on drop, and waits until their
/// host-side interfaces are gone: the kernel destroys a dead namespace's devices later, from a workqueue, and
/// the next run reuses the names.
struct Cleanup {
    namespaces: Vec<String>,
    host_interfaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        eprintln!("[bench] removing {} namespaces", self.namespaces.len());
        fixture::delete_namespaces(&self.namespaces);
        let gone = |name: &String| !Path::new("/sys/class/net").join(name).exists();
        if !fixture::wait_until(Duration::from_secs(120), || self.host_interfaces.iter().all(gone)) {
            eprintln!("[bench] some host-side veth ends still exist after 120 s");
        }
    }
}

pub fn run(ctx: &mut Ctx, count: u32) -> anyhow::Result<()> {
    let binary = ctx.binary.clone();
    eprintln!("[bench] netns-setup: {count} namespaces per side, interleaved, binary {}", binary.display());

    let mut cleanup = Cleanup { namespaces: Vec::new(), host_interfaces: Vec::new() };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..count {
        fixture::check()?;
        let order = if i % 2 == 0 { [Side::Ours, Side::Iproute2] } else { [Side::Iproute2, Side::Ours] };
        for side in order {
            let target = Target::new(side, i);
            cleanup.namespaces.push(target.netns.clone());
            cleanup.host_interfaces.push(target.host_if.clone());
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
            verify(&Target::new(side, i)).with_context(|| format!("{side:?} namespace {i} is incomplete"))?;
        }
    }
    let (o, t) = (Summary::of(&ours), Summary::of(&theirs));
    report(count, &o, &t, wall);
    drop(cleanup);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let samples = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>();
    ctx.report.push(
        Row::new(
            format!("netns-setup-{count}"),
            format!(
                "Time per namespace to set up {count} namespaces each with a veth pair, 2 addresses, lo up and a \
                 default route: `netns-monitor add` + `veth add` (2 commands) versus the iproute2 recipe (9 `ip` \
                 commands), started one after the other as a shell loop would, the sides alternating namespace by \
                 namespace; median per namespace"
            ),
            "ms",
            ms(o.p50),
        )
        .baseline(ms(t.p50))
        .target(report::Target::MaxRatio(1.0 / 3.0))
        .target(report::Target::Max(10.0))
        .samples(&samples(&ours), &samples(&theirs))
        .reps(count as usize)
        .note(format!(
            "iproute2 / ours: {:.1}x at p50, {:.1}x in total ({:.1} s vs {:.1} s); p90 {:.1} vs {:.1} ms",
            t.p50.as_secs_f64() / o.p50.as_secs_f64(),
            t.total.as_secs_f64() / o.total.as_secs_f64(),
            o.total.as_secs_f64(),
            t.total.as_secs_f64(),
            ms(o.p90),
            ms(t.p90)
        )),
    );
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
