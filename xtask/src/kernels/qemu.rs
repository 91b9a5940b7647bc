//! Booting one kernel under qemu and reading its serial console until the checks are done.

use std::{
    collections::VecDeque,
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::results::{CheckResult, Line, Status, parse_line};
use crate::cmd;

/// How long the KVM probe waits for the first console output. A kernel under KVM prints (or reaches init)
/// within a second or two; when the nested KVM cannot run it, qemu stops the vCPU and prints nothing more.
const KVM_PROBE: Duration = Duration::from_secs(10);
/// After `NMK-END` the init script powers off at once; a guest that does not is killed after this.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);
/// Console lines kept for the report of a boot that did not finish.
pub const TAIL_LINES: usize = 20;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn qemu_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            // One host thread per vCPU: both cores of the machine work for the guest.
            Accel::Tcg => "tcg,thread=multi",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (software emulation)",
        }
    }
}

pub struct BootSpec<'a> {
    pub label: &'a str,
    pub vmlinux: &'a Path,
    pub initrd: &'a Path,
    pub console_log: &'a Path,
    pub accel: Accel,
    pub timeout: Duration,
    /// This boot also decides whether KVM works: give up early (instead of reporting a failed kernel) when it
    /// does not.
    pub kvm_probe: bool,
}

pub enum Outcome {
    Ran(Boot),
    /// The KVM probe failed, for this reason; boot again under TCG.
    KvmUnusable(String),
}

/// What one boot produced.
pub struct Boot {
    pub results: Vec<CheckResult>,
    /// Result lines that could not be read (a kernel message broke into the JSON, say).
    pub garbled: Vec<String>,
    /// Why the guest did not reach `NMK-END`, if it did not.
    pub failure: Option<String>,
    /// The last console lines.
    pub tail: Vec<String>,
    /// From starting qemu to the first result line.
    pub first_result: Option<Duration>,
    pub total: Duration,
}

enum Event {
    Line(String),
    /// A pipe of qemu's reached its end.
    Closed,
}

pub fn boot(spec: &BootSpec<'_>) -> anyhow::Result<Outcome> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-machine", "pc", "-accel", spec.accel.qemu_arg(), "-cpu", "max", "-smp", "2", "-m", "1G"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(spec.vmlinux)
        .arg("-initrd")
        .arg(spec.initrd)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/init quiet"])
        // No stdin: with -nographic qemu would otherwise put a terminal into raw mode and read monitor
        // commands from it.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ {}", cmd::display(&qemu));
    let started = Instant::now();
    let mut child = qemu.spawn().context("cannot start qemu-system-x86_64 (is qemu-system-x86 installed?)")?;

    // The serial console is qemu's stdout; its own errors ("KVM internal error") come on stderr. Both go to
    // the console log, in the order they arrive.
    let (tx, rx) = mpsc::channel();
    let pipes: [Box<dyn Read + Send>; 2] =
        [Box::new(child.stdout.take().expect("piped stdout")), Box::new(child.stderr.take().expect("piped stderr"))];
    for pipe in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                if tx.send(Event::Line(line)).is_err() {
                    return;
                }
                buf.clear();
            }
            let _ = tx.send(Event::Closed);
        });
    }
    drop(tx);

    let mut log =
        File::create(spec.console_log).with_context(|| format!("cannot create {}", spec.console_log.display()))?;
    let deadline = started + spec.timeout;
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut results = Vec::new();
    let mut garbled = Vec::new();
    let mut first_result = None;
    let mut ended_at = None;
    let mut open_pipes = 2;
    let mut any_output = false;
    let mut failure = None;
    let kvm_unusable = |child: &mut std::process::Child, reason: String| {
        let _ = child.kill();
        let _ = child.wait();
        Ok(Outcome::KvmUnusable(reason))
    };
    // What qemu said last (its own errors come last when it gives up), for the probe's verdict.
    let last_words = |tail: &VecDeque<String>| {
        let words: Vec<&str> = tail.iter().rev().take(2).rev().map(String::as_str).collect();
        if words.is_empty() { String::new() } else { format!(": {}", words.join(" / ")) }
    };

    while open_pipes > 0 {
        let now = Instant::now();
        if ended_at.is_some_and(|at: Instant| now > at + POWEROFF_GRACE) {
            // The checks are complete; only the power-off is missing.
            let _ = child.kill();
            break;
        }
        if now >= deadline {
            let _ = child.kill();
            failure = Some(format!(
                "no {} within the deadline of {} s: killed qemu",
                super::results::END_MARKER,
                spec.timeout.as_secs()
            ));
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_secs(1))) {
            Ok(Event::Line(line)) => {
                writeln!(log, "{line}").context("cannot write the console log")?;
                any_output = true;
                if spec.kvm_probe && line.contains("KVM internal error") {
                    return kvm_unusable(&mut child, line);
                }
                match parse_line(&line) {
                    Some(Line::Result(result)) => {
                        first_result.get_or_insert_with(|| started.elapsed());
                        let detail =
                            if result.detail.is_empty() { String::new() } else { format!(": {}", result.detail) };
                        let status = match result.status {
                            Status::Pass => "pass",
                            Status::Degraded => "degraded",
                            Status::Fail => "FAIL",
                        };
                        eprintln!("[kernels] {}: {status:<8} {}{detail}", spec.label, result.check);
                        results.push(result);
                    }
                    Some(Line::End) => {
                        ended_at.get_or_insert(now);
                    }
                    Some(Line::Garbled(line)) => garbled.push(line),
                    None => {}
                }
                let line = printable(&line);
                if line.trim().is_empty() {
                    continue;
                }
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Ok(Event::Closed) => open_pipes -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if spec.kvm_probe && !any_output && started.elapsed() > KVM_PROBE {
                    return kvm_unusable(&mut child, format!("no console output within {} s", KVM_PROBE.as_secs()));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().context("cannot wait for qemu")?;
    let total = started.elapsed();
    if ended_at.is_none() && failure.is_none() {
        if spec.kvm_probe && results.is_empty() {
            return Ok(Outcome::KvmUnusable(format!("qemu exited ({status}) before any result{}", last_words(&tail))));
        }
        failure = Some(if status.success() {
            // panic=-1 with -no-reboot: a panic, or init exiting, ends qemu normally.
            format!("the guest stopped before {} (kernel panic or init exited)", super::results::END_MARKER)
        } else {
            format!("qemu failed ({status}) before {}", super::results::END_MARKER)
        });
    }
    Ok(Outcome::Ran(Boot { results, garbled, failure, tail: tail.into(), first_result, total }))
}

/// A console line without the terminal control sequences the firmware prints (SeaBIOS clears the screen), for
/// the report; the console log keeps them.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, then a final byte in @..~; other escapes are ESC and one character.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_dropped() {
        assert_eq!(printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)"), "SeaBIOS (version 1.16.2)");
        assert_eq!(printable("Booting from ROM..NMK-INIT 6.1\r"), "Booting from ROM..NMK-INIT 6.1");
    }
}
