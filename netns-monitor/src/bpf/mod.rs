//! Loading and attaching the kernel programs built from `netns-monitor-ebpf`.
//!
//! Start-up order matters: mount tracefs/bpffs if missing ([`fs`]), compute struct offsets from the kernel's
//! BTF ([`btf`], [`offsets`]) and check the tracepoint record layouts ([`format`]) before the object is
//! loaded, so that any mismatch fails loudly with the object named instead of producing wrong events.
//!
//! The agent's programs outlive it: in a persistent pin directory the transition links and the maps they write
//! are pinned, and a restarted agent adopts them without a gap ([`persist`]).

pub mod btf;
pub mod format;
pub mod fs;
pub mod hooks;
pub mod kallsyms;
pub mod memlock;
pub mod offsets;
pub mod persist;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, MapError, PerCpuArray, RingBuf},
    programs::{FEntry, FExit, ProgramError, RawTracePoint, SchedClassifier, TracePoint, links::FdLink},
};
use aya_log::EbpfLogger;
use netns_monitor_common::{
    counters::{
        COUNTER_LOST_EVENTS, COUNTER_PENDING_FAILED, COUNTER_READ_ERRORS, COUNTER_RINGBUF_HIGH_WATER, COUNTER_SLOTS,
        COUNTER_TRAFFIC_NO_ENTRY, COUNTER_TRAFFIC_UNKNOWN_NETNS,
    },
    traffic::{MAX_SLOTS, TrafficConfig},
};
use tokio::io::unix::AsyncFd;

pub use self::hooks::{Destruction, HookChoice, HookInfo, Tier};
use self::hooks::{Hook, Spec};
use crate::trace::{event::Event, stream::EventStream};

/// The eBPF object, built by build.rs for the BPF target and embedded at compile time.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netns-monitor"));

/// Map names shared with `netns-monitor-ebpf/src/maps.rs`.
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    /// Calls between their enter and exit, keyed by thread id.
    pub const PENDING: &str = "PENDING";
    /// With `--filter-pid`: the network namespaces the filtered process made, whose ends pass the filter.
    pub const FILTERED_NETNS: &str = "FILTERED_NETNS";
    /// Per-CPU counters per interface slot; pinned by name under the pin directory, so counting survives agent
    /// restarts.
    pub const TRAFFIC: &str = "TRAFFIC";
    /// The protocol split of `TRAFFIC`, same slots (one entry when the split is off); pinned by name.
    pub const TRAFFIC_PROTOCOLS: &str = "TRAFFIC_PROTOCOLS";
    /// Each interface's counter slot; written by userspace only, pinned by name.
    pub const TRAFFIC_SLOTS: &str = "TRAFFIC_SLOTS";
    /// What each interface counted before the classifiers saw it; written by userspace only, pinned by name.
    pub const TRAFFIC_BASE: &str = "TRAFFIC_BASE";
    /// One u32 the classifiers compare their device memo against; bumped on link and namespace changes.
    pub const LINK_GENERATION: &str = "LINK_GENERATION";
}

/// Where maps and links are pinned so that programs keep counting while the agent is down.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/netns-monitor";

/// Size of the event ring buffer when not overridden (`netns-monitor-ebpf/src/maps.rs`).
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 1024 * 1024;

