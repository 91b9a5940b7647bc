//! Least privilege for the agent: check at start that it holds the capabilities it needs (failing with their
//! names otherwise), drop every other one, and after start-up drop those only start-up needed.
//!
//! Capabilities are per thread in Linux (a `capset` changes the calling thread only; new threads inherit their
//! creator's), so every change here happens while the process has a single thread: `netns-monitor run` does
//! all of it before it starts its async runtime, and [`restrict_to`] refuses to run with other threads alive.
//! Every set is lowered: effective, permitted, inheritable, ambient and (with `CAP_SETPCAP`, dropped last) the
//! bounding set; `no_new_privs` is set too, so no later `execve` could regain anything.
//!
//! What the agent keeps, and why ([`AGENT_REQUIRED`], [`AGENT_OPTIONAL`], [`AGENT_STARTUP_ONLY`]): see the
//! `why` of each entry. `CAP_SYS_ADMIN` cannot go after start-up: entering a new namespace (`setns`) to attach
//! to its veths needs it for as long as the agent runs, and it also covers what `CAP_BPF` and `CAP_PERFMON`
//! allow (the kernel's `bpf_capable()` and `perfmon_capable()` accept it). The agent still asks for those two
//! by name, so that it keeps working if the kernel narrows `CAP_SYS_ADMIN`, and drops `CAP_PERFMON` once its
//! programs are loaded.

use std::{fmt, io};

/// A Linux capability, by number (`linux/capability.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(pub u8);

/// Names of capabilities 0..=40, as `capsh` prints them (upper case).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub const CAP_DAC_READ_SEARCH: Capability = Capability(2);
pub const CAP_SETPCAP: Capability = Capability(8);
pub const CAP_NET_BIND_SERVICE: Capability = Capability(10);
pub const CAP_NET_BROADCAST: Capability = Capability(11);
pub const CAP_NET_ADMIN: Capability = Capability(12);
pub const CAP_SYS_PTRACE: Capability = Capability(19);
pub const CAP_SYSLOG: Capability = Capability(34);
pub const CAP_SYS_ADMIN: Capability = Capability(21);
pub const CAP_SYS_RESOURCE: Capability = Capability(24);
pub const CAP_PERFMON: Capability = Capability(38);
pub const CAP_BPF: Capability = Capability(39);

impl Capability {
    /// `CAP_BPF`, or `cap_41` for numbers newer than this table.
    pub fn name(self) -> String {
        NAMES.get(usize::from(self.0)).map_or_else(|| format!("cap_{}", self.0), |name| (*name).to_owned())
    }

    /// By name, `CAP_BPF` or `bpf` (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
        NAMES.iter().position(|n| *n == full).map(|i| Capability(i as u8))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A set of capabilities as the kernel's 64-bit masks (`CapEff:` in `/proc/PID/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn of(caps: impl IntoIterator<Item = Capability>) -> Self {
        Self(caps.into_iter().fold(0, |mask, cap| mask | 1 << cap.0))
    }

    pub fn contains(self, cap: Capability) -> bool {
        cap.0 < 64 && self.0 & (1 << cap.0) != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The capabilities in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        (0..64u8).map(Capability).filter(move |cap| self.contains(*cap))
    }

    /// Names joined by commas (`none` when empty), for messages.
    pub fn names(self) -> String {
        let names: Vec<String> = self.iter().map(Capability::name).collect();
        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
    }
}

/// A capability and what the agent does with it.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub cap: Capability,
    pub why: &'static str,
}

/// Without these the agent cannot work; it refuses to start, naming the missing ones.
pub const AGENT_REQUIRED: &[Need] = &[
    Need { cap: CAP_BPF, why: "create BPF maps, load programs, pin and adopt links, read the maps" },
    Need {
        cap: CAP_PERFMON,
        why: "load tracing programs that read kernel memory and attach them to tracepoints (start-up only)",
    },
    Need { cap: CAP_NET_ADMIN, why: "attach the tc/TCX classifiers, assign netns ids and change links over rtnetlink" },
    Need {
        cap: CAP_NET_BROADCAST,
        why: "receive link notifications from every network namespace (NETLINK_LISTEN_ALL_NSID)",
    },
    Need {
        cap: CAP_SYS_ADMIN,
        why: "enter network namespaces (setns) to attach to their veths, mount tracefs/bpffs, enable BPF run-time \
              statistics",
    },
    // Found by the least-privilege test: without it the agent missed every namespace made after it started.
    Need {
        cap: CAP_SYS_PTRACE,
        why: "open the new namespace of the process that just made one (/proc/PID/task/TID/ns/net) and the \
              namespaces of other processes: they hold capabilities the agent dropped, so the kernel's ptrace \
              access check on /proc/PID/ns needs it",
    },
];

