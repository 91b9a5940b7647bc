//! `netns-monitor trace`.

use std::{process::ExitCode, time::Duration};

use clap::Args;

use super::UsageError;
use crate::{
    inventory::{Inventory, ScanOptions},
    trace::{
        filter::FilterSpec,
        render::Format,
        session::{self, TraceOptions},
    },
};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Columns: TIME (UTC), PID and COMM of the caller, SYSCALL (or netns-created / netns-destroyed), TYPE (namespace \
types that changed, or that a failed call asked for), OLD -> NEW inodes (network namespaces with their names), \
RESULT (ok, child PID, or errno).

With --json each event is one JSON object per line; the schema is documented in docs/trace-json.md.

Destruction of a network namespace is reported from the kernel's RTM_DELNSID notification, so tracing assigns a \
netns id (as `ip netns set NAME auto` does) to every namespace it can reach.")]
pub struct TraceArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only events of this process (filtered in the kernel when given once). Repeatable.
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Only events of processes with this command name (as in /proc/PID/comm). Repeatable.
    #[arg(long, value_name = "COMM")]
    comm: Vec<String>,
    /// Only events that leave or enter this network namespace: a name under /run/netns, a bind-mount path, an
    /// inode, or net:[INODE]. Repeatable.
    #[arg(long, value_name = "NAME|INODE")]
    netns: Vec<String>,
    /// Only this syscall: setns, unshare, clone or clone3. Repeatable.
    #[arg(long, value_name = "SYSCALL")]
    syscall: Vec<String>,
    /// Only events that change (or ask for) this namespace type: net, mnt, pid, pid_for_children, uts, ipc,
    /// user, cgroup, time, time_for_children. Repeatable.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Only failed calls (reported with their errno).
    #[arg(long)]
    failed: bool,
    /// Also show the agent's own calls (`netns-monitor run` enters every new namespace to count its traffic).
    #[arg(long)]
    include_agent: bool,
    /// Stop after printing N events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Size of the kernel's event ring buffer in bytes: a power of two, at least the page size (4096).
    #[arg(long, value_name = "BYTES", hide_short_help = true)]
    ring_buffer_bytes: Option<u32>,
    /// Kernel hooks: `fentry` (tier 1, no cost to other syscalls), `tracepoint` (tier 2, syscall tracepoints) or
    /// `auto` (tier 1 where the kernel allows it).
    #[arg(long, value_name = "TIER", default_value = "auto", hide_short_help = true,
          value_parser = clap::builder::PossibleValuesParser::new(crate::bpf::HookChoice::NAMES))]
    hooks: String,
}

/// `--duration SECS`, checked.
pub(super) fn duration(secs: Option<f64>) -> Result<Option<Duration>, UsageError> {
    match secs {
        Some(secs) if !(secs.is_finite() && secs > 0.0) => {
            Err(UsageError(format!("--duration must be a positive number of seconds, not {secs}")))
        }
        Some(secs) => Ok(Some(Duration::from_secs_f64(secs))),
        None => Ok(None),
    }
}

pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    // Everything the user typed is checked before anything is loaded into the kernel.
    let duration = duration(args.duration)?;
    if let Some(bytes) = args.ring_buffer_bytes
        && !(bytes >= 4096 && bytes.is_power_of_two())
    {
        return Err(UsageError(format!("--ring-buffer-bytes must be a power of two >= 4096, not {bytes}")).into());
    }
    let spec = FilterSpec {
        pids: args.pid,
        comms: args.comm,
        netns: args.netns,
        syscalls: args.syscall,
        types: args.types,
        failed: args.failed,
    };
    let inventory = Inventory::scan(&ScanOptions { fds: true })?;
    let filter = spec.resolve(&inventory).map_err(|err| UsageError(err.to_string()))?;
    let options = TraceOptions {
        filter,
        format: if args.json { Format::Json } else { Format::Table },
        count: args.count,
        duration,
        ring_buffer_bytes: args.ring_buffer_bytes,
        include_agent: args.include_agent,
        hooks: args.hooks.parse().map_err(UsageError)?,
        monitor: false,
    };
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    session::run(options, inventory, &mut stdout, &mut stderr, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
