//! `list`: every network namespace on the host, named or not, with `lsns -t net`'s columns on request and
//! the namespaces no process uses any more (leaks) flagged.

use std::{os::unix::fs::MetadataExt as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Args;

use super::UsageError;
use crate::{
    inventory::{
        self, ContainerHint, Inventory, Namer, ScanOptions, Source,
        container::{cmdline, parent_of},
        orphans::{self, Orphans},
    },
    lifecycle::arrivals::NetnsArrivals,
};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Columns (-o, comma-separated, case-insensitive; +COLS adds to the default set):
  INODE, NS      the namespace's inode (its identity)
  TYPE           always net (as lsns prints it)
  NAME           the one name stats and /metrics give it
  NSID           its netns id in the current namespace (- if none; NETNSID: unassigned, as lsns)
  NAMES          /run/netns names, else bind-mount paths
  NSFS           every nsfs mount of it (/run/netns/NAME, /run/docker/netns/ID, ...)
  PATH           /proc/PID/ns/net of its first process, else its first nsfs mount
  PROCS, NPROCS  processes in it
  PID, PPID      its lowest process id, and that process's parent
  COMMAND        that process's command line
  UID, USER      that process's owner
  FDS            processes holding an open file descriptor to it
  INTERFACES     interfaces in it
  SOURCE         how it was found: named, bind-mount, process, fd
  CONTAINER      runtime and short id, from the processes' cgroup
  ORPHANED       how long no process has been in it (it is held by a mount or an fd only)
  LEAK           ORPHANED, once it is --leak-after or longer (- otherwise)
  WHO            the latest process that entered it or was created in it (COMM[PID] SYSCALL TIME), and how
                 many more did, as the agent recorded them (--who adds it)
Default: INODE,NAME,NSID,NAMES,PROCS,INTERFACES,SOURCE,CONTAINER,LEAK.

Orphan clocks start at the first look that finds a namespace without processes (list's, or the agent's scrape) \
and are kept in /run/netns-monitor/orphans: the kernel does not record when a namespace's last process left.")]
pub struct ListArgs {
    /// Print one JSON document (an array, every field) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Columns to print, comma-separated (see below); +COLS adds them to the default set.
    #[arg(short = 'o', long, value_name = "COLS")]
    pub output: Option<String>,
    /// Print every column.
    #[arg(long, conflicts_with = "output")]
    pub output_all: bool,
    /// Leave the header line out.
    #[arg(short = 'n', long)]
    pub noheadings: bool,
    /// Who got into each namespace: the processes that entered it or were created in it, as the running agent
    /// records them (a WHO column; `arrivals` in --json).
    #[arg(long)]
    pub who: bool,
    /// Where the agent pins its maps (to tell whether it runs, for --who).
    #[arg(long, value_name = "DIR", default_value = crate::bpf::DEFAULT_PIN_DIR, hide_short_help = true)]
    pub pin_dir: std::path::PathBuf,
    /// Only leaked namespaces: no process in them for --leak-after or longer.
    #[arg(long)]
    pub leaked: bool,
    /// How long a namespace may have no process before it counts as leaked (e.g. 90s, 10m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub leak_after: Duration,
    /// Skip the walk of every process's open file descriptors, and so miss namespaces held only by one (a
    /// faster answer on hosts with very many open files).
    #[arg(long)]
    pub no_fds: bool,
    /// Accepted for scripts written when the fd walk was opt-in; it is the default now.
    #[arg(long, hide = true, conflicts_with = "no_fds")]
    pub fds: bool,
}

/// One row, as printed.
#[derive(Debug, serde::Serialize)]
struct Row {
    inode: u32,
    /// The name `stats` and `/metrics` give it too (see `Netns::display_name`).
    name: Option<String>,
    /// NSID in the current namespace, if one is assigned.
    nsid: Option<i32>,
    names: Vec<String>,
    bind_mounts: Vec<std::path::PathBuf>,
    pids: Vec<u32>,
    fd_holders: Vec<u32>,
    /// Interface names; null if the namespace could not be entered.
    interfaces: Option<Vec<String>>,
    source: Source,
    container: Option<ContainerHint>,
    /// The lowest pid in it (lsns's PID), that process's parent, command line and owner.
    pid: Option<u32>,
    ppid: Option<u32>,
    command: Option<String>,
    uid: Option<u32>,
    user: Option<String>,
    /// Seconds no process has been in it (held by a mount or an fd only); null while processes use it.
    orphaned_seconds: Option<u64>,
    /// Orphaned for --leak-after or longer.
    leaked: bool,
    /// With --who: the processes that got into it (counts by syscall, the latest ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    arrivals: Option<NetnsArrivals>,
}

const DEFAULT: &str = "INODE,NAME,NSID,NAMES,PROCS,INTERFACES,SOURCE,CONTAINER,LEAK";
const ALL: &[&str] = &[
    "INODE",
    "TYPE",
    "NAME",
    "NSID",
    "NAMES",
    "NSFS",
    "PATH",
    "PROCS",
    "PID",
    "PPID",
    "COMMAND",
    "UID",
    "USER",
    "FDS",
    "INTERFACES",
    "SOURCE",
    "CONTAINER",
    "ORPHANED",
    "LEAK",
    "WHO",
];
/// lsns's names for columns we have under another name, or print its way.
const ALIASES: &[&str] = &["NS", "NPROCS", "NETNSID"];

/// The columns `-o` asks for, checked (upper case).
fn columns(output: Option<&str>, all: bool) -> Result<Vec<String>, UsageError> {
    if all {
        return Ok(ALL.iter().map(|c| (*c).to_owned()).collect());
    }
    let spec = match output {
        None => DEFAULT.to_owned(),
        Some(extra) if extra.starts_with('+') => format!("{DEFAULT},{}", &extra[1..]),
        Some(spec) => spec.to_owned(),
    };
    let columns: Vec<String> =
        spec.split(',').map(|c| c.trim().to_ascii_uppercase()).filter(|c| !c.is_empty()).collect();
    if let Some(bad) = columns.iter().find(|c| !ALL.contains(&c.as_str()) && !ALIASES.contains(&c.as_str())) {
        return Err(UsageError(format!("unknown column {bad:?} (list --help names them)")));
    }
    if columns.is_empty() {
        return Err(UsageError("-o names no column".into()));
    }
    Ok(columns)
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut columns = columns(args.output.as_deref(), args.output_all)?;
    if args.who && !columns.iter().any(|c| c == "WHO") {
        columns.push("WHO".to_owned());
    }
    let who = (args.who || columns.iter().any(|c| c == "WHO")).then(|| super::who::load(&args.pin_dir));
    // Every namespace, as `list` promises: one held only by a file descriptor is a namespace too.
    let inventory = Inventory::scan(&ScanOptions { fds: !args.no_fds }).context("cannot list the namespaces")?;
    let orphans = Orphans::update_shared(&inventory, !args.no_fds);
    let now = orphans::now();
    let leak_after = args.leak_after.as_secs();
    let mut details = inventory::details(&inventory).context("cannot read namespace details")?;
    let namer = Namer::new();
    let mut users = std::collections::HashMap::new();
    let rows: Vec<Row> = inventory
        .namespaces
        .values()
        .map(|ns| {
            let details = details.remove(&ns.inode).unwrap_or_default();
            let (name, container) = namer.describe(ns);
            let pid = ns.pids.first().copied();
            let uid = pid.and_then(|pid| std::fs::metadata(format!("/proc/{pid}")).ok()).map(|m| m.uid());
            let orphaned_seconds = orphans.orphaned_for(ns.inode, now);
            Row {
                inode: ns.inode,
                name,
                nsid: details.nsid,
                names: ns.names.clone(),
                bind_mounts: ns.bind_mounts.clone(),
                pids: ns.pids.clone(),
                fd_holders: ns.fd_holders.clone(),
                interfaces: details.interfaces,
                source: ns.source(),
                container,
                pid,
                ppid: pid.and_then(parent_of),
                command: pid.and_then(command),
                uid,
                user: uid.and_then(|uid| {
                    // One passwd lookup per user, not per namespace.
                    users
                        .entry(uid)
                        .or_insert_with(|| nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name))
                        .clone()
                }),
                orphaned_seconds,
                leaked: orphaned_seconds.is_some_and(|secs| secs >= leak_after),
                arrivals: who.as_ref().map(|who| who.namespaces.get(&ns.inode).cloned().unwrap_or_default()),
            }
        })
        .filter(|row| !args.leaked || row.leaked)
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).context("cannot encode JSON")?);
    } else {
        print_table(&rows, &columns, !args.noheadings);
    }
    Ok(ExitCode::SUCCESS)
}

