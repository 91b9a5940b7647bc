//! A trace session: load the programs, then stream, filter and render events until a bound is reached or
//! `shutdown` resolves.

use std::{
    future::Future,
    io::{self, Write},
    time::Duration,
};

use super::{
    event::{Event, EventKind, NsType},
    filter::{Filter, Lineage},
    name_watch::{NameChange, NameWatch},
    names::Names,
    render::{self, Clock, Format},
};
use crate::{
    bpf::{BpfError, LoadOptions, Probes},
    inventory::{
        Inventory, ScanOptions,
        container::{runs_root_executable, start_time},
    },
    lifecycle::{End, LifecycleError, Tracker},
};

/// What to trace and how to show it.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    pub filter: Filter,
    pub format: Format,
    /// Stop after this many printed events.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Ring buffer size override (see [`LoadOptions::ring_buffer_bytes`]).
    pub ring_buffer_bytes: Option<u32>,
    /// Also show what the agent (`netns-monitor run`) does itself: it enters every new namespace to attach its
    /// classifiers, which would otherwise follow every namespace's creation.
    pub include_agent: bool,
    /// Which hook tier to load.
    pub hooks: crate::bpf::HookChoice,
    /// `netns-monitor monitor`: names appearing and going under /run/netns, and every network namespace's
    /// creation and end; no transitions.
    pub monitor: bool,
}

/// How a session went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub printed: u64,
    /// Events the kernel dropped because the ring buffer was full.
    pub lost: u64,
}

/// Errors that end a trace session.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("reading the event ring buffer failed")]
    Events(#[source] io::Error),
    #[error("cannot watch /proc/self/mountinfo for new namespace names")]
    Names(#[source] io::Error),
    #[error("cannot watch /run/netns for names")]
    NameWatch(#[source] io::Error),
    #[error("writing the output failed")]
    Output(#[source] io::Error),
}

/// Why the loop stopped early: output closed (e.g. `| head`) is a normal end, not an error.
enum Stop {
    Done,
    Error(TraceError),
}

fn output(err: io::Error) -> Stop {
    if err.kind() == io::ErrorKind::BrokenPipe { Stop::Done } else { Stop::Error(TraceError::Output(err)) }
}

/// Runs a session. `inventory` is the scan the filter was resolved against; `warnings` receives the
/// lost-event lines.
pub async fn run(
    options: TraceOptions,
    inventory: Inventory,
    out: &mut impl Write,
    warnings: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, TraceError> {
    let load = LoadOptions {
        ring_buffer_bytes: options.ring_buffer_bytes,
        filter_pid: options.filter.kernel_pid(),
        hooks: options.hooks,
        ..LoadOptions::default()
    };
    let mut probes = Probes::load(&load)?;
    probes.forward_kernel_logs()?;
    let mut events = probes.events()?;
    let mut tracker = Tracker::start(&inventory).await?;
    if probes.hooks.reports_destruction() {
        tracker.kernel_reports_destruction();
    }
    let mut names = Names::new(inventory).map_err(TraceError::Names)?;
    let mut agents = AgentPids::default();
    let mut lineage = Lineage::new(options.filter.clone());
    let clock = Clock::now();
    let mut watch = if options.monitor { Some(NameWatch::start().map_err(TraceError::NameWatch)?) } else { None };
    // Scripts (and the tests) wait for this line before acting.
    tracing::info!(tracked = tracker.tracked(), tier = probes.hooks.tier.number(), "programs attached; tracing");

    let mut summary = Summary::default();
    if options.format == Format::Table
        && !options.monitor
        && let Err(err) = render::header(out)
    {
        return match output(err) {
            Stop::Done => Ok(summary),
            Stop::Error(err) => Err(err),
        };
    }
    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, deadline);
    let mut batch: Vec<Event> = Vec::new();
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = &mut deadline => break Ok(()),
            read = events.next_batch(&mut batch) => {
                if let Err(err) = read {
                    break Err(Stop::Error(TraceError::Events(err)));
                }
            }
            end = tracker.next_end() => match end {
                Some(End::Destroyed(inode)) => batch.push(Event::destroyed(inode, render::boottime_ns())),
                Some(End::Unknown(inode)) => batch.push(Event::end_unknown(inode, render::boottime_ns())),
                None => break Err(Stop::Error(TraceError::Lifecycle(LifecycleError::Closed))),
            },
            changes = names_changed(&mut watch) => match print_names(changes, &options, Some(&mut names), out, &mut summary) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(stop) => break Err(stop),
            },
        }
        match handle_batch(
            &mut batch,
            &options,
            &mut lineage,
            &mut tracker,
            &mut names,
            &mut agents,
            &clock,
            out,
            &mut summary,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(stop) => break Err(stop),
        }
        report_lost(&probes, &mut summary, warnings);
    };
    report_lost(&probes, &mut summary, warnings);
    let _ = out.flush();
    match result {
        Ok(()) | Err(Stop::Done) => Ok(summary),
        Err(Stop::Error(err)) => Err(err),
    }
}