/// The two classifiers, by the direction they count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// Name of the classifier program in the object (also the `hook` metric label).
    pub fn program(self) -> &'static str {
        match self {
            Direction::Ingress => "tc_ingress",
            Direction::Egress => "tc_egress",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Syscalls whose record layout the programs depend on, with the number of arguments they read.
const SYSCALL_LAYOUTS: &[(&str, usize)] = &[("setns", 2), ("unshare", 1), ("clone", 1), ("clone3", 2)];

/// Errors loading or attaching the programs.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("this binary was built without its eBPF programs (AYA_BUILD_SKIP was set); rebuild it without")]
    NotBuilt,
    #[error(transparent)]
    Mount(#[from] fs::MountError),
    #[error("tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing")]
    NoTracefs,
    #[error("cannot compute kernel struct offsets from BTF")]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error("loading the eBPF object into the kernel failed (needs CAP_BPF and CAP_PERFMON, or root)")]
    Load(#[source] aya::EbpfError),
    #[error(
        "loading the eBPF object into the kernel failed: this kernel (before 5.11) charges BPF maps to \
         RLIMIT_MEMLOCK, which is {limit} bytes and could not be raised (start the agent with CAP_SYS_RESOURCE, \
         or `ulimit -l unlimited` / systemd `LimitMEMLOCK=infinity`)"
    )]
    LoadMemlock {
        limit: u64,
        #[source]
        source: aya::EbpfError,
    },
    #[error("the eBPF object has no {kind} named {name:?}")]
    Missing { kind: &'static str, name: &'static str },
    #[error("program {program}: {action} failed")]
    Program {
        program: &'static str,
        action: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot watch the event ring buffer")]
    Poll(#[source] std::io::Error),
    #[error("cannot create the pin directory {path}")]
    PinDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused the fentry/fexit hooks (tier 1), which --hooks fentry requires: {reason}")]
    Tier1Refused { reason: String },
    #[error("--max-interfaces {value} is out of range: it must be between 1 and {MAX_SLOTS}")]
    MaxInterfaces { value: u32 },
    #[error("cannot enable the kernel's BPF run-time statistics")]
    Stats(#[source] aya::sys::SyscallError),
    #[error(
        "another netns-monitor agent is using the pin directory {path} (stop it first, or give this one another \
         --pin-dir)"
    )]
    PinDirBusy { path: String },
    #[error("the pin directory {path} is not on a BPF file system (bpffs, e.g. under {})", fs::BPFFS)]
    NotBpffs { path: String },
    #[error("cannot open the map pinned at {path} to adopt it")]
    Adopt {
        path: String,
        #[source]
        source: MapError,
    },
    #[error("cannot remove the pin {path}")]
    Unpin {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin the link at {path}")]
    PinLink {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the kernel's verifier spent on one program: how long its load took (verification, mostly) and how
/// many instructions the verifier walked (Linux >= 5.16 reports it; the measure of its work that does not
/// depend on the machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub program: &'static str,
    pub took: Duration,
    pub instructions: Option<u32>,
}

impl Verified {
    fn of(program: &'static str, started: Instant, info: Result<aya::programs::ProgramInfo, ProgramError>) -> Self {
        let instructions = info.ok().and_then(|info| info.verified_instruction_count());
        Self { program, took: started.elapsed(), instructions }
    }
}

/// Kernel statistics of one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    pub run_time: Duration,
    pub run_count: u64,
}

/// How to load the programs.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Size of the event ring buffer in bytes (a power-of-two multiple of the page size); the object's default
    /// (1 MiB) when `None`.
    pub ring_buffer_bytes: Option<u32>,
    /// Report only what this process (tgid in the initial pid namespace) does, filtered in the kernel.
    pub filter_pid: Option<u32>,
    /// Directory for pinned maps and links, kept across runs (the agent: [`DEFAULT_PIN_DIR`] unless told
    /// otherwise): the transition links and their maps are pinned there and adopted by the next load
    /// ([`persist`]), and only one process may use it at a time. `None`: a private directory removed when the
    /// probes are dropped, and links that detach with them (`trace`, tests), so a short-lived user leaves
    /// nothing attached or pinned behind.
    pub pin_dir: Option<PathBuf>,
    /// Which hook tier to load (see [`hooks`]).
    pub hooks: HookChoice,
    /// How the classifiers count.
    pub traffic: TrafficOptions,
}

/// How the classifiers count (see `netns-monitor-ebpf/src/traffic.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficOptions {
    /// How many interfaces can be counted at once: the size of the per-CPU counter arrays, at most
    /// [`MAX_SLOTS`](netns_monitor_common::traffic::MAX_SLOTS).
    pub max_interfaces: u32,
    /// Count by protocol too (TCP, UDP, ICMP, other): four times the counters, and a read of the IP header per
    /// packet.
    pub protocols: bool,
}

/// The default [`TrafficOptions::max_interfaces`]: every veth end counts, both the host's and the namespace's.
pub const DEFAULT_MAX_INTERFACES: u32 = 16 * 1024;

impl Default for TrafficOptions {
    fn default() -> Self {
        Self { max_interfaces: DEFAULT_MAX_INTERFACES, protocols: false }
    }
}

impl TrafficOptions {
    /// Entries of `TRAFFIC_PROTOCOLS`: a slot per interface with the split, else the one an array needs.
    pub fn protocol_entries(&self) -> u32 {
        if self.protocols { self.max_interfaces } else { 1 }
    }
}

