//! `list`: every network namespace on the host, named or not.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::inventory::{self, ContainerHint, Inventory, Namer, ScanOptions, Source};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print one JSON document (an array) instead of a table.
    #[arg(long)]
    pub json: bool,
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
}

pub fn list(ListArgs { json, no_fds, .. }: ListArgs) -> anyhow::Result<ExitCode> {
    // Every namespace, as `list` promises: one held only by a file descriptor is a namespace too.
    let inventory = Inventory::scan(&ScanOptions { fds: !no_fds }).context("cannot list the namespaces")?;
    let mut details = inventory::details(&inventory).context("cannot read namespace details")?;
    let namer = Namer::new();
    let rows: Vec<Row> = inventory
        .namespaces
        .values()
        .map(|ns| {
            let details = details.remove(&ns.inode).unwrap_or_default();
            let (name, container) = namer.describe(ns);
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
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).context("cannot encode JSON")?);
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Row]) {
    let body = rows.iter().map(|row| {
        let names = if !row.names.is_empty() {
            row.names.join(",")
        } else if !row.bind_mounts.is_empty() {
            row.bind_mounts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
        } else {
            "-".to_owned()
        };
        let name = row.name.clone().unwrap_or_else(|| "-".to_owned());
        [
            row.inode.to_string(),
            name,
            row.nsid.map_or_else(|| "-".to_owned(), |id| id.to_string()),
            names,
            row.pids.len().to_string(),
            row.interfaces.as_ref().map_or_else(|| "?".to_owned(), |i| i.len().to_string()),
            row.source.as_str().to_owned(),
            row.container.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
        ]
    });
    super::table::print(["INODE", "NAME", "NSID", "NAMES", "PROCS", "INTERFACES", "SOURCE", "CONTAINER"], body);
}
