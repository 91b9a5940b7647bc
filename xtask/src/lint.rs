//! Formatting and clippy for every crate, warnings as errors. The eBPF crate only builds for the BPF target, so
//! it gets its own clippy run with the nightly toolchain.

use std::process::Command;

use crate::cmd::{self, cargo, workspace_root};

const NIGHTLY_FMT: &str = "group_imports=StdExternalCrate,imports_granularity=Crate";

pub fn lint() -> anyhow::Result<()> {
    // Merge conflict markers slip past every compiler when they sit in docs or YAML.
    let markers = cmd::output(
        Command::new("git")
            .args(["grep", "-n", "-I", "-E", "^(<<<<<<<|>>>>>>>) |^=======$"])
            .current_dir(workspace_root()),
    );
    if let Some(found) = markers.filter(|f| !f.trim().is_empty()) {
        anyhow::bail!("merge conflict markers left in tracked files:\n{found}");
    }
    // Stable formatting, plus the nightly-only import grouping (std / external / crate) that rustfmt.toml
    // cannot set without making every stable `cargo fmt` warn.
    cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    let root = workspace_root();
    cmd::run(Command::new("rustup").current_dir(&root).args([
        "run",
        "nightly",
        "cargo",
        "fmt",
        "--all",
        "--",
        "--check",
        "--config",
        NIGHTLY_FMT,
    ]))?;
    cmd::run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "netns-monitor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run(
        Command::new("rustup")
            .current_dir(&root)
            .args(["run", "nightly", "cargo", "clippy", "--package", "netns-monitor-ebpf"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--release"])
            .arg("--target-dir")
            .arg(root.join("target/ebpf-clippy"))
            .args(["--", "-D", "warnings"]),
    )
}