/// Kept when present (`CAP_SYSLOG` only for start-up, see [`AGENT_STARTUP_ONLY`]); without them the agent works
/// with a narrower view, and says so at start.
pub const AGENT_OPTIONAL: &[Need] = &[
    Need {
        cap: CAP_DAC_READ_SEARCH,
        why: "read /proc/PID/fd of other users' processes, to find namespaces held only by an open file descriptor",
    },
    Need {
        cap: CAP_SYSLOG,
        why: "read a kernel function's address in /proc/kallsyms for tier 2's namespace-destruction probe, where \
              fentry is refused (start-up only; without it tier 2 reports destruction from netns ids)",
    },
];

/// Used, when held, before anything else and never kept: kernels before 5.11 charge BPF maps to
/// RLIMIT_MEMLOCK (64 KiB by default there), which the agent raises first (`bpf::memlock`). Where the limit can be
/// set from outside (systemd's `LimitMEMLOCK=infinity`) it is not needed; a Kubernetes pod cannot set rlimits,
/// so the DaemonSet grants it.
pub const AGENT_MEMLOCK: Need = Need {
    cap: CAP_SYS_RESOURCE,
    why: "raise RLIMIT_MEMLOCK before loading, on kernels before 5.11 (used first, then dropped)",
};

/// Capabilities only start-up needs, dropped once the programs are loaded and the endpoint is bound:
/// `CAP_PERFMON` (see [`AGENT_REQUIRED`]), `CAP_SYSLOG` (see [`AGENT_OPTIONAL`]), `CAP_NET_BIND_SERVICE` (only
/// asked for with a `--listen` port below 1024), and `CAP_SETPCAP`, kept (when held) only so that the last drop
/// can narrow the bounding set too.
pub const AGENT_STARTUP_ONLY: &[Capability] = &[CAP_PERFMON, CAP_SYSLOG, CAP_NET_BIND_SERVICE, CAP_SETPCAP];

/// The calling thread's capability sets and the process's bounding and ambient sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
}

/// Errors checking or changing capabilities.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("missing {}: {}; run as root or grant them (e.g. systemd's AmbientCapabilities=)", plural(.0.len()), describe(.0))]
    Missing(Vec<Need>),
    #[error("{call} failed")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("capabilities can only be changed while the process has one thread, and it has {0}")]
    Threads(usize),
    #[error("after dropping capabilities the thread still holds {0}")]
    NotDropped(String),
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "capability" } else { "capabilities" }
}

fn describe(missing: &[Need]) -> String {
    missing.iter().map(|need| format!("{} (to {})", need.cap, need.why)).collect::<Vec<_>>().join(", ")
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn syscall_error(call: &'static str) -> PrivilegeError {
    PrivilegeError::Syscall { call, source: io::Error::last_os_error() }
}

/// Highest capability number this kernel knows.
fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
}

/// Reads the calling thread's capabilities.
pub fn current() -> Result<Capabilities, PrivilegeError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a version-3 header writes exactly two CapData structs, which `data` provides; both
    // pointers are valid for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if ret != 0 {
        return Err(syscall_error("capget"));
    }
    let join = |low: u32, high: u32| CapSet(u64::from(low) | u64::from(high) << 32);
    let mut bounding = CapSet::default();
    let mut ambient = CapSet::default();
    for cap in (0..=last_cap()).map(Capability) {
        // SAFETY: PR_CAPBSET_READ and PR_CAP_AMBIENT_IS_SET only read the calling thread's credentials.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap.0), 0, 0, 0) } == 1 {
            bounding = bounding.union(CapSet::of([cap]));
        }
        // SAFETY: as above.
        let is_ambient =
            unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_IS_SET, libc::c_ulong::from(cap.0), 0, 0) };
        if is_ambient == 1 {
            ambient = ambient.union(CapSet::of([cap]));
        }
    }
    Ok(Capabilities {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
        bounding,
        ambient,
    })
}

fn capset(effective: CapSet, permitted: CapSet, inheritable: CapSet) -> Result<(), PrivilegeError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let split = |set: CapSet| (set.0 as u32, (set.0 >> 32) as u32);
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        CapData { effective: e.0, permitted: p.0, inheritable: i.0 },
        CapData { effective: e.1, permitted: p.1, inheritable: i.1 },
    ];
    // SAFETY: capset with a version-3 header reads exactly two CapData structs from `data`; both pointers are
    // valid for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if ret != 0 {
        return Err(syscall_error("capset"));
    }
    Ok(())
}

