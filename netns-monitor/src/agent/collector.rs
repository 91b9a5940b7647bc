//! The `/metrics` content (names and labels documented in docs/metrics.md).
//!
//! Counters the event loop increments (transitions, lifecycle, attach failures), the build and the process
//! are ordinary registered metrics. Everything describing the current state is read fresh at each scrape by
//! [`StateCollector`] into a [`Snapshot`] (a scan of the host's namespaces, the pinned traffic map and the
//! kernel's counters) and written straight to text. Reading it fresh is what makes a vanished namespace lose
//! all its series within one scrape.
//!
//! Why not the prometheus crate for the state: with 10,000 namespaces a scrape has about 470,000 series.
//! Building them as metric vectors (a hash, label vectors and a protobuf message per series) then encoding
//! them took 2.5 s and hundreds of MB; writing the same text directly takes a fraction of that (measured with
//! `cargo xtask bench scrape`, see the README). The output is byte for byte what the crate's `TextEncoder`
//! would write (families sorted by name, series by label values, labels by name), which a unit test checks
//! against the crate itself.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use netns_monitor_common::traffic::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_OTHER, PROTO_TCP, PROTO_UDP};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, core::Collector, proto::MetricFamily};

use super::topology::Topology;
use crate::{
    bpf::{KernelCounters, Probes, ProgramStats},
    inventory::{
        ContainerHint, Inventory, Namer, ScanOptions,
        orphans::{self, Orphans},
    },
    traffic::counters::{Totals, TrafficMap},
};

/// Protocol label values in the order the exposition sorts them, with their index in the counters.
const PROTOCOLS_SORTED: [(&str, usize); 4] =
    [("icmp", PROTO_ICMP), ("other", PROTO_OTHER), ("tcp", PROTO_TCP), ("udp", PROTO_UDP)];

/// Counters the agent's event loop increments.
#[derive(Clone)]
pub struct LoopMetrics {
    pub transitions: IntCounterVec,
    pub transition_errors: IntCounterVec,
    pub created: IntCounter,
    pub destroyed: IntCounter,
    pub untracked: IntCounter,
    pub attach_failures: IntCounterVec,
}

/// Everything `/metrics` serves.
pub struct Metrics {
    /// The registered metrics (event loop counters, build, process); the state is written beside them.
    pub registry: Registry,
    pub looped: LoopMetrics,
    state: StateCollector,
    /// One scrape renders at a time; concurrent scrapers wait for it. Without this, clients that time out and
    /// retry against a large host each start another render (spawn_blocking) while the previous ones still
    /// run: an agent with 10,000 namespaces and an impatient scraper reached 17 GB this way.
    rendering: Mutex<()>,
}

/// Errors building the registry (only a programming error can cause one: duplicate or invalid names).
#[derive(Debug, thiserror::Error)]
#[error("cannot register the metrics")]
pub struct MetricsError(#[source] pub prometheus::Error);

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Registers every metric; `state` provides the per-scrape part.
    pub fn new(state: StateCollector, hooks: &crate::bpf::HookInfo) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let looped = LoopMetrics {
            transitions: IntCounterVec::new(
                opts("netns_monitor_transitions_total", "Namespace syscalls, once per namespace type changed."),
                &["syscall", "type"],
            )
            .map_err(MetricsError)?,
            transition_errors: IntCounterVec::new(
                opts("netns_monitor_transition_errors_total", "Failed namespace syscalls by errno."),
                &["syscall", "errno"],
            )
            .map_err(MetricsError)?,
            created: IntCounter::with_opts(opts(
                "netns_monitor_netns_created_total",
                "Network namespaces created since the agent started.",
            ))
            .map_err(MetricsError)?,
            destroyed: IntCounter::with_opts(opts(
                "netns_monitor_netns_destroyed_total",
                "Network namespaces destroyed since the agent started.",
            ))
            .map_err(MetricsError)?,
            untracked: IntCounter::with_opts(opts(
                "netns_monitor_netns_untracked_total",
                "Namespaces seen created but not reachable, so their destruction cannot be reported.",
            ))
            .map_err(MetricsError)?,
            attach_failures: IntCounterVec::new(
                opts("netns_monitor_attach_failures_total", "Failed classifier attachments."),
                &["hook"],
            )
            .map_err(MetricsError)?,
        };
        // Both hooks exist from the start at 0: a dashboard or alert can tell "no failures" from "no data".
        for hook in ["tc_ingress", "tc_egress"] {
            looped.attach_failures.with_label_values(&[hook]);
        }
        let build = IntGaugeVec::new(
            opts("netns_monitor_build_info", "Build of the running agent."),
            &["version", "revision", "rustc"],
        )
        .map_err(MetricsError)?;
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("NETNS_MONITOR_REVISION"),
                env!("NETNS_MONITOR_RUSTC"),
            ])
            .set(1);
        let hook_info = IntGaugeVec::new(
            opts(
                "netns_monitor_hook_info",
                "Kernel hooks carrying the transition and namespace events: tier 1 fentry/fexit (no cost to other \
                 syscalls), tier 2 syscall tracepoints; destruction from the kernel on both, or from netns ids \
                 where tier 2's probe is unavailable.",
            ),
            &["tier", "hooks", "destruction", "chosen", "fallback"],
        )
        .map_err(MetricsError)?;
        let destruction = hooks.destruction.label();
        // A label, not a log: the first line of the refusal, bounded (a verifier log can run to kilobytes).
        let fallback: String =
            hooks.fallback.as_deref().unwrap_or("").lines().next().unwrap_or("").chars().take(200).collect();
        hook_info
            .with_label_values(&[
                &hooks.tier.number().to_string(),
                hooks.tier.name(),
                destruction,
                &hooks.chosen.to_string(),
                &fallback,
            ])
            .set(1);
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(hook_info),
            Box::new(looped.transitions.clone()),
            Box::new(looped.transition_errors.clone()),
            Box::new(looped.created.clone()),
            Box::new(looped.destroyed.clone()),
            Box::new(looped.untracked.clone()),
            Box::new(looped.attach_failures.clone()),
            Box::new(build),
            Box::new(super::process::ProcessMetrics::for_self()),
        ];
        for collector in collectors {
            registry.register(collector).map_err(MetricsError)?;
        }
        Ok(Self { registry, looped, state, rendering: Mutex::new(()) })
    }

    /// The exposition text (an error makes the scrape fail rather than serve a partial page).
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let _one = self.rendering.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let snapshot = self.state.snapshot();
        let mut out = String::with_capacity(self.state.last_len.load(Ordering::Relaxed) + 4096);
        write_exposition(&snapshot, &self.registry.gather(), &mut out)?;
        drop(snapshot);
        // Not at every scrape: memory given back is faulted in again by the next one (measured: +20 ms a
        // scrape with 1,000 namespaces). Once a minute bounds what bursts (event storms, rescans) leave behind.
        let mut trimmed = self.state.last_trim.lock().unwrap_or_else(|p| p.into_inner());
        if trimmed.is_none_or(|at| at.elapsed() >= TRIM_EVERY) {
            release_free_memory();
            *trimmed = Some(Instant::now());
        }
        drop(trimmed);
        self.state.last_len.store(out.len(), Ordering::Relaxed);
        *self.state.last_duration.lock().unwrap_or_else(|p| p.into_inner()) = started.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// Returns the allocator's free memory to the kernel. The agent's start-up (link dumps of every namespace it
