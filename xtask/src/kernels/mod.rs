//! `cargo xtask kernels`: boots Debian's own cloud kernels under qemu with the release binaries inside and
//! collects what `kernel-check` reports about each.
//!
//! The kernels are pinned in xtask/kernels.toml ([`pins`]); apt downloads them with a private configuration
//! into target/kernels/cache/, once ([`fetch`]). Each boots as the ELF vmlinux cut out of its bzImage
//! ([`vmlinux`]), with an initramfs of busybox, the binaries, their libraries and the kernel's own veth and tc
//! modules ([`modules`], [`initramfs`]), under KVM when it works and TCG otherwise ([`qemu`]). The check binary
//! prints its results on the serial console ([`results`]); they end up in target/kernels/results.{md,json}
//! ([`report`]).
//!
//! Everything lives under target/kernels/: `apt/` (private apt state), `cache/` (the .debs), and per kernel
//! `<id>/root/` (the unpacked packages), `<id>/vmlinux`, `<id>/initrd.cpio` and `<id>/console.log`.

mod elf;
mod fetch;
mod initramfs;
mod modules;
mod pins;
mod qemu;
mod report;
mod results;
mod vmlinux;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use self::{
    pins::{Kernel, Package, Pins},
    qemu::{Accel, Boot, BootSpec, Outcome},
    report::{KernelRun, Run},
    results::{CheckResult, Status},
};
use crate::{
    cmd::{self, cargo, output, workspace_root},
    setup,
};

#[derive(Debug, clap::Args)]
pub struct KernelsArgs {
    /// Boot only these kernels: ids from xtask/kernels.toml (5.10, 6.1, ...) or upstream versions; repeatable.
    #[arg(long = "kernel", value_name = "VERSION", num_args = 1..)]
    pub kernels: Vec<String>,
    /// Boot every selected kernel even when one fails (without it the run stops after the first failing one).
    #[arg(long)]
    pub keep_going: bool,
    /// Deadline per kernel, in seconds, from starting qemu to the checks' end; qemu is killed at it.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub timeout: u64,
    /// More arguments for `kernel-check --agent /usr/bin/netns-monitor`, as one string split at whitespace
    /// (`--check-args '--tier full'`).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub check_args: Option<String>,
    /// Then rewrite the region between `<!-- kernels:begin -->` and `<!-- kernels:end -->` in README.md with
    /// a "Supported kernels" table made from target/kernels/results.json.
    #[arg(long)]
    pub update_readme: bool,
    /// Put this agent into the guests instead of building target/release/netns-monitor.
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
    /// Put this check program into the guests instead of building target/release/kernel-check.
    #[arg(long, value_name = "PATH")]
    pub check_binary: Option<PathBuf>,
}

impl KernelsArgs {
    /// What `cargo xtask test` runs: every kernel, all of them even when one fails (as `--no-fail-fast`).
    pub fn full_matrix() -> Self {
        KernelsArgs {
            kernels: Vec::new(),
            keep_going: true,
            timeout: 900,
            check_args: None,
            update_readme: false,
            agent_binary: None,
            check_binary: None,
        }
    }
}

