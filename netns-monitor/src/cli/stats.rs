//! `netns-monitor stats`: per-namespace traffic straight from the pinned counters, without Prometheus.

use std::{collections::BTreeMap, os::fd::AsFd as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Args;
use netns_monitor_common::traffic::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_OTHER, PROTO_TCP, PROTO_UDP};

use super::UsageError;
use crate::{
    bpf::DEFAULT_PIN_DIR,
    inventory::{Inventory, Namer, ScanOptions},
    lifecycle::arrivals::NetnsArrivals,
    manage::rtnl::in_netns,
    traffic::{
        counters::{Totals, TrafficMap},
        links::veths_here,
    },
};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this namespace: a /run/netns name, a bind-mount path, an inode or net:[INODE].
    netns: Option<String>,
    /// One row per interface instead of per namespace.
    #[arg(long, short = 'i')]
    interfaces: bool,
    /// Print one JSON document (an array of namespaces with their interfaces) instead of a table.
    #[arg(long)]
    json: bool,
    /// Who got into each namespace: the processes that entered it or were created in it, as the agent
    /// records them (a WHO column; `arrivals` in --json). The answer to "traffic jumped here: who got in?".
    #[arg(long)]
    who: bool,
    /// Where the agent pins its maps.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Debug, serde::Serialize)]
struct Direction {
    bytes: u64,
    packets: u64,
    /// tcp, udp, icmp, other -> {bytes, packets}; only when the agent counts by protocol
    /// (`--traffic-protocols`).
    #[serde(skip_serializing_if = "Option::is_none")]
    protocols: Option<BTreeMap<&'static str, Pair>>,
}

#[derive(Debug, serde::Serialize)]
struct Pair {
    bytes: u64,
    packets: u64,
}

#[derive(Debug, serde::Serialize)]
struct Interface {
    ifindex: u32,
    /// Null when the interface is gone (or the namespace could not be entered).
    device: Option<String>,
    rx: Direction,
    tx: Direction,
}

#[derive(Debug, serde::Serialize)]
struct Namespace {
    netns: u32,
    name: Option<String>,
    /// The namespace no longer exists: these are the last counts a previous agent left (no agent running) or
    /// that the agent has not removed yet.
    stale: bool,
    rx: Pair,
    tx: Pair,
    interfaces: Vec<Interface>,
    /// With --who: the processes that got into it.
    #[serde(skip_serializing_if = "Option::is_none")]
    arrivals: Option<NetnsArrivals>,
}

fn direction(totals: &Totals, dir: usize) -> Direction {
    let protocols = totals.protocols.map(|split| {
        [(PROTO_TCP, "tcp"), (PROTO_UDP, "udp"), (PROTO_ICMP, "icmp"), (PROTO_OTHER, "other")]
            .into_iter()
            .map(|(proto, name)| (name, Pair { bytes: split.bytes[dir][proto], packets: split.packets[dir][proto] }))
            .collect()
    });
    Direction { bytes: totals.bytes(dir), packets: totals.packets(dir), protocols }
}