/// enters) and every scrape (a few hundred thousand short strings with 10,000 namespaces) free most of what they
/// allocate, but glibc keeps freed memory mapped in its arenas: with 3,000 namespaces 62 of an idle agent's
/// 77 MB resident were free heap (measured when start-up still made a thread and a runtime per namespace), and
/// `malloc_trim` brought it to 15 MB.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only gives free pages of the arenas back to the kernel
    // and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the state at each scrape.
pub struct StateCollector {
    topology: Arc<Mutex<Topology>>,
    probes: Arc<Mutex<Probes>>,
    traffic: TrafficMap,
    /// How long the previous scrape took (reported by the next one).
    last_duration: Mutex<f64>,
    /// Size of the previous exposition, to allocate the next one at once.
    last_len: AtomicUsize,
    /// When a scrape last gave free memory back (see [`TRIM_EVERY`]).
    last_trim: Mutex<Option<Instant>>,
    /// Each namespace's container as the previous scrape found it, with the first pid it was read from: a
    /// namespace keeps its container while that process lives, and reading /proc for it on every scrape
    /// tripled the scrape (6.6 ms against 2.5 ms with 100 process-held namespaces).
    containers: Mutex<HashMap<u32, (u32, Option<ContainerHint>)>>,
}

/// How often a scrape gives the allocator's free memory back to the kernel.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// One namespace's row of the per-namespace families.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetnsRow {
    pub inode: u32,
    pub name: String,
    pub nsid: Option<i32>,
    pub source: &'static str,
    pub processes: u64,
    pub interfaces: u64,
    /// The container's runtime, id and name (empty when it is in none, or the runtime records no name).
    pub container_runtime: &'static str,
    pub container_id: String,
    pub container_name: String,
    /// Seconds no process has been in it, while a bind mount holds it ([`crate::inventory::orphans`]).
    pub orphaned_seconds: Option<u64>,
    /// Processes that got into it, by syscall in `Syscall::ALL`'s order ([`crate::lifecycle::arrivals`]).
    pub arrivals: [u64; 4],
}

/// `Syscall::ALL` indices in the order of their names (the exposition sorts series by label value).
const SYSCALLS_SORTED: [(&str, usize); 4] = [("clone", 2), ("clone3", 3), ("setns", 0), ("unshare", 1)];

/// One counted interface.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InterfaceRow {
    pub netns: u32,
    /// The namespace's `name` label.
    pub name: String,
    pub device: String,
    pub totals: Totals,
}

/// Everything one scrape reports about the current state, read before any text is written.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub namespaces: Vec<NetnsRow>,
    /// Interfaces the agent counts that have counters.
    pub interfaces: Vec<InterfaceRow>,
    pub attached: u64,
    /// Kernel counters and the ring buffer size, when they could be read.
    pub kernel: Option<(KernelCounters, u32)>,
    pub programs: Vec<ProgramStats>,
    /// How long the previous scrape took.
    pub last_duration: f64,
    /// Counter slots in use and how many there are (`--max-interfaces`), when the map could be read.
    pub traffic_slots: Option<(u64, u64)>,
}

impl StateCollector {
    pub fn new(
        topology: Arc<Mutex<Topology>>,
        probes: Arc<Mutex<Probes>>,
        traffic: TrafficMap,
    ) -> Result<Self, MetricsError> {
        Ok(Self {
            topology,
            probes,
            traffic,
            last_duration: Mutex::new(0.0),
            last_len: AtomicUsize::new(0),
            last_trim: Mutex::new(None),
            containers: Mutex::new(HashMap::new()),
        })
    }

