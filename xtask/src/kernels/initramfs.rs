//! The initramfs each kernel boots: busybox, the binaries under test with the libraries they link, the
//! kernel's own modules and an `/init` that loads them, runs the checks and powers off.
//!
//! Written as an uncompressed newc cpio here rather than with the host's cpio: the archive needs a
//! `/dev/console` node (without it init has no console until devtmpfs is mounted), which cpio could only copy
//! from a real node, and an uncompressed image boots faster under TCG than one the guest must gunzip.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use anyhow::{Context as _, bail, ensure};

use super::modules::Module;
use crate::cmd;

/// Where the binaries under test go in the guest.
pub const AGENT_PATH: &str = "/usr/bin/netns-monitor";
pub const CHECK_PATH: &str = "/usr/bin/kernel-check";
/// Flat, one file per module; the init script loads them by name.
const MODULES_DIR: &str = "lib/modules";

#[derive(Clone, Debug)]
enum Entry {
    Dir,
    File { mode: u32, data: Arc<Vec<u8>> },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// An archive being put together: paths (without the leading '/') to entries; parents are added as needed.
#[derive(Clone, Debug, Default)]
struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_owned();
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            self.entries.entry(dir.to_string_lossy().into_owned()).or_insert(Entry::Dir);
            parent = dir.parent();
        }
        self.entries.insert(path, entry);
    }

    fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// The newc ("070701") cpio the kernel unpacks into its rootfs. The map is sorted, so every directory
    /// comes before what it holds.
    fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.entries.values().map(|e| if let Entry::File { data, .. } = e { data.len() } else { 0 }).sum::<usize>()
                + (1 << 20),
        );
        // Inode numbers only need to differ (0 is the trailer's).
        for (ino, (path, entry)) in (1..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (0o040_755, &[], (0, 0)),
                Entry::File { mode, data } => (0o100_000 | mode, data, (0, 0)),
                Entry::Symlink(target) => (0o120_777, target.as_bytes(), (0, 0)),
                Entry::CharDevice { major, minor } => (0o020_600, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            write_cpio_entry(&mut out, ino, mode, nlink, rdev, path, data);
        }
        write_cpio_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

fn write_cpio_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
    let pad = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(4), 0);
    let size = u32::try_from(data.len()).expect("initramfs files are far below 4 GiB");
    let namesize = u32::try_from(name.len() + 1).expect("short names");
    // magic, then ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check.
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

/// What every kernel's initramfs shares: busybox with its applets, the two binaries and their libraries.
pub struct Userland {
    archive: Archive,
    /// For the run's summary: what went in.
    pub libraries: Vec<String>,
}

impl Userland {
    pub fn new(busybox_root: &Path, agent: &Path, check: &Path) -> anyhow::Result<Self> {
        let mut archive = Archive::default();
        for dir in ["proc", "sys", "dev", "run", "tmp", "root", "etc", MODULES_DIR] {
            archive.add(dir, Entry::Dir);
        }
        archive.add("dev/console", Entry::CharDevice { major: 5, minor: 1 });

        let busybox = busybox_root.join("bin/busybox");
        archive.add("bin/busybox", Entry::File { mode: 0o755, data: Arc::new(read(&busybox)?) });
        archive.add(AGENT_PATH, Entry::File { mode: 0o755, data: Arc::new(read(agent)?) });
        archive.add(CHECK_PATH, Entry::File { mode: 0o755, data: Arc::new(read(check)?) });

        let mut libraries = Vec::new();
        for binary in [agent, check] {
            for library in shared_libraries(binary)? {
                if !archive.contains(&library) {
                    archive.add(&library, Entry::File { mode: 0o755, data: Arc::new(read(Path::new(&library))?) });
                    libraries.push(library);
                }
            }
        }

        // The applets as symlinks (what `busybox --install -s` would make at boot), from the static busybox
        // itself, which runs on the host. Our own files win over an applet of the same name.
        let applets = cmd::output(Command::new(&busybox).arg("--list-full"))
            .with_context(|| format!("`{} --list-full` failed", busybox.display()))?;
        for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
            if !archive.contains(applet) {
                archive.add(applet, Entry::Symlink("/bin/busybox".into()));
            }
        }
        ensure!(archive.contains("bin/sh") && archive.contains("sbin/insmod"), "busybox lacks sh or insmod");
        Ok(Userland { archive, libraries })
    }

    /// The initramfs for one kernel: its modules and the init script that loads them in order and runs
    /// `kernel-check --agent /usr/bin/netns-monitor CHECK_ARGS`.
    pub fn image(&self, modules: &[Module], check_args: &[String]) -> Vec<u8> {
        let mut archive = self.archive.clone();
        for module in modules {
            archive.add(
                &format!("{MODULES_DIR}/{}.ko", module.name),
                Entry::File { mode: 0o644, data: Arc::new(module.ko.clone()) },
            );
        }
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        archive.add("init", Entry::File { mode: 0o755, data: Arc::new(init_script(&names, check_args).into_bytes()) });
        archive.to_cpio()
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The libraries `ldd` resolves for `binary`, the dynamic loader included, at the paths the binary will look
/// for them in the guest (the host's). None for a static binary or a script.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ldd").arg(binary).output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // glibc's ldd says so on stdout or stderr (and exits 1), depending on the kind of file.
    let said = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    if said.contains("not a dynamic executable") || said.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {}", binary.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
        // "linux-vdso.so.1 (0x...)" (in the kernel, no file).
        let resolved = line.split_once("=>").map_or(line, |(_, r)| r.trim());
        if resolved.starts_with("not found") {
            bail!("{}: {line}", binary.display());
        }
        let path = resolved.split(" (").next().unwrap_or(resolved);
        if path.starts_with('/') {
            libraries.push(path.to_owned());
        }
    }
    Ok(libraries)
}

