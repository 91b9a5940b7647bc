//! The whole test suite: set-up, lint, every unit and privileged integration test, then the kernel matrix
//! (`cargo xtask kernels`: the release build in each of Debian's pinned kernels, under qemu).
//!
//! Privileged tests never skip: without root this fails up front with the reason.

use std::time::Instant;

use anyhow::bail;

use crate::{
    cmd::{self, cargo},
    kernels, lint, setup,
};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip fmt/clippy (they still run in CI).
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the kernel matrix (a few minutes per kernel under software emulation) for a quick local run; CI
    /// runs it.
    #[arg(long)]
    pub no_kernels: bool,
    /// Arguments passed to `cargo test` after `--` (a test name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub rest: Vec<String>,
}

pub fn test(args: &TestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::setup(&setup::SetupArgs { tests: true })?;
    if !cmd::is_root() {
        bail!(
            "the test suite loads eBPF programs and creates network namespaces, so it must run as root: \
             `sudo -E cargo xtask test`"
        );
    }
    if !args.no_lint {
        lint::lint()?;
    }
    // Thousands of namespaces left by a benchmark that was killed make every agent the tests start scan and
    // attach to all of them; only what dead runs left is removed.
    crate::bench::remove_leftovers();
    let mut test = cargo();
    test.args(["test", "--workspace", "--exclude", "netns-monitor-ebpf", "--no-fail-fast"]);
    if !args.rest.is_empty() {
        test.arg("--").args(&args.rest);
    }
    // The matrix runs even after a failed cargo test (as --no-fail-fast does): one run shows both.
    let tests = cmd::run(&mut test);
    let matrix = if args.no_kernels { Ok(()) } else { kernels::kernels(&kernels::KernelsArgs::full_matrix()) };
    tests?;
    matrix?;
    eprintln!("[test] all green in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}
