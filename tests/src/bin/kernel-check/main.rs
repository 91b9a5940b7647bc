//! `kernel-check`: the scenario `cargo xtask kernels` runs inside a VM booted on another kernel (Debian's own),
//! with the kernel as the oracle. It prints one machine-readable line per check on stdout,
//! `NMK-RESULT {"check": .., "status": "pass"|"degraded"|"fail", "detail": .., "ms": ..}`, then `NMK-END`.
//!
//! It needs only what the initramfs has: this binary, `netns-monitor` (`--agent`), busybox. Namespaces, veths
//! and the agent are made with the product itself; the oracles are `/proc/*/ns/*`, `/proc/thread-self/net/dev`
//! (the same `dev_get_stats` counters as `/sys/class/net/DEV/statistics`, read from inside each namespace) and
//! the kernel's own list of loaded programs. A check that panics is reported as failed with the message, and
//! the next one still runs.

mod agent;
mod cost;
mod report;
mod sys;
mod transitions;

use std::{path::PathBuf, process::ExitCode};

use report::Reporter;

const USAGE: &str = "usage: kernel-check --agent PATH [--expect-tier1] [--only CHECK[,CHECK...]]";

fn main() -> ExitCode {
    let mut agent = None;
    let mut only: Option<Vec<String>> = None;
    let mut expect_tier1 = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agent" => agent = args.next().map(PathBuf::from),
            // The kernel allows fentry (Debian's do): `hooks` fails if `auto` falls back to tier 2.
            "--expect-tier1" => expect_tier1 = true,
            "--only" => only = args.next().map(|list| list.split(',').map(str::to_owned).collect()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("kernel-check: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(agent) = agent else {
        eprintln!("kernel-check: --agent is required\n{USAGE}");
        return ExitCode::from(2);
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("kernel-check: must run as root (it loads eBPF programs and makes namespaces)");
        return ExitCode::FAILURE;
    }
    // The limit the agent must cope with, before this process raises its own (loading does).
    sys::remember_memlock();
    // Before any thread exists: the whole scenario, the agent included, runs in a network and mount namespace of
    // its own, so it changes nothing outside (IPv6 off, /run/netns names) wherever it runs.
    if let Err(err) = sys::isolate() {
        eprintln!("kernel-check: cannot make its own network and mount namespaces: {err}");
        return ExitCode::FAILURE;
    }
    let mut report = Reporter::new(only);
    sys::prepare_host();
    report.kernel_info();
    transitions::run(&mut report, &agent, expect_tier1);
    agent::run(&mut report, &agent);
    report.end()
}
