//! Attaching the classifiers to interfaces in any namespace, pinning the links, and adopting the pins a
//! previous agent left.
//!
//! aya resolves an interface (and the kernel its ifindex) in the calling thread's network namespace, so every
//! attach runs in the interface's namespace: on a short-lived thread that entered it (`manage::rtnl::in_netns`), or on
//! a worker that enters one namespace after another (`manage::rtnl::Within`).
//!
//! With TCX (Linux >= 6.6) each attachment is a bpf link, pinned at
//! `PIN_DIR/links/<netns inode>-<ifindex>-<ingress|egress>`: the programs keep counting while the agent is down,
//! and a restarted agent replaces the program inside each pinned link (`bpf_link_update`, atomic, same place in
//! the chain) instead of attaching a second one. Link order: ingress first in the chain (sees every received
//! packet before another program can drop it), egress last (counts what is handed to the device).
//!
//! Older kernels (no TCX) get a clsact qdisc and a cls_bpf filter per direction, at a fixed place
//! ([`legacy_priority`], [`LEGACY_HANDLE`]), whose classid names the interface's counter slot (see
//! `netns-monitor-ebpf/src/traffic.rs`). Such a filter is no bpf link and cannot be pinned, but it lives in
//! the kernel until it is deleted or its interface goes, whatever happens to the agent: so the agent never
//! deletes it (a graceful stop keeps counting, as TCX pins do), and a restarted agent swaps its program in
//! place (an `RTM_NEWTFILTER` without `NLM_F_CREATE` at the same priority and handle, atomic in cls_bpf) instead
//! of adding a second filter. aya keeps the netlink attachments of a program in a map keyed by (ifindex,
//! direction, priority, handle) with no namespace in the key, so two interfaces with the same ifindex in two
//! namespaces collide there ("already attached"); the attachment is therefore taken out of aya's map at once.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use netns_monitor_common::traffic::TrafficKey;

use super::{TrafficError, counters::TrafficMap};
use crate::{
    bpf::{Direction, Probes},
    manage::rtnl::Within,
};

/// Where the classifiers' TCX links are pinned, under the pin directory.
pub const LINKS_DIR: &str = "links";

/// An interface with both classifiers attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub name: String,
    /// Whether the links were adopted from pins a previous agent left.
    pub adopted: bool,
}

/// The interfaces this agent counts, keyed by (netns inode, ifindex).
pub struct Attachments {
    links_dir: PathBuf,
    map: TrafficMap,
    attached: BTreeMap<TrafficKey, Attached>,
}

fn tc_type(direction: Direction) -> TcAttachType {
    match direction {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    }
}

/// Handle of our cls_bpf filters ("NM"), the same in both directions: with the priority it is how a restarted
/// agent finds the filters a previous one left.
pub const LEGACY_HANDLE: TcHandle = TcHandle::new(0x4e4d, 1);

/// Priority of our cls_bpf filter in `direction` (lower runs first). Ingress runs early: before the kernel's
/// default for filters added without a priority (49152 and down), yet above 1, so that a tool asking the kernel
/// for "the next priority" still gets a valid one. Egress runs last.
pub fn legacy_priority(direction: Direction) -> u16 {
    match direction {
        Direction::Ingress => 0x100,
        Direction::Egress => 0xffff,
    }
}

fn order(direction: Direction) -> LinkOrder {
    match direction {
        Direction::Ingress => LinkOrder::first(),
        Direction::Egress => LinkOrder::last(),
    }
}

