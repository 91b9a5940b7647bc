//! What `exec` enters besides a named namespace: any network namespace (by bind-mount path, by the process in
//! it, by inode), and a process's other namespaces as `nsenter --target PID` does (`--type net,mnt,...`).
//!
//! Entering a PID namespace changes only the caller's children (setns(2)), so then the command runs as a child
//! that this process waits for, passing on the signals a supervisor or a person sends ([`supervise`]); otherwise the process
//! replaces itself with the command, as `ip netns exec` does.

use std::{
    ffi::OsString,
    fs::File,
    io::{self, ErrorKind},
    os::{
        fd::AsFd as _,
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::PathBuf,
    process::{Command, ExitCode, ExitStatus},
};

use nix::{
    errno::Errno,
    sched::{CloneFlags, setns},
    sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask},
};

use super::{BadInput, exec::ExecError};
use crate::inventory::{Inventory, InventoryError, ScanOptions, is_netns, nsfs_inode};

/// `CLONE_NEWTIME` (include/uapi/linux/sched.h; Linux 5.6+), which nix does not name.
const CLONE_NEWTIME: i32 = 0x80;

/// Namespace types `--type` takes, in the order they are entered (nsenter's: the user namespace first, so that
/// the others may be entered with the capabilities it gives; the mount namespace late, since entering it
/// changes the root).
pub const TYPES: [(&str, i32); 8] = [
    ("user", libc::CLONE_NEWUSER),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
    ("time", CLONE_NEWTIME),
];

/// Errors finding or entering what `exec` was pointed at.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("unknown namespace type {0:?} (expected a comma-separated list of {list}, or all)", list = type_names())]
    UnknownType(String),
    #[error(
        "--type {0} needs --pid: a name, a path or an inode is a network namespace only (the other types are a \
         process's)"
    )]
    TypesNeedPid(String),
    #[error("{path} does not exist")]
    NoPath { path: PathBuf },
    #[error("cannot open {path}")]
    OpenPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a network namespace (expected an nsfs file such as /run/docker/netns/ID)")]
    NotNetns { path: PathBuf },
    #[error("no network namespace has inode {0} (`netns-monitor list` shows them)")]
    NoInode(u32),
    #[error("the namespace with inode {0} has nothing left that can be opened")]
    Unreachable(u32),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("process {pid} does not exist")]
    NoProcess { pid: u32 },
    #[error("this kernel has no {kind} namespaces (no /proc/{pid}/ns/{kind})")]
    NoKind { pid: u32, kind: &'static str },
    #[error("cannot open /proc/{pid}/ns/{kind}")]
    OpenNs {
        pid: u32,
        kind: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the {kind} namespace of process {pid}")]
    Setns {
        pid: u32,
        kind: &'static str,
        #[source]
        source: Errno,
    },
    #[error("cannot become root of the user namespace of process {pid}")]
    Credentials {
        pid: u32,
        #[source]
        source: Errno,
    },
}

impl BadInput for EnterError {
    fn is_bad_input(&self) -> bool {
        matches!(
            self,
            EnterError::UnknownType(_)
                | EnterError::TypesNeedPid(_)
                | EnterError::NoPath { .. }
                | EnterError::NotNetns { .. }
                | EnterError::NoInode(_)
                | EnterError::NoProcess { .. }
                | EnterError::NoKind { .. }
        )
    }
}

fn type_names() -> String {
    TYPES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// Parses `--type`: a comma-separated list of [`TYPES`] names, or `all`; returned in entering order.
pub fn parse_types(spec: &str) -> Result<Vec<&'static str>, EnterError> {
    let mut wanted = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if part == "all" {
            wanted.extend(TYPES.iter().map(|(name, _)| *name));
            continue;
        }
        let (name, _) =
            TYPES.iter().find(|(name, _)| *name == part).ok_or_else(|| EnterError::UnknownType(part.into()))?;
        wanted.push(*name);
    }
    Ok(TYPES.iter().map(|(name, _)| *name).filter(|name| wanted.contains(name)).collect())
}

/// The network namespace `exec` was pointed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A name under /run/netns.
    Name(String),
    /// An nsfs file anywhere (Docker's `/run/docker/netns/ID`, `/proc/PID/ns/net`, a name's path).
    Path(PathBuf),
    /// The network namespace a process is in.
    Pid(u32),
    /// The namespace with this inode, found through whatever holds it.
    Inode(u32),
}

/// An opened network namespace, with the `/run/netns` name its `/etc/netns/NAME` files come from, and how
/// errors name it.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub name: Option<String>,
    pub shown: String,
}

