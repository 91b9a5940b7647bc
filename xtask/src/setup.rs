//! Idempotent set-up of everything building and testing need on a fresh Debian machine.
//!
//! Each step checks before it installs and says what it installs, so a second run prints "nothing to install".
//! What a fresh machine of our kind lacks (see ../shared/TOOLCHAIN.md): nightly `rust-src` (for
//! `-Z build-std=core` on bpfel-unknown-none), Debian's `llvm-22-dev` (same major as rustc's LLVM) and
//! `bpf-linker` built against it, plus the Debian tools the tests use as oracles and traffic sources, the
//! container runtimes the container tests drive (with systemd-nspawn pinned to the installed systemd), and
//! `kubernetes-validate` (PyPI) in a virtual environment of the workspace for the deployment tests.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output};

/// LLVM major version of rustc 1.95 / nightly 1.97; bpf-linker must link the same one.
const LLVM_MAJOR: &str = "22";
/// bpf-linker release that builds with this toolchain (verified, see ../shared/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the build needs.
const BUILD_PACKAGES: &[&str] = &["llvm-22-dev"];
/// Debian packages `cargo xtask kernels` uses (so the test suite too): qemu, the decompressors for the
/// bzImage payloads (scripts/extract-vmlinux's list) and the modules (.ko.xz, .ko.zst), and Debian's archive
/// keyring, which its private apt sources trust.
pub(crate) const KERNELS_PACKAGES: &[&str] =
    &["qemu-system-x86", "xz-utils", "zstd", "gzip", "lz4", "bzip2", "debian-archive-keyring"];
/// Debian packages the test suite uses (besides [`KERNELS_PACKAGES`]): oracles (`ip`, `nsenter`, `unshare`, `nft`, `setpriv` to start the
/// agent with chosen capabilities, and `bpftool` for the kernel's own list of BPF links, programs and maps);
/// independent HTTP and TLS clients for the metrics endpoint (`curl`, and `openssl s_client`, which still
/// speaks TLS 1.0/1.1); and for the monitoring and deployment files `prometheus` (the server and `promtool`),
/// `systemd` (`systemd-analyze`), `python3-venv` (the virtual environment for kubernetes-validate) and `tmux` (a
/// terminal that `top` runs in, driven with send-keys and read with capture-pane).
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "nftables",
    "bpftool",
    "curl",
    "openssl",
    "prometheus",
    "systemd",
    "python3-venv",
    "tmux",
];
/// Debian packages of the real-container tests (tests/tests/containers.rs, fixtures in tests/src/containers/):
/// the runtimes (Docker, containerd's `ctr`, runc, Podman with its conmon, LXC); the CNI plugins (bridge,
/// host-local) of Podman's network, only a Recommends; `dnsmasq-base` for the DHCP of `lxc-net`; and
/// `busybox-static`, the root filesystem every runtime runs. Rootful only: no uidmap, slirp4netns or
/// fuse-overlayfs. systemd-nspawn comes from [`SYSTEMD_PINNED`].
const CONTAINER_PACKAGES: &[&str] = &[
    "docker.io",
    "containerd",
    "runc",
    "podman",
    "conmon",
    "containernetworking-plugins",
    "lxc",
    "dnsmasq-base",
    "busybox-static",
];
/// Packages installed at the installed systemd's own version (`systemd-container` depends on `systemd (=
/// VERSION)`: the mirror's newer one would upgrade systemd itself).
const SYSTEMD_PINNED: &[&str] = &["systemd-container"];
/// kubernetes-validate release the deployment tests validate the manifests with (its schemas go up to
/// Kubernetes 1.37).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// The virtual environment for PyPI tools, relative to the workspace (tests/src/monitoring/python.rs reads it).
const PYTHON_TOOLS_VENV: &str = "target/python-tools";

#[derive(Debug, Default, clap::Args)]
pub struct SetupArgs {
    /// Also install what the test suite uses, not only what the build needs.
    #[arg(long)]
    pub tests: bool,
}

/// Installs whatever is missing; returns what it installed.
pub fn setup(args: &SetupArgs) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    eprintln!("[setup] checking the toolchain (Debian packages, nightly rust-src, bpf-linker)");
    let mut installed = Vec::new();

    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if args.tests {
        packages.extend_from_slice(TEST_PACKAGES);
        packages.extend_from_slice(KERNELS_PACKAGES);
    }
    installed.extend(ensure_debian_packages(&packages)?);
    if args.tests {
        installed.extend(ensure_container_runtimes()?);
    }
    installed.extend(ensure_nightly_rust_src()?);
    installed.extend(ensure_bpf_linker()?);
    if args.tests {
        installed.extend(ensure_python_tools()?);
    }

    if installed.is_empty() {
        eprintln!("[setup] nothing to install ({:.1}s)", started.elapsed().as_secs_f64());
    } else {
        eprintln!("[setup] installed: {} ({:.0}s)", installed.join(", "), started.elapsed().as_secs_f64());
    }
    Ok(installed)
}