/// Totals of the kernel-side self-observation counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events dropped because the ring buffer was full.
    pub lost_events: u64,
    /// Syscall entries that could not be remembered until their exit.
    pub pending_failed: u64,
    /// Failed kernel memory reads (fields reported as 0).
    pub read_errors: u64,
    /// Packets a classifier could not attribute to a namespace (not counted).
    pub traffic_unknown_netns: u64,
    /// Packets of interfaces whose counters were already removed (their namespace was being torn down).
    pub traffic_no_entry: u64,
    /// Highest number of unconsumed bytes in the ring buffer at any submit since the last reset (max over CPUs).
    pub ringbuf_high_water: u64,
}

impl KernelCounters {
    /// Transition events the kernel could not deliver: the ring buffer was full, or the call could not be
    /// remembered from its enter to its exit (the in-flight table was full).
    pub fn events_lost(&self) -> u64 {
        self.lost_events + self.pending_failed
    }
}

/// The loaded and attached programs; dropping it detaches them.
pub struct Probes {
    ebpf: Ebpf,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Filesystems that loading had to mount (tracefs, bpffs), so the caller can say so.
    pub mounted: Vec<fs::Mounted>,
    /// Where maps and links are pinned.
    pub pin_dir: PathBuf,
    /// Size of the event ring buffer in bytes.
    pub ring_buffer_bytes: u32,
    /// Keeps the kernel's run-time statistics on while the probes live (see [`Probes::enable_run_time_stats`]).
    stats: Option<std::os::fd::OwnedFd>,
    /// Whether `pin_dir` is private to these probes and removed with them.
    ephemeral: bool,
    /// Held while a persistent pin directory is in use.
    _lock: Option<persist::PinDirLock>,
    /// Events read out of a ring buffer this load replaced, delivered before the new ring buffer's.
    backlog: Vec<Event>,
    /// What this load took over from a previous agent (persistent pin directory only).
    pub adopted: Adoption,
    /// What loading each program cost the kernel's verifier, in load order.
    pub verified: Vec<Verified>,
    /// The hook tier in use.
    pub hooks: HookInfo,
    /// Whether the transition links are pinned (they then outlive this process).
    pinned_transitions: bool,
}

/// What a load took over from the programs and maps a previous agent left pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    /// Shared maps that were already pinned and are reused (their contents carry on).
    pub maps: Vec<&'static str>,
    /// Pinned transition links that were replaced by this load's.
    pub links: usize,
    /// Events drained from a ring buffer that had to be replaced.
    pub drained: usize,
}

impl Drop for Probes {
    fn drop(&mut self) {
        if self.ephemeral
            && let Err(err) = std::fs::remove_dir_all(&self.pin_dir)
        {
            tracing::warn!(%err, dir = %self.pin_dir.display(), "cannot remove the private pin directory");
        }
    }
}

