//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs every cargo-fuzz target of `fuzz/` for N seconds
//! (60 by default), each from its seeds (`fuzz/seeds/TARGET`, committed) and a working corpus kept under
//! `target/fuzz-corpus/TARGET` (so later runs start where earlier ones stopped). Installs cargo-fuzz first if it
//! is missing (and says so). A crash fails the command, naming the input libFuzzer saved under
//! `fuzz/artifacts/TARGET/`; turn it into a regression test (a unit test with that input) when fixing it.
//!
//! The targets link the library without its eBPF object (`AYA_BUILD_SKIP=1`): they exercise the parsers only.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, output, workspace_root},
    setup,
};

/// Every target in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &["event_decode", "names", "cidr_ports", "agent_config", "web_config", "mountinfo", "btf"];
/// The cargo-fuzz release the targets are built with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target (repeatable; default: all of them).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

/// What one target's run did.
#[derive(Debug)]
pub struct Outcome {
    pub target: String,
    pub seconds: f64,
    pub executions: u64,
    pub corpus: usize,
    pub crash: Option<String>,
}

fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", "nightly", "cargo"]);
    command
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if output(nightly_cargo().args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    eprintln!("[fuzz] installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, a few minutes on 2 cores)");
    cmd::run(Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("cannot install cargo-fuzz; is crates.io reachable?")
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Runs the targets; fails if any crashed (after running all of them).
pub fn fuzz(args: &FuzzArgs) -> anyhow::Result<Vec<Outcome>> {
    setup::setup(&setup::SetupArgs::default())?;
    ensure_cargo_fuzz()?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for target in &args.targets {
            if !TARGETS.contains(&target.as_str()) {
                bail!("unknown fuzz target {target:?}; the targets are {}", TARGETS.join(", "));
            }
        }
        args.targets.iter().map(String::as_str).collect()
    };
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    eprintln!("[fuzz] building {} targets", targets.len());
    let mut build = nightly_cargo();
    build.current_dir(&fuzz_dir).env("AYA_BUILD_SKIP", "1").args(["fuzz", "build"]);
    cmd::run(&mut build)?;

    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = root.join("target/fuzz-corpus").join(target);
        let logs = root.join("target/fuzz-logs");
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&logs)?;
        let log_path = logs.join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)?;
        let seeds = fuzz_dir.join("seeds").join(target);
        let started = Instant::now();
        let mut run = nightly_cargo();
        run.current_dir(&fuzz_dir)
            .env("AYA_BUILD_SKIP", "1")
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
            .stdout(log.try_clone()?)
            .stderr(log);
        eprintln!("+ {} (log: {})", cmd::display(&run), log_path.display());
        let status = run.status().with_context(|| format!("cannot run the {target} fuzz target"))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let executions = text
            .lines()
            .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let crash = (!status.success()).then(|| {
            text.lines()
                .filter(|line| line.contains("Test unit written to") || line.contains("panicked at"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let outcome = Outcome {
            target: target.to_owned(),
            seconds: started.elapsed().as_secs_f64(),
            executions,
            corpus: files_in(&corpus),
            crash,
        };
        eprintln!(
            "[fuzz] {target}: {} executions in {:.0} s, corpus {}{}",
            outcome.executions,
            outcome.seconds,
            outcome.corpus,
            outcome.crash.as_deref().map(|c| format!(", CRASH: {c}")).unwrap_or_default()
        );
        outcomes.push(outcome);
    }
    eprintln!("[fuzz] target        executions   exec/s   corpus  result");
    for o in &outcomes {
        eprintln!(
            "[fuzz] {:<12} {:>11} {:>8.0} {:>8}  {}",
            o.target,
            o.executions,
            o.executions as f64 / o.seconds.max(1.0),
            o.corpus,
            if o.crash.is_some() { "CRASH" } else { "ok" }
        );
    }
    let crashed: Vec<&str> = outcomes.iter().filter(|o| o.crash.is_some()).map(|o| o.target.as_str()).collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (inputs under fuzz/artifacts/; reproduce with `cargo +nightly fuzz run TARGET \
             FILE` in fuzz/, then add the input as a regression test)",
            crashed.join(", ")
        );
    }
    Ok(outcomes)
}
