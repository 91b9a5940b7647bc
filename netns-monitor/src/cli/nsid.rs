//! `set` and `list-id`: netns ids, as `ip netns set` and `ip netns list-id` show them.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::netns::classify;
use crate::manage::nsid;

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Named namespace (under /run/netns).
    pub name: String,
    /// The id to give it in the current namespace, or `auto` for the lowest free one (printed).
    #[arg(value_name = "NSID|auto")]
    pub nsid: String,
}

/// `ip netns set NAME NSID`: refused (exit 2) when the namespace already has another id or the id is taken.
pub fn set(SetArgs { name, nsid: value }: SetArgs) -> anyhow::Result<ExitCode> {
    let wanted = nsid::parse(&value).map_err(classify)?;
    let id = nsid::set(&name, wanted).map_err(classify)?;
    if wanted.is_none() {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ListIdArgs {
    /// Print one JSON document (an array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `ip netns list-id`, with each id's namespace (inode and name) wherever it is held, not only under /run/netns.
pub fn list_id(ListIdArgs { json }: ListIdArgs) -> anyhow::Result<ExitCode> {
    let ids = nsid::list_ids().map_err(classify)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ids).context("cannot encode JSON")?);
        return Ok(ExitCode::SUCCESS);
    }
    let dash = || "-".to_owned();
    let rows = ids.iter().map(|entry| {
        [
            entry.nsid.to_string(),
            entry.inode.map_or_else(dash, |inode| inode.to_string()),
            entry.name.clone().unwrap_or_else(dash),
            if entry.names.is_empty() { dash() } else { entry.names.join(",") },
        ]
    });
    super::table::print(["NSID", "INODE", "NAME", "NAMES"], rows);
    Ok(ExitCode::SUCCESS)
}