impl Attachments {
    /// Opens the pinned traffic map and the links directory of `probes`.
    pub fn new(probes: &Probes) -> Result<Self, TrafficError> {
        let links_dir = probes.pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links_dir)
            .map_err(|source| TrafficError::Pin { path: links_dir.display().to_string(), source })?;
        Ok(Self { map: TrafficMap::open(&probes.pin_dir)?, links_dir, attached: BTreeMap::new() })
    }

    /// The interfaces currently counted.
    pub fn attached(&self) -> &BTreeMap<TrafficKey, Attached> {
        &self.attached
    }

    /// The traffic map.
    pub fn map(&self) -> &TrafficMap {
        &self.map
    }

    fn pin_path(&self, key: TrafficKey, direction: Direction) -> PathBuf {
        self.links_dir.join(format!("{}-{}-{}", key.netns, key.ifindex, direction.as_str()))
    }

    /// Attaches both classifiers to interface `key.ifindex` of namespace `key.netns` (held open by
    /// `netns`: entered, or the calling thread's own), adopting pinned links where they exist. Idempotent. `Ok(None)` when the interface is no
    /// longer in that namespace (moved to another one, or deleted: a notification of that follows), which is
    /// not a failure.
    ///
    /// The name is looked up from the ifindex inside the namespace just before attaching (aya attaches by
    /// name): runtimes rename the ends they make (Docker's `vethXXXX` becomes `eth0` in the container), so the
    /// name a notification carried may be gone. A rename between the lookup and the attach is retried.
    ///
    /// A new interface's totals start at what the kernel counted on it before the classifiers ran (its base,
    /// see [`super::seed`]): a container's first packets pass before any notification of its interface can be
    /// read, and the totals must be the kernel's from the first packet. Its counters are created before the
    /// classifiers are attached, so that no packet they see finds none; if the attach fails they are removed
    /// again.
    pub fn attach(
        &mut self,
        probes: &mut Probes,
        netns: Within<'_>,
        key: TrafficKey,
    ) -> Result<Option<&Attached>, TrafficError> {
        let created = self.map.create(key)?;
        match self.attach_counted(probes, netns, key) {
            Ok(Some(attached)) => {
                self.attached.insert(key, attached);
                Ok(self.attached.get(&key))
            }
            other => {
                if created {
                    self.map.remove(&key)?;
                }
                other.map(|_| None)
            }
        }
    }

    /// [`Self::attach`] once the counters exist: the classifiers, then the base where it is not written yet.
    fn attach_counted(
        &mut self,
        probes: &mut Probes,
        netns: Within<'_>,
        key: TrafficKey,
    ) -> Result<Option<Attached>, TrafficError> {
        const ATTEMPTS: usize = 3;
        // A TCX link that moved here with the device (see [`Self::remove`]) holds our program until the kernel
        // releases it: attaching meanwhile fails with EEXIST. How long to wait for that, in steps.
        const HELD_STEPS: usize = 50;
        const HELD_STEP: std::time::Duration = std::time::Duration::from_millis(10);
        let (mut attempts, mut held) = (0, 0);
        while attempts < ATTEMPTS {
            let Some(name) = netns.run(|| name_of(key.ifindex)).map_err(TrafficError::Thread)? else {
                return Ok(None);
            };
            if let Some(attached) = self.attached.get(&key).filter(|a| a.name == name) {
                return Ok(Some(attached.clone()));
            }
            match self.attach_named(probes, netns, key, &name) {
                Ok(adopted) => {
                    if !self.map.has_base(&key) {
                        // The classifiers memoise each device's namespace. One that just moved here (CNI makes
                        // the host end in the container's namespace, then moves it out) would go on being
                        // counted under its old namespace until the memo is dropped: drop it before the base is
                        // measured, or what passes meanwhile is in neither the base nor these counters.
                        probes.bump_link_generation().map_err(TrafficError::Bpf)?;
                        if !super::seed::write_base(&mut self.map, netns, key, &name)? {
                            return Ok(None);
                        }
                    }
                    return Ok(Some(Attached { name, adopted }));
                }
                // Renamed or moved away between the lookup and the attach: look again.
                Err(TrafficError::Attach { source, .. }) if has_errno(&source, libc::ENODEV) => attempts += 1,
                // clsact: the device moved (or was renamed and moved) after its qdisc was added, which takes the
                // qdisc with it, so the filter finds no parent ("Parent Qdisc doesn't exists", EINVAL). Look
                // again, which adds the qdisc again where the device is now; the last attempt's error stands.
                Err(TrafficError::Attach { source, .. })
                    if !tcx_available() && attempts + 1 < ATTEMPTS && has_errno(&source, libc::EINVAL) =>
                {
                    attempts += 1;
                }
                Err(TrafficError::Attach { source, .. })
                    if tcx_available() && held < HELD_STEPS && has_errno(&source, libc::EEXIST) =>
                {
                    held += 1;
                    std::thread::sleep(HELD_STEP);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    /// Both directions on the interface named `name` now; whether both were adopted from pins.
    fn attach_named(
        &mut self,
        probes: &mut Probes,
        netns: Within<'_>,
        key: TrafficKey,
        name: &str,
    ) -> Result<bool, TrafficError> {
        let mut adopted = true;
        // Made by `attach` before it gets here; a slot map emptied meanwhile (by hand) is a map error.
        let slot = self.map.slot(&key).ok_or(TrafficError::Map(aya::maps::MapError::KeyNotFound))?;
        let classid = slot_classid(slot);
        for direction in Direction::BOTH {
            let pin = self.pin_path(key, direction);
            let classifier = probes.classifier(direction).map_err(TrafficError::Bpf)?;
            let fresh = netns
                .run(|| attach_one(classifier, name, direction, &pin, classid))
                .map_err(TrafficError::Thread)?
                .map_err(|source| TrafficError::Attach { name: name.to_owned(), direction, source })?;
            adopted &= !fresh;
        }
        Ok(adopted)
    }

    /// Forgets an interface that is gone from the namespace: detaches and removes its pins, and its counters.
    ///
    /// Gone may mean moved: a TCX link stays attached to its device when the device moves to another namespace
    /// (Docker makes a container's end in the host and moves it in), and attaching our program again there fails
    /// with EEXIST while the old link holds it. Removing the pin alone releases the link only when the kernel's
    /// deferred work gets to it, so the link is detached first, at once (the move's RTM_DELLINK is read before
    /// the RTM_NEWLINK in the new namespace). For a deleted device the kernel has detached it already.
    pub fn remove(&mut self, key: TrafficKey) -> Result<(), TrafficError> {
        self.attached.remove(&key);
        for direction in Direction::BOTH {
            let pin = self.pin_path(key, direction);
            if tcx_available() {
                detach_pinned(&pin);
            }
            remove_pin(&pin)?;
        }
        self.map.remove(&key)
    }

    /// Removes every interface of namespace `netns`.
    pub fn remove_netns(&mut self, netns: u32) -> Result<(), TrafficError> {
        let keys: Vec<TrafficKey> = self.attached.keys().filter(|k| k.netns == netns).copied().collect();
        for key in keys {
            self.remove(key)?;
        }
        Ok(())
    }

    /// After the start-up scan: removes pins and counters of interfaces that no longer exist (left by a
    /// previous agent). Returns how many interfaces were cleaned up.
    pub fn remove_stale(&mut self) -> Result<usize, TrafficError> {
        let mut stale = std::collections::BTreeSet::new();
        let entries = std::fs::read_dir(&self.links_dir)
            .map_err(|source| TrafficError::Pin { path: self.links_dir.display().to_string(), source })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let key = name.to_str().and_then(parse_pin_name);
            match key {
                Some(key) if self.attached.contains_key(&key) => {}
                Some(key) => {
                    stale.insert(key);
                }
                // Not ours: leave it.
                None => {}
            }
        }
        stale.extend(self.map.keys().into_iter().filter(|k| !self.attached.contains_key(k)));
        for key in &stale {
            self.remove(*key)?;
        }
        Ok(stale.len())
    }
}

/// Runs inside the interface's namespace: its current name; `None` when no interface has that index here.
fn name_of(ifindex: u32) -> Option<String> {
    let mut buffer = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes (NUL included) into the buffer it is given.
    let found = unsafe { libc::if_indextoname(ifindex, buffer.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned())
}

/// `<netns>-<ifindex>-<direction>` back to its key.
fn parse_pin_name(name: &str) -> Option<TrafficKey> {
    let mut parts = name.splitn(3, '-');
    let netns = parts.next()?.parse().ok()?;
    let ifindex = parts.next()?.parse().ok()?;
    matches!(parts.next()?, "ingress" | "egress").then_some(TrafficKey { netns, ifindex })
}

fn remove_pin(path: &Path) -> Result<(), TrafficError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TrafficError::Pin { path: path.display().to_string(), source }),
    }
}