impl Target {
    /// Opens the network namespace, checking that a path is one.
    pub fn open(&self) -> Result<Opened, ExecError> {
        match self {
            Target::Name(name) => {
                Ok(Opened { file: super::netns::open_named(name)?, name: Some(name.clone()), shown: name.clone() })
            }
            Target::Path(path) => {
                // Checked before opening: opening a FIFO or a device that is no namespace could block or act.
                if nsfs_inode(path).is_none() {
                    return Err(if path.exists() {
                        EnterError::NotNetns { path: path.clone() }
                    } else {
                        EnterError::NoPath { path: path.clone() }
                    }
                    .into());
                }
                let file = File::open(path).map_err(|source| match source.kind() {
                    ErrorKind::NotFound => EnterError::NoPath { path: path.clone() },
                    _ => EnterError::OpenPath { path: path.clone(), source },
                })?;
                if !is_netns(&file) {
                    return Err(EnterError::NotNetns { path: path.clone() }.into());
                }
                let name = path
                    .strip_prefix(crate::inventory::NETNS_RUN_DIR)
                    .ok()
                    .and_then(|rest| rest.to_str())
                    .filter(|rest| !rest.contains('/'))
                    .map(str::to_owned);
                Ok(Opened { file, name, shown: path.display().to_string() })
            }
            Target::Pid(pid) => {
                let path = format!("/proc/{pid}/ns/net");
                let file = File::open(&path).map_err(|source| match source.kind() {
                    ErrorKind::NotFound => EnterError::NoProcess { pid: *pid },
                    _ => EnterError::OpenNs { pid: *pid, kind: "net", source },
                })?;
                Ok(Opened { file, name: None, shown: format!("of process {pid}") })
            }
            Target::Inode(inode) => {
                let inventory = Inventory::scan(&ScanOptions { fds: true }).map_err(EnterError::from)?;
                let ns = inventory.get(*inode).ok_or(EnterError::NoInode(*inode))?;
                let file = ns.open().ok_or(EnterError::Unreachable(*inode))?;
                Ok(Opened { file, name: ns.names.first().cloned(), shown: format!("net:[{inode}]") })
            }
        }
    }
}

/// `nsenter --target PID` for `kinds` (in [`TYPES`] order), then `argv`: replaces this process with the command,
/// or, when a PID namespace is entered, runs it as a child and returns its status. Namespaces the process
/// shares with us are not entered (entering one's own user namespace is refused by the kernel). With
/// `skip_missing` (`--type all`), a type this kernel lacks (time before 5.6) is left out, as `nsenter -a` does.
/// Must be called single-threaded (setns(2) of a user or mount namespace requires it).
pub fn enter_process(
    pid: u32,
    kinds: &[&'static str],
    skip_missing: bool,
    argv: &[OsString],
) -> Result<ExitStatus, ExecError> {
    use std::os::unix::fs::MetadataExt as _;

    use nix::{fcntl::OFlag, sys::stat::Mode};
    let (program, args) = argv.split_first().ok_or(ExecError::NoCommand)?;
    // Every namespace file is opened relative to one handle on the process's ns directory: a pid reused
    // between two opens cannot mix two processes' namespaces (the handle's entries then fail with ESRCH).
    let dir = File::open(format!("/proc/{pid}/ns")).map_err(|source| match source.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => EnterError::NoProcess { pid },
        _ => EnterError::OpenNs { pid, kind: "*", source },
    })?;
    let mut opened = Vec::new();
    for &(kind, flag) in TYPES.iter().filter(|(kind, _)| kinds.contains(kind)) {
        let file = match nix::fcntl::openat(&dir, kind, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) if skip_missing => continue,
            Err(Errno::ENOENT) => return Err(EnterError::NoKind { pid, kind }.into()),
            Err(Errno::ESRCH) => return Err(EnterError::NoProcess { pid }.into()),
            Err(errno) => return Err(EnterError::OpenNs { pid, kind, source: errno.into() }.into()),
        };
        let ours = std::fs::metadata(format!("/proc/self/ns/{kind}")).ok().map(|m| m.ino());
        if file.metadata().ok().map(|m| m.ino()) != ours {
            opened.push((kind, flag, file));
        }
    }
    for (kind, flag, file) in &opened {
        setns(file.as_fd(), CloneFlags::from_bits_retain(*flag)).map_err(|source| EnterError::Setns {
            pid,
            kind,
            source,
        })?;
        if *kind == "user" {
            // As nsenter: take the user namespace's root (uid and gid 0, no supplementary groups), which is what
            // gives the capabilities to enter the namespaces it owns.
            let _ = nix::unistd::setgroups(&[]);
            nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                .and_then(|()| nix::unistd::setresuid(0.into(), 0.into(), 0.into()))
                .map_err(|source| EnterError::Credentials { pid, source })?;
        }
    }
    let shown = format!("of process {pid}");
    let mut command = Command::new(program);
    command.args(args);
    if opened.iter().any(|(kind, ..)| *kind == "pid") {
        return supervise(&mut command).map(|finished| finished.status).map_err(|err| err.into_exec(program, &shown));
    }
    let source = command.exec();
    Err(ExecError::Spawn { program: program.clone(), name: shown, source })
}