    fn snapshot(&self) -> Snapshot {
        // The scan (syscalls on /proc and /run/netns) and the map read are independent: on a thread each.
        let (inventory, totals) = std::thread::scope(|s| {
            let scan = s.spawn(|| Inventory::scan(&ScanOptions::default()));
            let totals = self.traffic.totals();
            (scan.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), totals)
        });
        let inventory = inventory.unwrap_or_else(|err| {
            tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot scan namespaces for this scrape");
            Inventory::default()
        });
        let topology = self.topology.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // The scrape's scan walks no fds: only namespaces held by a mount are judged (see `orphans`).
        let orphans = Orphans::update_shared(&inventory, false);
        let clock = orphans::now();

        // Namespaces: everything the scan sees, plus any the agent counts interfaces in but cannot see held. The
        // `name` label is the one `list` and `stats` show.
        let namer = Namer::new();
        let mut names: BTreeMap<u32, (String, Option<ContainerHint>)> = BTreeMap::new();
        let mut known = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        let mut now = HashMap::with_capacity(inventory.namespaces.len());
        for ns in inventory.namespaces.values() {
            let first = ns.pids.first().copied().unwrap_or(0);
            let container = match known.remove(&ns.inode) {
                Some((pid, container)) if pid == first => container,
                _ => namer.container(ns),
            };
            let name = namer.name(ns, container.as_ref()).unwrap_or_default();
            now.insert(ns.inode, (first, container.clone()));
            names.insert(ns.inode, (name, container));
        }
        // Namespaces that are gone are forgotten (an inode may come back for another one).
        *known = now;
        drop(known);
        for key in topology.interfaces.keys() {
            names.entry(key.netns).or_default();
        }
        let namespaces = names
            .iter()
            .map(|(&inode, (name, container))| {
                let ns = inventory.get(inode);
                NetnsRow {
                    container_runtime: container.as_ref().map_or("", |c| c.runtime),
                    container_id: container.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
                    container_name: container.as_ref().and_then(|c| c.name.clone()).unwrap_or_default(),
                    inode,
                    name: name.clone(),
                    nsid: topology.nsids.get(&inode).copied(),
                    source: ns.map_or("other", |ns| ns.source().as_str()),
                    processes: ns.map_or(0, |ns| ns.pids.len() as u64),
                    interfaces: topology.interfaces_of(inode).count() as u64,
                    // Only namespaces a mount holds: the scan walks no fds, so it cannot tell an fd-held one
                    // from one gone (see `orphans`).
                    orphaned_seconds: ns
                        .filter(|ns| ns.pids.is_empty() && !(ns.names.is_empty() && ns.bind_mounts.is_empty()))
                        .and_then(|_| orphans.orphaned_for(inode, clock)),
                    arrivals: topology.arrivals.get(&inode).copied().unwrap_or_default(),
                }
            })
            .collect();

        let traffic_slots =
            totals.as_ref().ok().map(|totals| (totals.len() as u64, u64::from(self.traffic.capacity())));
        // Traffic of the interfaces the agent counts.
        let interfaces = match totals {
            Ok(totals) => topology
                .interfaces
                .iter()
                .filter_map(|(key, device)| {
                    Some(InterfaceRow {
                        netns: key.netns,
                        name: names.get(&key.netns).map(|(name, _)| name.clone()).unwrap_or_default(),
                        device: device.clone(),
                        totals: *totals.get(key)?,
                    })
                })
                .collect(),
            Err(err) => {
                tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot read the traffic map");
                Vec::new()
            }
        };

        // The kernel side: lost events, ring buffer fill (then reset its high-water mark), program statistics.
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        let kernel = match probes.counters() {
            Ok(counters) => Some((counters, probes.ring_buffer_bytes)),
            Err(err) => {
                tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot read kernel counters");
                None
            }
        };
        if let Err(err) = probes.reset_ringbuf_high_water() {
            tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot reset the ring buffer high-water mark");
        }
        let programs = probes.program_stats();
        drop(probes);
        Snapshot {
            namespaces,
            interfaces,
            attached: topology.interfaces.len() as u64,
            kernel,
            programs,
            last_duration: *self.last_duration.lock().unwrap_or_else(|p| p.into_inner()),
            traffic_slots,
        }
    }
}

/// How a family's samples are written.
enum Family<'a> {
    /// A family of the registry, encoded by the prometheus crate.
    Registered(&'a MetricFamily),
    /// One of ours: name, help, type and the function writing its samples.
    State { name: &'static str, help: &'static str, kind: &'static str, samples: Samples },
}

/// Which state family (the writer for each is in [`write_samples`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Samples {
    Attached,
    RunTime,
    Runs,
    EventsLost,
    NetnsInfo,
    NetnsInterfaces,
    NetnsProcesses,
    NetnsOrphaned,
    NetnsArrivals,
    NetnsTraffic { bytes: bool, dir: usize },
    Interface { bytes: bool, dir: usize },
    Protocol { bytes: bool, dir: usize },
    RingbufFill,
    RingbufSize,
    ScrapeDuration,
    TrafficSlots,
    Uncounted,
}