/// Detaches the link pinned at `path` from its device now (`BPF_OBJ_GET`, then `BPF_LINK_DETACH`, Linux 5.9;
/// TCX links implement it). Best effort: a link whose device is gone is detached already.
pub fn detach_pinned(path: &Path) {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return };
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32); the rest zero.
    let mut get = [0u64; 2];
    get[0] = path.as_ptr() as u64;
    // SAFETY: `get` is a valid, initialised bpf_attr prefix of the size passed; `path` outlives the call. The
    // kernel only reads the attr and the NUL-terminated path.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, get.as_ptr(), size_of_val(&get) as libc::c_uint) };
    let Ok(fd) = i32::try_from(fd) else { return };
    if fd < 0 {
        return;
    }
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    // union bpf_attr for BPF_LINK_DETACH: link_fd (u32); the rest zero.
    let detach = [link.as_raw_fd() as u32, 0, 0, 0];
    // SAFETY: `detach` is a valid bpf_attr prefix of the size passed, read only; `link` is open during the call.
    let _ =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, detach.as_ptr(), size_of_val(&detach) as libc::c_uint) };
}

/// The classid of a cls_bpf filter counting into `slot`: the kernel hands the program its low 16 bits
/// (`__sk_buff.tc_classid`), and 0 means none, so slot `n` is `0:n+1` (`MAX_SLOTS` keeps it in range).
pub fn slot_classid(slot: u32) -> TcHandle {
    debug_assert!(slot < netns_monitor_common::traffic::MAX_SLOTS);
    TcHandle::new(0, (slot + 1) as u16)
}