/// A supervised command's end.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// A SIGINT, SIGTERM, SIGHUP or SIGQUIT this process received meanwhile (a caller running several commands
    /// stops after this one, as it would have died of it).
    pub forwarded_stop: Option<i32>,
}

/// Why [`supervise`] failed.
#[derive(Debug)]
pub enum Supervised {
    Spawn(io::Error),
    Wait(io::Error),
}

impl Supervised {
    pub(super) fn into_exec(self, program: &OsString, shown: &str) -> ExecError {
        match self {
            Supervised::Spawn(source) => ExecError::Spawn { program: program.clone(), name: shown.to_owned(), source },
            Supervised::Wait(source) => ExecError::Wait { program: program.clone(), name: shown.to_owned(), source },
        }
    }
}

/// Signals passed on to the command: what a supervisor or a person sends (`kill`, systemd's stop).
const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// Spawns `command` and waits for it, passing every signal of [`FORWARDED`] sent to this process on to it.
/// Signals are blocked and taken with `sigwaitinfo` (no handler runs); one the terminal sent to the whole
/// foreground process group (`si_code == SI_KERNEL`) already reached the command and is not sent twice.
pub fn supervise(command: &mut Command) -> Result<Finished, Supervised> {
    let mut set = SigSet::empty();
    for signal in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        set.add(signal);
    }
    let parent = std::process::id() as libc::pid_t;
    // The child inherits the mask (seen here: std's spawn left SIGTERM blocked in it, so it could not be
    // stopped), and must not outlive a supervisor killed with SIGKILL (which cannot be passed on).
    // SAFETY: the closure only calls pthread_sigmask, prctl, getppid and _exit, which are async-signal-safe, on
    // a copy of `set`.
    unsafe {
        command.pre_exec(move || {
            pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None).map_err(io::Error::from)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor may have died before the prctl: then the child's parent is someone else. In a new
            // PID namespace the parent lives outside it and getppid() reads 0 (seen here with --type all).
            let now = libc::getppid();
            if now != parent && now != 0 {
                libc::_exit(128 + libc::SIGKILL);
            }
            Ok(())
        });
    }
    // A SIGCHLD ignored by whoever started us would make the kernel reap the child before we see it.
    // SAFETY: resetting a disposition to SIG_DFL installs no handler.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(|e| Supervised::Spawn(e.into()))?;
    let result = wait_forwarding(command, &set);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

fn wait_forwarding(command: &mut Command, set: &SigSet) -> Result<Finished, Supervised> {
    let mut child = command.spawn().map_err(Supervised::Spawn)?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut forwarded_stop = None;
    loop {
        if let Some(status) = child.try_wait().map_err(Supervised::Wait)? {
            return Ok(Finished { status, forwarded_stop });
        }
        // SAFETY: an all-zero siginfo_t is a valid value for the kernel to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t and `info` a writable siginfo_t for the call's duration.
        let signal = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if signal < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(Supervised::Wait(err));
        }
        if signal == libc::SIGCHLD {
            continue;
        }
        if matches!(signal, libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT) {
            forwarded_stop = Some(signal);
        }
        if info.si_code != libc::SI_KERNEL
            && let Ok(signal) = Signal::try_from(signal)
        {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }
}

/// This process's exit for a command that ended with `status`: its exit code, or, for a command killed by a
/// signal, death by the same signal (so that a shell sees what `ip netns exec` or the command itself would have
/// shown). Signals that dump core become `128 + signal` instead of a core of ours.
pub fn exit_like(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let signal = status.signal().unwrap_or(libc::SIGKILL);
    let dumps_core = matches!(
        signal,
        libc::SIGQUIT
            | libc::SIGILL
            | libc::SIGABRT
            | libc::SIGFPE
            | libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGSYS
            | libc::SIGTRAP
            | libc::SIGXCPU
            | libc::SIGXFSZ
    );
    if !dumps_core && let Ok(sig) = Signal::try_from(signal) {
        let mut unblock = SigSet::empty();
        unblock.add(sig);
        // SAFETY: SIG_DFL installs no handler; the signal then ends the process as it ended the command.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&unblock), None);
        let _ = nix::sys::signal::raise(sig);
    }
    ExitCode::from(128u8.saturating_add(u8::try_from(signal).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_entered_in_nsenter_order_and_checked() {
        assert_eq!(parse_types("mnt,net").unwrap(), ["net", "mnt"]);
        assert_eq!(parse_types("net").unwrap(), ["net"]);
        assert_eq!(parse_types("all").unwrap().len(), TYPES.len());
        assert_eq!(parse_types("pid, user").unwrap(), ["user", "pid"]);
        let err = parse_types("net,mount").unwrap_err();
        assert!(err.to_string().contains("\"mount\"") && err.is_bad_input(), "{err}");
    }
}