/// Every state family; names, help and types as documented in docs/metrics.md.
const STATE_FAMILIES: &[(&str, &str, &str, Samples)] = {
    use Samples::*;
    &[
        (
            "netns_monitor_network_receive_bytes_total",
            "Bytes received by the interface.",
            "counter",
            Interface { bytes: true, dir: DIR_INGRESS },
        ),
        (
            "netns_monitor_network_receive_packets_total",
            "Packets received by the interface.",
            "counter",
            Interface { bytes: false, dir: DIR_INGRESS },
        ),
        (
            "netns_monitor_network_transmit_bytes_total",
            "Bytes sent by the interface.",
            "counter",
            Interface { bytes: true, dir: DIR_EGRESS },
        ),
        (
            "netns_monitor_network_transmit_packets_total",
            "Packets sent by the interface.",
            "counter",
            Interface { bytes: false, dir: DIR_EGRESS },
        ),
        (
            "netns_monitor_network_receive_protocol_bytes_total",
            "Bytes received by the interface, by transport protocol.",
            "counter",
            Protocol { bytes: true, dir: DIR_INGRESS },
        ),
        (
            "netns_monitor_network_receive_protocol_packets_total",
            "Packets received by the interface, by transport protocol.",
            "counter",
            Protocol { bytes: false, dir: DIR_INGRESS },
        ),
        (
            "netns_monitor_network_transmit_protocol_bytes_total",
            "Bytes sent by the interface, by transport protocol.",
            "counter",
            Protocol { bytes: true, dir: DIR_EGRESS },
        ),
        (
            "netns_monitor_network_transmit_protocol_packets_total",
            "Packets sent by the interface, by transport protocol.",
            "counter",
            Protocol { bytes: false, dir: DIR_EGRESS },
        ),
        (
            "netns_monitor_netns_receive_bytes_total",
            "Bytes received by the namespace's veths.",
            "counter",
            NetnsTraffic { bytes: true, dir: DIR_INGRESS },
        ),
        (
            "netns_monitor_netns_receive_packets_total",
            "Packets received by the namespace's veths.",
            "counter",
            NetnsTraffic { bytes: false, dir: DIR_INGRESS },
        ),
        (
            "netns_monitor_netns_transmit_bytes_total",
            "Bytes sent by the namespace's veths.",
            "counter",
            NetnsTraffic { bytes: true, dir: DIR_EGRESS },
        ),
        (
            "netns_monitor_netns_transmit_packets_total",
            "Packets sent by the namespace's veths.",
            "counter",
            NetnsTraffic { bytes: false, dir: DIR_EGRESS },
        ),
        ("netns_monitor_netns_info", "One series per network namespace.", "gauge", NetnsInfo),
        ("netns_monitor_netns_processes", "Processes in the network namespace.", "gauge", NetnsProcesses),
        (
            "netns_monitor_netns_arrivals_total",
            "Processes that entered the namespace (setns, unshare) or were created in it (clone, clone3).",
            "counter",
            NetnsArrivals,
        ),
        (
            "netns_monitor_netns_orphaned_seconds",
            "How long the namespace has had no process while a bind mount keeps it alive.",
            "gauge",
            NetnsOrphaned,
        ),
        ("netns_monitor_netns_interfaces", "Veth ends counted in the namespace.", "gauge", NetnsInterfaces),
        ("netns_monitor_events_lost_total", "Transition events dropped on a full ring buffer.", "counter", EventsLost),
        ("netns_monitor_ringbuf_size_bytes", "Size of the event ring buffer.", "gauge", RingbufSize),
        (
            "netns_monitor_uncounted_packets_total",
            "Packets a classifier saw but could not count, by reason.",
            "counter",
            Uncounted,
        ),
        (
            "netns_monitor_ringbuf_fill_ratio",
            "Highest ring buffer fill since the previous scrape.",
            "gauge",
            RingbufFill,
        ),
        (
            "netns_monitor_bpf_program_run_time_seconds_total",
            "Time the kernel spent in each program.",
            "counter",
            RunTime,
        ),
        ("netns_monitor_bpf_program_runs_total", "Runs of each program.", "counter", Runs),
        ("netns_monitor_attached_interfaces", "Interfaces with both classifiers attached.", "gauge", Attached),
        (
            "netns_monitor_traffic_slots",
            "Interface counter slots: in use, and the capacity (--max-interfaces).",
            "gauge",
            TrafficSlots,
        ),
        ("netns_monitor_scrape_duration_seconds", "Time the previous scrape took to collect.", "gauge", ScrapeDuration),
    ]
};

