//! Checks the layout of the `syscalls` tracepoint records against what the programs read
//! (`netns_monitor_common::tracepoint`), using the kernel's own format files under tracefs.
//!
//! The layout has been stable for years, but a mismatch would turn every event into garbage without a single
//! error; checking costs one small file read per tracepoint at start-up.

use std::{fs, io, path::Path};

use netns_monitor_common::tracepoint::{EXIT_RET, SYSCALL_NR, enter_arg};

/// Errors checking a tracepoint's record layout.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read the format of tracepoint {event} ({path})")]
    Read {
        event: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {event}: expected {what} at offset {offset} with size 8, the kernel's format says {found}")]
    Mismatch { event: String, what: String, offset: usize, found: String },
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub declaration: String,
    pub offset: usize,
    pub size: usize,
}

/// Parses the `field:` lines of a tracepoint format file, in order.
pub fn parse(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let mut declaration = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("field:") {
                    declaration = Some(v.to_owned());
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            Some(Field { declaration: declaration?, offset: offset?, size: size? })
        })
        .collect()
}

/// Checks `syscalls/sys_enter_<syscall>` has `args` arguments in 8-byte slots from offset 16, and
/// `sys_exit_<syscall>` has `ret` at offset 16.
pub fn check_syscall(tracefs: &Path, syscall: &str, args: usize) -> Result<(), FormatError> {
    let enter = format!("sys_enter_{syscall}");
    let fields = read(tracefs, &enter)?;
    let after_nr: Vec<&Field> = fields.iter().skip_while(|f| f.offset < SYSCALL_NR).skip(1).collect();
    for n in 0..args {
        expect_slot(&enter, &format!("argument {n}"), enter_arg(n), after_nr.get(n).copied())?;
    }
    let exit = format!("sys_exit_{syscall}");
    let fields = read(tracefs, &exit)?;
    let ret = fields.iter().find(|f| f.declaration.ends_with(" ret"));
    expect_slot(&exit, "ret", EXIT_RET, ret)
}

fn read(tracefs: &Path, event: &str) -> Result<Vec<Field>, FormatError> {
    let path = tracefs.join("events/syscalls").join(event).join("format");
    let text = fs::read_to_string(&path).map_err(|source| FormatError::Read {
        event: format!("syscalls/{event}"),
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse(&text))
}

fn expect_slot(event: &str, what: &str, offset: usize, found: Option<&Field>) -> Result<(), FormatError> {
    match found {
        Some(f) if f.offset == offset && f.size == 8 => Ok(()),
        other => Err(FormatError::Mismatch {
            event: format!("syscalls/{event}"),
            what: what.to_owned(),
            offset,
            found: other.map_or_else(
                || "no such field".to_owned(),
                |f| format!("{:?} at offset {} with size {}", f.declaration, f.offset, f.size),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETNS_ENTER: &str = "name: sys_enter_setns\nID: 343\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:int flags;\toffset:24;\tsize:8;\tsigned:0;\n\n\
        print fmt: \"fd: 0x%08lx\"\n";

    #[test]
    fn parses_fields() {
        let fields = parse(SETNS_ENTER);
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[3], Field { declaration: "int fd".into(), offset: 16, size: 8 });
    }

    #[test]
    fn detects_a_moved_argument() {
        let dir = std::env::temp_dir().join(format!("nsm-format-{}", std::process::id()));
        let events = dir.join("events/syscalls");
        for (event, text) in [
            ("sys_enter_setns", SETNS_ENTER.replace("offset:24", "offset:32")),
            ("sys_exit_setns", "format:\n\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n".to_owned()),
        ] {
            fs::create_dir_all(events.join(event)).unwrap();
            fs::write(events.join(event).join("format"), text).unwrap();
        }
        let err = check_syscall(&dir, "setns", 2).unwrap_err();
        let _ = fs::remove_dir_all(&dir);
        assert!(err.to_string().contains("argument 1 at offset 24"), "{err}");
    }
}
