//! The result lines, and running each check so that a panic becomes a failed check instead of the end.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    process::ExitCode,
    time::Instant,
};

use serde_json::json;

/// What a check found.
pub enum Outcome {
    Pass(String),
    /// Works, with a limit of this kernel; the text names it.
    Degraded(String),
    Fail(String),
}

pub struct Reporter {
    only: Option<Vec<String>>,
    failed: usize,
}

impl Reporter {
    pub fn new(only: Option<Vec<String>>) -> Self {
        // Panics are reported as results; the default hook would also print them, out of line.
        std::panic::set_hook(Box::new(|_| {}));
        Self { only, failed: 0 }
    }

    /// Whether `check` is selected (`--only`).
    pub fn wanted(&self, check: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|c| c == check))
    }

    /// Prints one result line.
    pub fn emit(&mut self, check: &str, outcome: Outcome, ms: Option<u128>) {
        let (status, detail) = match outcome {
            Outcome::Pass(d) => ("pass", d),
            Outcome::Degraded(d) => ("degraded", d),
            Outcome::Fail(d) => {
                self.failed += 1;
                ("fail", d)
            }
        };
        let mut line = json!({ "check": check, "status": status, "detail": detail });
        if let Some(ms) = ms {
            line["ms"] = json!(ms as u64);
        }
        // One write per line: kernel messages on the same console must not split it.
        println!("NMK-RESULT {line}");
    }

    /// Runs `body` as check `check` (unless deselected), timing it; a panic is a failure with its message.
    pub fn check(&mut self, check: &str, body: impl FnOnce() -> Outcome) {
        if !self.wanted(check) {
            return;
        }
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| Outcome::Fail(panic_text(&panic)));
        self.emit(check, outcome, Some(started.elapsed().as_millis()));
    }

    /// The kernel and the features that decide how the agent runs on it.
    pub fn kernel_info(&mut self) {
        self.check("kernel", || {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
            let tcx = netns_monitor::traffic::attach::tcx_available();
            let perf_link = aya::features().bpf_perf_link();
            let detail = format!(
                "{}; BTF {}; tc: {}; tracepoint links pinnable: {}",
                release.trim(),
                if btf { "yes" } else { "no" },
                if tcx { "TCX" } else { "clsact/cls_bpf (no TCX)" },
                if perf_link { "yes" } else { "no" },
            );
            if btf { Outcome::Pass(detail) } else { Outcome::Fail(format!("{detail}: the agent needs BTF")) }
        });
    }

    /// Prints the end marker; the exit code says whether anything failed.
    pub fn end(self) -> ExitCode {
        println!("NMK-END failed={}", self.failed);
        if self.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}
