//! `--who` of `list` and `stats`: the processes that got into each namespace, as the agent recorded them
//! ([`crate::lifecycle::arrivals`]).

use std::path::Path;

use crate::lifecycle::arrivals::{self, Arrivals, NetnsArrivals};

/// The agent's records, with a warning on stderr when no agent keeps them up to date.
pub(super) fn load(pin_dir: &Path) -> Arrivals {
    let records = Arrivals::load(Path::new(arrivals::STATE_FILE));
    if !crate::bpf::persist::agent_running(pin_dir) {
        eprintln!(
            "netns-monitor: warning: no agent is running on {}: who entered each namespace is {}",
            pin_dir.display(),
            if records.namespaces.is_empty() {
                "not recorded (`netns-monitor run` records it)"
            } else {
                "as the last agent left it"
            }
        );
    }
    records
}

/// The WHO cell: the latest arrival (`COMM[PID] SYSCALL TIME`) and how many there were in all.
pub(super) fn cell(record: Option<&NetnsArrivals>) -> String {
    let Some((record, last)) = record.and_then(|r| Some((r, r.last.back()?))) else { return "-".to_owned() };
    let more = record.total().saturating_sub(1);
    let time = arrivals::shown_time(last.unix_ms);
    let tail = if more > 0 { format!(" (+{more})") } else { String::new() };
    format!("{}[{}] {} {time}{tail}", last.comm, last.pid, last.syscall)
}