/// Where everything goes: target/kernels/.
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new() -> Self {
        Layout { dir: workspace_root().join("target/kernels") }
    }

    fn apt(&self) -> PathBuf {
        self.dir.join("apt")
    }

    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    fn deb(&self, package: &Package) -> PathBuf {
        self.cache().join(package.deb_file_name())
    }

    fn kernel(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

pub fn kernels(args: &KernelsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // The build toolchain for the binaries, and the host tools this command itself uses.
    setup::setup(&setup::SetupArgs::default())?;
    setup::ensure_debian_packages(setup::KERNELS_PACKAGES)?;

    let pins = Pins::load()?;
    let selected = pins.select(&args.kernels)?;
    let layout = Layout::new();
    fs::create_dir_all(layout.cache()).with_context(|| format!("cannot create {}", layout.cache().display()))?;

    let mut packages = vec![pins.busybox.package()];
    packages.extend(selected.iter().flat_map(|k| k.packages.iter().cloned()));
    let downloaded = fetch::ensure_cached(&layout, &pins, &packages)?;
    let busybox_root = layout.kernel("busybox").join("root");
    fetch::unpack(&layout, &[pins.busybox.package()], &busybox_root)?;

    let (agent, check) = binaries(args)?;
    let userland = initramfs::Userland::new(&busybox_root, &agent, &check)?;
    eprintln!(
        "[kernels] initramfs userland: busybox, {}, {} and {} libraries ({})",
        agent.display(),
        check.display(),
        userland.libraries.len(),
        userland.libraries.join(" ")
    );
    let check_args: Vec<String> =
        args.check_args.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();

    let (mut accel, mut accel_reason) = match kvm_device() {
        Ok(()) => (Accel::Kvm, String::new()),
        Err(reason) => (Accel::Tcg, reason),
    };
    let mut probe = accel == Accel::Kvm;
    if !probe {
        eprintln!("[kernels] using {}: {accel_reason}", Accel::Tcg.name());
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut runs = Vec::new();
    let mut not_run = Vec::new();
    for (i, kernel) in selected.iter().enumerate() {
        let label = format!("{} ({})", kernel.id, kernel.upstream_version());
        let dir = layout.kernel(&kernel.id);
        let prepared = match prepare(&layout, kernel, &userland, &check_args) {
            Ok(prepared) => prepared,
            Err(err) => {
                eprintln!("[kernels] {label}: cannot prepare the boot: {err:#}");
                let run = unprepared_run(kernel, &dir, format!("cannot prepare the boot: {err:#}"));
                runs.push(run);
                if !args.keep_going {
                    not_run.extend(selected[i + 1..].iter().map(|k| k.id.clone()));
                    break;
                }
                continue;
            }
        };
        let console_log = dir.join("console.log");
        // The probe's console goes to a log of its own: a TCG boot of the same kernel follows if it fails.
        let probe_log = layout.dir.join("kvm-probe.log");
        let mut retried = false;
        let boot = loop {
            eprintln!(
                "[kernels] {label}: booting {} under {}, deadline {} s",
                prepared.release,
                accel.name(),
                timeout.as_secs()
            );
            let spec = BootSpec {
                label: &label,
                vmlinux: &prepared.vmlinux,
                initrd: &prepared.initrd,
                console_log: if probe { &probe_log } else { &console_log },
                accel,
                timeout,
                kvm_probe: probe,
            };
            match qemu::boot(&spec)? {
                Outcome::Ran(boot) => {
                    if probe {
                        accel_reason = "the KVM probe (the first boot) worked".into();
                        probe = false;
                        fs::rename(&probe_log, &console_log)?;
                    }
                    // A guest that died before our init printed anything never ran our code: a kernel panic
                    // during its own start-up (seen once on 7.3 under TCG: an int3 oops in sched_clock_cpu
                    // while the kernel patched its text, the same kernel passing on the next boot). One more
                    // boot tells such an accident from a kernel that cannot boot; the first console is kept.
                    if boot.failure.is_some() && boot.first_result.is_none() && boot.results.is_empty() && !retried {
                        retried = true;
                        let first = dir.join("console-first-boot.log");
                        fs::rename(&console_log, &first)?;
                        eprintln!(
                            "[kernels] {label}: the guest died before any result ({}); booting once more (the \
                             first console is in {})",
                            boot.failure.as_deref().unwrap_or_default(),
                            relative(&first)
                        );
                        continue;
                    }
                    break boot;
                }
                Outcome::KvmUnusable(reason) => {
                    accel = Accel::Tcg;
                    accel_reason = format!("the KVM probe failed: {reason}; see {}", relative(&probe_log));
                    probe = false;
                    eprintln!("[kernels] KVM does not work here ({reason}); using {} for every kernel", accel.name());
                }
            }
        };
        let run = kernel_run(kernel, &prepared, &console_log, boot, accel);
        let failed = run.results.iter().any(|r| r.status == Status::Fail);
        eprintln!(
            "[kernels] {label}: finished in {:.0} s{}: {}",
            run.total_s,
            run.boot_s.map_or(String::new(), |s| format!(" (first result after {s:.0} s)")),
            tally(&run.results)
        );
        runs.push(run);
        if failed && !args.keep_going {
            not_run.extend(selected[i + 1..].iter().map(|k| k.id.clone()));
            break;
        }
    }

    let run = Run {
        date: trimmed(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        host: host(),
        revision: revision(),
        accel,
        accel_reason,
        check_args,
        kernels: runs,
        not_run,
        download: report::Download {
            packages: downloaded.packages,
            bytes: downloaded.bytes,
            seconds: downloaded.seconds,
        },
        total_s: round_tenths(started.elapsed().as_secs_f64()),
    };
    run.write(&layout.dir)?;
    if args.update_readme {
        report::update_readme(&workspace_root().join("README.md"), &layout.dir.join("results.json"))?;
    }
    let failures = run.failures();
    eprintln!("[kernels] done in {:.0} s under {}", run.total_s, run.accel.name());
    if !failures.is_empty() {
        let not_run = if run.not_run.is_empty() {
            String::new()
        } else {
            format!("; not run after it (--keep-going runs them): {}", run.not_run.join(", "))
        };
        bail!(
            "{} failing checks: {}{not_run} (see {})",
            failures.len(),
            failures.join(", "),
            layout.dir.join("results.md").display()
        );
    }
    Ok(())
}

/// The binaries that go into the guests: the release builds, unless given.
///
/// One cargo invocation for both, so they share one build of netns-monitor and its dependencies: built one
/// after the other, the tests crate's features (tokio's `process`) make a second copy of everything above
/// tokio, and every change then compiles both (about 2 minutes each on 2 cores).
fn binaries(args: &KernelsArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let release = workspace_root().join("target/release");
    let mut build = cargo();
    build.args(["build", "--release"]);
    if args.agent_binary.is_none() {
        build.args(["-p", "netns-monitor", "--bin", "netns-monitor"]);
    }
    if args.check_binary.is_none() {
        build.args(["-p", "netns-monitor-tests", "--bin", "kernel-check"]);
    }
    if args.agent_binary.is_none() || args.check_binary.is_none() {
        cmd::run(&mut build)?;
    }
    let agent = args.agent_binary.clone().unwrap_or_else(|| release.join("netns-monitor"));
    let check = args.check_binary.clone().unwrap_or_else(|| release.join("kernel-check"));
    for binary in [&agent, &check] {
        if !binary.is_file() {
            bail!("{} does not exist", binary.display());
        }
    }
    Ok((agent, check))
}

/// Whether qemu could use KVM at all; whether KVM then runs a guest is what the probe finds out.
fn kvm_device() -> Result<(), String> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|err| format!("no usable /dev/kvm ({err})"))
}

/// One kernel, ready to boot.
struct Prepared {
    release: String,
    compression: String,
    vmlinux: PathBuf,
    initrd: PathBuf,
    modules: Vec<String>,
    builtin_modules: Vec<String>,
}

fn prepare(
    layout: &Layout,
    kernel: &Kernel,
    userland: &initramfs::Userland,
    check_args: &[String],
) -> anyhow::Result<Prepared> {
    let dir = layout.kernel(&kernel.id);
    let root = dir.join("root");
    let unpacked = fetch::unpack(layout, &kernel.packages, &root)?;
    let (release, modules_dir) = modules_dir(&root)?;
    let bzimage = [root.join("boot").join(format!("vmlinuz-{release}")), modules_dir.join("vmlinuz")]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("no vmlinuz for {release} in {}", root.display()))?;

    // Cut out once; a fresh unpack (a moved pin) cuts it out again. The compression is kept next to it for
    // the report.
    let vmlinux = dir.join("vmlinux");
    let compression_file = dir.join("vmlinux.compression");
    let compression = match fs::read_to_string(&compression_file) {
        Ok(compression) if !unpacked && vmlinux.is_file() => compression,
        _ => {
            let compression = vmlinux::extract(&bzimage, &vmlinux)?;
            fs::write(&compression_file, compression)?;
            eprintln!(
                "[kernels] {}: extracted the {compression}-compressed vmlinux from {}",
                kernel.id,
                bzimage.display()
            );
            compression.to_owned()
        }
    };

    let resolved = modules::resolve(&modules_dir, modules::WANTED)?;
    let initrd = initramfs::write(&dir.join("initrd.cpio"), &userland.image(&resolved.load, check_args))?;
    Ok(Prepared {
        release,
        compression,
        vmlinux,
        initrd,
        modules: resolved.load.iter().map(|m| m.name.clone()).collect(),
        builtin_modules: resolved.builtin,
    })
}