/// Tracks, filters and prints a batch; `Ok(false)` once `--count` is reached.
#[allow(clippy::too_many_arguments)]
async fn handle_batch(
    batch: &mut Vec<Event>,
    options: &TraceOptions,
    lineage: &mut Lineage,
    tracker: &mut Tracker,
    names: &mut Names,
    agents: &mut AgentPids,
    clock: &Clock,
    out: &mut impl Write,
    summary: &mut Summary,
) -> Result<bool, Stop> {
    for event in batch.drain(..) {
        if event.kind == EventKind::NetnsCreated {
            let (_, inode) = event.ns(NsType::Net);
            names.forget_former(inode);
            tracker
                .track_created(inode, event.net_cookie, event.pid, event.tid, || {
                    Inventory::scan(&ScanOptions { fds: true }).ok()
                })
                .await;
        }
        // A namespace's end has no caller of its own: the agent may just have closed its last reference.
        let agent = !options.include_agent && !event.is_end() && agents.is_agent(event.pid);
        if !lineage.keep(&event) || agent || (options.monitor && event.syscall().is_some()) {
            continue;
        }
        if options.monitor {
            render::write_lifecycle(out, options.format, &event, names, clock).map_err(output)?;
        } else {
            render::write(out, options.format, &event, names, clock).map_err(output)?;
        }
        summary.printed += 1;
        if options.count.is_some_and(|count| summary.printed >= count) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The next change of the names, if they are watched.
async fn names_changed(watch: &mut Option<NameWatch>) -> io::Result<Vec<NameChange>> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// Prints name changes (remembering removed names in `names`, for the namespace's end that may follow);
/// `Ok(false)` once `--count` is reached.
fn print_names(
    changes: io::Result<Vec<NameChange>>,
    options: &TraceOptions,
    mut names: Option<&mut Names>,
    out: &mut impl Write,
    summary: &mut Summary,
) -> Result<bool, Stop> {
    for change in changes.map_err(|err| Stop::Error(TraceError::NameWatch(err)))? {
        if let (NameChange::Removed { name, inode }, Some(names)) = (&change, names.as_deref_mut()) {
            names.remember(*inode, name);
        }
        render::write_name_change(out, options.format, &change).map_err(output)?;
        summary.printed += 1;
        if options.count.is_some_and(|count| summary.printed >= count) {
            return Ok(false);
        }
    }
    out.flush().map_err(output)?;
    Ok(true)
}

/// `monitor --names-only`: only the names under /run/netns, as `ip netns monitor` (no kernel programs).
pub async fn monitor_names(
    options: &TraceOptions,
    out: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, TraceError> {
    let mut watch = Some(NameWatch::start().map_err(TraceError::NameWatch)?);
    tracing::info!("watching /run/netns");
    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, deadline);
    let mut summary = Summary::default();
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = &mut deadline => break Ok(()),
            changes = names_changed(&mut watch) => match print_names(changes, options, None, out, &mut summary) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(stop) => break Err(stop),
            },
        }
    };
    match result {
        Ok(()) | Err(Stop::Done) => Ok(summary),
        Err(Stop::Error(err)) => Err(err),
    }
}

/// Tells the agent's processes from others: `netns-monitor run` by its command line, run as root from a root-owned
/// executable (so that an unprivileged process cannot hide its setns calls by calling itself the agent). The
/// verdict is read once per pid. An agent's is kept with its start time and checked against it, since only
/// a "hide" verdict would be wrong for a reused pid; for every other pid, no /proc read per event.
#[derive(Debug, Default)]
struct AgentPids {
    /// `Some(start time)` for an agent, `None` for any other process.
    verdicts: std::collections::HashMap<u32, Option<u64>>,
}

impl AgentPids {
    fn is_agent(&mut self, pid: u32) -> bool {
        if let Some(&Some(started)) = self.verdicts.get(&pid)
            && start_time(pid) != Some(started)
        {
            self.verdicts.remove(&pid);
        }
        self.verdicts.entry(pid).or_insert_with(|| Self::read(pid)).is_some()
    }

    fn read(pid: u32) -> Option<u64> {
        let started = start_time(pid)?;
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mut args = raw.split(|&b| b == 0);
        let program = args.next().unwrap_or_default();
        let base = program.rsplit(|&b| b == b'/').next().unwrap_or_default();
        // The first argument that is not an option is the subcommand.
        let agent = base.starts_with(b"netns-monitor")
            && args.find(|a| !a.starts_with(b"-")) == Some(&b"run"[..])
            && runs_root_executable(pid);
        agent.then_some(started)
    }
}

/// Prints a warning line when the kernel dropped events since the last look.
fn report_lost(probes: &Probes, summary: &mut Summary, warnings: &mut impl Write) {
    match probes.counters() {
        Ok(counters) if counters.lost_events > summary.lost => {
            let _ = writeln!(
                warnings,
                "netns-monitor: warning: {} events lost (ring buffer full), {} in total",
                counters.lost_events - summary.lost,
                counters.lost_events
            );
            summary.lost = counters.lost_events;
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot read the lost-event counter"),
    }
}
