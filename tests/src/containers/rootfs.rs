//! The busybox root filesystem every runtime runs: Debian's static busybox (busybox-static, 2 MB) with a link
//! per applet, made once per test process in its run directory, and the same tree as a tarball for the
//! runtimes that import images (`docker import`, `podman import`).

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The host's busybox, which must be the static build (it runs without any library in the container).
const BUSYBOX: &str = "/bin/busybox";

/// The tree and its tarball.
#[derive(Debug)]
pub struct Rootfs {
    pub dir: PathBuf,
    pub tarball: PathBuf,
}

/// The root filesystem of this test process, made on first use.
pub fn rootfs() -> &'static Rootfs {
    static ROOTFS: OnceLock<Rootfs> = OnceLock::new();
    ROOTFS.get_or_init(|| build(&super::run_dir().join("rootfs")))
}

fn build(dir: &Path) -> Rootfs {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("read {BUSYBOX}: {e} (Debian's busybox-static, which `cargo xtask setup --tests` installs)")
    });
    assert!(
        is_static_elf(&busybox),
        "{BUSYBOX} is dynamically linked (Debian's `busybox`, not `busybox-static`): it cannot run alone in a \
         container; `cargo xtask setup --tests` installs busybox-static"
    );
    let tree = dir.join("tree");
    for sub in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var"] {
        let path = tree.join(sub);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    }
    let target = tree.join("bin/busybox");
    std::fs::write(&target, &busybox).unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod busybox");
    let applets = super::ok(&mut super::command(BUSYBOX, &["--list"]));
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let link = tree.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", &link).unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
        }
    }
    for (file, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/hostname", "busybox\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
        ("etc/resolv.conf", ""),
        ("etc/os-release", "ID=busybox\nNAME=busybox\n"),
    ] {
        std::fs::write(tree.join(file), text).unwrap_or_else(|e| panic!("write {file}: {e}"));
    }
    let tarball = dir.join("busybox.tar");
    super::ok(super::command("tar", &["-C"]).arg(&tree).arg("-cf").arg(&tarball).arg("."));
    Rootfs { dir: tree, tarball }
}

/// Whether an ELF executable has no program interpreter (`PT_INTERP`), i.e. is statically linked.
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let (u16_at, u32_at, u64_at) = (
        |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]])),
        |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        |at: usize| elf.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
    );
    // ELF64 little-endian (x86_64): e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..usize::from(count)).all(|i| u32_at(phoff as usize + i * usize::from(size)) != Some(PT_INTERP))
}