/// Single-quotes `arg` for sh.
fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn init_script(modules: &[&str], check_args: &[String]) -> String {
    let mut script = String::from(
        r#"#!/bin/sh
# The initramfs's /init, written by `cargo xtask kernels` (xtask/src/kernels/initramfs.rs).
# The memlock limit (ulimit -l) stays at the kernel's default on purpose: what old kernels allow there is part of
# what the checks test. tracefs and bpffs are not mounted either: the agent mounts them itself.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns
echo "NMK-INIT $(uname -r) memlock=$(ulimit -l)"
# A message as a JSON string's contents: backslashes and quotes escaped, control characters gone.
nmk_json() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n\t' '  ' | tr -d '\000-\037'; }
nmk_insmod() {
	if ! out=$(insmod "/lib/modules/$1.ko" 2>&1); then
		echo "NMK-RESULT {\"check\": \"module $1\", \"status\": \"fail\", \"detail\": \"insmod failed: $(nmk_json "$out")\"}"
	fi
}
"#,
    );
    for module in modules {
        script.push_str(&format!("nmk_insmod {}\n", sh_quote(module)));
    }
    // Every kernel of the matrix is one of Debian's, which allow fentry: tier 1 falling back there is a defect.
    let mut check = format!("{CHECK_PATH} --agent {AGENT_PATH} --expect-tier1");
    for arg in check_args {
        check.push(' ');
        check.push_str(&sh_quote(arg));
    }
    script.push_str(&format!("{check}\necho \"NMK-EXIT $?\"\npoweroff -f\n"));
    script
}

/// Writes `image` to `path` through a temporary file.
pub fn write(path: &Path, image: &[u8]) -> anyhow::Result<PathBuf> {
    let tmp = path.with_extension("partial");
    fs::write(&tmp, image).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_parents_come_first() {
        let mut archive = Archive::default();
        archive.add("/usr/bin/tool", Entry::File { mode: 0o755, data: Arc::new(b"abc".to_vec()) });
        archive.add("dev/console", Entry::CharDevice { major: 5, minor: 1 });
        let paths: Vec<&str> = archive.entries.keys().map(String::as_str).collect();
        assert_eq!(paths, ["dev", "dev/console", "usr", "usr/bin", "usr/bin/tool"]);
        let cpio = archive.to_cpio();
        assert_eq!(cpio.len() % 4, 0);
        assert!(cpio.starts_with(b"070701"));
        assert!(cpio.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn init_quotes_the_check_arguments() {
        let script = init_script(&["veth"], &["--tier".into(), "it's".into()]);
        assert!(script.contains("nmk_insmod 'veth'\n"));
        let check = "/usr/bin/kernel-check --agent /usr/bin/netns-monitor --expect-tier1 '--tier' 'it'\\''s'\n";
        assert!(script.contains(check), "{script}");
        assert!(!script.contains("ulimit -l "));
    }
}
