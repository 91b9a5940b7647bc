//! `cargo xtask run`: set up, build in release mode and replace this process with the agent, so signals
//! (Ctrl-C, SIGTERM) reach it directly.

use std::os::unix::process::CommandExt as _;

use anyhow::bail;

use crate::{
    cmd::{self, cargo, workspace_root},
    setup,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Arguments for `netns-monitor run` (see `netns-monitor run --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    setup::setup(&setup::SetupArgs::default())?;
    if !cmd::is_root() {
        bail!(
            "the agent loads eBPF programs and mounts tracefs/bpffs, so it must run as root: `sudo -E cargo xtask run`"
        );
    }
    cmd::run(cargo().args(["build", "--release", "--package", "netns-monitor"]))?;
    let binary = workspace_root().join("target/release/netns-monitor");
    let mut agent = std::process::Command::new(&binary);
    agent.arg("run").args(&args.args);
    eprintln!("+ {}", cmd::display(&agent));
    let err = agent.exec();
    bail!("cannot start {}: {err}", binary.display())
}