impl Probes {
    /// Mounts what is missing, computes offsets, loads the object and attaches the transition and lifecycle
    /// programs of the hook tier the kernel accepts (see [`hooks`]).
    pub fn load(options: &LoadOptions) -> Result<Self, BpfError> {
        if EBPF_OBJECT.is_empty() {
            return Err(BpfError::NotBuilt);
        }
        let mounted = fs::ensure_kernel_filesystems()?;
        let offsets = offsets::compute(&btf::Btf::from_sys_fs()?)?;
        memlock::raise();

        let filter_tgid = options.filter_pid.unwrap_or(0);
        let ephemeral = options.pin_dir.is_none();
        let pin_dir = options.pin_dir.clone().unwrap_or_else(private_pin_dir);
        match fs::on_bpffs(&pin_dir) {
            Ok(true) => {}
            Ok(false) => return Err(BpfError::NotBpffs { path: pin_dir.display().to_string() }),
            Err(source) => return Err(BpfError::PinDir { path: pin_dir.display().to_string(), source }),
        }
        std::fs::create_dir_all(&pin_dir)
            .map_err(|source| BpfError::PinDir { path: pin_dir.display().to_string(), source })?;
        let ring_buffer_bytes = options.ring_buffer_bytes.unwrap_or(DEFAULT_RING_BUFFER_BYTES);
        let lock = if ephemeral { None } else { Some(persist::PinDirLock::acquire(&pin_dir)?) };
        let mut adopted = Adoption::default();
        let traffic = options.traffic;
        if traffic.max_interfaces == 0 || traffic.max_interfaces > MAX_SLOTS {
            return Err(BpfError::MaxInterfaces { value: traffic.max_interfaces });
        }
        let replaced_ring = if ephemeral { None } else { persist::unpin_incompatible(&pin_dir, ring_buffer_bytes)? };
        if !ephemeral {
            persist::unpin_incompatible_traffic(&pin_dir, &traffic)?;
        }
        let traffic_config = TrafficConfig {
            slot_from_classid: u32::from(!crate::traffic::attach::tcx_available()),
            protocols: u32::from(traffic.protocols),
        };
        // Only tier 2 uses the address; reading the kernel's symbol table takes tens of milliseconds.
        let queued_exit = if options.hooks == HookChoice::Fentry {
            Err("tier 1 forced".to_owned())
        } else {
            queued_exit_address(&offsets)
        };
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&pin_dir);
        loader.override_global("OFFSETS", &offsets, true);
        loader.override_global("FQDIR_WORK_FN", queued_exit.as_ref().unwrap_or(&0), true);
        loader.override_global("FILTER_TGID", &filter_tgid, true);
        loader.override_global("TRAFFIC_CONFIG", &traffic_config, true);
        loader.map_max_entries(maps::TRAFFIC, traffic.max_interfaces);
        loader.map_max_entries(maps::TRAFFIC_PROTOCOLS, traffic.protocol_entries());
        if let Some(bytes) = options.ring_buffer_bytes {
            loader.map_max_entries(maps::EVENTS, bytes);
        }
        if !ephemeral {
            for name in persist::SHARED_MAPS {
                let path = pin_dir.join(name);
                if path.exists() {
                    adopted.maps.push(name);
                }
                loader.map_pin_path(name, path);
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|source| match memlock::limiting() {
            Some(limit) => BpfError::LoadMemlock { limit, source },
            None => BpfError::Load(source),
        })?;
        let logger = EbpfLogger::init(&mut ebpf)
            .inspect_err(|err| tracing::warn!(%err, "kernel-side log messages will not be shown"))
            .ok();
        let mut verified = Vec::new();
        let mut hooks = choose_tier(&mut ebpf, options.hooks, &offsets, queued_exit, &mut verified)?;
        match &hooks.fallback {
            None => tracing::info!(tier = 1, "hooks: fentry/fexit on the syscall and namespace functions"),
            Some(reason) => tracing::info!(tier = 2, reason, "hooks: syscall tracepoints (tier 1 not used)"),
        }
        // Tier 1's links (and the fork hook's) are bpf links on every kernel that has fentry; pinning a
        // tracepoint's link needs perf-event bpf links (Linux >= 5.15). Without them tier 2 stops with the agent,
        // as it did before pinning.
        let pin_links = !ephemeral && (hooks.tier == Tier::Fentry || aya::features().bpf_perf_link());
        if !ephemeral && !pin_links {
            tracing::warn!(
                "this kernel cannot pin tracepoint links: transitions are not traced while the agent is down"
            );
        }
        let transitions_dir = pin_dir.join(persist::TRANSITIONS_DIR);
        if pin_links {
            std::fs::create_dir_all(&transitions_dir)
                .map_err(|source| BpfError::PinDir { path: transitions_dir.display().to_string(), source })?;
        }
        let mut replaced_links = Vec::new();
        for spec in hooks.programs() {
            let link = match attach(&mut ebpf, spec, pin_links) {
                Ok(link) => link,
                Err(err) if spec.program == hooks::QUEUED_EXIT.program => {
                    // Nothing of the tier is attached yet, so userspace can still take destruction over whole.
                    let reason = error_chain(&err);
                    tracing::info!(reason, "namespace destruction from netns ids and nsfs file handles instead");
                    hooks.destruction = Destruction::NetnsId;
                    hooks.destruction_fallback = Some(reason);
                    continue;
                }
                Err(err) => return Err(err),
            };
            if let Some(link) = link
                && let Some(old) = persist::pin_replacing(link, &transitions_dir, spec.program)?
            {
                replaced_links.push(old);
            }
        }
        adopted.links = replaced_links.len();
        // Even when this load pins nothing: a previous agent on tier 1 (pinnable on 5.10) left links that would
        // go on emitting beside this tier's programs.
        if !ephemeral && transitions_dir.is_dir() {
            let programs: Vec<&str> =
                if pin_links { hooks.programs().iter().map(|spec| spec.program).collect() } else { Vec::new() };
            replaced_links.extend(persist::remove_stale_links(&transitions_dir, &programs)?);
        }
        let backlog = match replaced_ring {
            Some(old) => {
                // Only once no old program can write into it is the old ring buffer's content final.
                if !persist::wait_links_released(&replaced_links, Duration::from_secs(5)) {
                    tracing::warn!("the replaced programs are still attached; events they emit from now on are lost");
                }
                drain(old)?
            }
            None => Vec::new(),
        };
        adopted.drained = backlog.len();
        // The classifiers are attached per interface later (crate::traffic); load (verify) them now.
        for direction in Direction::BOTH {
            let program = direction.program();
            let classifier: &mut SchedClassifier = ebpf
                .program_mut(program)
                .ok_or(BpfError::Missing { kind: "program", name: program })?
                .try_into()
                .map_err(|source| BpfError::Program { program, action: "type check".into(), source })?;
            let started = Instant::now();
            classifier.load().map_err(|source| BpfError::Program {
                program,
                action: "load (verifier)".into(),
                source,
            })?;
            verified.push(Verified::of(program, started, classifier.info()));
        }
        let total: Duration = verified.iter().map(|v| v.took).sum();
        tracing::info!(ms = total.as_millis() as u64, programs = verified.len(), "programs verified");
        Ok(Self {
            ebpf,
            logger,
            mounted,
            pin_dir,
            ring_buffer_bytes,
            stats: None,
            ephemeral,
            _lock: lock,
            backlog,
            adopted,
            verified,
            hooks,
            pinned_transitions: pin_links,
        })
    }