/// Writes the registered families and the state families of `snapshot`, all sorted by name (as a registry
/// holding all of them would), leaving out families without samples.
pub fn write_exposition(
    snapshot: &Snapshot,
    registered: &[MetricFamily],
    out: &mut String,
) -> Result<(), prometheus::Error> {
    let mut families: Vec<(&str, Family<'_>)> =
        registered.iter().map(|mf| (mf.name(), Family::Registered(mf))).collect();
    families.extend(
        STATE_FAMILIES.iter().map(|&(name, help, kind, samples)| (name, Family::State { name, help, kind, samples })),
    );
    families.sort_by(|a, b| a.0.cmp(b.0));
    let sorted = Sorted::of(snapshot);
    let encoder = prometheus::TextEncoder::new();
    for (_, family) in families {
        match family {
            Family::Registered(mf) => encoder.encode_utf8(std::slice::from_ref(mf), out)?,
            Family::State { name, help, kind, samples } => {
                let mark = out.len();
                out.push_str("# HELP ");
                out.push_str(name);
                out.push(' ');
                out.push_str(help);
                out.push_str("\n# TYPE ");
                out.push_str(name);
                out.push(' ');
                out.push_str(kind);
                out.push('\n');
                let header = out.len();
                write_samples(snapshot, &sorted, name, samples, out);
                if out.len() == header {
                    // No samples: the family is left out, as a registry prunes empty families.
                    out.truncate(mark);
                }
            }
        }
    }
    Ok(())
}

/// The snapshot's rows in exposition order, with their label sets written out once.
struct Sorted<'a> {
    /// Namespaces by (name, netns) as strings, with `name="..",netns=".."`.
    namespaces: Vec<(&'a NetnsRow, String)>,
    /// Per namespace, in the same order: summed traffic of its interfaces, if it has any.
    netns_traffic: Vec<Option<Totals>>,
    /// Interfaces by (device, name, netns) as strings, with `device="..",name="..",netns=".."`.
    interfaces: Vec<(&'a InterfaceRow, String)>,
    /// Programs by name.
    programs: Vec<&'a ProgramStats>,
}

impl<'a> Sorted<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let mut namespaces: Vec<(&NetnsRow, String, String)> =
            snapshot.namespaces.iter().map(|ns| (ns, ns.inode.to_string(), String::new())).collect();
        namespaces.sort_by(|a, b| (a.0.name.as_str(), a.1.as_str()).cmp(&(b.0.name.as_str(), b.1.as_str())));
        for (ns, inode, labels) in &mut namespaces {
            labels.push_str("name=\"");
            push_escaped(labels, &ns.name);
            labels.push_str("\",netns=\"");
            labels.push_str(inode);
            labels.push('"');
        }
        // Every interface's namespace is among the namespaces (the snapshot adds the topology's).
        let mut sums: BTreeMap<u32, Totals> = BTreeMap::new();
        for iface in &snapshot.interfaces {
            sums.entry(iface.netns).or_default().merge(&iface.totals);
        }
        let namespaces: Vec<(&NetnsRow, String)> = namespaces.into_iter().map(|(ns, _, l)| (ns, l)).collect();
        let netns_traffic = namespaces.iter().map(|(ns, _)| sums.get(&ns.inode).copied()).collect();

        let mut interfaces: Vec<(&InterfaceRow, String, String)> =
            snapshot.interfaces.iter().map(|i| (i, i.netns.to_string(), String::new())).collect();
        interfaces.sort_by(|a, b| {
            (a.0.device.as_str(), a.0.name.as_str(), a.1.as_str()).cmp(&(
                b.0.device.as_str(),
                b.0.name.as_str(),
                b.1.as_str(),
            ))
        });
        for (iface, inode, labels) in &mut interfaces {
            labels.push_str("device=\"");
            push_escaped(labels, &iface.device);
            labels.push_str("\",name=\"");
            push_escaped(labels, &iface.name);
            labels.push_str("\",netns=\"");
            labels.push_str(inode);
            labels.push('"');
        }
        let mut programs: Vec<&ProgramStats> = snapshot.programs.iter().collect();
        programs.sort_by(|a, b| a.name.cmp(&b.name));
        Sorted {
            namespaces,
            netns_traffic,
            interfaces: interfaces.into_iter().map(|(i, _, l)| (i, l)).collect(),
            programs,
        }
    }
}

