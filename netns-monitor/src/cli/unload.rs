//! `netns-monitor unload`: detach and unpin everything a stopped agent left running.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::{agent::unload, bpf::DEFAULT_PIN_DIR};

#[derive(Debug, clap::Args)]
pub struct UnloadArgs {
    /// The agent's pin directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Print the summary as one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn unload(args: UnloadArgs) -> anyhow::Result<ExitCode> {
    let done = unload::unload(&args.pin_dir).with_context(|| format!("cannot unload {}", args.pin_dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&done).context("cannot encode the summary")?);
    } else {
        print!("{}", summary(&done));
    }
    if !done.released {
        eprintln!("netns-monitor: warning: the kernel had not freed every link after 10 s; it will shortly");
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(done: &unload::Unloaded) -> String {
    let mut text = String::new();
    if done.pinned {
        text.push_str(&format!(
            "{}: removed {} transition link(s) ({}), {} classifier link(s), {} pinned map(s)\n",
            done.pin_dir.display(),
            done.transition_links.len(),
            if done.transition_links.is_empty() { "none".to_owned() } else { done.transition_links.join(", ") },
            done.classifier_links,
            done.maps.len(),
        ));
    } else {
        text.push_str(&format!("{}: nothing pinned there\n", done.pin_dir.display()));
    }
    text.push_str(&format!(
        "clsact filters: {} deleted in {} namespace(s) searched{}\n",
        done.clsact_filters,
        done.namespaces_searched,
        if done.namespaces_unreachable > 0 {
            format!(", {} namespace(s) could not be entered", done.namespaces_unreachable)
        } else {
            String::new()
        }
    ));
    text
}
