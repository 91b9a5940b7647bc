//! Running commands visibly: every command is echoed before it runs, and a failure names it.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Echoes and runs `cmd`, failing if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", display(cmd));
    let status = cmd.status().with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout, or `None` if it cannot start or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as a shell would show it.
pub fn display(cmd: &Command) -> String {
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut parts = envs;
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(args);
    parts.join(" ")
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent directory").to_path_buf()
}

/// `cargo` as invoked by the user (respects `$CARGO`).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    // `cargo xtask` is `cargo run`, which gives us xtask's CARGO_MANIFEST_DIR and CARGO_PKG_*; passed on to
    // this cargo, they reach ring's build, whose fingerprint tracks CARGO_MANIFEST_DIR: a build from here and
    // one from a shell (or from another task) then each find ring changed and recompile everything above it
    // (1.5 minutes).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_") {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
