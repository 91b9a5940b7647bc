//! The uncompressed ELF `vmlinux` inside a bzImage, as the kernel's scripts/extract-vmlinux cuts it out.
//!
//! Why not boot the bzImage: under the nested KVM of our machines its decompressor stops with "KVM internal
//! error", and under TCG decompressing in the guest costs seconds per boot. qemu boots an ELF vmlinux through
//! its PVH entry point directly.

use std::{
    fs,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::elf;

/// The compressions a bzImage payload can have, with the magic its stream starts with and the host tool
/// (and arguments) that decompresses it to stdout. In the order scripts/extract-vmlinux tries them.
const FORMATS: &[(&str, &[u8], &[&str])] = &[
    ("xz", b"\xfd7zXZ\x00", &["xz", "-dcq"]),
    ("zstd", b"\x28\xb5\x2f\xfd", &["zstd", "-dcq"]),
    ("gzip", b"\x1f\x8b\x08", &["gzip", "-dcq"]),
    ("lzma", b"\x5d\x00\x00\x00", &["xz", "--format=lzma", "-dcq"]),
    // The kernel uses lz4's legacy frame format.
    ("lz4", b"\x02\x21\x4c\x18", &["lz4", "-dcq"]),
    ("bzip2", b"BZh", &["bzip2", "-dcq"]),
];

/// How many false matches of a magic to try before giving up on that format (the magics are short and also
/// occur in the setup code and the payload itself).
const MAX_TRIES_PER_FORMAT: usize = 16;

/// Writes the vmlinux of `bzimage` to `out` (through a temporary file, so an interrupted run leaves no half
/// file behind that a later run would take as cached). Returns the compression it found.
pub fn extract(bzimage: &Path, out: &Path) -> anyhow::Result<&'static str> {
    let image = fs::read(bzimage).with_context(|| format!("cannot read {}", bzimage.display()))?;
    for (offset, format) in candidates(&image) {
        let (name, _, tool) = FORMATS[format];
        // Decompressors complain about what follows the stream (the kernel appends the uncompressed size,
        // then more of the image), exactly as in extract-vmlinux: the exit status says nothing, the output does.
        let Some(vmlinux) = decompress(tool, &image[offset..]) else { continue };
        if elf::is_complete_elf(&vmlinux) {
            let tmp = out.with_extension("partial");
            fs::write(&tmp, &vmlinux).with_context(|| format!("cannot write {}", tmp.display()))?;
            fs::rename(&tmp, out)?;
            return Ok(name);
        }
    }
    bail!(
        "found no compressed ELF vmlinux in {} (tried {}); are xz-utils, zstd, gzip, lz4 and bzip2 installed?",
        bzimage.display(),
        FORMATS.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
    )
}

/// Where a payload may start, best guess first: the boot protocol's own `payload_offset` (setup header, boot
/// protocol 2.08+, exact), then every match of each format's magic, as extract-vmlinux scans for them.
fn candidates(image: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    if let Some(offset) = header_payload_offset(image)
        && let Some(format) = FORMATS.iter().position(|(_, magic, _)| image[offset..].starts_with(magic))
    {
        found.push((offset, format));
    }
    for (format, (_, magic, _)) in FORMATS.iter().enumerate() {
        let matches = image.windows(magic.len()).enumerate().filter(|(_, w)| w == magic).map(|(i, _)| i);
        found.extend(matches.take(MAX_TRIES_PER_FORMAT).map(|i| (i, format)));
    }
    found
}

/// The payload's file offset from the bzImage setup header: (setup_sects + 1) * 512 + payload_offset.
fn header_payload_offset(image: &[u8]) -> Option<usize> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    if image.get(0x202..0x206)? != b"HdrS" || u16_at(0x206)? < 0x208 {
        return None;
    }
    // setup_sects 0 means 4, for old boot loaders' sake.
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = (setup_sects + 1) * 512 + usize::try_from(u32_at(0x248)?).ok()?;
    (offset < image.len()).then_some(offset)
}

fn decompress(tool: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    // Feed from another thread: the tool writes far more than a pipe buffer before it has read everything.
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        // The tool stops reading at the end of its stream or on garbage: a broken pipe here is expected.
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().ok()?;
    feeder.join().ok()?;
    Some(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_header_gives_the_payload() {
        let mut image = vec![0u8; 0x4000];
        image[0x1f1] = 27;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&0x100u32.to_le_bytes());
        let offset = 28 * 512 + 0x100;
        image[offset..offset + 4].copy_from_slice(b"\x28\xb5\x2f\xfd");
        assert_eq!(header_payload_offset(&image), Some(offset));
        assert_eq!(candidates(&image)[0], (offset, 1));
    }
}