    /// Whether the transition programs stay attached after this process (pinned links).
    pub fn pins_transitions(&self) -> bool {
        self.pinned_transitions
    }

    /// The loaded classifier for `direction`, to attach to interfaces.
    pub fn classifier(&mut self, direction: Direction) -> Result<&mut SchedClassifier, BpfError> {
        let program = direction.program();
        self.ebpf
            .program_mut(program)
            .ok_or(BpfError::Missing { kind: "program", name: program })?
            .try_into()
            .map_err(|source| BpfError::Program { program, action: "type check".into(), source })
    }

    /// Turns on the kernel's per-program run-time statistics (`BPF_ENABLE_STATS`) for as long as these probes
    /// live. They cost a clock read per program run, so only the agent asks for them.
    pub fn enable_run_time_stats(&mut self) -> Result<(), BpfError> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(BpfError::Stats)?;
        self.stats = Some(fd);
        Ok(())
    }

    /// Run time and run count of every program, from the kernel's statistics (zero unless they are enabled).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats { name: name.to_owned(), run_time: info.run_time(), run_count: info.run_count() })
            })
            .collect()
    }

    /// Invalidates the classifiers' per-CPU device memos: call it whenever a link or a namespace appears, goes
    /// away or moves, so no packet is attributed to a device's old namespace for longer than that.
    pub fn bump_link_generation(&mut self) -> Result<(), BpfError> {
        let map_err = |source| BpfError::Map { map: maps::LINK_GENERATION, source };
        let map = self
            .ebpf
            .map_mut(maps::LINK_GENERATION)
            .ok_or(BpfError::Missing { kind: "map", name: maps::LINK_GENERATION })?;
        let mut array: aya::maps::Array<&mut MapData, u32> = aya::maps::Array::try_from(map).map_err(map_err)?;
        let current = array.get(&0, 0).map_err(map_err)?;
        array.set(0, current.wrapping_add(1), 0).map_err(map_err)
    }

    /// Zeroes the ring buffer high-water mark on every CPU (the agent does it after each scrape).
    pub fn reset_ringbuf_high_water(&mut self) -> Result<(), BpfError> {
        let map_err = |source| BpfError::Map { map: maps::COUNTERS, source };
        let map = self.ebpf.map_mut(maps::COUNTERS).ok_or(BpfError::Missing { kind: "map", name: maps::COUNTERS })?;
        let mut array: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(map).map_err(map_err)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| BpfError::Poll(err))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus]).map_err(BpfError::Poll)?;
        array.set(COUNTER_RINGBUF_HIGH_WATER, zeros, 0).map_err(map_err)
    }

    /// Takes the event ring buffer as an async stream; only one stream exists per load.
    pub fn events(&mut self) -> Result<EventStream, BpfError> {
        let map = self.ebpf.take_map(maps::EVENTS).ok_or(BpfError::Missing { kind: "map", name: maps::EVENTS })?;
        let ring = RingBuf::try_from(map).map_err(|source| BpfError::Map { map: maps::EVENTS, source })?;
        EventStream::with_backlog(ring, std::mem::take(&mut self.backlog)).map_err(BpfError::Poll)
    }

    /// Forwards the programs' own log lines (aya-log) to this process's logger until the runtime stops.
    /// Must be called inside a tokio runtime; a second call does nothing.
    pub fn forward_kernel_logs(&mut self) -> Result<(), BpfError> {
        let Some(logger) = self.logger.take() else {
            return Ok(());
        };
        // SAFETY: the logger owns its ring buffer fd, which stays open and unchanged for as long as the logger
        // lives, and the logger is dropped only together with the AsyncFd that owns it.
        let mut logger = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|err| BpfError::Poll(err.into_parts().1))?;
        tokio::spawn(async move {
            while let Ok(mut guard) = logger.readable_mut().await {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
        Ok(())
    }

    /// Reads the kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters, BpfError> {
        let map_err = |source| BpfError::Map { map: maps::COUNTERS, source };
        let map = self.ebpf.map(maps::COUNTERS).ok_or(BpfError::Missing { kind: "map", name: maps::COUNTERS })?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_err)?;
        let mut totals = [0u64; COUNTER_SLOTS as usize];
        for (slot, total) in totals.iter_mut().enumerate() {
            let values = array.get(&(slot as u32), 0).map_err(map_err)?;
            // A high-water mark is a maximum, everything else a count.
            *total = if slot as u32 == COUNTER_RINGBUF_HIGH_WATER {
                values.iter().copied().max().unwrap_or(0)
            } else {
                values.iter().sum()
            };
        }
        Ok(KernelCounters {
            lost_events: totals[COUNTER_LOST_EVENTS as usize],
            pending_failed: totals[COUNTER_PENDING_FAILED as usize],
            read_errors: totals[COUNTER_READ_ERRORS as usize],
            traffic_unknown_netns: totals[COUNTER_TRAFFIC_UNKNOWN_NETNS as usize],
            traffic_no_entry: totals[COUNTER_TRAFFIC_NO_ENTRY as usize],
            ringbuf_high_water: totals[COUNTER_RINGBUF_HIGH_WATER as usize],
        })
    }
}

