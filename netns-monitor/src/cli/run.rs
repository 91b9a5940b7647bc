//! `netns-monitor run`.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use crate::{
    agent::{Agent, AgentOptions},
    bpf::{DEFAULT_PIN_DIR, LoadOptions},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where maps and classifier links are pinned (bpffs). A restarted agent adopts what it finds there.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Size of the transition event ring buffer in bytes: a power of two, at least the page size (4096).
    #[arg(long, value_name = "BYTES")]
    ring_buffer_bytes: Option<u32>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let options = AgentOptions {
        load: LoadOptions {
            ring_buffer_bytes: args.ring_buffer_bytes,
            pin_dir: Some(args.pin_dir),
            ..LoadOptions::default()
        },
    };
    let agent = Agent::start(&options).await?;
    agent.run(super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
