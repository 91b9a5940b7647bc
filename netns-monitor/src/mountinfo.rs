//! Parser for `/proc/PID/mountinfo` (proc(5)): which filesystem is mounted where.
//!
//! Used to find whether tracefs/bpffs are mounted and, by the inventory, every nsfs bind mount (a named or
//! runtime-held namespace) on the host.

use std::{fs, io, path::PathBuf};

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    /// Path inside the filesystem that is mounted (for nsfs: `net:[4026532]`).
    pub root: String,
    /// Where it is mounted, with octal escapes (`\040`) decoded.
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Errors reading mountinfo.
#[derive(Debug, thiserror::Error)]
pub enum MountInfoError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("malformed line {line} of {path}: {text:?}")]
    Malformed { path: String, line: usize, text: String },
}

/// Reads and parses the mountinfo of `pid` (`"self"` for the calling process).
pub fn read(pid: &str) -> Result<Vec<MountEntry>, MountInfoError> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = fs::read_to_string(&path).map_err(|source| MountInfoError::Read { path: path.clone(), source })?;
    parse(&text).map_err(|(line, text)| MountInfoError::Malformed { path, line, text })
}

/// Parses mountinfo text; on error returns the 1-based line number and its text.
pub fn parse(text: &str) -> Result<Vec<MountEntry>, (usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| parse_line(line).ok_or_else(|| (n + 1, line.to_owned())))
        .collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let _parent = fields.next()?;
    let _dev = fields.next()?;
    let root = unescape(fields.next()?);
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let mut after = after.split(' ');
    let fs_type = after.next()?.to_owned();
    let source = unescape(after.next()?);
    Some(MountEntry { mount_id, root, mount_point, fs_type, source })
}

/// Decodes the kernel's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'\\' && i + 3 < bytes.len())
            .then(|| {
                bytes[i + 1..i + 4]
                    .iter()
                    .try_fold(0u32, |v, b| (b'0'..=b'7').contains(b).then(|| v * 8 + u32::from(b - b'0')))
            })
            .flatten()
            // `\ooo` above `\377` is not a byte (and overflowed u8 arithmetic: found by `cargo xtask fuzz`).
            .and_then(|v| u8::try_from(v).ok());
        if let Some(value) = escape {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn escapes_above_a_byte_stay_literal() {
        // The fuzz crash (fuzz/seeds/mountinfo/regression-escape-overflow).
        assert_eq!(unescape("/m\\777x"), "/m\\777x");
        assert_eq!(unescape("/m\\377"), String::from_utf8_lossy(&[b'/', b'm', 0xff]));
        assert_eq!(unescape("\\04"), "\\04");
    }

    #[test]
    fn parses_fields_and_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 - ext3 /dev/root rw\n\
                    590 29 0:4 net:[4026532300] /run/netns/blue rw shared:1 - nsfs nsfs rw\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries[0].mount_point, PathBuf::from("/mnt 2"));
        assert_eq!(entries[0].fs_type, "ext3");
        assert_eq!(entries[1].root, "net:[4026532300]");
        assert_eq!(entries[1].fs_type, "nsfs");
        assert_eq!(entries[1].mount_id, 590);
    }

    #[test]
    fn reports_the_bad_line() {
        assert_eq!(parse("ok\n").unwrap_err().0, 1);
        assert_eq!(parse("1 2 3:4 / / rw - proc proc rw\n\nbroken").unwrap_err().0, 3);
    }

    #[test]
    fn reads_own_mountinfo() {
        let entries = read("self").unwrap();
        assert!(entries.iter().any(|e| e.mount_point == Path::new("/proc") && e.fs_type == "proc"));
    }
}