/// The kernel's modules directory (`lib/modules/<release>`, under `usr/` from trixie on) and its release.
fn modules_dir(root: &Path) -> anyhow::Result<(String, PathBuf)> {
    for base in ["usr/lib/modules", "lib/modules"] {
        let base = root.join(base);
        let Ok(entries) = fs::read_dir(&base) else { continue };
        let dirs: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
        match dirs.as_slice() {
            [dir] => return Ok((dir.file_name().unwrap_or_default().to_string_lossy().into_owned(), dir.clone())),
            [] => {}
            _ => bail!("more than one kernel in {}", base.display()),
        }
    }
    bail!("no lib/modules/<release> in {}", root.display())
}

fn kernel_run(kernel: &Kernel, prepared: &Prepared, console_log: &Path, boot: Boot, accel: Accel) -> KernelRun {
    let mut results = vec![boot_result(&boot, accel, console_log)];
    if !boot.garbled.is_empty() {
        results.push(CheckResult::fail(
            "result lines",
            format!(
                "{} unreadable result lines (their results are lost):\n{}",
                boot.garbled.len(),
                boot.garbled.join("\n")
            ),
        ));
    }
    results.extend(boot.results);
    KernelRun {
        id: kernel.id.clone(),
        version: kernel.upstream_version(),
        release: prepared.release.clone(),
        suite: kernel.suite.clone(),
        packages: kernel.packages.clone(),
        compression: prepared.compression.clone(),
        modules: prepared.modules.clone(),
        builtin_modules: prepared.builtin_modules.clone(),
        boot_s: boot.first_result.map(|d| round_tenths(d.as_secs_f64())),
        total_s: round_tenths(boot.total.as_secs_f64()),
        console_log: relative(console_log),
        results,
    }
}

