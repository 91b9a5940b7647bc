//! Output of `netns-monitor trace`: an aligned table for people, JSON lines for programs.
//!
//! The JSON schema is documented in docs/trace-json.md and is stable: fields are only ever added.

use std::{
    io::{self, Write},
    time::{Duration, SystemTime},
};

use netns_monitor_common::ns::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS,
};
use serde::Serialize;

use super::{
    event::{Event, EventKind, NsType, Syscall},
    name_watch::NameChange,
    names::Names,
};

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Converts CLOCK_BOOTTIME stamps to wall-clock time, from one reading of both clocks at start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    boot: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        let since_boot = boottime_ns();
        Self { boot: SystemTime::now() - Duration::from_nanos(since_boot) }
    }

    pub fn wall(&self, ts_boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ts_boot_ns)
    }
}

/// Nanoseconds on CLOCK_BOOTTIME now (the clock `bpf_ktime_get_boot_ns` reads).
pub fn boottime_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is always available");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

const CLONE_FLAG_NAMES: [(u64, &str); 8] = [
    (CLONE_NEWNS, "CLONE_NEWNS"),
    (CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
    (CLONE_NEWUTS, "CLONE_NEWUTS"),
    (CLONE_NEWIPC, "CLONE_NEWIPC"),
    (CLONE_NEWUSER, "CLONE_NEWUSER"),
    (CLONE_NEWPID, "CLONE_NEWPID"),
    (CLONE_NEWNET, "CLONE_NEWNET"),
    (CLONE_NEWTIME, "CLONE_NEWTIME"),
];

/// Names of the namespace flags set in `flags` (for setns, `nstype` 0 means "any type").
pub fn flag_names(event: &Event) -> Vec<&'static str> {
    let mut flags = event.flags;
    if event.syscall() == Some(Syscall::Clone) {
        // In clone() the low byte is the exit signal, not CLONE_NEWTIME.
        flags &= !0xff;
    }
    CLONE_FLAG_NAMES.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, name)| *name).collect()
}

/// The event kind as shown in the SYSCALL column and the JSON `event`/`syscall` fields.
fn kind_name(event: &Event) -> &'static str {
    match event.kind {
        EventKind::Transition(syscall) => syscall.name(),
        EventKind::NetnsCreated => "netns-created",
        EventKind::NetnsDestroyed | EventKind::NetnsEndUnknown => "netns-destroyed",
    }
}

/// Types to show: those that changed, else those the call asked for (a failed call changes nothing).
fn shown_types(event: &Event) -> Vec<NsType> {
    let changed: Vec<NsType> = event.changed().collect();
    if !changed.is_empty() || event.syscall().is_none() {
        return changed;
    }
    NsType::ALL.into_iter().filter(|&t| event.flags & super::filter::clone_flag(t) != 0).collect()
}

fn result(event: &Event) -> String {
    match (event.kind, event.errno()) {
        (EventKind::Transition(_), Some(errno)) => format!("{:?}", nix::errno::Errno::from_raw(errno)),
        (EventKind::Transition(Syscall::Clone | Syscall::Clone3), None) => format!("child {}", event.ret),
        (EventKind::Transition(_), None) => "ok".to_owned(),
        (EventKind::NetnsEndUnknown, _) => "unknown (gone before it could be watched)".to_owned(),
        _ => "-".to_owned(),
    }
}

fn labelled(inode: u32, names: &mut Names, with_name: bool) -> String {
    if inode == 0 {
        return "-".to_owned();
    }
    match with_name.then(|| names.name(inode)).flatten() {
        Some(name) => format!("{inode}({name})"),
        None => inode.to_string(),
    }
}

/// Writes the table header.
pub fn header(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<15} {:>7} {:<16} {:<15} {:<12} {:<56} RESULT",
        "TIME", "PID", "COMM", "SYSCALL", "TYPE", "OLD -> NEW"
    )
}

/// Writes one event in `format`.
pub fn write(out: &mut impl Write, format: Format, event: &Event, names: &mut Names, clock: &Clock) -> io::Result<()> {
    match format {
        Format::Table => write_row(out, event, names, clock),
        Format::Json => {
            serde_json::to_writer(&mut *out, &JsonEvent::new(event, names, clock))?;
            writeln!(out)
        }
    }
}

fn write_row(out: &mut impl Write, event: &Event, names: &mut Names, clock: &Clock) -> io::Result<()> {
    let time = short_time(clock.wall(event.ts_boot_ns));
    let types = shown_types(event);
    let type_names: Vec<&str> = types.iter().map(|t| t.proc_name()).collect();
    let moves: Vec<String> = types
        .iter()
        .map(|&t| {
            let (old, new) = event.ns(t);
            let net = t == NsType::Net;
            format!("{} -> {}", labelled(old, names, net), labelled(new, names, net))
        })
        .collect();
    let pid = if event.is_end() { "-".to_owned() } else { event.pid.to_string() };
    let comm = if event.comm.is_empty() { "-" } else { &event.comm };
    // One line per namespace type that changed, the call's columns on the first only: a call that changes
    // several types (clone with five CLONE_NEW* flags) stays as narrow as one that changes one, and aligned.
    writeln!(
        out,
        "{:<15} {:>7} {:<16} {:<15} {:<12} {:<56} {}",
        time,
        pid,
        comm,
        kind_name(event),
        type_names.first().copied().unwrap_or("-"),
        moves.first().map_or("-", String::as_str),
        result(event)
    )?;
    for (name, moved) in type_names.iter().zip(&moves).skip(1) {
        writeln!(out, "{:<15} {:>7} {:<16} {:<15} {name:<12} {moved}", "", "", "", "")?;
    }
    Ok(())
}

