//! `netns-monitor run`.

use std::process::ExitCode;

use clap::Args;

use crate::agent::{self, AgentOptions};

#[derive(Debug, Args)]
pub struct RunArgs {}

pub async fn run(RunArgs {}: RunArgs) -> anyhow::Result<ExitCode> {
    agent::run(AgentOptions::default(), super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
