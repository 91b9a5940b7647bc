//! Orchestration for netns-monitor: toolchain set-up, lint, privileged test runs and running the agent.
//! Builds themselves are cargo's job (netns-monitor/build.rs builds the eBPF programs).
//!
//! The two commands the README documents are `cargo xtask run` and `cargo xtask test`; both first make sure
//! the eBPF toolchain is installed (see [`setup`]).

mod bench;
mod cmd;
mod fuzz;
mod kernels;
mod lint;
mod run;
mod setup;
mod soak;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "netns-monitor development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need, if missing: Debian packages (llvm-22-dev and the tools the tests
    /// use), nightly `rust-src`, and `bpf-linker` built against LLVM 22. Idempotent; says what it installs.
    Setup(setup::SetupArgs),
    /// Check formatting and run clippy (-D warnings) on userspace and on the eBPF crate.
    Lint,
    /// Set up, lint, then run the whole test suite (unit and privileged integration tests). Needs root.
    Test(test::TestArgs),
    /// Set up, build in release mode and run the agent (`netns-monitor run`) with the given arguments.
    Run(run::RunArgs),
    /// Run the benchmark suite, or one benchmark (builds what it measures in release mode; needs root). Writes
    /// target/bench/results.{md,json}.
    Bench(bench::BenchArgs),
    /// Run every cargo-fuzz target for a while (installs cargo-fuzz if missing); a crash fails it.
    Fuzz(fuzz::FuzzArgs),
    /// Boot Debian's own cloud kernels (pinned in xtask/kernels.toml) under qemu with the release binaries and
    /// run kernel-check in each. Writes target/kernels/results.{md,json}; fails when a check fails.
    Kernels(kernels::KernelsArgs),
    /// The reliability tests at full size (20 restarts, 500 or --large 10,000 churn cycles, big floods), then
    /// the fuzz targets for a minute each. Needs root.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup(args) => setup::setup(&args).map(|_| ()),
        Task::Lint => lint::lint(),
        Task::Test(args) => test::test(&args),
        Task::Run(args) => run::run(&args),
        Task::Bench(args) => bench::bench(&args),
        Task::Fuzz(args) => fuzz::fuzz(&args).map(|_| ()),
        Task::Kernels(args) => kernels::kernels(&args),
        Task::Soak(args) => soak::soak(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
