//! `netns-monitor monitor`: `ip netns monitor`, plus every network namespace the kernel creates or destroys.

use std::process::ExitCode;

use clap::Args;

use super::UsageError;
use crate::{
    inventory::{Inventory, ScanOptions},
    trace::{
        render::Format,
        session::{self, TraceOptions},
    },
};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Lines: TIME (UTC), then `add NAME net:[INODE]` / `delete NAME net:[INODE]` when a name under /run/netns starts or \
stops leading to a namespace (ip netns monitor's add and delete, once the name is usable, with the namespace), \
`created net:[INODE] by PID COMM (SYSCALL)` for every new network namespace, named or not (containers, \
unshare -n, a CNI plugin), and `destroyed net:[INODE] NAME` when the kernel tears one down.

With --json each is one JSON object per line: name_added and name_removed ({time, ts_boot_ns, event, name, \
inode}), and trace's netns_created and netns_destroyed (docs/trace-json.md).")]
pub struct MonitorArgs {
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Only names under /run/netns, as `ip netns monitor` (no kernel programs, so no BPF privileges needed).
    #[arg(long)]
    names_only: bool,
    /// Stop after printing N lines.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Kernel hooks: `fentry`, `tracepoint` or `auto` (see `trace --help`).
    #[arg(long, value_name = "TIER", default_value = "auto", hide_short_help = true,
          value_parser = clap::builder::PossibleValuesParser::new(crate::bpf::HookChoice::NAMES))]
    hooks: String,
}

impl MonitorArgs {
    /// Whether the kernel programs are loaded (and so BPF privileges needed).
    pub fn loads_programs(&self) -> bool {
        !self.names_only
    }
}

pub async fn run(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let duration = super::trace::duration(args.duration)?;
    let options = TraceOptions {
        format: if args.json { Format::Json } else { Format::Table },
        count: args.count,
        duration,
        hooks: args.hooks.parse().map_err(UsageError)?,
        monitor: true,
        ..TraceOptions::default()
    };
    let mut stdout = std::io::stdout().lock();
    if args.names_only {
        session::monitor_names(&options, &mut stdout, super::shutdown_signal()).await?;
    } else {
        let inventory = Inventory::scan(&ScanOptions { fds: true })?;
        session::run(options, inventory, &mut stdout, &mut std::io::stderr(), super::shutdown_signal()).await?;
    }
    Ok(ExitCode::SUCCESS)
}