/// Runs inside the interface's namespace. Returns whether a new link was made (false: a pin was adopted).
fn attach_one(
    classifier: &mut SchedClassifier,
    name: &str,
    direction: Direction,
    pin: &Path,
    classid: TcHandle,
) -> Result<bool, aya::programs::ProgramError> {
    if !tcx_available() {
        return attach_legacy(classifier, name, direction, classid);
    }
    if let Ok(pinned) = PinnedLink::from_pin(pin) {
        let link = SchedClassifierLink::try_from(FdLink::from(pinned));
        match link.map(|link| classifier.attach_to_link(link)) {
            Ok(Ok(id)) => {
                // The pin keeps the link (now running our program); our handle can go.
                drop(classifier.take_link(id)?);
                return Ok(false);
            }
            // A defunct link (its interface went away and came back with the same index) or not TCX: replace.
            _ => {
                let _ = std::fs::remove_file(pin);
            }
        }
    }
    let id = classifier.attach_with_options(name, tc_type(direction), TcAttachOptions::TcxOrder(order(direction)))?;
    let link = FdLink::try_from(classifier.take_link(id)?)
        .map_err(|err| aya::programs::ProgramError::IOError(io::Error::other(err)))?;
    link.pin(pin).map_err(|err| aya::programs::ProgramError::IOError(io::Error::other(err)))?;
    Ok(true)
}

/// Runs inside the interface's namespace: deletes the cls_bpf filters an agent left at our place
/// ([`legacy_priority`], [`LEGACY_HANDLE`]) on interface `name`, both directions; returns how many there were.
/// The clsact qdisc stays: it may be someone else's too.
pub fn remove_legacy_filters(name: &str) -> usize {
    use aya::programs::links::Link as _;
    Direction::BOTH
        .into_iter()
        .filter(|direction| {
            let (attach_type, priority) = (tc_type(*direction), legacy_priority(*direction));
            // ENOENT (no filter there) and EINVAL (no clsact qdisc) both mean none of ours.
            SchedClassifierLink::attached(name, attach_type, priority, LEGACY_HANDLE, None)
                .is_ok_and(|link| link.detach().is_ok())
        })
        .count()
}

