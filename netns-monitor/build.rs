//! Builds the eBPF programs (`netns-monitor-ebpf`) for the BPF target with aya-build, so the binary can embed
//! the object from `OUT_DIR`. Needs the nightly toolchain with `rust-src` and `bpf-linker`
//! (`cargo xtask setup` installs them). `AYA_BUILD_SKIP=1` skips it (e.g. a quick clippy of userspace); the
//! binary then carries an empty object and refuses to load it with a clear error.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const EBPF_CRATE: &str = "netns-monitor-ebpf";
/// Name of the eBPF crate's binary target, and of the object embedded from OUT_DIR.
const EBPF_BIN: &str = "netns-monitor";

fn main() -> anyhow::Result<()> {
    build_info();
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().ok_or_else(|| anyhow!("netns-monitor has no parent directory"))?.join(EBPF_CRATE);
    let root = root.to_str().context("netns-monitor-ebpf path is not UTF-8")?;
    let package = Package { name: EBPF_CRATE, root_dir: root, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the eBPF programs failed; `cargo xtask setup` installs what they need \
         (nightly rust-src, llvm-22-dev, bpf-linker)",
    )?;
    let object = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?).join(EBPF_BIN);
    if !object.exists() {
        // Only with AYA_BUILD_SKIP: leave an empty object so the crate compiles; loading it fails clearly.
        fs::write(&object, []).with_context(|| format!("cannot create {}", object.display()))?;
    }
    Ok(())
}

/// Revision and compiler for `netns_monitor_build_info` ("unknown" outside a git checkout).
fn build_info() {
    let output = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    println!("cargo:rustc-env=NETNS_MONITOR_REVISION={}", output("git", &["rev-parse", "--short=12", "HEAD"]));
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = output(&rustc, &["--version"]);
    // "rustc 1.95.0 (59807616e 2026-04-14)" -> "1.95.0"
    println!("cargo:rustc-env=NETNS_MONITOR_RUSTC={}", version.split_whitespace().nth(1).unwrap_or("unknown"));
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