fn write_samples(snapshot: &Snapshot, sorted: &Sorted<'_>, name: &str, samples: Samples, out: &mut String) {
    let pick = |t: &Totals, bytes: bool, dir: usize| if bytes { t.bytes(dir) } else { t.packets(dir) };
    match samples {
        Samples::Interface { bytes, dir } => {
            for (iface, labels) in &sorted.interfaces {
                line_u64(out, name, labels, None, pick(&iface.totals, bytes, dir));
            }
        }
        Samples::Protocol { bytes, dir } => {
            // Only with the protocol split on (`--traffic-protocols`); without it the families are left out.
            for (iface, labels) in &sorted.interfaces {
                let Some(split) = &iface.totals.protocols else { continue };
                let per = if bytes { &split.bytes[dir] } else { &split.packets[dir] };
                for (label, proto) in PROTOCOLS_SORTED {
                    line_u64(out, name, labels, Some(("protocol", label)), per[proto]);
                }
            }
        }
        Samples::NetnsTraffic { bytes, dir } => {
            for ((_, labels), sum) in sorted.namespaces.iter().zip(&sorted.netns_traffic) {
                if let Some(sum) = sum {
                    line_u64(out, name, labels, None, pick(sum, bytes, dir));
                }
            }
        }
        Samples::NetnsInfo => {
            // Series are ordered by their label values in label-name order, and container_* sort before name: a
            // stable sort on them keeps the (name, netns) order within ties.
            let mut rows: Vec<&(&NetnsRow, String)> = sorted.namespaces.iter().collect();
            rows.sort_by(|(a, _), (b, _)| {
                (&a.container_id, &a.container_name, a.container_runtime).cmp(&(
                    &b.container_id,
                    &b.container_name,
                    b.container_runtime,
                ))
            });
            for (ns, labels) in rows {
                let mut extended = String::with_capacity(labels.len() + 160);
                for (label, value) in [
                    ("container_id", ns.container_id.as_str()),
                    ("container_name", &ns.container_name),
                    ("container_runtime", ns.container_runtime),
                ] {
                    extended.push_str(label);
                    extended.push_str("=\"");
                    push_escaped(&mut extended, value);
                    extended.push_str("\",");
                }
                extended.push_str(labels);
                extended.push_str(",nsid=\"");
                if let Some(id) = ns.nsid {
                    let _ = write!(extended, "{id}");
                }
                extended.push_str("\",source=\"");
                extended.push_str(ns.source);
                extended.push('"');
                line_u64(out, name, &extended, None, 1);
            }
        }
        Samples::NetnsProcesses => {
            for (ns, labels) in &sorted.namespaces {
                line_u64(out, name, labels, None, ns.processes);
            }
        }
        Samples::NetnsArrivals => {
            for (ns, labels) in &sorted.namespaces {
                for (syscall, index) in SYSCALLS_SORTED {
                    if ns.arrivals[index] > 0 {
                        line_u64(out, name, labels, Some(("syscall", syscall)), ns.arrivals[index]);
                    }
                }
            }
        }
        Samples::NetnsOrphaned => {
            for (ns, labels) in &sorted.namespaces {
                if let Some(secs) = ns.orphaned_seconds {
                    line_u64(out, name, labels, None, secs);
                }
            }
        }
        Samples::NetnsInterfaces => {
            for (ns, labels) in &sorted.namespaces {
                line_u64(out, name, labels, None, ns.interfaces);
            }
        }
        Samples::EventsLost => {
            if let Some((counters, _)) = &snapshot.kernel {
                line_u64(out, name, "", None, counters.events_lost());
            }
        }
        Samples::Uncounted => {
            if let Some((counters, _)) = &snapshot.kernel {
                line_u64(out, name, "", Some(("reason", "no_entry")), counters.traffic_no_entry);
                line_u64(out, name, "", Some(("reason", "unknown_netns")), counters.traffic_unknown_netns);
            }
        }
        Samples::RingbufSize => {
            if let Some((_, size)) = &snapshot.kernel {
                line_u64(out, name, "", None, u64::from(*size));
            }
        }
        Samples::RingbufFill => {
            if let Some((counters, size)) = &snapshot.kernel {
                let fill = (counters.ringbuf_high_water as f64 / f64::from(*size)).min(1.0);
                line_f64(out, name, "", fill);
            }
        }
        Samples::RunTime => {
            for program in &sorted.programs {
                line_f64(out, name, &program_label(&program.name), program.run_time.as_secs_f64());
            }
        }
        Samples::Runs => {
            for program in &sorted.programs {
                line_u64(out, name, &program_label(&program.name), None, program.run_count);
            }
        }
        Samples::Attached => line_u64(out, name, "", None, snapshot.attached),
        Samples::TrafficSlots => {
            if let Some((used, capacity)) = snapshot.traffic_slots {
                line_u64(out, name, "", Some(("state", "capacity")), capacity);
                line_u64(out, name, "", Some(("state", "used")), used);
            }
        }
        Samples::ScrapeDuration => line_f64(out, name, "", snapshot.last_duration),
    }
}

fn program_label(program: &str) -> String {
    let mut label = String::from("program=\"");
    push_escaped(&mut label, program);
    label.push('"');
    label
}

/// `name{labels[,extra="value"]} value\n`, or `name value\n` without labels.
fn line_u64(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>, value: u64) {
    start_line(out, name, labels, extra);
    push_u64(out, value);
    out.push('\n');
}

fn line_f64(out: &mut String, name: &str, labels: &str, value: f64) {
    start_line(out, name, labels, None);
    // As the crate writes floats (`f64::to_string`), including `inf` and `NaN`, which it maps to
    // `+Inf`/`-Inf`/`NaN` only for histogram bounds; a gauge here is never infinite.
    let _ = write!(out, "{value}");
    out.push('\n');
}