/// Writes one event as `netns-monitor monitor` shows it: only a namespace's creation and end are lines there
/// (transitions are `trace`'s).
pub fn write_lifecycle(
    out: &mut impl Write,
    format: Format,
    event: &Event,
    names: &mut Names,
    clock: &Clock,
) -> io::Result<()> {
    if format == Format::Json {
        return write(out, format, event, names, clock);
    }
    let time = short_time(clock.wall(event.ts_boot_ns));
    match event.kind {
        EventKind::NetnsCreated => {
            let (_, inode) = event.ns(NsType::Net);
            writeln!(out, "{time} {:<9} net:[{inode}] by {} {}", "created", event.pid, event.comm)
        }
        EventKind::NetnsDestroyed | EventKind::NetnsEndUnknown => {
            let (inode, _) = event.ns(NsType::Net);
            let name = names.name(inode).map(|name| format!(" {name}")).unwrap_or_default();
            let word = if event.kind == EventKind::NetnsDestroyed { "destroyed" } else { "lost" };
            let unknown =
                if event.kind == EventKind::NetnsEndUnknown { " (gone before it could be watched)" } else { "" };
            writeln!(out, "{time} {word:<9} net:[{inode}]{name}{unknown}")
        }
        EventKind::Transition(_) => Ok(()),
    }
}

/// A name under /run/netns that appeared or went, as `netns-monitor monitor` shows it (`ip netns monitor`'s
/// `add NAME` and `delete NAME`, with the time and the namespace).
pub fn write_name_change(out: &mut impl Write, format: Format, change: &NameChange) -> io::Result<()> {
    let (word, event, name, inode) = match change {
        NameChange::Added { name, inode } => ("add", "name_added", name, *inode),
        NameChange::Removed { name, inode } => ("delete", "name_removed", name, *inode),
    };
    let now = SystemTime::now();
    match format {
        Format::Table => writeln!(out, "{} {word:<9} {name} net:[{inode}]", short_time(now)),
        Format::Json => {
            let line = serde_json::json!({
                "time": humantime::format_rfc3339_micros(now).to_string(),
                "ts_boot_ns": boottime_ns(),
                "event": event,
                "name": name,
                "inode": inode,
            });
            writeln!(out, "{line}")
        }
    }
}

/// `HH:MM:SS.mmm` (UTC).
fn short_time(time: SystemTime) -> String {
    let time = humantime::format_rfc3339_millis(time).to_string();
    // 2026-11-22T05:15:27.284Z -> 05:15:27.284
    time.get(11..23).unwrap_or(&time).to_owned()
}

/// One namespace type's inodes in the JSON output.
#[derive(Debug, Serialize)]
struct JsonNs {
    old: Option<u32>,
    new: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_name: Option<String>,
}

/// The JSON line schema (docs/trace-json.md).
#[derive(Debug, Serialize)]
struct JsonEvent {
    time: String,
    ts_boot_ns: u64,
    event: &'static str,
    syscall: Option<&'static str>,
    pid: Option<u32>,
    tid: Option<u32>,
    ppid: Option<u32>,
    uid: Option<u32>,
    comm: Option<String>,
    flags: Option<u64>,
    flag_names: Vec<&'static str>,
    fd: Option<i32>,
    ret: Option<i64>,
    errno: Option<String>,
    child_pid: Option<u32>,
    child_tid: Option<u32>,
    changed: Vec<&'static str>,
    namespaces: std::collections::BTreeMap<&'static str, JsonNs>,
    /// For `netns_destroyed`: "seen", or "unknown" when the namespace could not be watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    destroyed: Option<&'static str>,
}

impl JsonEvent {
    fn new(event: &Event, names: &mut Names, clock: &Clock) -> Self {
        let transition = event.syscall().is_some();
        let caller = !event.is_end();
        let mut namespaces = std::collections::BTreeMap::new();
        for ty in NsType::ALL {
            let (old, new) = event.ns(ty);
            if !transition && old == 0 && new == 0 {
                continue;
            }
            let name = |inode: u32, names: &mut Names| {
                (ty == NsType::Net && inode != 0).then(|| names.name(inode).map(str::to_owned)).flatten()
            };
            namespaces.insert(
                ty.proc_name(),
                JsonNs {
                    old: (old != 0).then_some(old),
                    new: (new != 0).then_some(new),
                    old_name: name(old, names),
                    new_name: name(new, names),
                },
            );
        }
        JsonEvent {
            time: humantime::format_rfc3339_micros(clock.wall(event.ts_boot_ns)).to_string(),
            ts_boot_ns: event.ts_boot_ns,
            event: match event.kind {
                EventKind::Transition(_) => "transition",
                EventKind::NetnsCreated => "netns_created",
                EventKind::NetnsDestroyed | EventKind::NetnsEndUnknown => "netns_destroyed",
            },
            syscall: event.syscall().map(Syscall::name),
            pid: caller.then_some(event.pid),
            tid: caller.then_some(event.tid),
            ppid: caller.then_some(event.ppid),
            uid: caller.then_some(event.uid),
            comm: caller.then(|| event.comm.clone()),
            flags: transition.then_some(event.flags),
            flag_names: if transition { flag_names(event) } else { Vec::new() },
            fd: event.fd,
            ret: transition.then_some(event.ret),
            errno: event.errno().map(|e| format!("{:?}", nix::errno::Errno::from_raw(e))),
            child_pid: event.child.map(|c| c.0),
            child_tid: event.child.map(|c| c.1),
            changed: event.changed().map(NsType::proc_name).collect(),
            namespaces,
            destroyed: match event.kind {
                EventKind::NetnsDestroyed => Some("seen"),
                EventKind::NetnsEndUnknown => Some("unknown"),
                _ => None,
            },
        }
    }
}
