//! `cargo xtask soak [--large]`: the reliability tests at full size, then every fuzz target for a minute.
//!
//! The same tests `cargo xtask test` runs (tests/tests/reliability_*.rs), with the sizes the environment sets:
//! 20 `kill -9` restarts under load (5 in the default suite), 500 churn cycles (30; 10,000 with `--large`),
//! floods of 1,000,000 transitions (100,000). Needs root, like the test suite.

use std::time::Instant;

use anyhow::bail;

use crate::{
    cmd::{self, cargo},
    fuzz, setup,
};

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// 10,000 churn cycles instead of 500 (about half an hour on 2 cores).
    #[arg(long)]
    pub large: bool,
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 60)]
    pub fuzz_seconds: u64,
    /// Skip the fuzzing.
    #[arg(long)]
    pub no_fuzz: bool,
}

pub fn soak(args: &SoakArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::setup(&setup::SetupArgs { tests: true })?;
    if !cmd::is_root() {
        bail!("the soak loads eBPF programs and creates network namespaces, so it must run as root");
    }
    let cycles = if args.large { "10000" } else { "500" };
    let sizes = [("NSM_RESTARTS", "20"), ("NSM_CHURN_CYCLES", cycles), ("NSM_FLOOD_PER_THREAD", "250000")];
    for (variable, value) in sizes {
        eprintln!("[soak] {variable}={value}");
    }
    let mut test = cargo();
    test.envs(sizes).args(["test", "--package", "netns-monitor-tests", "--no-fail-fast"]);
    for binary in ["reliability_restart", "reliability_churn", "reliability_saturation", "reliability_lifecycle"] {
        test.args(["--test", binary]);
    }
    test.args(["--", "--nocapture", "--test-threads=1"]);
    cmd::run(&mut test)?;
    eprintln!("[soak] reliability tests passed in {:.0}s", started.elapsed().as_secs_f64());
    if !args.no_fuzz {
        fuzz::fuzz(&fuzz::FuzzArgs { seconds: args.fuzz_seconds, targets: Vec::new() })?;
    }
    eprintln!("[soak] all done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}
