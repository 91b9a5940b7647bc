//! Decodes [`TransitionEvent`] records from the ring buffer into checked Rust types.
//!
//! The kernel side uses plain integers; here every kind is converted with `TryFrom` and unknown values are
//! rejected, so a mismatch between an old agent and a new object (or a corrupt record) is an error, not a
//! silently wrong event.

use netns_monitor_common::{
    event::{
        COMM_LEN, KIND_NETNS_CREATED, KIND_NETNS_DESTROYED, KIND_TRANSITION, SYSCALL_CLONE, SYSCALL_CLONE3,
        SYSCALL_NONE, SYSCALL_SETNS, SYSCALL_UNSHARE, TransitionEvent,
    },
    ns::{
        NS_CGROUP, NS_COUNT, NS_IPC, NS_MNT, NS_NET, NS_PID, NS_PID_FOR_CHILDREN, NS_TIME, NS_TIME_FOR_CHILDREN,
        NS_USER, NS_UTS,
    },
};

/// Errors decoding a ring buffer record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record has {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
    #[error("unknown event kind {0}")]
    Kind(u32),
    #[error("unknown syscall {0}")]
    Syscall(u32),
}

/// The syscall that caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Syscall {
    Setns,
    Unshare,
    Clone,
    Clone3,
}

impl Syscall {
    pub const ALL: [Syscall; 4] = [Syscall::Setns, Syscall::Unshare, Syscall::Clone, Syscall::Clone3];

    /// The syscall's name, as in `man 2`.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Setns => "setns",
            Syscall::Unshare => "unshare",
            Syscall::Clone => "clone",
            Syscall::Clone3 => "clone3",
        }
    }
}

impl TryFrom<u32> for Syscall {
    type Error = DecodeError;
    fn try_from(raw: u32) -> Result<Self, DecodeError> {
        match raw {
            SYSCALL_SETNS => Ok(Syscall::Setns),
            SYSCALL_UNSHARE => Ok(Syscall::Unshare),
            SYSCALL_CLONE => Ok(Syscall::Clone),
            SYSCALL_CLONE3 => Ok(Syscall::Clone3),
            other => Err(DecodeError::Syscall(other)),
        }
    }
}

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A task called one of the namespace syscalls.
    Transition(Syscall),
    /// A network namespace came into existence.
    NetnsCreated,
    /// A network namespace was destroyed.
    NetnsDestroyed,
    /// A network namespace whose creation was reported cannot be watched (tier 2 before Linux 6.18, and it was
    /// gone from every path userspace can reach): when it is destroyed is unknown.
    NetnsEndUnknown,
}

/// A namespace type, named as in `/proc/PID/ns/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NsType {
    Net,
    Mnt,
    Pid,
    PidForChildren,
    Uts,
    Ipc,
    User,
    Cgroup,
    Time,
    TimeForChildren,
}

impl NsType {
    /// All types in the order of the event's inode arrays.
    pub const ALL: [NsType; NS_COUNT] = [
        NsType::Net,
        NsType::Mnt,
        NsType::Pid,
        NsType::PidForChildren,
        NsType::Uts,
        NsType::Ipc,
        NsType::User,
        NsType::Cgroup,
        NsType::Time,
        NsType::TimeForChildren,
    ];

    /// Index into the event's inode arrays.
    pub fn index(self) -> usize {
        match self {
            NsType::Net => NS_NET,
            NsType::Mnt => NS_MNT,
            NsType::Pid => NS_PID,
            NsType::PidForChildren => NS_PID_FOR_CHILDREN,
            NsType::Uts => NS_UTS,
            NsType::Ipc => NS_IPC,
            NsType::User => NS_USER,
            NsType::Cgroup => NS_CGROUP,
            NsType::Time => NS_TIME,
            NsType::TimeForChildren => NS_TIME_FOR_CHILDREN,
        }
    }