/// A pin directory nobody else uses: `/sys/fs/bpf/netns-monitor-<pid>-<n>`. Private directories of
/// processes that died without dropping their probes (SIGKILL) are removed on the way.
fn private_pin_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    remove_orphaned_private_dirs();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PathBuf::from(format!("{}-{}-{n}", DEFAULT_PIN_DIR, std::process::id()))
}

/// Removes `netns-monitor-<pid>-<n>` directories whose process is gone.
fn remove_orphaned_private_dirs() {
    let Some((parent, prefix)) = DEFAULT_PIN_DIR.rsplit_once('/') else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u32>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::debug!(dir = %entry.path().display(), "removed an orphaned private pin directory"),
                Err(err) => {
                    tracing::debug!(%err, dir = %entry.path().display(), "cannot remove an orphaned pin directory")
                }
            }
        }
    }
}

/// Every event left in a ring buffer nothing writes into any more.
fn drain(old: MapData) -> Result<Vec<Event>, BpfError> {
    let mut ring =
        RingBuf::try_from(Map::RingBuf(old)).map_err(|source| BpfError::Map { map: maps::EVENTS, source })?;
    let mut events = Vec::new();
    while let Some(record) = ring.next() {
        match Event::decode(&record) {
            Ok(event) => events.push(event),
            Err(err) => tracing::warn!(%err, "dropping an undecodable record of the replaced ring buffer"),
        }
    }
    tracing::info!(events = events.len(), "drained the replaced ring buffer");
    Ok(events)
}

/// Set to `netns-id` to make tier 2 leave namespace destruction to userspace (netns ids and nsfs file handles)
/// even where its kernel probe would work: how the tests reach that path on every kernel.
pub const DESTRUCTION_ENV: &str = "NETNS_MONITOR_DESTRUCTION";