pub fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::scan(&ScanOptions { fds: true }).context("cannot list the namespaces")?;
    let only = match &args.netns {
        Some(key) => Some(
            inventory
                .find(key)
                .map(|ns| ns.inode)
                .ok_or_else(|| UsageError(format!("no network namespace named {key:?}")))?,
        ),
        None => None,
    };
    let map = TrafficMap::open(&args.pin_dir).with_context(|| {
        format!(
            "no traffic counters yet: start the agent (`netns-monitor run`), which pins them under {}",
            args.pin_dir.display()
        )
    })?;
    let agent = crate::bpf::persist::agent_running(&args.pin_dir);
    if !agent {
        eprintln!(
            "netns-monitor: warning: no agent is running on {}: these are the counters as the last one left them, \
             still counted by its classifiers; namespaces that are gone are marked stale",
            args.pin_dir.display()
        );
    }
    let mut by_netns: BTreeMap<u32, Vec<(u32, Totals)>> = BTreeMap::new();
    for (key, totals) in map.totals()? {
        if only.is_none_or(|inode| inode == key.netns) {
            by_netns.entry(key.netns).or_default().push((key.ifindex, totals));
        }
    }
    if let Some(inode) = only {
        by_netns.entry(inode).or_default();
    }
    let namer = Namer::new();
    let who = args.who.then(|| super::who::load(&args.pin_dir));
    let namespaces: Vec<Namespace> = by_netns
        .into_iter()
        .map(|(netns, mut interfaces)| {
            interfaces.sort_by_key(|(ifindex, _)| *ifindex);
            let ns = inventory.get(netns);
            // Interface names live in the namespace: ask it (only veths carry counters).
            let names: BTreeMap<u32, String> = ns
                .and_then(|ns| ns.open())
                .and_then(|file| in_netns(Some(file.as_fd()), veths_here).ok()?.ok())
                .map(|veths| veths.into_iter().map(|v| (v.ifindex, v.name)).collect())
                .unwrap_or_default();
            let sum = |dir: usize| Pair {
                bytes: interfaces.iter().map(|(_, t)| t.bytes(dir)).sum(),
                packets: interfaces.iter().map(|(_, t)| t.packets(dir)).sum(),
            };
            Namespace {
                netns,
                name: ns.and_then(|ns| namer.describe(ns).0),
                stale: ns.is_none(),
                rx: sum(DIR_INGRESS),
                tx: sum(DIR_EGRESS),
                interfaces: interfaces
                    .iter()
                    .map(|(ifindex, totals)| Interface {
                        ifindex: *ifindex,
                        device: names.get(ifindex).cloned(),
                        rx: direction(totals, DIR_INGRESS),
                        tx: direction(totals, DIR_EGRESS),
                    })
                    .collect(),
                arrivals: who.as_ref().map(|who| who.namespaces.get(&netns).cloned().unwrap_or_default()),
            }
        })
        .collect();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&namespaces).context("cannot encode JSON")?);
    } else if args.interfaces {
        let rows = namespaces.iter().flat_map(|ns| {
            ns.interfaces.iter().map(move |iface| {
                [
                    ns.netns.to_string(),
                    display_name(ns),
                    iface.device.clone().unwrap_or_else(|| format!("#{}", iface.ifindex)),
                    iface.rx.bytes.to_string(),
                    iface.rx.packets.to_string(),
                    iface.tx.bytes.to_string(),
                    iface.tx.packets.to_string(),
                ]
            })
        });
        super::table::print(["NETNS", "NAME", "DEVICE", "RX_BYTES", "RX_PACKETS", "TX_BYTES", "TX_PACKETS"], rows);
    } else {
        let rows = namespaces.iter().map(|ns| {
            let mut row = vec![
                ns.netns.to_string(),
                display_name(ns),
                ns.interfaces.len().to_string(),
                ns.rx.bytes.to_string(),
                ns.rx.packets.to_string(),
                ns.tx.bytes.to_string(),
                ns.tx.packets.to_string(),
            ];
            if args.who {
                row.push(super::who::cell(ns.arrivals.as_ref()));
            }
            row
        });
        let mut header: Vec<String> =
            ["NETNS", "NAME", "IFACES", "RX_BYTES", "RX_PACKETS", "TX_BYTES", "TX_PACKETS"].map(str::to_owned).to_vec();
        if args.who {
            header.push("WHO".to_owned());
        }
        super::table::print_rows(Some(header), rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// The NAME column: the best name, `-` without one, and `(stale)` for a namespace that is gone.
fn display_name(ns: &Namespace) -> String {
    match (&ns.name, ns.stale) {
        (_, true) => "(stale)".into(),
        (Some(name), false) => name.clone(),
        (None, false) => "-".into(),
    }
}