    /// The file name under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsType::Net => "net",
            NsType::Mnt => "mnt",
            NsType::Pid => "pid",
            NsType::PidForChildren => "pid_for_children",
            NsType::Uts => "uts",
            NsType::Ipc => "ipc",
            NsType::User => "user",
            NsType::Cgroup => "cgroup",
            NsType::Time => "time",
            NsType::TimeForChildren => "time_for_children",
        }
    }
}

/// A decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// CLOCK_BOOTTIME nanoseconds when the syscall returned.
    pub ts_boot_ns: u64,
    /// `nstype` for setns, `CLONE_*` flags otherwise.
    pub flags: u64,
    /// Return value: 0, a negative errno, or the child's pid for clone/clone3.
    pub ret: i64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The setns file descriptor.
    pub fd: Option<i32>,
    /// For clone/clone3: the child's (pid, tid) in the initial pid namespace.
    pub child: Option<(u32, u32)>,
    pub comm: String,
    /// Inodes before and after, indexed by [`NsType::index`]; 0 where unknown.
    pub old_ns: [u32; NS_COUNT],
    pub new_ns: [u32; NS_COUNT],
    /// The kernel's 64-bit id of the network namespace a lifecycle event names (Linux >= 6.18), else 0.
    pub net_cookie: u64,
}

impl Event {
    /// Decodes one ring buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let want = size_of::<TransitionEvent>();
        if bytes.len() != want {
            return Err(DecodeError::Size { got: bytes.len(), want });
        }
        // SAFETY: the length was checked above and TransitionEvent is plain integers, valid for any bits;
        // read_unaligned copes with the ring buffer's 8-byte (not type) alignment.
        let raw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<TransitionEvent>()) };
        Self::try_from(raw)
    }

    /// A destruction observed outside the ring buffer (see `crate::lifecycle`): only the inode and the time
    /// (CLOCK_BOOTTIME) are known.
    pub fn destroyed(inode: u32, ts_boot_ns: u64) -> Self {
        Self::lifecycle(EventKind::NetnsDestroyed, inode, ts_boot_ns)
    }

    /// A namespace whose destruction will not be seen (see [`EventKind::NetnsEndUnknown`]).
    pub fn end_unknown(inode: u32, ts_boot_ns: u64) -> Self {
        Self::lifecycle(EventKind::NetnsEndUnknown, inode, ts_boot_ns)
    }

    fn lifecycle(kind: EventKind, inode: u32, ts_boot_ns: u64) -> Self {
        let mut old_ns = [0; NS_COUNT];
        old_ns[NS_NET] = inode;
        Event {
            kind,
            ts_boot_ns,
            flags: 0,
            ret: 0,
            pid: 0,
            tid: 0,
            ppid: 0,
            uid: 0,
            fd: None,
            child: None,
            comm: String::new(),
            old_ns,
            new_ns: [0; NS_COUNT],
            net_cookie: 0,
        }
    }

    /// Whether this is the end of a namespace's life (destroyed, or known never to be seen destroyed).
    pub fn is_end(&self) -> bool {
        matches!(self.kind, EventKind::NetnsDestroyed | EventKind::NetnsEndUnknown)
    }

    /// The syscall, for transitions.
    pub fn syscall(&self) -> Option<Syscall> {
        match self.kind {
            EventKind::Transition(syscall) => Some(syscall),
            _ => None,
        }
    }

    /// Namespace types whose inode differs between before and after.
    pub fn changed(&self) -> impl Iterator<Item = NsType> + '_ {
        NsType::ALL.into_iter().filter(|t| self.old_ns[t.index()] != self.new_ns[t.index()])
    }

    /// Inode of `ty` before and after.
    pub fn ns(&self, ty: NsType) -> (u32, u32) {
        (self.old_ns[ty.index()], self.new_ns[ty.index()])
    }

    /// The errno of a failed call: the kernel returns `-errno`, errno in 1..=4095 (`MAX_ERRNO`); no other value
    /// is an error code (and negating `i64::MIN` would overflow: found by `cargo xtask fuzz`).
    pub fn errno(&self) -> Option<i32> {
        (self.syscall().is_some() && (-4095..0).contains(&self.ret)).then(|| (-self.ret) as i32)
    }
}