/// Set to `clsact` to use the clsact/cls_bpf path on a kernel that has TCX: the path kernels before 6.6 take,
/// so that it can be exercised (and compared) on a newer kernel too.
pub const TC_MODE_ENV: &str = "NETNS_MONITOR_TC";

/// Whether classifiers attach with TCX (Linux >= 6.6, unless [`TC_MODE_ENV`] says `clsact`); otherwise they go
/// through clsact and cls_bpf. Decided once per process: it is asked for every interface attached.
pub fn tcx_available() -> bool {
    static TCX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TCX.get_or_init(|| {
        let forced_legacy = std::env::var_os(TC_MODE_ENV).is_some_and(|mode| mode == "clsact");
        !forced_legacy && KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
    })
}

/// The clsact + cls_bpf path (no TCX), the filter carrying `classid`. Returns whether a new filter was made
/// (false: a previous agent's filter now runs our program, with this classid).
fn attach_legacy(
    classifier: &mut SchedClassifier,
    name: &str,
    direction: Direction,
    classid: TcHandle,
) -> Result<bool, aya::programs::ProgramError> {
    // EEXIST when the qdisc is there already (ours from before, or someone else's): either is fine.
    let _ = tc::qdisc_add_clsact(name);
    let (attach_type, priority) = (tc_type(direction), legacy_priority(direction));
    // The replace request carries the classid too, so an adopted filter names this agent's slot.
    let existing = SchedClassifierLink::attached(name, attach_type, priority, LEGACY_HANDLE, Some(classid))?;
    let (id, fresh) = match classifier.attach_to_link(existing) {
        Ok(id) => (id, false),
        // No filter at our place: none was left behind, make it.
        Err(err) if has_errno(&err, libc::ENOENT) => {
            let options = NlOptions { priority, handle: LEGACY_HANDLE, classid: Some(classid) };
            (classifier.attach_with_options(name, attach_type, TcAttachOptions::Netlink(options))?, true)
        }
        Err(err) => return Err(err),
    };
    // Out of aya's map (see the module comment), and never detached by us: dropping the link would delete the
    // filter, so it is forgotten; the kernel deletes it with its interface.
    std::mem::forget(classifier.take_link(id)?);
    Ok(fresh)
}

/// Whether a netlink request failed with `errno`. aya's errors are transparent wrappers all the way down, so
/// the code is only reachable by matching the variants.
/// Whether an attach failed with `errno`, in aya's own error or anywhere in its chain: ENODEV when the interface
/// name no longer exists here (renamed or moved away), EEXIST when our program is on the device already.
fn has_errno(err: &aya::programs::ProgramError, errno: i32) -> bool {
    use aya::programs::{ProgramError, tc::TcError};
    let direct = match err {
        ProgramError::TcError(TcError::NetlinkError(err)) | ProgramError::NetlinkError(err) => err.raw_os_error(),
        ProgramError::TcError(TcError::IoError(err)) | ProgramError::IOError(err) => err.raw_os_error(),
        _ => None,
    };
    if direct == Some(errno) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        if err.downcast_ref::<io::Error>().is_some_and(|e| e.raw_os_error() == Some(errno)) {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_classids_are_never_zero_and_fit_the_kernels_16_bits() {
        assert_eq!(u32::from(slot_classid(0)), 1);
        assert_eq!(u32::from(slot_classid(41)), 42);
        let last = netns_monitor_common::traffic::MAX_SLOTS - 1;
        assert_eq!(u32::from(slot_classid(last)), u32::from(u16::MAX));
    }

    #[test]
    fn pin_names_round_trip() {
        assert_eq!(parse_pin_name("4026532300-7-ingress"), Some(TrafficKey { netns: 4026532300, ifindex: 7 }));
        assert_eq!(parse_pin_name("4026532300-7-egress"), Some(TrafficKey { netns: 4026532300, ifindex: 7 }));
        assert_eq!(parse_pin_name("4026532300-7-sideways"), None);
        assert_eq!(parse_pin_name("notes.txt"), None);
    }
}
