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
        enter::{self, Target},
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
#[command(after_long_help = "\
Examples:
  netns-monitor exec blue -- ip addr                 a name under /run/netns, as ip netns exec
  netns-monitor exec /run/docker/netns/1a2b -- ss -tln   a bind mount (any path holding a namespace)
  netns-monitor exec --pid 4242 -- ip route          the network namespace process 4242 is in
  netns-monitor exec --inode 4026532301 -- ip link   a namespace by inode, as list shows it
  netns-monitor exec --pid 4242 --type all -- sh     every namespace of the process, as nsenter -a -t 4242
  netns-monitor exec --all -- ip -br addr            every named namespace in turn, as ip -all netns exec

A network namespace alone is entered as ip netns exec does (private mounts, /sys for the namespace, and \
/etc/netns/NAME/* over /etc when it has a name); with --type other than net, the process's namespaces are \
entered as they are, mounts included. The command replaces netns-monitor, unless a PID namespace is entered or \
--all is given: then it runs as a child and every signal sent to netns-monitor (SIGTERM, SIGINT, SIGHUP, \
SIGQUIT, SIGUSR1, SIGUSR2) is passed on. The exit status is the command's (with --all: 1 if any failed); a \
command killed by a signal makes netns-monitor die of the same signal (one that dumps core: exit 128+N).")]
pub struct ExecArgs {
    /// Namespace to run the command in: a name under /run/netns, or a path to an nsfs file (any argument with a
    /// '/', such as Docker's /run/docker/netns/ID or /proc/PID/ns/net).
    #[arg(value_name = "NAME|PATH")]
    pub target: Option<String>,
    /// The namespace process PID is in (and with --type, its namespaces of other types, as nsenter --target).
    #[arg(long, value_name = "PID", conflicts_with_all = ["inode", "all"])]
    pub pid: Option<u32>,
    /// The network namespace with this inode (or net:[INODE]), as `list` shows it, through whatever holds it.
    #[arg(long, value_name = "INODE", conflicts_with = "all")]
    pub inode: Option<String>,
    /// Run the command in every named namespace in turn, each announced by a "netns: NAME" line (as
    /// `ip -all netns exec`).
    #[arg(long)]
    pub all: bool,
    /// Namespace types to enter, comma-separated: net (the default), or with --pid any of user, cgroup, ipc,
    /// uts, net, pid, mnt, time, or all.
    #[arg(long = "type", value_name = "TYPES", default_value = "net")]
    pub types: String,
    /// The command and its arguments (after `--` if they start with '-').
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs the command where it was pointed: becomes it (as `ip netns exec` does), or supervises it when a PID
/// namespace is entered or with --all.
pub fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let ExecArgs { target, pid, inode, all, types, mut command } = args;
    let flagged = pid.is_some() || inode.is_some() || all;
    // NAME|PATH is optional, so with --pid/--inode/--all clap hands the command's first word to it.
    let target = match target {
        // Given before `--`, the word was meant as the namespace: two targets.
        Some(word) if flagged && before_double_dash(&word) => {
            return Err(UsageError(format!(
                "{word:?} names a namespace, and so does --pid, --inode or --all: give one"
            ))
            .into());
        }
        Some(word) if flagged => {
            command.insert(0, word.into());
            None
        }
        target => target,
    };
    if command.is_empty() {
        return Err(UsageError("a command is required: netns-monitor exec TARGET -- CMD [ARGS...]".into()).into());
    }
    let spec = types;
    let types = enter::parse_types(&spec).map_err(classify)?;
    if types.is_empty() {
        return Err(UsageError("--type names no namespace type".into()).into());
    }
    if pid.is_none() && types != ["net"] {
        return Err(classify(enter::EnterError::TypesNeedPid(types.join(","))));
    }
    if all {
        return exec_all(&command);
    }
    let target = match (target, pid, inode) {
        (_, Some(pid), _) if types != ["net"] => {
            let all = spec.split(',').any(|t| t.trim() == "all");
            let status = enter::enter_process(pid, &types, all, &command).map_err(classify)?;
            return Ok(enter::exit_like(status));
        }
        (_, Some(pid), _) => Target::Pid(pid),
        (_, None, Some(inode)) => Target::Inode(
            inode
                .parse()
                .ok()
                .or_else(|| crate::inventory::parse_ns_link(&inode, "net"))
                .ok_or_else(|| UsageError(format!("--inode takes a number or net:[NUMBER], not {inode:?}")))?,
        ),
        (Some(path), None, None) if path.contains('/') => Target::Path(path.into()),
        (Some(name), None, None) => Target::Name(name),
        (None, None, None) => {
            return Err(UsageError("name the namespace: NAME|PATH, --pid, --inode or --all".into()).into());
        }
    };
    let opened = target.open().map_err(classify)?;
    match exec::exec_in(opened.file, opened.name.as_deref(), &opened.shown, &command).map_err(classify)? {}
}

/// Whether `word` appears on the command line before a `--` (which there is).
fn before_double_dash(word: &str) -> bool {
    let args: Vec<OsString> = std::env::args_os().collect();
    let dash = args.iter().position(|a| a == "--");
    dash.is_some_and(|dash| args[..dash].iter().any(|a| a == word))
}

fn exec_all(command: &[OsString]) -> anyhow::Result<ExitCode> {
    let outcome = exec::exec_all(command, &mut std::io::stdout()).map_err(classify)?;
    for (name, status) in &outcome.failed {
        eprintln!("netns-monitor: {}: {:?} {status}", name, command[0]);
    }
    if let Some(signal) = outcome.stopped_by {
        use std::os::unix::process::ExitStatusExt as _;
        return Ok(enter::exit_like(std::process::ExitStatus::from_raw(signal)));
    }
    Ok(if outcome.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