/// The `boot` row: passes when the guest got to `NMK-END`; otherwise fails with the last console lines.
fn boot_result(boot: &Boot, accel: Accel, console_log: &Path) -> CheckResult {
    match &boot.failure {
        None => CheckResult {
            check: "boot".into(),
            status: Status::Pass,
            detail: match boot.first_result {
                Some(first) => format!("first result after {:.0} s under {}", first.as_secs_f64(), accel.name()),
                None => "no results".into(),
            },
            ms: boot.first_result.map(|d| d.as_millis() as f64),
        },
        Some(failure) => CheckResult::fail(
            "boot",
            format!(
                "{failure}; the last (up to {}) lines of {}:\n{}",
                qemu::TAIL_LINES,
                relative(console_log),
                boot.tail.join("\n")
            ),
        ),
    }
}

fn unprepared_run(kernel: &Kernel, dir: &Path, reason: String) -> KernelRun {
    KernelRun {
        id: kernel.id.clone(),
        version: kernel.upstream_version(),
        release: String::new(),
        suite: kernel.suite.clone(),
        packages: kernel.packages.clone(),
        compression: String::new(),
        modules: Vec::new(),
        builtin_modules: Vec::new(),
        boot_s: None,
        total_s: 0.0,
        console_log: relative(&dir.join("console.log")),
        results: vec![CheckResult::fail("boot", reason)],
    }
}

/// Seconds to a tenth: emulation makes finer digits noise.
fn round_tenths(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

fn tally(results: &[CheckResult]) -> String {
    let count = |status| results.iter().filter(|r| r.status == status).count();
    format!("{} pass, {} degraded, {} fail", count(Status::Pass), count(Status::Degraded), count(Status::Fail))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

fn trimmed(cmd: &mut Command) -> String {
    output(cmd).map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn host() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{}, {} cores ({cpu}), kernel {}",
        trimmed(Command::new("uname").arg("-n")),
        std::thread::available_parallelism().map_or(1, usize::from),
        trimmed(Command::new("uname").arg("-r"))
    )
}

fn revision() -> String {
    let root = workspace_root();
    let mut revision = trimmed(Command::new("git").arg("-C").arg(&root).args(["rev-parse", "--short", "HEAD"]));
    if !trimmed(Command::new("git").arg("-C").arg(&root).args(["status", "--porcelain", "--untracked-files=no"]))
        .is_empty()
    {
        revision.push_str("+dirty");
    }
    revision
}
