//! `add`, `del`, `exec`, `identify`, `pids`, `attach`: named namespaces, as `ip netns` does them.

use std::{error::Error as StdError, ffi::OsString, process::ExitCode};

use anyhow::Context as _;
use clap::Args;

use super::UsageError;
use crate::{
    inventory::{Inventory, ScanOptions, container},
    manage::{self, BadInput, exec, netns},
};

/// Turns a library error into the CLI's: input errors become [`UsageError`] (exit 2), keeping the whole chain.
pub(super) fn classify<E>(err: E) -> anyhow::Error
where
    E: BadInput + StdError + Send + Sync + 'static,
{
    if !err.is_bad_input() {
        return anyhow::Error::new(err);
    }
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    anyhow::Error::new(UsageError(message))
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name of the new namespace (a file under /run/netns; no '/', not "." or "..").
    pub name: String,
}

/// Creates a named network namespace with `lo` already up (unlike `ip netns add`, which leaves it down).
pub fn add(AddArgs { name }: AddArgs) -> anyhow::Result<ExitCode> {
    netns::add(&name).map_err(classify)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// Name of the namespace to delete.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Delete every namespace under /run/netns.
    #[arg(long)]
    pub all: bool,
}

pub fn del(DelArgs { name, all }: DelArgs) -> anyhow::Result<ExitCode> {
    let names = match name {
        Some(name) => vec![name],
        None if all => netns::list().map_err(classify)?.into_iter().map(|(name, _)| name).collect(),
        None => unreachable!("clap requires NAME or --all"),
    };
    let mut failed = None;
    for name in names {
        if let Err(err) = manage::delete_namespace(&name) {
            if !all {
                return Err(classify(err));
            }
            eprintln!("netns-monitor: error: {:#}", anyhow::Error::new(err));
            failed = Some(ExitCode::FAILURE);
        }
    }
    Ok(failed.unwrap_or(ExitCode::SUCCESS))
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Namespace to run the command in.
    pub name: String,
    /// The command and its arguments (after `--` if they start with '-').
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Becomes the command (as `ip netns exec` does): its exit status and its signals are the command's.
pub fn exec(ExecArgs { name, command }: ExecArgs) -> anyhow::Result<ExitCode> {
    match exec::exec(&name, &command).map_err(classify)? {}
}

#[derive(Debug, Args)]
pub struct IdentifyArgs {
    /// Process to look at (default: this one).
    pub pid: Option<u32>,
}

pub fn identify(IdentifyArgs { pid }: IdentifyArgs) -> anyhow::Result<ExitCode> {
    for name in netns::identify(pid.unwrap_or_else(std::process::id)).map_err(classify)? {
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct PidsArgs {
    /// Namespace whose processes to list.
    pub name: String,
}

pub fn pids(PidsArgs { name }: PidsArgs) -> anyhow::Result<ExitCode> {
    for pid in netns::pids(&name).map_err(classify)? {
        println!("{pid}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Name to give the namespace.
    #[arg(required_unless_present = "all", conflicts_with = "all", requires = "pid")]
    pub name: Option<String>,
    /// Process whose network namespace gets the name.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub pid: Option<u32>,
    /// Name every unnamed namespace that has processes (other than the host's): after its container
    /// (`docker-ID`, `containerd-ID`, ...) when the cgroup path says, else `pid-PID`.
    #[arg(long)]
    pub all: bool,
}

pub fn attach(args: AttachArgs) -> anyhow::Result<ExitCode> {
    match (args.name, args.pid) {
        (Some(name), Some(pid)) => {
            netns::attach(&name, pid).map_err(classify)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => attach_all(),
    }
}

fn attach_all() -> anyhow::Result<ExitCode> {
    let inventory = Inventory::scan(&ScanOptions::default()).context("cannot list the namespaces")?;
    let host = [1, std::process::id()].map(|pid| netns::process_netns(pid).ok());
    let mut failed = false;
    for ns in inventory.namespaces.values() {
        if !ns.names.is_empty() || ns.pids.is_empty() || host.contains(&Some(ns.inode)) {
            continue;
        }
        let preferred =
            container::of_pids(&ns.pids, 16).map_or_else(|| format!("pid-{}", ns.pids[0]), |hint| hint.netns_name());
        let mut result = netns::attach(&preferred, ns.pids[0]);
        let mut name = preferred.clone();
        if matches!(result, Err(netns::NetnsError::Exists { .. })) {
            // The name is taken by another namespace (a reused pid, a recreated container): qualify it.
            name = format!("{preferred}-{}", ns.inode);
            result = netns::attach(&name, ns.pids[0]);
        }
        match result {
            Ok(()) => println!("{name}\tnet:[{}]", ns.inode),
            Err(err) => {
                failed = true;
                eprintln!("netns-monitor: error: cannot name net:[{}]: {:#}", ns.inode, anyhow::Error::new(err));
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
