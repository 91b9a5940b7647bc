//! `exec NAME -- CMD`: run a command in a named namespace (or any network namespace, and with `--all` in every
//! named one) with `ip netns exec`'s semantics. Entering other namespace types of a process, as `nsenter` does,
//! is [`super::enter`].
//!
//! The child gets the target network namespace, a private mount namespace (so nothing below leaks back to the
//! host), a `/sys` mounted for the target namespace (so `/sys/class/net` lists its interfaces), and every file of
//! `/etc/netns/NAME/` bind-mounted over the same name in `/etc` (per-namespace `resolv.conf`, `hosts`, ...).
//! Like iproute2, a file of `/etc/netns/NAME` that cannot be bound is reported and skipped.
//!
//! Like `ip netns exec`, the process replaces itself with the command (no fork): signals sent to it (`kill
//! -TERM`, Ctrl-C, a supervisor stopping it) reach the command, and its exit status is the command's. All of it
//! happens right before `execve`, in this process, which must be single-threaded (`unshare(CLONE_NEWNS)` is
//! refused otherwise; the management verbs start no threads). Everything is prepared before, and the hook
//! makes only async-signal-safe calls, as std's `pre_exec` requires.

use std::{
    ffi::{CStr, CString, OsString},
    fs::File,
    io::{self, Write},
    os::{
        fd::AsFd as _,
        unix::{ffi::OsStrExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    sys::statvfs::{FsFlags, statvfs},
};

use super::{
    BadInput,
    enter::{self, EnterError},
    netns::{NetnsError, open_named},
};

/// Errors running a command in a namespace.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Enter(#[from] EnterError),
    #[error("no command given")]
    NoCommand,
    #[error("cannot run {program:?} in namespace {name:?}")]
    Spawn {
        program: OsString,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for {program:?} in namespace {name:?}")]
    Wait {
        program: OsString,
        name: String,
        #[source]
        source: io::Error,
    },
}

impl BadInput for ExecError {
    fn is_bad_input(&self) -> bool {
        match self {
            ExecError::Netns(err) => err.is_bad_input(),
            ExecError::Enter(err) => err.is_bad_input(),
            ExecError::NoCommand => true,
            ExecError::Spawn { .. } | ExecError::Wait { .. } => false,
        }
    }
}

/// Replaces this process with `argv` running in namespace `name`; returns only if that fails.
pub fn exec(name: &str, argv: &[OsString]) -> Result<std::convert::Infallible, ExecError> {
    let netns = open_named(name)?;
    exec_in(netns, Some(name), name, argv)
}

/// Replaces this process with `argv` running in the network namespace behind `netns`, with `ip netns exec`'s
/// mounts (and `/etc/netns/NAME` when the namespace has a `name`); `shown` names it in errors.
pub fn exec_in(
    netns: File,
    name: Option<&str>,
    shown: &str,
    argv: &[OsString],
) -> Result<std::convert::Infallible, ExecError> {
    let (program, args) = argv.split_first().ok_or(ExecError::NoCommand)?;
    let setup = ChildSetup::prepare(name, netns);
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: the closure only makes async-signal-safe system calls (setns, unshare, mount, umount2, statvfs,
    // write) on data prepared before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || setup.apply());
    }
    let source = command.exec();
    Err(ExecError::Spawn { program: program.clone(), name: shown.to_owned(), source })
}

/// How `exec --all` went: the namespaces whose command failed, and the signal that stopped the walk, if any.
#[derive(Debug, Default)]
pub struct AllOutcome {
    pub failed: Vec<(String, ExitStatus)>,
    pub stopped_by: Option<i32>,
}

/// `ip -all netns exec`: runs `argv` in every named namespace in turn (sorted), each announced on `out` by a
/// `netns: NAME` line after an empty one as iproute2 prints it, waiting for each. A signal sent to this process
/// (`kill -TERM`) is passed to the running command and ends the walk after it.
pub fn exec_all(argv: &[OsString], out: &mut impl Write) -> Result<AllOutcome, ExecError> {
    let (program, args) = argv.split_first().ok_or(ExecError::NoCommand)?;
    let mut outcome = AllOutcome::default();
    for (name, inode) in super::netns::list()? {
        if inode.is_none() {
            // A stale file (an interrupted add) or a name whose namespace is gone: nothing to enter.
            continue;
        }
        let Ok(netns) = open_named(&name) else { continue };
        let _ = writeln!(out, "\nnetns: {name}");
        let _ = out.flush();
        let setup = ChildSetup::prepare(Some(&name), netns);
        let mut command = Command::new(program);
        command.args(args);
        // SAFETY: as in `exec_in`; here the closure runs in the forked child.
        unsafe {
            command.pre_exec(move || setup.apply());
        }
        let supervised = enter::supervise(&mut command).map_err(|err| err.into_exec(program, &name))?;
        if !supervised.status.success() {
            outcome.failed.push((name.clone(), supervised.status));
        }
        if let Some(signal) = supervised.forwarded_stop {
            outcome.stopped_by = Some(signal);
            break;
        }
    }
    Ok(outcome)
}

/// "No filesystem type / source / data" for mount(2).
const NO_DATA: Option<&CStr> = None;

/// What the child does between fork and exec, prepared in the parent.
struct ChildSetup {
    netns: File,
    /// Source for the sysfs mount (iproute2 passes the namespace name; it shows in mountinfo).
    sysfs_source: CString,
    /// `(/etc/netns/NAME/x, /etc/x, warning printed if the bind fails)`.
    etc_binds: Vec<(CString, CString, Vec<u8>)>,
}

impl ChildSetup {
    fn prepare(name: Option<&str>, netns: File) -> Self {
        let mut etc_binds = Vec::new();
        if let Some(etc_dir) = name.map(|name| Path::new("/etc/netns").join(name))
            && let Ok(entries) = std::fs::read_dir(&etc_dir)
        {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                if file_name == "." || file_name == ".." {
                    continue;
                }
                let source = entry.path();
                let target = PathBuf::from("/etc").join(&file_name);
                let warning =
                    format!("netns-monitor: warning: cannot bind {} over {}\n", source.display(), target.display());
                if let (Some(source), Some(target)) = (c_path(&source), c_path(&target)) {
                    etc_binds.push((source, target, warning.into_bytes()));
                }
            }
        }
        let sysfs_source = name.and_then(|name| CString::new(name).ok()).unwrap_or_else(|| c"sysfs".to_owned());
        ChildSetup { netns, sysfs_source, etc_binds }
    }

    /// Runs in the child: enter the namespace, isolate mounts, remount /sys, bind /etc files.
    fn apply(&self) -> io::Result<()> {
        setns(self.netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| fail(b"cannot enter the namespace: ", e))?;
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| fail(b"cannot unshare the mount namespace: ", e))?;
        // Keep every mount we make from propagating back to the host.
        mount(NO_DATA, c"/", NO_DATA, MsFlags::MS_SLAVE | MsFlags::MS_REC, NO_DATA)
            .map_err(|e| fail(b"cannot make / a slave mount: ", e))?;
        let mut flags = MsFlags::empty();
        if umount2(c"/sys", MntFlags::MNT_DETACH).is_err() {
            // Could not unmount: overlay it instead, and a read-only /sys cannot be shadowed read-write.
            if statvfs(c"/sys").is_ok_and(|fs| fs.flags().contains(FsFlags::ST_RDONLY)) {
                flags = MsFlags::MS_RDONLY;
            }
        }
        mount(Some(self.sysfs_source.as_c_str()), c"/sys", Some(c"sysfs"), flags, NO_DATA)
            .map_err(|e| fail(b"cannot mount /sys for the namespace: ", e))?;
        for (source, target, warning) in &self.etc_binds {
            if mount(Some(source.as_c_str()), target.as_c_str(), Some(c"none"), MsFlags::MS_BIND, NO_DATA).is_err() {
                write_stderr(warning);
            }
        }
        Ok(())
    }
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// Says which step failed (the parent only gets the errno back) and turns the errno into the spawn error.
fn fail(step: &[u8], errno: Errno) -> io::Error {
    write_stderr(b"netns-monitor: exec: ");
    write_stderr(step);
    write_stderr(errno.desc().as_bytes());
    write_stderr(b"\n");
    io::Error::from_raw_os_error(errno as i32)
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: write(2) on fd 2 with a valid buffer and length; it is async-signal-safe.
    let _ = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
}