/// A process's command line as lsns shows it: its arguments joined by spaces, else `[comm]` (a kernel thread).
fn command(pid: u32) -> Option<String> {
    match cmdline(pid) {
        Some(args) => Some(args.join(" ")),
        None => std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim_end().to_owned()),
    }
}

fn cell(row: &Row, column: &str) -> String {
    let dash = || "-".to_owned();
    let or_dash = |value: Option<String>| value.unwrap_or_else(dash);
    let nsfs = || {
        row.names
            .iter()
            .map(|name| format!("{}/{name}", inventory::NETNS_RUN_DIR))
            .chain(row.bind_mounts.iter().map(|p| p.display().to_string()))
            .collect::<Vec<_>>()
    };
    let joined = |items: Vec<String>| if items.is_empty() { dash() } else { items.join(",") };
    match column {
        "INODE" | "NS" => row.inode.to_string(),
        "TYPE" => "net".to_owned(),
        "NAME" => or_dash(row.name.clone()),
        "NSID" => or_dash(row.nsid.map(|id| id.to_string())),
        "NETNSID" => row.nsid.map_or_else(|| "unassigned".to_owned(), |id| id.to_string()),
        "NAMES" if !row.names.is_empty() => row.names.join(","),
        "NAMES" => joined(row.bind_mounts.iter().map(|p| p.display().to_string()).collect()),
        "NSFS" => joined(nsfs()),
        "PATH" => or_dash(row.pid.map(|pid| format!("/proc/{pid}/ns/net")).or_else(|| nsfs().into_iter().next())),
        "PROCS" | "NPROCS" => row.pids.len().to_string(),
        "PID" => or_dash(row.pid.map(|pid| pid.to_string())),
        "PPID" => or_dash(row.ppid.map(|pid| pid.to_string())),
        "COMMAND" => or_dash(row.command.clone()),
        "UID" => or_dash(row.uid.map(|uid| uid.to_string())),
        "USER" => or_dash(row.user.clone()),
        "FDS" => row.fd_holders.len().to_string(),
        "INTERFACES" => row.interfaces.as_ref().map_or_else(|| "?".to_owned(), |i| i.len().to_string()),
        "SOURCE" => row.source.as_str().to_owned(),
        "CONTAINER" => or_dash(row.container.as_ref().map(ToString::to_string)),
        "ORPHANED" => or_dash(row.orphaned_seconds.map(orphans::short_duration)),
        "LEAK" => or_dash(row.orphaned_seconds.filter(|_| row.leaked).map(orphans::short_duration)),
        "WHO" => super::who::cell(row.arrivals.as_ref()),
        _ => dash(),
    }
}

fn print_table(rows: &[Row], columns: &[String], headings: bool) {
    let table: Vec<Vec<String>> = rows.iter().map(|row| columns.iter().map(|c| cell(row, c)).collect()).collect();
    let header = columns.to_vec();
    super::table::print_rows(headings.then_some(header), table);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_checked_and_plus_adds_to_the_default() {
        assert_eq!(columns(None, false).unwrap().join(","), DEFAULT);
        assert_eq!(columns(Some("ns,npROCS, pid"), false).unwrap(), ["NS", "NPROCS", "PID"]);
        assert_eq!(columns(Some("+user"), false).unwrap().last().map(String::as_str), Some("USER"));
        assert_eq!(columns(None, true).unwrap().len(), ALL.len());
        let err = columns(Some("NS,BOGUS"), false).unwrap_err();
        assert!(err.0.contains("\"BOGUS\""), "{}", err.0);
        assert!(columns(Some(","), false).is_err());
    }
}
