//! The command line: argument definitions (clap) and dispatch, one file per group of verbs.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 bad usage (clap's parse errors, and [`UsageError`] for input
//! that parses but is wrong, e.g. a namespace name that does not exist). Errors are printed to stderr with
//! their whole cause chain. This is an edge of the program, so it uses `anyhow` for context.

mod list;
mod monitor;
mod net;
mod netns;
mod nsid;
mod run;
mod stats;
mod table;
mod top;
mod trace;
mod unload;
mod who;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
pub use run::DEFAULT_LISTEN;

use crate::privileges::Capability;

/// Manage, discover, trace and count Linux network namespaces.
#[derive(Debug, Parser)]
#[command(name = "netns-monitor", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: load and attach the kernel programs and watch namespaces until SIGINT/SIGTERM.
    ///
    /// Mounts tracefs (/sys/kernel/tracing) and bpffs (/sys/fs/bpf) if they are missing. Needs root, or
    /// CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_NET_BROADCAST, CAP_SYS_ADMIN and CAP_SYS_PTRACE (plus
    /// CAP_DAC_READ_SEARCH to see namespaces held only by other users' file descriptors); refuses to start
    /// without them (exit code 1, naming them), drops every other capability at start, and CAP_PERFMON once
    /// its programs are loaded. Log verbosity comes from RUST_LOG (default: info).
    Run(run::RunArgs),
    /// Stream namespace transitions live from the kernel until Ctrl-C (or --count / --duration).
    ///
    /// Every setns, and every unshare/clone/clone3 that asks for a new namespace, by any process: who (pid,
    /// comm), which syscall, which namespace types changed, old and new inodes (network namespaces with their
    /// names), and the result. Network namespaces being created and destroyed are shown too. Needs root.
    Trace(trace::TraceArgs),
    /// Watch names under /run/netns come and go (as `ip netns monitor`) and every network namespace the kernel
    /// creates or destroys, named or not, until Ctrl-C (or --count / --duration).
    Monitor(monitor::MonitorArgs),
    /// A live view of every namespace: processes, traffic rates, who got in; sortable and filterable (q quits).
    ///
    /// Reads the agent's pinned counters and records (no HTTP); needs a terminal.
    Top(top::TopArgs),
    /// Per-namespace traffic counted by the agent's classifiers, read from the pinned maps (no Prometheus
    /// needed). Counters keep counting while the agent is down.
    Stats(stats::StatsArgs),
    /// Detach and unpin everything a stopped agent left running: its transition programs, its classifiers
    /// (TCX links, or clsact/cls_bpf filters in every namespace) and its pinned maps, with a summary.
    ///
    /// The agent's programs outlive it on purpose (a restart loses nothing), and keep costing: tier 2's
    /// tracepoints slow every syscall. Refused while an agent runs on the pin directory (exit 1). Needs root.
    Unload(unload::UnloadArgs),
    /// Create a named network namespace (under /run/netns, as `ip netns add`) and bring its `lo` up.
    Add(netns::AddArgs),
    /// Delete a named namespace (or all with --all), with its nat/forward rules.
    Del(netns::DelArgs),
    /// List every network namespace: named, bind-mounted (Docker, CNI), held only by processes, or only by an
    /// open file descriptor.
    ///
    /// Columns: INODE (the identity), NSID (as seen from the current namespace), NAMES (/run/netns names, else
    /// bind-mount paths), PROCS, INTERFACES (count), SOURCE (named, bind-mount, process, fd) and CONTAINER
    /// (runtime and short id from the processes' cgroup path).
    List(list::ListArgs),
    /// Run a command in a namespace, like `ip netns exec`: by name, by path (Docker's /run/docker/netns/ID), by
    /// --pid or --inode, or in every named one (--all); with --pid and --type, a process's other namespaces as
    /// `nsenter` enters them.
    ///
    /// A network namespace gets private mounts, /sys for the namespace and /etc/netns/NAME/* over /etc. The
    /// command's exit status and signals are its own.
    Exec(netns::ExecArgs),
    /// Print the names of the network namespace of PID (default: this process).
    Identify(netns::IdentifyArgs),
    /// Print the processes in a named namespace.
    Pids(netns::PidsArgs),
    /// Give a process's network namespace a name under /run/netns (a bind mount), so `ip netns` sees it.
    Attach(netns::AttachArgs),
    /// Give a named namespace a netns id (NSID) in the current namespace, as `ip netns set NAME NSID|auto`.
    Set(nsid::SetArgs),
    /// Every netns id the current namespace has given, with the namespace it stands for (inode and name,
    /// wherever it is held), as `ip netns list-id` but beyond /run/netns.
    ListId(nsid::ListIdArgs),
    /// Veth pairs between the host (or a namespace) and a namespace.
    #[command(subcommand)]
    Veth(net::VethCommand),
    /// Masquerade a namespace's traffic out of a host interface (nftables, over netlink).
    #[command(subcommand)]
    Nat(net::NatCommand),
    /// Forward a host port into a namespace (nftables DNAT, over netlink).
    #[command(subcommand)]
    Forward(net::ForwardCommand),
}