impl TryFrom<TransitionEvent> for Event {
    type Error = DecodeError;
    fn try_from(raw: TransitionEvent) -> Result<Self, DecodeError> {
        let kind = match raw.kind {
            KIND_TRANSITION => EventKind::Transition(Syscall::try_from(raw.syscall)?),
            KIND_NETNS_CREATED if raw.syscall == SYSCALL_NONE => EventKind::NetnsCreated,
            KIND_NETNS_DESTROYED if raw.syscall == SYSCALL_NONE => EventKind::NetnsDestroyed,
            KIND_NETNS_CREATED | KIND_NETNS_DESTROYED => return Err(DecodeError::Syscall(raw.syscall)),
            other => return Err(DecodeError::Kind(other)),
        };
        let comm_len = raw.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        Ok(Event {
            kind,
            ts_boot_ns: raw.ts_boot_ns,
            flags: raw.flags,
            ret: raw.ret,
            pid: raw.pid,
            tid: raw.tid,
            ppid: raw.ppid,
            uid: raw.uid,
            fd: (raw.syscall == SYSCALL_SETNS).then_some(raw.fd),
            child: (raw.child_tid != 0).then_some((raw.child_pid, raw.child_tid)),
            comm: String::from_utf8_lossy(&raw.comm[..comm_len]).into_owned(),
            old_ns: raw.old_ns,
            new_ns: raw.new_ns,
            net_cookie: raw.net_cookie,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_setns() -> TransitionEvent {
        let mut raw = TransitionEvent::zeroed();
        raw.kind = KIND_TRANSITION;
        raw.syscall = SYSCALL_SETNS;
        raw.fd = 7;
        raw.pid = 10;
        raw.tid = 11;
        raw.comm[..4].copy_from_slice(b"test");
        raw.old_ns[NS_NET] = 1;
        raw.new_ns[NS_NET] = 2;
        raw
    }

    fn bytes(raw: &TransitionEvent) -> Vec<u8> {
        // SAFETY: TransitionEvent is #[repr(C)] plain integers without padding; viewing it as bytes is sound.
        unsafe { std::slice::from_raw_parts((raw as *const TransitionEvent).cast::<u8>(), size_of_val(raw)) }.to_vec()
    }

    #[test]
    fn decodes_a_setns() {
        let event = Event::decode(&bytes(&raw_setns())).unwrap();
        assert_eq!(event.kind, EventKind::Transition(Syscall::Setns));
        assert_eq!(event.fd, Some(7));
        assert_eq!(event.comm, "test");
        assert_eq!(event.changed().collect::<Vec<_>>(), vec![NsType::Net]);
        assert_eq!(event.ns(NsType::Net), (1, 2));
        assert_eq!(event.child, None);
    }

    #[test]
    fn errno_only_for_kernel_error_codes() {
        let mut raw = raw_setns();
        raw.ret = -9;
        assert_eq!(Event::decode(&bytes(&raw)).unwrap().errno(), Some(9));
        // The fuzz crash (fuzz/seeds/event_decode/regression-ret-i64-min): ret = i64::MIN.
        for ret in [i64::MIN, -4096, 0, 5] {
            raw.ret = ret;
            assert_eq!(Event::decode(&bytes(&raw)).unwrap().errno(), None, "ret {ret}");
        }
    }

    #[test]
    fn rejects_unknown_values_and_sizes() {
        let mut raw = raw_setns();
        raw.syscall = 99;
        assert_eq!(Event::decode(&bytes(&raw)), Err(DecodeError::Syscall(99)));
        raw.kind = 42;
        assert_eq!(Event::decode(&bytes(&raw)), Err(DecodeError::Kind(42)));
        assert_eq!(Event::decode(&[0; 3]), Err(DecodeError::Size { got: 3, want: 168 }));
    }

    #[test]
    fn ns_type_indexes_follow_the_abi() {
        for (i, ty) in NsType::ALL.into_iter().enumerate() {
            assert_eq!(ty.index(), i);
        }
    }
}