fn start_line(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>) {
    out.push_str(name);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some((key, value)) = extra {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            push_escaped(out, value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
}

/// Decimal digits of `value`, without going through `fmt` (this runs half a million times a scrape).
fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// A label value as the text format wants it: `\` `"` and newline escaped.
fn push_escaped(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::{CounterVec, GaugeVec};

    use super::*;
    use crate::traffic::counters::ProtocolTotals;

    fn totals(seed: u64) -> Totals {
        let mut split = ProtocolTotals::default();
        for dir in 0..2 {
            for proto in 0..4 {
                split.packets[dir][proto] = seed * 10 + (dir * 4 + proto) as u64;
                split.bytes[dir][proto] = (seed * 10 + (dir * 4 + proto) as u64) * 1500;
            }
        }
        let sum = |per: &[u64; 4]| per.iter().sum();
        Totals {
            packets: [sum(&split.packets[0]), sum(&split.packets[1])],
            bytes: [sum(&split.bytes[0]), sum(&split.bytes[1])],
            protocols: Some(split),
        }
    }

    fn snapshot() -> Snapshot {
        let ns = |inode, name: &str, nsid, source, processes, interfaces| NetnsRow {
            inode,
            name: name.to_owned(),
            nsid,
            source,
            processes,
            interfaces,
            // A container on every other inode, with a name that needs escaping on one.
            container_runtime: if inode % 2 == 0 { "docker" } else { "" },
            container_id: if inode % 2 == 0 { format!("{inode:064x}") } else { String::new() },
            container_name: if inode % 4 == 0 { "web \"1\"".to_owned() } else { String::new() },
            orphaned_seconds: (processes == 0).then_some(u64::from(inode % 1000)),
            arrivals: if processes > 0 { [processes, 0, 3, 1] } else { [0; 4] },
        };
        let iface = |netns, name: &str, device: &str, seed| InterfaceRow {
            netns,
            name: name.to_owned(),
            device: device.to_owned(),
            totals: totals(seed),
        };
        Snapshot {
            // Inodes whose decimal order differs from their string order, names needing escapes, an empty name.
            namespaces: vec![
                ns(4026531833, "", None, "process", 120, 3),
                ns(900000000, "blue", Some(0), "named", 1, 1),
                ns(4026532300, "blue", Some(12), "named", 0, 1),
                ns(4026532301, "we\"ird\\na\nme", Some(3), "bind-mount", 2, 0),
                ns(4026532302, "red", None, "other", 0, 1),
            ],
            interfaces: vec![
                iface(4026531833, "", "veth10", 1),
                iface(4026531833, "", "veth2", 2),
                iface(4026531833, "", "veth1", 3),
                iface(900000000, "blue", "eth0", 4),
                iface(4026532300, "blue", "eth0", 5),
                iface(4026532302, "red", "eth0", u64::from(u32::MAX)),
            ],
            attached: 6,
            kernel: Some((
                KernelCounters {
                    lost_events: 7,
                    ringbuf_high_water: 3000,
                    traffic_no_entry: 5,
                    traffic_unknown_netns: 1,
                    ..Default::default()
                },
                4096,
            )),
            programs: vec![
                ProgramStats { name: "tc_ingress".into(), run_time: Duration::from_nanos(123_456_789), run_count: 42 },
                ProgramStats { name: "sys_enter_setns".into(), run_time: Duration::ZERO, run_count: 0 },
            ],
            last_duration: 0.012_5,
            traffic_slots: Some((6, 16384)),
        }
    }

    /// The same metrics built as the agent used to build them (prometheus vectors in one registry), encoded
    /// by the crate.
    fn reference(snapshot: &Snapshot, registry: &Registry) -> String {
        let iface = &["netns", "name", "device"][..];
        let proto = &["netns", "name", "device", "protocol"][..];
        let netns = &["netns", "name"][..];
        for &(name, help, kind, samples) in STATE_FAMILIES {
            let float = matches!(samples, Samples::RunTime | Samples::RingbufFill | Samples::ScrapeDuration);
            let labels: &[&str] = match samples {
                Samples::Interface { .. } => iface,
                Samples::Protocol { .. } => proto,
                Samples::NetnsTraffic { .. }
                | Samples::NetnsProcesses
                | Samples::NetnsInterfaces
                | Samples::NetnsOrphaned => netns,
                Samples::NetnsArrivals => &["netns", "name", "syscall"],
                Samples::NetnsInfo => {
                    &["netns", "name", "nsid", "source", "container_runtime", "container_id", "container_name"]
                }
                Samples::RunTime | Samples::Runs => &["program"],
                Samples::Uncounted => &["reason"],
                Samples::TrafficSlots => &["state"],
                _ => &[],
            };
            let opts = opts(name, help);
            let collector: Box<dyn Collector> = match (kind, float) {
                ("counter", false) => {
                    let v = IntCounterVec::new(opts, labels).unwrap();
                    fill(snapshot, samples, &mut |l: &[&str], x: f64| v.with_label_values(l).inc_by(x as u64));
                    Box::new(v)
                }
                ("counter", true) => {
                    let v = CounterVec::new(opts, labels).unwrap();
                    fill(snapshot, samples, &mut |l: &[&str], x: f64| v.with_label_values(l).inc_by(x));
                    Box::new(v)
                }
                (_, false) => {
                    let v = IntGaugeVec::new(opts, labels).unwrap();
                    fill(snapshot, samples, &mut |l: &[&str], x: f64| v.with_label_values(l).add(x as i64));
                    Box::new(v)
                }
                (_, true) => {
                    let v = GaugeVec::new(opts, labels).unwrap();
                    fill(snapshot, samples, &mut |l: &[&str], x: f64| v.with_label_values(l).set(x));
                    Box::new(v)
                }
            };
            registry.register(collector).unwrap();
        }
        prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
    }

    /// Calls `set(labels, value)` for every series of one family, the way the old collector did.
    fn fill(snapshot: &Snapshot, samples: Samples, set: &mut dyn FnMut(&[&str], f64)) {
        let pick = |t: &Totals, bytes: bool, dir: usize| if bytes { t.bytes(dir) } else { t.packets(dir) };
        for ns in &snapshot.namespaces {
            let inode = ns.inode.to_string();
            let nsid = ns.nsid.map(|id| id.to_string()).unwrap_or_default();
            match samples {
                Samples::NetnsInfo => set(
                    &[&inode, &ns.name, &nsid, ns.source, ns.container_runtime, &ns.container_id, &ns.container_name],
                    1.0,
                ),
                Samples::NetnsProcesses => set(&[&inode, &ns.name], ns.processes as f64),
                Samples::NetnsInterfaces => set(&[&inode, &ns.name], ns.interfaces as f64),
                Samples::NetnsOrphaned => {
                    if let Some(secs) = ns.orphaned_seconds {
                        set(&[&inode, &ns.name], secs as f64);
                    }
                }
                Samples::NetnsArrivals => {
                    for (syscall, index) in SYSCALLS_SORTED {
                        if ns.arrivals[index] > 0 {
                            set(&[&inode, &ns.name, syscall], ns.arrivals[index] as f64);
                        }
                    }
                }
                _ => {}
            }
        }
        for i in &snapshot.interfaces {
            let inode = i.netns.to_string();
            let labels = [inode.as_str(), &i.name, &i.device];
            match samples {
                Samples::Interface { bytes, dir } => set(&labels, pick(&i.totals, bytes, dir) as f64),
                Samples::Protocol { bytes, dir } => {
                    let Some(split) = &i.totals.protocols else { continue };
                    for (label, proto) in PROTOCOLS_SORTED {
                        let v = if bytes { split.bytes[dir][proto] } else { split.packets[dir][proto] };
                        set(&[&inode, &i.name, &i.device, label], v as f64);
                    }
                }
                Samples::NetnsTraffic { bytes, dir } => set(&[&inode, &i.name], pick(&i.totals, bytes, dir) as f64),
                _ => {}
            }
        }
        if let Some((counters, size)) = &snapshot.kernel {
            match samples {
                Samples::EventsLost => set(&[], counters.events_lost() as f64),
                Samples::RingbufSize => set(&[], f64::from(*size)),
                Samples::RingbufFill => set(&[], (counters.ringbuf_high_water as f64 / f64::from(*size)).min(1.0)),
                Samples::Uncounted => {
                    set(&["no_entry"], counters.traffic_no_entry as f64);
                    set(&["unknown_netns"], counters.traffic_unknown_netns as f64);
                }
                _ => {}
            }
        }
        for p in &snapshot.programs {
            match samples {
                Samples::RunTime => set(&[&p.name], p.run_time.as_secs_f64()),
                Samples::Runs => set(&[&p.name], p.run_count as f64),
                _ => {}
            }
        }
        match samples {
            Samples::Attached => set(&[], snapshot.attached as f64),
            Samples::ScrapeDuration => set(&[], snapshot.last_duration),
            Samples::TrafficSlots => {
                if let Some((used, capacity)) = snapshot.traffic_slots {
                    set(&["capacity"], capacity as f64);
                    set(&["used"], used as f64);
                }
            }
            _ => {}
        }
    }

    /// A registry with a few of the registered families (names that sort between the state families).
    fn registered() -> Registry {
        let registry = Registry::new();
        let transitions =
            IntCounterVec::new(opts("netns_monitor_transitions_total", "Transitions."), &["syscall", "type"]).unwrap();
        transitions.with_label_values(&["setns", "net"]).inc_by(3);
        transitions.with_label_values(&["clone", "none"]).inc();
        let created = IntCounter::with_opts(opts("netns_monitor_netns_created_total", "Created.")).unwrap();
        created.inc_by(2);
        let failures = IntCounterVec::new(opts("netns_monitor_attach_failures_total", "Failures."), &["hook"]).unwrap();
        failures.with_label_values(&["tc_ingress"]);
        registry.register(Box::new(transitions)).unwrap();
        registry.register(Box::new(created)).unwrap();
        registry.register(Box::new(failures)).unwrap();
        registry
    }

    #[test]
    fn exposition_matches_the_prometheus_crate_byte_for_byte() {
        let snapshot = snapshot();
        let registry = registered();
        let mut ours = String::new();
        write_exposition(&snapshot, &registry.gather(), &mut ours).unwrap();
        let expected = reference(&snapshot, &registry);
        assert_eq!(ours, expected);
        // And it is the exposition we think it is.
        assert!(ours.contains(
            "netns_monitor_network_receive_protocol_bytes_total{device=\"eth0\",name=\"red\",netns=\"4026532302\",\
             protocol=\"udp\"} "
        ));
        assert!(ours.contains("netns_monitor_netns_info{container_id=\"\",container_name=\"\",container_runtime=\"\",name=\"we\\\"ird\\\\na\\nme\",netns=\"4026532301\",nsid=\"3\",source=\"bind-mount\"} 1\n"));
        assert!(ours.contains("netns_monitor_netns_receive_bytes_total{name=\"\",netns=\"4026531833\"} "));
        assert!(ours.contains("\nnetns_monitor_netns_orphaned_seconds{"), "an orphan in the fixture is exposed");
        assert!(ours.contains(",syscall=\"clone3\"} 1\n"), "arrivals by syscall");
    }

    #[test]
    fn the_protocol_split_is_exposed_only_when_counted() {
        let mut snapshot = snapshot();
        for iface in &mut snapshot.interfaces {
            iface.totals.protocols = None;
        }
        let registry = registered();
        let mut ours = String::new();
        write_exposition(&snapshot, &registry.gather(), &mut ours).unwrap();
        assert_eq!(ours, reference(&snapshot, &registry));
        assert!(!ours.contains("_protocol_"), "no protocol family without the split");
        assert!(ours.contains("netns_monitor_network_receive_bytes_total{device=\"eth0\",name=\"red\""));
    }

    #[test]
    fn empty_families_are_left_out() {
        let snapshot = Snapshot { kernel: None, ..Snapshot::default() };
        let registry = Registry::new();
        let mut ours = String::new();
        write_exposition(&snapshot, &registry.gather(), &mut ours).unwrap();
        assert_eq!(ours, reference(&snapshot, &registry));
        assert!(!ours.contains("network_receive"));
        assert!(!ours.contains("events_lost"));
        assert!(ours.contains("netns_monitor_attached_interfaces 0\n"));
    }

    #[test]
    fn integers_are_written_exactly() {
        let mut out = String::new();
        for v in [0, 7, 10, 1_000_000, u64::MAX] {
            push_u64(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, format!("0 7 10 1000000 {} ", u64::MAX));
    }
}