/// `fqdir_work_fn`'s address for tier 2's destruction probe, or why the probe cannot be used.
fn queued_exit_address(offsets: &netns_monitor_common::offsets::KernelOffsets) -> Result<u64, String> {
    use netns_monitor_common::offsets::UNAVAILABLE;
    if std::env::var(DESTRUCTION_ENV).is_ok_and(|value| value == "netns-id") {
        return Err(format!("forced ({DESTRUCTION_ENV}=netns-id)"));
    }
    let path = [
        ("work_struct.func", offsets.work_func),
        ("fqdir.destroy_work", offsets.fqdir_destroy_work),
        ("fqdir.net", offsets.fqdir_net),
        ("net.ipv4.fqdir", offsets.net_ipv4_fqdir),
    ];
    if let Some((member, _)) = path.iter().find(|(_, offset)| *offset == UNAVAILABLE) {
        return Err(format!("this kernel's BTF has no {member}"));
    }
    kallsyms::function_address(hooks::QUEUED_EXIT_FUNCTION).map_err(|err| error_chain(&err))
}

/// Loads the programs of the tier `choice` asks for: tier 1 unless told otherwise, tier 2 where tier 1 is forced
/// off or (with `auto`) refused. Tier 2 adds its destruction probe where `queued_exit` has the function's
/// address and the verifier accepts the program.
fn choose_tier(
    ebpf: &mut Ebpf,
    choice: HookChoice,
    offsets: &netns_monitor_common::offsets::KernelOffsets,
    queued_exit: Result<u64, String>,
    verified: &mut Vec<Verified>,
) -> Result<HookInfo, BpfError> {
    let fallback = match choice {
        HookChoice::Tracepoint => "forced (--hooks tracepoint)".to_owned(),
        HookChoice::Fentry | HookChoice::Auto => match load_tier1(ebpf, offsets, verified) {
            Ok(()) => {
                return Ok(HookInfo {
                    tier: Tier::Fentry,
                    chosen: choice,
                    fallback: None,
                    destruction: Destruction::NetdevExit,
                    destruction_fallback: None,
                });
            }
            Err(reason) if choice == HookChoice::Auto => {
                // What tier 1 loaded must not stay loaded beside tier 2 (the fork hook is in both).
                for spec in hooks::FENTRY {
                    unload(ebpf, spec);
                }
                verified.clear();
                reason
            }
            Err(reason) => return Err(BpfError::Tier1Refused { reason }),
        },
    };
    let tracefs: PathBuf = fs::tracefs_path()?.ok_or(BpfError::NoTracefs)?;
    for (syscall, args) in SYSCALL_LAYOUTS {
        format::check_syscall(&tracefs, syscall, *args)?;
    }
    for spec in hooks::TRACEPOINTS {
        load(ebpf, spec, None, verified)?;
    }
    let probe = queued_exit.and_then(|_| load(ebpf, &hooks::QUEUED_EXIT, None, verified).map_err(|e| error_chain(&e)));
    let (destruction, destruction_fallback) = match probe {
        Ok(()) => (Destruction::QueuedWork, None),
        Err(reason) => {
            tracing::info!(reason, "namespace destruction from netns ids and nsfs file handles (no kernel probe)");
            (Destruction::NetnsId, Some(reason))
        }
    };
    tracing::debug!(hook = destruction.hook(), "namespace destruction");
    Ok(HookInfo { tier: Tier::Tracepoint, chosen: choice, fallback: Some(fallback), destruction, destruction_fallback })
}

/// Loads tier 1; the reason, one line, when the kernel (or this architecture) does not allow it.
fn load_tier1(
    ebpf: &mut Ebpf,
    offsets: &netns_monitor_common::offsets::KernelOffsets,
    verified: &mut Vec<Verified>,
) -> Result<(), String> {
    use netns_monitor_common::offsets::UNAVAILABLE;
    if offsets.regs_arg.contains(&UNAVAILABLE) {
        return Err("no syscall register offsets for this architecture (x86_64 only)".to_owned());
    }
    let btf = aya::Btf::from_sys_fs().map_err(|err| format!("cannot read the kernel's BTF: {err}"))?;
    for spec in hooks::FENTRY {
        load(ebpf, spec, Some(&btf), verified).map_err(|err| error_chain(&err))?;
    }
    Ok(())
}