/// Whether `spec` (`NAME`, or `NAME=VERSION` for exactly that version) is installed.
fn dpkg_installed(spec: &str) -> bool {
    let (package, version) = match spec.split_once('=') {
        Some((package, version)) => (package, Some(version)),
        None => (spec, None),
    };
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}\t${Version}", package])).is_some_and(|line| {
        let (status, installed) = line.trim().split_once('\t').unwrap_or((line.trim(), ""));
        status == "install ok installed" && version.is_none_or(|wanted| wanted == installed)
    })
}

/// The container runtimes, then systemd-container at the installed systemd's version (the test packages,
/// installed before, include systemd).
fn ensure_container_runtimes() -> anyhow::Result<Vec<String>> {
    let mut installed = ensure_debian_packages(CONTAINER_PACKAGES)?;
    let systemd = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "systemd"]))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .context("systemd is not installed, so there is no version to pin systemd-container to")?;
    let pinned: Vec<String> = SYSTEMD_PINNED.iter().map(|p| format!("{p}={systemd}")).collect();
    installed.extend(ensure_debian_packages(&pinned.iter().map(String::as_str).collect::<Vec<_>>())?);
    Ok(installed)
}

pub(crate) fn ensure_debian_packages(packages: &[&str]) -> anyhow::Result<Vec<String>> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "missing {}: this set-up installs Debian packages and this is not Debian; install LLVM {LLVM_MAJOR} \
             development files and the listed tools with your package manager, then run it again",
            missing.join(" ")
        );
    }
    if !cmd::is_root() {
        bail!(
            "missing Debian packages {0}; installing them needs root: run `sudo apt-get install -y {0}` or run \
             this command as root",
            missing.join(" ")
        );
    }
    eprintln!("[setup] installing Debian packages: {}", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    cmd::run(&mut apt(&["update", "-q"])).context("apt-get update failed (are the Debian mirrors reachable?)")?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    cmd::run(&mut install).with_context(|| format!("cannot install {}", missing.join(" ")))?;
    Ok(missing.into_iter().map(|p| format!("apt:{p}")).collect())
}

fn ensure_nightly_rust_src() -> anyhow::Result<Vec<String>> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF programs with the nightly toolchain, and was not found")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("[setup] installing the nightly toolchain with rust-src, clippy and rustfmt");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))?;
        return Ok(vec!["rustup:nightly".into()]);
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    let mut installed = Vec::new();
    for component in ["rust-src", "clippy", "rustfmt"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            eprintln!("[setup] installing nightly component {component}");
            cmd::run(Command::new("rustup").args(["component", "add", component, "--toolchain", "nightly"]))?;
            installed.push(format!("rustup:nightly/{component}"));
        }
    }
    Ok(installed)
}

/// bpf-linker is usable when it starts and links the LLVM major rustc emits bitcode for.
fn bpf_linker_usable() -> bool {
    let Some(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let path = path.trim();
    if output(Command::new(path).arg("--version")).is_none() {
        return false;
    }
    // Built against Debian's shared libLLVM: make sure it is the right major and still resolvable.
    output(Command::new("ldd").arg(path)).is_some_and(|ldd| {
        ldd.lines()
            .filter(|l| l.contains("libLLVM"))
            .all(|l| l.contains(&format!(".so.{LLVM_MAJOR}")) && !l.contains("not found"))
    })
}

fn ensure_bpf_linker() -> anyhow::Result<Vec<String>> {
    if bpf_linker_usable() {
        return Ok(Vec::new());
    }
    eprintln!("[setup] building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (about a minute on 2 cores)");
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .args(["install", "--force", "--locked", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &format!("llvm-{LLVM_MAJOR}")]),
    )
    .context("cannot build bpf-linker; is llvm-22-dev installed and crates.io reachable?")?;
    if !bpf_linker_usable() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(vec![format!("cargo:bpf-linker@{BPF_LINKER_VERSION}")])
}

/// kubernetes-validate (and with it PyYAML) in a virtual environment of the workspace: no `pip --user` into
/// whichever Python is first on PATH (Debian's refuses it, PEP 668), and the tests find it at a fixed path.
fn ensure_python_tools() -> anyhow::Result<Vec<String>> {
    let venv = cmd::workspace_root().join(PYTHON_TOOLS_VENV);
    let python = venv.join("bin/python");
    let installed_version = output(
        Command::new(&python).args(["-c", "import importlib.metadata as m; print(m.version('kubernetes-validate'))"]),
    );
    if installed_version.as_deref().map(str::trim) == Some(KUBERNETES_VALIDATE_VERSION) {
        return Ok(Vec::new());
    }
    if !python.exists() {
        eprintln!("[setup] creating a Python virtual environment in {}", venv.display());
        cmd::run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).context(
            "cannot create a virtual environment; is python3 with the venv module (python3-venv) installed?",
        )?;
    }
    eprintln!("[setup] installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} from PyPI into {}", venv.display());
    cmd::run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ]))
    .context("cannot install kubernetes-validate; is PyPI reachable?")?;
    Ok(vec![format!("pip:kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}")])
}