/// Fails naming every capability of `needs` the process does not hold (in its permitted set, from which the
/// effective set can be raised).
pub fn check(needs: &[Need]) -> Result<(), PrivilegeError> {
    let caps = current()?;
    let missing: Vec<Need> = needs.iter().copied().filter(|need| !caps.permitted.contains(need.cap)).collect();
    if missing.is_empty() { Ok(()) } else { Err(PrivilegeError::Missing(missing)) }
}

/// Number of threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|dir| dir.count()).unwrap_or(0)
}

/// Lowers every capability set of the (single-threaded) process to `keep` (intersected with what it holds):
/// effective = permitted = `keep`, inheritable and ambient empty, bounding set `keep` (when `CAP_SETPCAP` allows
/// changing it), and `no_new_privs`. Returns what was dropped from the permitted set.
pub fn restrict_to(keep: CapSet) -> Result<CapSet, PrivilegeError> {
    let threads = threads();
    if threads != 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let before = current()?;
    let keep = keep.intersection(before.permitted);
    // The bounding set first, while CAP_SETPCAP may still be raised in the effective set.
    if before.permitted.contains(CAP_SETPCAP) {
        capset(before.permitted, before.permitted, before.inheritable)?;
        for cap in before.bounding.without(keep).iter() {
            // SAFETY: PR_CAPBSET_DROP only changes the calling thread's credentials.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap.0), 0, 0, 0) } != 0 {
                return Err(syscall_error("prctl(PR_CAPBSET_DROP)"));
            }
        }
    } else if before.bounding.without(keep) != CapSet::default() {
        tracing::debug!(
            extra = %before.bounding.without(keep).names(),
            "without CAP_SETPCAP the bounding set cannot be narrowed; no_new_privs still keeps execve from using it"
        );
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL only changes the calling thread's credentials.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) } != 0 {
        return Err(syscall_error("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"));
    }
    capset(keep, keep, CapSet::default())?;
    // SAFETY: PR_SET_NO_NEW_PRIVS only sets a flag of the calling thread (inherited by later threads).
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(syscall_error("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    let after = current()?;
    let left = after.effective.union(after.permitted).union(after.inheritable).union(after.ambient).without(keep);
    if left != CapSet::default() {
        return Err(PrivilegeError::NotDropped(left.names()));
    }
    Ok(before.permitted.without(keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_agree_with_the_kernel_header() {
        assert_eq!(CAP_BPF.name(), "CAP_BPF");
        assert_eq!(CAP_PERFMON.name(), "CAP_PERFMON");
        assert_eq!(CAP_SYS_ADMIN.name(), "CAP_SYS_ADMIN");
        assert_eq!(CAP_NET_ADMIN.name(), "CAP_NET_ADMIN");
        assert_eq!(CAP_NET_BROADCAST.name(), "CAP_NET_BROADCAST");
        assert_eq!(CAP_SYS_PTRACE.name(), "CAP_SYS_PTRACE");
        assert_eq!(CAP_DAC_READ_SEARCH.name(), "CAP_DAC_READ_SEARCH");
        assert_eq!(Capability::from_name("bpf"), Some(CAP_BPF));
        assert_eq!(Capability::from_name("CAP_SYS_ADMIN"), Some(CAP_SYS_ADMIN));
        assert_eq!(Capability::from_name("cap_checkpoint_restore"), Some(Capability(40)));
        assert_eq!(Capability::from_name("nope"), None);
        assert_eq!(Capability(63).name(), "cap_63");
    }

    #[test]
    fn sets() {
        let set = CapSet::of([CAP_BPF, CAP_NET_ADMIN]);
        assert_eq!(set.0, 1 << 39 | 1 << 12);
        assert!(set.contains(CAP_BPF) && !set.contains(CAP_SYS_ADMIN));
        assert_eq!(set.names(), "CAP_NET_ADMIN, CAP_BPF");
        assert_eq!(set.without(CapSet::of([CAP_BPF])), CapSet::of([CAP_NET_ADMIN]));
        assert_eq!(CapSet::default().names(), "none");
    }

    #[test]
    fn missing_capabilities_are_named_with_their_purpose() {
        let err = PrivilegeError::Missing(vec![AGENT_REQUIRED[0], AGENT_REQUIRED[3]]);
        let text = err.to_string();
        assert!(text.starts_with("missing capabilities: CAP_BPF (to create BPF maps"), "{text}");
        assert!(text.contains("CAP_NET_BROADCAST (to receive link notifications"), "{text}");
        let one = PrivilegeError::Missing(vec![AGENT_REQUIRED[4]]).to_string();
        assert_eq!(AGENT_REQUIRED[4].cap, CAP_SYS_ADMIN);
        assert!(one.starts_with("missing capability: CAP_SYS_ADMIN"), "{one}");
    }
}
