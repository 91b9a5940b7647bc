//! The `/metrics` content (names and labels documented in docs/metrics.md).
//!
//! Counters the event loop increments (transitions, lifecycle, attach failures) are ordinary registered
//! metrics. Everything describing the current state is built fresh at each scrape by [`StateCollector`]: a
//! scan of the host's namespaces, the pinned traffic map and the kernel's counters. Building it fresh is what
//! makes a vanished namespace lose all its series within one scrape.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use netns_monitor_common::traffic::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_OTHER, PROTO_TCP, PROTO_UDP};
use prometheus::{
    CounterVec, GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::topology::Topology;
use crate::{
    bpf::Probes,
    inventory::{Inventory, Netns, ScanOptions, container},
    traffic::counters::TrafficMap,
};

/// For the metrics without labels (kept as vecs so every state metric is built the same way).
const NO_LABELS: &[&str] = &[];

const PROTOCOLS: [(usize, &str); 4] =
    [(PROTO_TCP, "tcp"), (PROTO_UDP, "udp"), (PROTO_ICMP, "icmp"), (PROTO_OTHER, "other")];

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
    pub registry: Registry,
    pub looped: LoopMetrics,
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
    pub fn new(state: StateCollector) -> Result<Self, MetricsError> {
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
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(looped.transitions.clone()),
            Box::new(looped.transition_errors.clone()),
            Box::new(looped.created.clone()),
            Box::new(looped.destroyed.clone()),
            Box::new(looped.untracked.clone()),
            Box::new(looped.attach_failures.clone()),
            Box::new(build),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            Box::new(state),
        ];
        for collector in collectors {
            registry.register(collector).map_err(MetricsError)?;
        }
        Ok(Self { registry, looped })
    }

    /// The exposition text (an error makes the scrape fail rather than serve a partial page).
    pub fn render(&self) -> Result<String, prometheus::Error> {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// Builds the state metrics at each scrape.
pub struct StateCollector {
    topology: Arc<Mutex<Topology>>,
    probes: Arc<Mutex<Probes>>,
    traffic: TrafficMap,
    /// How long the previous scrape took (reported by the next one).
    last_duration: Mutex<f64>,
    templates: Templates,
}

/// One instance of every state metric: for `desc()`, and cloned empty at each scrape.
#[derive(Clone)]
struct Templates {
    receive_bytes: IntCounterVec,
    receive_packets: IntCounterVec,
    transmit_bytes: IntCounterVec,
    transmit_packets: IntCounterVec,
    receive_protocol_bytes: IntCounterVec,
    receive_protocol_packets: IntCounterVec,
    transmit_protocol_bytes: IntCounterVec,
    transmit_protocol_packets: IntCounterVec,
    netns_receive_bytes: IntCounterVec,
    netns_receive_packets: IntCounterVec,
    netns_transmit_bytes: IntCounterVec,
    netns_transmit_packets: IntCounterVec,
    netns_info: IntGaugeVec,
    netns_processes: IntGaugeVec,
    netns_interfaces: IntGaugeVec,
    events_lost: IntCounterVec,
    ringbuf_size: IntGaugeVec,
    ringbuf_fill: GaugeVec,
    run_time: CounterVec,
    runs: IntCounterVec,
    attached: IntGaugeVec,
    scrape_duration: GaugeVec,
}

impl Templates {
    fn new() -> Result<Self, prometheus::Error> {
        let iface = &["netns", "name", "device"][..];
        let proto = &["netns", "name", "device", "protocol"][..];
        let netns = &["netns", "name"][..];
        let c = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(opts(name, help), labels);
        let g = |name: &str, help: &str, labels: &[&str]| IntGaugeVec::new(opts(name, help), labels);
        Ok(Self {
            receive_bytes: c("netns_monitor_network_receive_bytes_total", "Bytes received by the interface.", iface)?,
            receive_packets: c(
                "netns_monitor_network_receive_packets_total",
                "Packets received by the interface.",
                iface,
            )?,
            transmit_bytes: c("netns_monitor_network_transmit_bytes_total", "Bytes sent by the interface.", iface)?,
            transmit_packets: c(
                "netns_monitor_network_transmit_packets_total",
                "Packets sent by the interface.",
                iface,
            )?,
            receive_protocol_bytes: c(
                "netns_monitor_network_receive_protocol_bytes_total",
                "Bytes received by the interface, by transport protocol.",
                proto,
            )?,
            receive_protocol_packets: c(
                "netns_monitor_network_receive_protocol_packets_total",
                "Packets received by the interface, by transport protocol.",
                proto,
            )?,
            transmit_protocol_bytes: c(
                "netns_monitor_network_transmit_protocol_bytes_total",
                "Bytes sent by the interface, by transport protocol.",
                proto,
            )?,
            transmit_protocol_packets: c(
                "netns_monitor_network_transmit_protocol_packets_total",
                "Packets sent by the interface, by transport protocol.",
                proto,
            )?,
            netns_receive_bytes: c(
                "netns_monitor_netns_receive_bytes_total",
                "Bytes received by the namespace's veths.",
                netns,
            )?,
            netns_receive_packets: c(
                "netns_monitor_netns_receive_packets_total",
                "Packets received by the namespace's veths.",
                netns,
            )?,
            netns_transmit_bytes: c(
                "netns_monitor_netns_transmit_bytes_total",
                "Bytes sent by the namespace's veths.",
                netns,
            )?,
            netns_transmit_packets: c(
                "netns_monitor_netns_transmit_packets_total",
                "Packets sent by the namespace's veths.",
                netns,
            )?,
            netns_info: g(
                "netns_monitor_netns_info",
                "One series per network namespace.",
                &["netns", "name", "nsid", "source"],
            )?,
            netns_processes: g("netns_monitor_netns_processes", "Processes in the network namespace.", netns)?,
            netns_interfaces: g("netns_monitor_netns_interfaces", "Veth ends counted in the namespace.", netns)?,
            events_lost: c("netns_monitor_events_lost_total", "Transition events dropped on a full ring buffer.", &[])?,
            ringbuf_size: g("netns_monitor_ringbuf_size_bytes", "Size of the event ring buffer.", &[])?,
            ringbuf_fill: GaugeVec::new(
                opts("netns_monitor_ringbuf_fill_ratio", "Highest ring buffer fill since the previous scrape."),
                &[],
            )?,
            run_time: CounterVec::new(
                opts("netns_monitor_bpf_program_run_time_seconds_total", "Time the kernel spent in each program."),
                &["program"],
            )?,
            runs: c("netns_monitor_bpf_program_runs_total", "Runs of each program.", &["program"])?,
            attached: g("netns_monitor_attached_interfaces", "Interfaces with both classifiers attached.", &[])?,
            scrape_duration: GaugeVec::new(
                opts("netns_monitor_scrape_duration_seconds", "Time the previous scrape took to collect."),
                &[],
            )?,
        })
    }

    fn all(&self) -> Vec<&dyn Collector> {
        vec![
            &self.receive_bytes,
            &self.receive_packets,
            &self.transmit_bytes,
            &self.transmit_packets,
            &self.receive_protocol_bytes,
            &self.receive_protocol_packets,
            &self.transmit_protocol_bytes,
            &self.transmit_protocol_packets,
            &self.netns_receive_bytes,
            &self.netns_receive_packets,
            &self.netns_transmit_bytes,
            &self.netns_transmit_packets,
            &self.netns_info,
            &self.netns_processes,
            &self.netns_interfaces,
            &self.events_lost,
            &self.ringbuf_size,
            &self.ringbuf_fill,
            &self.run_time,
            &self.runs,
            &self.attached,
            &self.scrape_duration,
        ]
    }

    /// Fresh, empty copies: series exist only if this scrape sets them.
    fn fresh(&self) -> Self {
        Self::new().expect("the same options were valid at start-up")
    }
}

/// The `name` label: a /run/netns name or bind mount, else a container hint from the processes' cgroups.
fn label_name(ns: Option<&Netns>) -> String {
    let Some(ns) = ns else {
        return String::new();
    };
    ns.best_name()
        .map(str::to_owned)
        .or_else(|| container::of_pids(&ns.pids, 8).map(|hint| hint.netns_name()))
        .unwrap_or_default()
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
            templates: Templates::new().map_err(MetricsError)?,
        })
    }

    fn build(&self) -> Templates {
        let m = self.templates.fresh();
        let inventory = Inventory::scan(&ScanOptions::default()).unwrap_or_else(|err| {
            tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot scan namespaces for this scrape");
            Inventory::default()
        });
        let topology = self.topology.lock().unwrap_or_else(|p| p.into_inner()).clone();

        // Namespaces: everything the scan sees, plus any the agent counts interfaces in but cannot see held.
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        for ns in inventory.namespaces.values() {
            names.insert(ns.inode, label_name(Some(ns)));
        }
        for key in topology.interfaces.keys() {
            names.entry(key.netns).or_default();
        }
        for (&inode, name) in &names {
            let ns = inventory.get(inode);
            let netns = inode.to_string();
            let nsid = topology.nsids.get(&inode).map(i32::to_string).unwrap_or_default();
            let source = ns.map_or("other", |ns| ns.source().as_str());
            m.netns_info.with_label_values(&[&netns, name, &nsid, source]).set(1);
            m.netns_processes.with_label_values(&[&netns, name]).set(ns.map_or(0, |ns| ns.pids.len() as i64));
            m.netns_interfaces.with_label_values(&[&netns, name]).set(topology.interfaces_of(inode).count() as i64);
        }

        // Traffic of the interfaces the agent counts.
        match self.traffic.totals() {
            Ok(totals) => {
                for (key, device) in &topology.interfaces {
                    let Some(t) = totals.get(key) else { continue };
                    let netns = key.netns.to_string();
                    let name = names.get(&key.netns).map_or("", String::as_str);
                    let labels = [netns.as_str(), name, device.as_str()];
                    m.receive_bytes.with_label_values(&labels).inc_by(t.bytes(DIR_INGRESS));
                    m.receive_packets.with_label_values(&labels).inc_by(t.packets(DIR_INGRESS));
                    m.transmit_bytes.with_label_values(&labels).inc_by(t.bytes(DIR_EGRESS));
                    m.transmit_packets.with_label_values(&labels).inc_by(t.packets(DIR_EGRESS));
                    for (proto, label) in PROTOCOLS {
                        let labels = [netns.as_str(), name, device.as_str(), label];
                        m.receive_protocol_bytes.with_label_values(&labels).inc_by(t.bytes[DIR_INGRESS][proto]);
                        m.receive_protocol_packets.with_label_values(&labels).inc_by(t.packets[DIR_INGRESS][proto]);
                        m.transmit_protocol_bytes.with_label_values(&labels).inc_by(t.bytes[DIR_EGRESS][proto]);
                        m.transmit_protocol_packets.with_label_values(&labels).inc_by(t.packets[DIR_EGRESS][proto]);
                    }
                    let labels = [netns.as_str(), name];
                    m.netns_receive_bytes.with_label_values(&labels).inc_by(t.bytes(DIR_INGRESS));
                    m.netns_receive_packets.with_label_values(&labels).inc_by(t.packets(DIR_INGRESS));
                    m.netns_transmit_bytes.with_label_values(&labels).inc_by(t.bytes(DIR_EGRESS));
                    m.netns_transmit_packets.with_label_values(&labels).inc_by(t.packets(DIR_EGRESS));
                }
            }
            Err(err) => tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot read the traffic map"),
        }
        m.attached.with_label_values(NO_LABELS).set(topology.interfaces.len() as i64);

        // The kernel side: lost events, ring buffer fill (then reset its high-water mark), program statistics.
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        match probes.counters() {
            Ok(counters) => {
                m.events_lost.with_label_values(NO_LABELS).inc_by(counters.lost_events);
                let size = f64::from(probes.ring_buffer_bytes);
                m.ringbuf_size.with_label_values(NO_LABELS).set(i64::from(probes.ring_buffer_bytes));
                m.ringbuf_fill.with_label_values(NO_LABELS).set((counters.ringbuf_high_water as f64 / size).min(1.0));
            }
            Err(err) => tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot read kernel counters"),
        }
        if let Err(err) = probes.reset_ringbuf_high_water() {
            tracing::warn!(error = %crate::bpf::error_chain(&err), "cannot reset the ring buffer high-water mark");
        }
        for stats in probes.program_stats() {
            m.run_time.with_label_values(&[&stats.name]).inc_by(stats.run_time.as_secs_f64());
            m.runs.with_label_values(&[&stats.name]).inc_by(stats.run_count);
        }
        drop(probes);
        m
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.templates.all().into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let started = Instant::now();
        let m = self.build();
        let mut last = self.last_duration.lock().unwrap_or_else(|p| p.into_inner());
        m.scrape_duration.with_label_values(NO_LABELS).set(*last);
        let families = m.all().into_iter().flat_map(|c| c.collect()).collect();
        *last = started.elapsed().as_secs_f64();
        families
    }
}