/// Loads (verifies) one program; fentry/fexit programs need the kernel's BTF to find their function.
fn load(ebpf: &mut Ebpf, spec: &Spec, btf: Option<&aya::Btf>, verified: &mut Vec<Verified>) -> Result<(), BpfError> {
    let program = spec.program;
    let prog = ebpf.program_mut(program).ok_or(BpfError::Missing { kind: "program", name: program })?;
    let failed = |action: String| move |source| BpfError::Program { program, action, source };
    let started = Instant::now();
    let info = match spec.hook {
        Hook::TracePoint { .. } => {
            let tp: &mut TracePoint = prog.try_into().map_err(failed("type check".into()))?;
            tp.load().map_err(failed("load (verifier)".into()))?;
            tp.info()
        }
        Hook::RawTracePoint(_) => {
            let tp: &mut RawTracePoint = prog.try_into().map_err(failed("type check".into()))?;
            tp.load().map_err(failed("load (verifier)".into()))?;
            tp.info()
        }
        Hook::FEntry(function) | Hook::FExit(function) => {
            let name = function.name().ok_or(BpfError::Missing { kind: "syscall function", name: program })?;
            let btf = btf.ok_or(BpfError::Missing { kind: "kernel BTF for", name: program })?;
            let action = format!("load on {name} (verifier)");
            if let Hook::FEntry(_) = spec.hook {
                let fentry: &mut FEntry = prog.try_into().map_err(failed("type check".into()))?;
                fentry.load(&name, btf).map_err(failed(action))?;
                fentry.info()
            } else {
                let fexit: &mut FExit = prog.try_into().map_err(failed("type check".into()))?;
                fexit.load(&name, btf).map_err(failed(action))?;
                fexit.info()
            }
        }
    };
    verified.push(Verified::of(program, started, info));
    Ok(())
}

/// Unloads one program if it is loaded (nothing is attached yet when this runs).
fn unload(ebpf: &mut Ebpf, spec: &Spec) {
    let Some(prog) = ebpf.program_mut(spec.program) else { return };
    let result = match spec.hook {
        Hook::TracePoint { .. } => <&mut TracePoint>::try_from(prog).map(|p| p.unload()),
        Hook::RawTracePoint(_) => <&mut RawTracePoint>::try_from(prog).map(|p| p.unload()),
        Hook::FEntry(_) => <&mut FEntry>::try_from(prog).map(|p| p.unload()),
        Hook::FExit(_) => <&mut FExit>::try_from(prog).map(|p| p.unload()),
    };
    if let Ok(Err(err)) | Err(err) = result {
        tracing::debug!(program = spec.program, %err, "cannot unload a program of the refused tier");
    }
}

/// Attaches one loaded program. With `take`, returns its link for the caller to pin (the program then no longer
/// detaches it when dropped).
fn attach(ebpf: &mut Ebpf, spec: &Spec, take: bool) -> Result<Option<FdLink>, BpfError> {
    let program = spec.program;
    let prog = ebpf.program_mut(program).ok_or(BpfError::Missing { kind: "program", name: program })?;
    let failed = |action: &str| {
        let action = action.to_owned();
        move |source| BpfError::Program { program, action, source }
    };
    match spec.hook {
        Hook::TracePoint { category, event } => {
            let tp: &mut TracePoint = prog.try_into().map_err(failed("type check"))?;
            let id = tp.attach(category, event).map_err(failed(&format!("attach to tracepoint {category}/{event}")))?;
            if take {
                let link = tp.take_link(id).map_err(failed("take the link"))?;
                // A perf-event bpf link (the caller checked the kernel has them), so this conversion holds.
                let link = FdLink::try_from(link)
                    .map_err(|err| failed("take the link")(ProgramError::IOError(std::io::Error::other(err))))?;
                return Ok(Some(link));
            }
        }
        Hook::RawTracePoint(name) => {
            let tp: &mut RawTracePoint = prog.try_into().map_err(failed("type check"))?;
            let id = tp.attach(name).map_err(failed(&format!("attach to raw tracepoint {name}")))?;
            if take {
                return Ok(Some(tp.take_link(id).map_err(failed("take the link"))?.into()));
            }
        }
        Hook::FEntry(function) => {
            let fentry: &mut FEntry = prog.try_into().map_err(failed("type check"))?;
            let id = fentry.attach().map_err(failed(&format!("attach fentry to {:?}", function.name())))?;
            if take {
                return Ok(Some(fentry.take_link(id).map_err(failed("take the link"))?.into()));
            }
        }
        Hook::FExit(function) => {
            let fexit: &mut FExit = prog.try_into().map_err(failed("type check"))?;
            let id = fexit.attach().map_err(failed(&format!("attach fexit to {:?}", function.name())))?;
            if take {
                return Ok(Some(fexit.take_link(id).map_err(failed("take the link"))?.into()));
            }
        }
    }
    Ok(None)
}

/// An error and its causes on one line, for logs.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
