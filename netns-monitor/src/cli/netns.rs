//! `add`, `del`, `exec`, `identify`, `pids`, `attach`: named namespaces, as `ip netns` does them.

use std::{error::Error as StdError, ffi::OsString, process::ExitCode};

use anyhow::Context as _;
use clap::Args;

use super::UsageError;
use crate::{
    inventory::{Inventory, ScanOptions},
    manage::{
        self, BadInput,
        autoname::{self, Change},
        exec, netns,
    },
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

/// Prints the /run/netns names of the process's namespace, as `ip netns identify` does, then the other bind
/// mounts of it (Docker's `/run/docker/netns/KEY`, ...), which `ip netns` cannot see.
pub fn identify(IdentifyArgs { pid }: IdentifyArgs) -> anyhow::Result<ExitCode> {
    let pid = pid.unwrap_or_else(std::process::id);
    for name in netns::identify(pid).map_err(classify)? {
        println!("{name}");
    }
    let inode = netns::process_netns(pid).map_err(classify)?;
    let inventory = Inventory::scan(&ScanOptions::default()).context("cannot list the namespaces")?;
    for path in inventory.get(inode).map(|ns| ns.bind_mounts.as_slice()).unwrap_or_default() {
        println!("{}", path.display());
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
#[command(after_long_help = "\
With --all, the names are symlinks to /proc/PID/ns/net, not bind mounts: they never keep a namespace alive. \
When a container restarts, run `attach --all` again and its name follows it to the new namespace; until then \
the name does not resolve (ip netns exec fails) instead of entering the dead namespace. The names attach --all \
made are recorded in /run/netns-monitor/names; names anyone else made are never changed or removed.")]
pub struct AttachArgs {
    /// Name to give the namespace.
    #[arg(required_unless_present = "all", conflicts_with = "all", requires = "pid")]
    pub name: Option<String>,
    /// Process whose network namespace gets the name.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub pid: Option<u32>,
    /// Name every namespace that has processes and no name a person gave it (other than the host's): after
    /// its container (`docker-ID`, `podman-ID`, `lxc-NAME`, `runc-ID`, `containerd-ID`, `systemd-nspawn-NAME`)
    /// when it is in one, else `pid-PID`. Prints NAME and net:[INODE] for each name made or moved.
    #[arg(long)]
    pub all: bool,
    /// With --all: also remove the names attach --all made whose container or process is gone.
    #[arg(long, requires = "all")]
    pub prune: bool,
}

pub fn attach(args: AttachArgs) -> anyhow::Result<ExitCode> {
    match (args.name, args.pid) {
        (Some(name), Some(pid)) => {
            netns::attach(&name, pid).map_err(classify)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => attach_all(args.prune),
    }
}

fn attach_all(prune: bool) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::scan(&ScanOptions::default()).context("cannot list the namespaces")?;
    let mut failed = false;
    for change in autoname::reconcile(&inventory, &autoname::Options { processes: true, prune }) {
        match change {
            Change::Named { name, inode, .. } => println!("{name}\tnet:[{inode}]"),
            Change::Removed { name } => println!("removed {name}"),
            Change::Failed { what, error } => {
                failed = true;
                eprintln!("netns-monitor: error: cannot {what}: {:#}", anyhow::Error::new(error));
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
