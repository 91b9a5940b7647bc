//! Downloading the pinned packages with apt, and unpacking them.
//!
//! apt runs with a private configuration under target/kernels/apt/ (its own sources, lists, cache and an empty
//! apt.conf.d), so the host's sources and state are never read or changed and nothing is installed: the
//! packages are only downloaded (`apt-get download`) and unpacked with `dpkg-deb -x`. Signature checks stay
//! on: the sources trust Debian's archive keyring (`Signed-By`), as the host's own sources do.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::{
    Layout,
    pins::{ARCH, Package, Pins},
};
use crate::cmd;

/// The keyring Debian's own sources use (package debian-archive-keyring).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// What a download cost, for the run's summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct Downloaded {
    pub packages: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// Makes sure every package is in the cache, downloading only the missing ones. When all are cached, apt is
/// not run at all (not even `apt-get update`), so a second run works offline.
pub fn ensure_cached(layout: &Layout, pins: &Pins, packages: &[Package]) -> anyhow::Result<Downloaded> {
    let missing: Vec<&Package> = packages.iter().filter(|p| !layout.deb(p).is_file()).collect();
    if missing.is_empty() {
        eprintln!("[kernels] all {} packages are in {}", packages.len(), layout.cache().display());
        return Ok(Downloaded::default());
    }
    let started = Instant::now();
    let names: Vec<String> = missing.iter().map(|p| p.spec()).collect();
    eprintln!("[kernels] downloading {}", names.join(" "));
    let apt_conf = write_apt_config(layout, pins)?;
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("APT_CONFIG", &apt_conf).args(args);
        c
    };
    cmd::run(&mut apt(&["update", "-q"])).context("apt-get update with the private configuration failed")?;

    // apt writes into the working directory as it goes: download into partial/ and move the files into the
    // cache only once apt succeeded, so an interrupted run never leaves a truncated .deb that looks cached.
    let partial = layout.cache().join("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("cannot empty {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut download = apt(&["download", "-q"]);
    download.args(&names).current_dir(&partial);
    if let Err(err) = cmd::run(&mut download) {
        bail!("{err:#}\n{}", stale_pin_hint(&apt_conf, &missing));
    }
    let mut bytes = 0;
    for package in &missing {
        let file = partial.join(package.deb_file_name());
        check_deb(&file, package)?;
        bytes += fs::metadata(&file)?.len();
        fs::rename(&file, layout.deb(package))
            .with_context(|| format!("cannot move {} into the cache", file.display()))?;
    }
    fs::remove_dir_all(&partial).ok();
    let downloaded = Downloaded { packages: missing.len(), bytes, seconds: started.elapsed().as_secs_f64() };
    eprintln!(
        "[kernels] downloaded {} packages, {:.1} MB, in {:.0} s (apt-get update included)",
        downloaded.packages,
        downloaded.bytes as f64 / 1e6,
        downloaded.seconds
    );
    Ok(downloaded)
}

/// The archive keeps only the newest version of a suite: say how to find the current one.
fn stale_pin_hint(apt_conf: &Path, missing: &[&Package]) -> String {
    let mut hint = format!(
        "a pinned version may be gone from the archive (it keeps only the newest); update {} with what this \
         shows:",
        Pins::path().display()
    );
    for package in missing {
        let policy = cmd::output(Command::new("apt-cache").env("APT_CONFIG", apt_conf).args(["policy", &package.name]))
            .unwrap_or_default();
        hint.push_str(&format!(
            "\n  APT_CONFIG={} apt-cache policy {}\n{}",
            apt_conf.display(),
            package.name,
            policy.trim_end()
        ));
    }
    hint
}

/// apt named the file as expected and it is the pinned package (a changed naming scheme would otherwise make
/// every run download again, or worse, unpack the wrong file).
fn check_deb(file: &Path, package: &Package) -> anyhow::Result<()> {
    let fields = cmd::output(Command::new("dpkg-deb").arg("-f").arg(file).args(["Package", "Version", "Architecture"]))
        .with_context(|| format!("apt-get download did not leave {}", file.display()))?;
    let expected = format!("Package: {}\nVersion: {}\nArchitecture: {ARCH}\n", package.name, package.version);
    if fields != expected {
        bail!("{} is not {} ({ARCH}): its control fields are\n{fields}", file.display(), package.spec());
    }
    Ok(())
}

/// The private apt configuration, written on every download so that it always matches the pins.
fn write_apt_config(layout: &Layout, pins: &Pins) -> anyhow::Result<PathBuf> {
    let apt = layout.apt();
    for dir in [
        "state/lists/partial",
        "cache/archives/partial",
        "apt.conf.d",
        "sources.list.d",
        "preferences.d",
        "trusted.gpg.d",
    ] {
        fs::create_dir_all(apt.join(dir)).with_context(|| format!("cannot create {}", apt.join(dir).display()))?;
    }
    // An empty dpkg status: apt resolves nothing against the host's installed packages.
    fs::write(apt.join("state/status"), "")?;

    let (main, security): (Vec<&str>, Vec<&str>) = pins.suites().into_iter().partition(|s| !s.ends_with("-security"));
    let mut sources = String::from("# Written by `cargo xtask kernels` from xtask/kernels.toml.\n");
    for (uri, suites) in [("http://deb.debian.org/debian", main), ("http://deb.debian.org/debian-security", security)] {
        if suites.is_empty() {
            continue;
        }
        sources.push_str(&format!(
            "\nTypes: deb\nURIs: {uri}\nSuites: {}\nComponents: main\nArchitectures: {ARCH}\nSigned-By: {KEYRING}\n",
            suites.join(" ")
        ));
    }
    let sources_path = apt.join("debian.sources");
    fs::write(&sources_path, sources)?;

    let d = |rel: &str| apt.join(rel).display().to_string();
    let conf = format!(
        "// Written by `cargo xtask kernels` (xtask/src/kernels/fetch.rs): apt state of its own, so the host's\n\
         // sources, lists, cache and hooks (apt.conf.d) are neither read nor changed.\n\
         Dir::State \"{state}\";\n\
         Dir::State::status \"{status}\";\n\
         Dir::Cache \"{cache}\";\n\
         Dir::Etc::sourcelist \"{sources}\";\n\
         Dir::Etc::sourceparts \"{sourceparts}\";\n\
         Dir::Etc::parts \"{parts}\";\n\
         Dir::Etc::preferences \"{preferences}\";\n\
         Dir::Etc::preferencesparts \"{preferencesparts}\";\n\
         // Only the sources' Signed-By keyring is trusted, not the host's trusted.gpg.d.\n\
         Dir::Etc::trusted \"{trusted}\";\n\
         Dir::Etc::trustedparts \"{trustedparts}\";\n\
         APT::Architecture \"{ARCH}\";\n\
         APT::Architectures {{ \"{ARCH}\"; }};\n\
         // Package lists only: no translations, no AppStream metadata.\n\
         Acquire::Languages \"none\";\n\
         // The cache belongs to root (xtask runs as root); downloading as _apt would only warn that it cannot\n\
         // write there.\n\
         APT::Sandbox::User \"root\";\n",
        state = d("state"),
        status = d("state/status"),
        cache = d("cache"),
        sources = sources_path.display(),
        sourceparts = d("sources.list.d"),
        parts = d("apt.conf.d"),
        preferences = d("preferences"),
        preferencesparts = d("preferences.d"),
        trusted = d("trusted.gpg"),
        trustedparts = d("trusted.gpg.d"),
    );
    let conf_path = apt.join("apt.conf");
    fs::write(&conf_path, conf)?;
    Ok(conf_path)
}

/// Unpacks `packages` into `root` once: a stamp next to it records what it holds, and a different set of
/// packages (a moved pin) unpacks afresh. Returns whether it unpacked.
pub fn unpack(layout: &Layout, packages: &[Package], root: &Path) -> anyhow::Result<bool> {
    let stamp = root.with_file_name("unpacked");
    let wanted: String = packages.iter().map(|p| format!("{}\n", p.spec())).collect();
    if root.is_dir() && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(false);
    }
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))?;
    }
    fs::remove_file(&stamp).ok();
    fs::create_dir_all(root)?;
    for package in packages {
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(layout.deb(package)).arg(root))?;
    }
    fs::write(&stamp, wanted)?;
    Ok(true)
}
