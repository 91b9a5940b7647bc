//! Loading and attaching the kernel programs built from `netns-monitor-ebpf`.
//!
//! Start-up order matters: mount tracefs/bpffs if missing ([`fs`]), compute struct offsets from the kernel's
//! BTF ([`btf`], [`offsets`]) and check the tracepoint record layouts ([`format`]) before the object is
//! loaded, so that any mismatch fails loudly with the object named instead of producing wrong events.

pub mod btf;
pub mod format;
pub mod fs;
pub mod offsets;

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use aya_log::EbpfLogger;
use netns_monitor_common::counters::{COUNTER_LOST_EVENTS, COUNTER_PENDING_FAILED, COUNTER_READ_ERRORS, COUNTER_SLOTS};
use tokio::io::unix::AsyncFd;

use crate::trace::stream::EventStream;

/// The eBPF object, built by build.rs for the BPF target and embedded at compile time.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netns-monitor"));

/// Map names shared with `netns-monitor-ebpf/src/maps.rs`.
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug)]
enum Hook {
    TracePoint { category: &'static str, event: &'static str },
    RawTracePoint(&'static str),
}

/// One program of the object and its hook.
#[derive(Clone, Copy, Debug)]
struct Spec {
    program: &'static str,
    hook: Hook,
}

const fn syscall(program: &'static str) -> Spec {
    Spec { program, hook: Hook::TracePoint { category: "syscalls", event: program } }
}

/// Every program, in attach order: exits and the fork hook before the enters that fill `PENDING`, so no entry
/// is recorded that nothing would complete.
const PROGRAMS: &[Spec] = &[
    syscall("sys_exit_setns"),
    syscall("sys_exit_unshare"),
    syscall("sys_exit_clone"),
    syscall("sys_exit_clone3"),
    Spec { program: "sched_process_fork", hook: Hook::RawTracePoint("sched_process_fork") },
    syscall("sys_enter_setns"),
    syscall("sys_enter_unshare"),
    syscall("sys_enter_clone"),
    syscall("sys_enter_clone3"),
];

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
}

/// How to load the programs.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Size of the event ring buffer in bytes (a power-of-two multiple of the page size); the object's default
    /// (1 MiB) when `None`.
    pub ring_buffer_bytes: Option<u32>,
    /// Report only what this process (tgid in the initial pid namespace) does, filtered in the kernel.
    pub filter_pid: Option<u32>,
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
}

/// The loaded and attached programs; dropping it detaches them.
pub struct Probes {
    ebpf: Ebpf,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Filesystems that loading had to mount (tracefs, bpffs), so the caller can say so.
    pub mounted: Vec<fs::Mounted>,
}

impl Probes {
    /// Mounts what is missing, computes offsets, loads the object and attaches every transition tracepoint.
    pub fn load(options: &LoadOptions) -> Result<Self, BpfError> {
        if EBPF_OBJECT.is_empty() {
            return Err(BpfError::NotBuilt);
        }
        let mounted = fs::ensure_kernel_filesystems()?;
        let tracefs: PathBuf = fs::tracefs_path()?.ok_or(BpfError::NoTracefs)?;
        for (syscall, args) in SYSCALL_LAYOUTS {
            format::check_syscall(&tracefs, syscall, *args)?;
        }
        let offsets = offsets::compute(&btf::Btf::from_sys_fs()?)?;
        raise_memlock_limit();

        let filter_tgid = options.filter_pid.unwrap_or(0);
        let mut loader = EbpfLoader::new();
        loader.override_global("OFFSETS", &offsets, true);
        loader.override_global("FILTER_TGID", &filter_tgid, true);
        if let Some(bytes) = options.ring_buffer_bytes {
            loader.map_max_entries(maps::EVENTS, bytes);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(BpfError::Load)?;
        let logger = EbpfLogger::init(&mut ebpf)
            .inspect_err(|err| tracing::warn!(%err, "kernel-side log messages will not be shown"))
            .ok();
        for spec in PROGRAMS {
            attach(&mut ebpf, spec)?;
        }
        Ok(Self { ebpf, logger, mounted })
    }

    /// Takes the event ring buffer as an async stream; only one stream exists per load.
    pub fn events(&mut self) -> Result<EventStream, BpfError> {
        let map = self.ebpf.take_map(maps::EVENTS).ok_or(BpfError::Missing { kind: "map", name: maps::EVENTS })?;
        let ring = RingBuf::try_from(map).map_err(|source| BpfError::Map { map: maps::EVENTS, source })?;
        EventStream::new(ring).map_err(BpfError::Poll)
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
            *total = array.get(&(slot as u32), 0).map_err(map_err)?.iter().sum();
        }
        Ok(KernelCounters {
            lost_events: totals[COUNTER_LOST_EVENTS as usize],
            pending_failed: totals[COUNTER_PENDING_FAILED as usize],
            read_errors: totals[COUNTER_READ_ERRORS as usize],
        })
    }
}

/// Loads (verifies) and attaches one program.
fn attach(ebpf: &mut Ebpf, spec: &Spec) -> Result<(), BpfError> {
    let program = spec.program;
    let prog = ebpf.program_mut(program).ok_or(BpfError::Missing { kind: "program", name: program })?;
    let failed = |action: &str| {
        let action = action.to_owned();
        move |source| BpfError::Program { program, action, source }
    };
    match spec.hook {
        Hook::TracePoint { category, event } => {
            let tp: &mut TracePoint = prog.try_into().map_err(failed("type check"))?;
            tp.load().map_err(failed("load (verifier)"))?;
            tp.attach(category, event).map_err(failed(&format!("attach to tracepoint {category}/{event}")))?;
        }
        Hook::RawTracePoint(name) => {
            let tp: &mut RawTracePoint = prog.try_into().map_err(failed("type check"))?;
            tp.load().map_err(failed("load (verifier)"))?;
            tp.attach(name).map_err(failed(&format!("attach to raw tracepoint {name}")))?;
        }
    }
    Ok(())
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

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use memcg and ignore it.
fn raise_memlock_limit() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(err) = setrlimit(Resource::RLIMIT_MEMLOCK, libc::RLIM_INFINITY, libc::RLIM_INFINITY) {
        tracing::debug!(%err, "could not raise RLIMIT_MEMLOCK (only matters before Linux 5.11)");
    }
}