/// Input that parses but is wrong: reported like any error, with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the command line, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if !matches!(cli.command, Command::Run(_)) {
        // Like other Unix tools, end quietly when the reader goes away (`netns-monitor list | head`) instead
        // of panicking in println!. Not for the agent: it must never die because a log reader left.
        // SAFETY: setting a signal disposition to SIG_DFL before any thread is started has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => report(err),
    }
}

/// Runs a command. Only the long-running ones get an async runtime; the management verbs are synchronous (their
/// netlink work runs on threads of its own) and start faster without one.
fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    check_privileges(&cli.command)?;
    match cli.command {
        // Builds its runtime itself, after dropping privileges (which must happen while single-threaded).
        Command::Run(args) => run::run(args),
        Command::Trace(args) => runtime()?.block_on(trace::run(args)),
        Command::Monitor(args) => runtime()?.block_on(monitor::run(args)),
        Command::Stats(args) => stats::stats(args),
        Command::Top(args) => top::top(args),
        Command::Unload(args) => unload::unload(args),
        Command::Add(args) => netns::add(args),
        Command::Del(args) => netns::del(args),
        Command::List(args) => list::list(args),
        Command::Exec(args) => netns::exec(args),
        Command::Identify(args) => netns::identify(args),
        Command::Pids(args) => netns::pids(args),
        Command::Attach(args) => netns::attach(args),
        Command::Set(args) => nsid::set(args),
        Command::ListId(args) => nsid::list_id(args),
        Command::Veth(command) => net::veth(command),
        Command::Nat(command) => net::nat(command),
        Command::Forward(command) => net::forward(command),
    }
}

/// What a verb needs from the kernel, and why: without it, `list` and `pids` would show a partial view as if it
/// were complete (only this user's processes), and `add` or `stats` would fail half-way on a bare EPERM or with
/// a wrong cause. `run` checks its own, naming each capability; `identify` works on the caller's own process.
fn needs(command: &Command) -> Option<(&'static str, &'static [Capability], &'static str)> {
    use crate::privileges::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE};
    const INVENTORY: &[Capability] = &[CAP_SYS_ADMIN, CAP_SYS_PTRACE];
    const INVENTORY_WHY: &str = "to read every process's /proc/PID/ns and enter namespaces";
    const MANAGE: &[Capability] = &[CAP_SYS_ADMIN, CAP_NET_ADMIN];
    const MANAGE_WHY: &str = "to mount under /run/netns, enter namespaces and change links and rules";
    Some(match command {
        Command::Run(_) | Command::Identify(_) => return None,
        Command::Monitor(args) if !args.loads_programs() => return None,
        Command::Monitor(_) => (
            "monitor",
            &[CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN],
            "to load and attach the kernel programs (--names-only does not)",
        ),
        Command::Trace(_) => {
            ("trace", &[CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN], "to load and attach the kernel programs")
        }
        Command::Stats(_) => ("stats", &[CAP_BPF, CAP_SYS_ADMIN], "to read the agent's pinned maps"),
        Command::Top(_) => {
            ("top", &[CAP_BPF, CAP_SYS_ADMIN, CAP_SYS_PTRACE], "to read the agent's pinned maps and every process")
        }
        Command::Unload(_) => ("unload", &[CAP_BPF, CAP_SYS_ADMIN, CAP_NET_ADMIN], "to remove pins and delete filters"),
        Command::List(_) => ("list", INVENTORY, INVENTORY_WHY),
        Command::Pids(_) => ("pids", INVENTORY, INVENTORY_WHY),
        Command::Add(_) => ("add", MANAGE, MANAGE_WHY),
        Command::Del(_) => ("del", MANAGE, MANAGE_WHY),
        Command::Exec(_) => ("exec", MANAGE, MANAGE_WHY),
        Command::Attach(_) => ("attach", MANAGE, MANAGE_WHY),
        Command::Set(_) => ("set", MANAGE, MANAGE_WHY),
        Command::ListId(_) => ("list-id", INVENTORY, INVENTORY_WHY),
        Command::Veth(_) => ("veth", MANAGE, MANAGE_WHY),
        Command::Nat(_) => ("nat", MANAGE, MANAGE_WHY),
        Command::Forward(_) => ("forward", MANAGE, MANAGE_WHY),
    })
}

/// Fails (exit 1) before a verb does anything when the process lacks what the verb needs, naming it.
fn check_privileges(command: &Command) -> anyhow::Result<()> {
    let Some((verb, caps, why)) = needs(command) else { return Ok(()) };
    let effective = crate::privileges::current()?.effective;
    let missing: Vec<String> = caps.iter().filter(|cap| !effective.contains(**cap)).map(|cap| cap.name()).collect();
    if !missing.is_empty() {
        let all: Vec<String> = caps.iter().map(|cap| cap.name()).collect();
        anyhow::bail!("`{verb}` needs root (or {}) {why}; this process lacks {}", all.join(", "), missing.join(", "));
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

fn init_logging() {
    use std::io::IsTerminal as _;

    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file, journald or a pipe gets plain text (no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).try_init();
}

fn report(err: anyhow::Error) -> ExitCode {
    eprintln!("netns-monitor: error: {err:#}");
    if err.downcast_ref::<UsageError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
}
