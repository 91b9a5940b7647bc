//! `netns-monitor run`: the long-running agent.
//!
//! Start-up: load the programs (transition tracepoints attached, classifiers loaded), open the all-namespace
//! link monitor, scan every namespace, give each a netns id (so the kernel reports its death and its link
//! changes), attach the classifiers to every veth end (adopting links a previous agent pinned), and drop the
//! pins and counters of interfaces that no longer exist.
//!
//! Then react, never poll: transition events from the ring buffer (metrics; a new network namespace gets an id
//! and its veths classifiers), `RTM_DELNSID` (a namespace died: forget its interfaces and counters), and link
//! notifications from every namespace (a veth appeared, was renamed or went away). If link notifications were
//! lost (socket overflow), everything is rescanned once.
//!
//! The scrape ([`collector`]) reads the shared [`topology::Topology`], the pinned traffic map and the kernel's
//! counters; the event loop is the only writer. Shutdown leaves every classifier link pinned, so counting goes
//! on until the next agent adopts them.

pub mod collector;
pub mod config;
pub mod process;
pub mod topology;
pub mod unload;

use std::{
    collections::HashMap,
    fs::File,
    future::Future,
    os::fd::AsFd as _,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use netns_monitor_common::traffic::TrafficKey;
use nix::sched::{CloneFlags, setns};

use self::{
    collector::{LoopMetrics, Metrics, MetricsError, StateCollector},
    topology::Topology,
};
use crate::{
    bpf::{BpfError, Direction, LoadOptions, Probes, error_chain},
    inventory::{Inventory, InventoryError, ScanOptions, nsfs_inode},
    lifecycle::{
        End, LifecycleError, Tracker,
        arrivals::{self, Arrivals},
    },
    manage::{
        autoname::{self, Change},
        rtnl::{Within, in_netns},
    },
    trace::{
        event::{Event, EventKind, NsType, Syscall},
        render::Clock,
    },
    traffic::{
        TrafficError,
        attach::Attachments,
        counters::TrafficMap,
        links::{Veth, veths_here},
        monitor::{LinkEvent, LinkMonitor},
    },
};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot open the link notification socket")]
    LinkMonitor(#[source] std::io::Error),
    #[error("reading the event ring buffer failed")]
    Events(#[source] std::io::Error),
}

/// Agent settings.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub load: LoadOptions,
}

/// A started agent: programs loaded, every namespace scanned, classifiers attached. [`Agent::run`] then
/// follows changes until shutdown.
pub struct Agent {
    probes: Arc<Mutex<Probes>>,
    events: crate::trace::stream::EventStream,
    attachments: Attachments,
    tracker: Tracker,
    monitor: LinkMonitor,
    topology: Arc<Mutex<Topology>>,
    metrics: Arc<Metrics>,
    looped: LoopMetrics,
    /// A path that led to each namespace at the last scan, to enter it again without a rescan.
    paths: HashMap<u32, PathBuf>,
    own_netns: u32,
    /// When a link notification last sent the agent scanning for a netns id it did not know (see
    /// [`Agent::resolve_nsid`]).
    last_resolve: Option<std::time::Instant>,
    /// Container names kept under /run/netns (see [`Agent::name_containers`]).
    naming: Naming,
    /// Who got into each namespace ([`crate::lifecycle::arrivals`]), and whether the state file is behind.
    arrivals: Arrivals,
    arrivals_dirty: bool,
    clock: Clock,
}

/// How long new arrivals may wait before the state file is written (a burst costs one write).
const ARRIVALS_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The state of `--name-containers`: whether it is on, and whether a namespace came or went since the names
/// were last reconciled.
#[derive(Debug, Default)]
struct Naming {
    enabled: bool,
    dirty: bool,
}

/// How soon after a namespace comes or goes (or a process moves into another) the names are reconciled: a
/// container's runtime finishes setting it up (cgroup, state files) in that time, and a burst of namespaces
/// costs one scan.
const NAMING_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

impl Agent {
    /// Loads, scans and attaches. Must run on a multi-threaded tokio runtime (attaching blocks briefly).
    pub async fn start(options: &AgentOptions) -> Result<Self, AgentError> {
        Self::start_with(Probes::load(&options.load)?).await
    }

    /// Scans and attaches with programs loaded already (`netns-monitor run` loads them before it starts its
    /// runtime, so that it can drop the capabilities only loading needs while it has a single thread).
    pub async fn start_with(mut probes: Probes) -> Result<Self, AgentError> {
        let adopted = &probes.adopted;
        if !adopted.maps.is_empty() || adopted.links > 0 {
            tracing::info!(
                maps = ?adopted.maps,
                links = adopted.links,
                drained = adopted.drained,
                "adopted the transition programs' pinned links and maps; events queued while down come next"
            );
        }
        for mounted in &probes.mounted {
            tracing::info!(fs = mounted.fs_type, target = %mounted.target.display(), "mounted missing filesystem");
        }
        if let Err(err) = probes.enable_run_time_stats() {
            tracing::warn!(error = %error_chain(&err), "program run-time metrics will stay at 0");
        }
        probes.forward_kernel_logs()?;
        let events = probes.events()?;
        // Subscribe before scanning, so that no link appearing during the scan is missed.
        let monitor = LinkMonitor::open().map_err(AgentError::LinkMonitor)?;
        let phase = std::time::Instant::now();
        let inventory = Inventory::scan(&ScanOptions { fds: true })?;
        let scan_ms = phase.elapsed().as_millis();
        let phase = std::time::Instant::now();
        let mut tracker = Tracker::start(&inventory).await?;
        let track_ms = phase.elapsed().as_millis();
        if probes.hooks.reports_destruction() {
            tracker.kernel_reports_destruction();
        } else if !tracker.has_handles() {
            tracing::info!(
                "tier 2 before Linux 6.18 (no nsfs file handles): a namespace created and gone before the agent can \
                 reach it is counted in netns_monitor_netns_untracked_total and reported with an unknown end"
            );
        }
        let own_netns = nsfs_inode(std::path::Path::new("/proc/self/ns/net")).unwrap_or_default();
        let attachments = Attachments::new(&probes)?;
        if !crate::traffic::attach::tcx_available() {
            tracing::info!(
                "this kernel has no TCX (before 6.6): the classifiers are clsact/cls_bpf filters, which stay in the \
                 kernel when the agent stops and are taken over in place by the next agent"
            );
        }
        let traffic = TrafficMap::open(&probes.pin_dir)?;
        let topology = Arc::new(Mutex::new(Topology::default()));
        let hooks = probes.hooks.clone();
        let probes = Arc::new(Mutex::new(probes));
        let metrics = Metrics::new(StateCollector::new(Arc::clone(&topology), Arc::clone(&probes), traffic)?, &hooks)?;
        let looped = metrics.looped.clone();
        let mut agent = Self {
            probes,
            events,
            attachments,
            tracker,
            monitor,
            topology,
            metrics: Arc::new(metrics),
            looped,
            paths: HashMap::new(),
            own_netns,
            last_resolve: None,
            naming: Naming::default(),
            arrivals: Arrivals::default(),
            arrivals_dirty: false,
            clock: Clock::now(),
        };
        // A previous agent's records, for the namespaces that are provably still the same.
        agent.arrivals = Arrivals::load(std::path::Path::new(arrivals::STATE_FILE));
        agent.arrivals.keep_proven();
        // Written now, so that what the CLI reads from here on is this agent's.
        agent.arrivals_dirty = true;
        agent.save_arrivals();
        agent.sync_untracked(0);
        let phase = std::time::Instant::now();
        agent.rescan(inventory);
        let stale = agent.attachments.remove_stale()?;
        agent.publish();
        let attach_ms = phase.elapsed().as_millis();
        // Start-up freed far more than it keeps (see collector::release_free_memory).
        collector::release_free_memory();
        tracing::info!(
            namespaces = agent.tracker.tracked() + 1,
            interfaces = agent.attachments.attached().len(),
            adopted = agent.attachments.attached().values().filter(|a| a.adopted).count(),
            stale,
            scan_ms,
            track_ms,
            attach_ms,
            "programs attached; watching namespaces"
        );
        Ok(agent)
    }

    /// The metrics this agent serves.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Keeps a /run/netns name for every container's namespace (`run --name-containers`): made, moved after a
    /// restart and removed as `attach --all --prune` would, shortly after namespaces come or go.
    pub fn name_containers(&mut self, enabled: bool) {
        self.naming = Naming { enabled, dirty: enabled };
    }

    fn reconcile_names(&mut self) {
        self.naming.dirty = false;
        let changes = tokio::task::block_in_place(|| {
            let inventory = Inventory::scan(&ScanOptions::default())?;
            Ok::<_, InventoryError>(autoname::reconcile(
                &inventory,
                &autoname::Options { processes: false, prune: true },
            ))
        });
        match changes {
            Ok(changes) => {
                for change in changes {
                    match change {
                        Change::Named { name, inode, outcome } => {
                            tracing::info!(name, inode, ?outcome, "named a container's namespace");
                        }
                        Change::Removed { name } => {
                            tracing::info!(name, "removed the name of a container that is gone")
                        }
                        Change::Failed { what, error } => {
                            tracing::warn!(error = %error_chain(&error), "cannot {what}");
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %error_chain(&err), "cannot scan namespaces to name containers"),
        }
    }

    /// Follows kernel events until `shutdown` resolves. Pinned classifier links stay behind.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let mut batch = Vec::new();
        let mut naming_at = None;
        let mut save_at = None;
        loop {
            if self.naming.dirty && naming_at.is_none() {
                naming_at = Some(tokio::time::Instant::now() + NAMING_DELAY);
            }
            if self.arrivals_dirty && save_at.is_none() {
                save_at = Some(tokio::time::Instant::now() + ARRIVALS_DELAY);
            }
            let naming = tokio::time::sleep_until(naming_at.unwrap_or_else(tokio::time::Instant::now));
            let save = tokio::time::sleep_until(save_at.unwrap_or_else(tokio::time::Instant::now));
            tokio::select! {
                () = &mut shutdown => break,
                () = save, if save_at.is_some() => {
                    save_at = None;
                    self.save_arrivals();
                }
                () = naming, if naming_at.is_some() => {
                    naming_at = None;
                    self.reconcile_names();
                }
                read = self.events.next_batch(&mut batch) => {
                    read.map_err(AgentError::Events)?;
                    // One rescan serves every creation in the batch whose creator is already gone: they all
                    // happened before the batch was read. A scan per event made the agent fall behind an
                    // unshare storm and lose events (`cargo xtask bench unshare`).
                    let mut rescan = None;
                    for event in batch.drain(..) {
                        self.on_event(&event, &mut rescan).await;
                    }
                }
                end = self.tracker.next_end() => match end {
                    Some(End::Destroyed(inode)) => self.on_destroyed(inode),
                    // Counted in `untracked` when the tracker gave up on it.
                    Some(End::Unknown(inode)) => tracing::debug!(inode, "a new namespace's end will not be seen"),
                    None => return Err(LifecycleError::Closed.into()),
                },
                links = self.monitor.next() => {
                    for change in links.map_err(AgentError::LinkMonitor)? {
                        self.on_link(change).await;
                    }
                }
            }
        }
        self.save_arrivals();
        let what = if crate::traffic::attach::tcx_available() { "pinned TCX links" } else { "clsact/cls_bpf filters" };
        let (pinned, pin_dir) = {
            let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            (probes.pins_transitions(), probes.pin_dir.clone())
        };
        let transitions = if pinned {
            "the transition programs stay attached (pinned) and queue events for the next agent"
        } else {
            "the transition programs stop (this kernel cannot pin their links)"
        };
        tracing::info!(
            interfaces = self.attachments.attached().len(),
            pin_dir = %pin_dir.display(),
            "shutting down; the classifiers stay attached as {what} and keep counting, {transitions}; \
             `netns-monitor unload` takes everything down"
        );
        Ok(())
    }

    async fn on_event(&mut self, event: &Event, rescan: &mut Option<Option<Inventory>>) {
        match event.kind {
            EventKind::Transition(syscall) => {
                let mut changed = event.changed().peekable();
                if changed.peek().is_none() {
                    self.looped.transitions.with_label_values(&[syscall.name(), "none"]).inc();
                }
                for ty in changed {
                    self.looped.transitions.with_label_values(&[syscall.name(), ty.proc_name()]).inc();
                    // A runtime may make the namespace well before the container's first process joins it
                    // (Docker's sandbox): only then can the namespace be told to be the container's.
                    if ty == NsType::Net && event.errno().is_none() && event.pid != std::process::id() {
                        self.naming.dirty |= self.naming.enabled;
                    }
                }
                if let Some(errno) = event.errno() {
                    let errno = format!("{:?}", nix::errno::Errno::from_raw(errno));
                    self.looped.transition_errors.with_label_values(&[syscall.name(), &errno]).inc();
                }
                if event.pid != std::process::id()
                    && let Some(inode) = self.arrivals.record(event, self.clock.wall(event.ts_boot_ns))
                {
                    self.arrivals_dirty = true;
                    let counts = arrival_counts(&self.arrivals, inode);
                    self.topology.lock().unwrap_or_else(|p| p.into_inner()).arrivals.insert(inode, counts);
                }
            }
            EventKind::NetnsCreated => {
                self.looped.created.inc();
                self.naming.dirty |= self.naming.enabled;
                let (_, inode) = event.ns(NsType::Net);
                let before = self.tracker.untracked();
                let opened = self
                    .tracker
                    .track_created(inode, event.net_cookie, event.pid, event.tid, || {
                        rescan.get_or_insert_with(|| Inventory::scan(&ScanOptions { fds: true }).ok()).clone()
                    })
                    .await;
                self.sync_untracked(before);
                self.forget_gone();
                if let Some(file) = opened {
                    self.attach_all_in(inode, &file);
                    self.publish();
                }
            }
            // Only tier 1's kernel programs send these (tier 2's come from the tracker, above).
            EventKind::NetnsDestroyed => {
                let (inode, _) = event.ns(NsType::Net);
                self.on_destroyed(inode);
            }
            EventKind::NetnsEndUnknown => {}
        }
    }

    fn on_destroyed(&mut self, inode: u32) {
        self.looped.destroyed.inc();
        if self.arrivals.namespaces.contains_key(&inode) {
            self.arrivals.forget(inode);
            self.arrivals_dirty = true;
        }
        self.naming.dirty |= self.naming.enabled;
        self.paths.remove(&inode);
        if let Err(err) = self.attachments.remove_netns(inode) {
            tracing::warn!(inode, error = %error_chain(&err), "cannot clean up a destroyed namespace's interfaces");
        }
        self.publish();
    }

    /// Namespaces the tracker found dead while tracking others: forgotten before anything is attached in a new
    /// namespace that may have the inode of one of them.
    fn forget_gone(&mut self) {
        for inode in self.tracker.take_gone() {
            self.on_destroyed(inode);
        }
    }

    /// The namespace of a link notification, if the agent knows it: its own, or the one with netns id `nsid`.
    fn known_netns(&self, nsid: Option<i32>) -> Option<u32> {
        nsid.map_or(Some(self.own_netns), |id| self.tracker.inode_of(id))
    }

    /// [`Self::known_netns`], else looked for (see [`Self::resolve_nsid`]).
    async fn netns_of(&mut self, nsid: Option<i32>) -> Option<u32> {
        match (self.known_netns(nsid), nsid) {
            (None, Some(id)) => self.resolve_nsid(id).await,
            (known, _) => known,
        }
    }

    /// Tracks every namespace in `inventory` the tracker does not know yet; returns those, opened.
    async fn track_new(&mut self, inventory: &Inventory) -> Vec<(u32, File)> {
        let mut found = Vec::new();
        for ns in inventory.namespaces.values() {
            if ns.inode == self.own_netns || self.tracker.nsid_of(ns.inode).is_some() {
                continue;
            }
            let Some(file) = ns.open() else { continue };
            let before = self.tracker.untracked();
            if let Some(file) = self.tracker.track_file(ns.inode, file).await {
                found.push((ns.inode, file));
            }
            self.sync_untracked(before);
        }
        self.forget_gone();
        found
    }

    /// A link notification can be read before the creation event of its namespace (they come through different
    /// channels), and the kernel gives a namespace an id when a veth's peer is put there: scan for namespaces not
    /// tracked yet and track them. At most once a second, so that notifications from namespaces userspace cannot
    /// reach (which the scan will not find) cannot make the agent scan in a loop.
    async fn resolve_nsid(&mut self, nsid: i32) -> Option<u32> {
        if self.last_resolve.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) {
            tracing::debug!(nsid, "link notification from a namespace the agent does not know");
            return None;
        }
        self.last_resolve = Some(std::time::Instant::now());
        let inventory = match Inventory::scan(&ScanOptions { fds: true }) {
            Ok(inventory) => inventory,
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "rescan failed");
                return None;
            }
        };
        let found = self.track_new(&inventory).await;
        for (inode, file) in &found {
            if let Some(path) = inventory.get(*inode).and_then(|ns| ns.open_path()) {
                self.paths.insert(*inode, path);
            }
            self.attach_all_in(*inode, file);
        }
        if !found.is_empty() {
            self.publish();
        }
        let inode = self.tracker.inode_of(nsid);
        if inode.is_none() {
            tracing::debug!(nsid, "link notification from a namespace the agent cannot find");
        }
        inode
    }

    async fn on_link(&mut self, change: LinkEvent) {
        match change {
            LinkEvent::Veth { nsid, veth } => {
                let Some(inode) = self.netns_of(nsid).await else { return };
                let key = TrafficKey { netns: inode, ifindex: veth.ifindex };
                if self.attachments.attached().get(&key).is_some_and(|a| a.name == veth.name) {
                    return;
                }
                match self.open(inode) {
                    Some(file) => self.attach(inode, &file, &veth),
                    // Nothing in userspace holds the namespace any more (no process, mount or fd a fresh scan
                    // finds): it is being destroyed (or only the kernel holds it, and no one can enter it). A
                    // dying namespace's devices still send RTM_NEWLINK as they go down, and a late one can come
                    // for a veth a runtime moved there just before it stopped (`tests/containers.rs` saw one for a
                    // Docker container removed right after a restart). Not a failure, and nothing to count.
                    None => tracing::debug!(inode, name = veth.name, "a new veth's namespace is gone; not attached"),
                }
                self.publish();
            }
            LinkEvent::Removed { nsid, ifindex } => {
                let Some(inode) = self.known_netns(nsid) else { return };
                let key = TrafficKey { netns: inode, ifindex };
                if self.attachments.attached().contains_key(&key) {
                    if let Err(err) = self.attachments.remove(key) {
                        tracing::warn!(inode, ifindex, error = %error_chain(&err), "cannot clean up a removed interface");
                    }
                    self.publish();
                }
            }
            LinkEvent::Overflow => {
                tracing::warn!("link notifications were lost; rescanning every namespace");
                match Inventory::scan(&ScanOptions { fds: true }) {
                    Ok(inventory) => {
                        self.track_new(&inventory).await;
                        self.rescan(inventory);
                        self.publish();
                    }
                    Err(err) => tracing::warn!(error = %error_chain(&err), "rescan failed"),
                }
            }
        }
    }

    /// Attaches to every veth of every namespace in `inventory`, and forgets attached interfaces that are gone.
    fn rescan(&mut self, inventory: Inventory) {
        let mut opened = Vec::with_capacity(inventory.namespaces.len());
        for ns in inventory.namespaces.values() {
            let Some(path) = ns.open_path() else { continue };
            let Ok(file) = File::open(&path) else { continue };
            self.paths.insert(ns.inode, path);
            opened.push((ns.inode, file));
        }
        let seen = self.attach_everywhere(&opened);
        let gone: Vec<TrafficKey> = self.attachments.attached().keys().filter(|k| !seen.contains(k)).copied().collect();
        for key in gone {
            if let Err(err) = self.attachments.remove(key) {
                tracing::warn!(?key, error = %error_chain(&err), "cannot clean up a vanished interface");
            }
        }
    }

    /// Attaches to every veth of `namespaces` from one thread that enters them one after another (a thread per
    /// namespace and per request was most of the agent's start-up on a large host); returns the veths found.
    fn attach_everywhere(&mut self, namespaces: &[(u32, File)]) -> std::collections::BTreeSet<TrafficKey> {
        let Self { probes, attachments, looped, .. } = self;
        let (probes, looped) = (&**probes, &*looped);
        tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let worker = std::thread::Builder::new().name("netns-attach".into()).spawn_scoped(scope, move || {
                    let mut seen = std::collections::BTreeSet::new();
                    for (inode, file) in namespaces {
                        if let Err(err) = setns(file.as_fd(), CloneFlags::CLONE_NEWNET) {
                            tracing::warn!(inode, error = %error_chain(&err), "cannot enter the namespace");
                            continue;
                        }
                        let veths = match veths_here() {
                            Ok(veths) => veths,
                            Err(err) => {
                                tracing::warn!(inode, error = %error_chain(&err), "cannot list the namespace's interfaces");
                                continue;
                            }
                        };
                        for veth in &veths {
                            attach_one(attachments, probes, looped, *inode, Within::Here, veth);
                            seen.insert(TrafficKey { netns: *inode, ifindex: veth.ifindex });
                        }
                    }
                    seen
                });
                match worker {
                    Ok(worker) => worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot start a thread to attach the classifiers");
                        std::collections::BTreeSet::new()
                    }
                }
            })
        })
    }

    /// Attaches to every veth in the namespace behind `file`; returns the veths found.
    fn attach_all_in(&mut self, inode: u32, file: &File) -> Vec<Veth> {
        let veths = tokio::task::block_in_place(|| in_netns(Some(file.as_fd()), veths_here));
        let veths = match veths {
            Ok(Ok(veths)) => veths,
            Ok(Err(err)) => {
                tracing::warn!(inode, error = %error_chain(&err), "cannot list the namespace's interfaces");
                return Vec::new();
            }
            Err(err) => {
                tracing::warn!(inode, error = %error_chain(&err), "cannot enter the namespace");
                return Vec::new();
            }
        };
        for veth in &veths {
            self.attach(inode, file, veth);
        }
        veths
    }

    fn attach(&mut self, inode: u32, file: &File, veth: &Veth) {
        tokio::task::block_in_place(|| {
            attach_one(&mut self.attachments, &self.probes, &self.looped, inode, Within::Enter(file.as_fd()), veth)
        });
    }

    /// Opens namespace `inode` through the path that worked last time, else through a fresh scan.
    fn open(&mut self, inode: u32) -> Option<File> {
        if let Some(path) = self.paths.get(&inode)
            && nsfs_inode(path) == Some(inode)
            && let Ok(file) = File::open(path)
        {
            return Some(file);
        }
        let inventory = Inventory::scan(&ScanOptions { fds: true }).ok()?;
        let path = inventory.get(inode)?.open_path()?;
        let file = File::open(&path).ok()?;
        self.paths.insert(inode, path);
        Some(file)
    }

    /// Makes the collector see the current interfaces and netns ids, and the classifiers forget the device
    /// namespaces they memoised (every caller just learnt of a link or namespace change).
    fn publish(&self) {
        if let Err(err) = self.probes.lock().unwrap_or_else(|p| p.into_inner()).bump_link_generation() {
            tracing::warn!(error = %error_chain(&err), "cannot invalidate the classifiers' device memos");
        }
        let interfaces = self.attachments.attached().iter().map(|(k, a)| (*k, a.name.clone())).collect();
        let nsids = self.tracker.nsids().collect();
        let arrivals =
            self.arrivals.namespaces.keys().map(|&inode| (inode, arrival_counts(&self.arrivals, inode))).collect();
        *self.topology.lock().unwrap_or_else(|p| p.into_inner()) = Topology { interfaces, nsids, arrivals };
    }

    /// Writes who got into each namespace for the CLI (`list --who`, `stats --who`).
    fn save_arrivals(&mut self) {
        if !self.arrivals_dirty {
            return;
        }
        self.arrivals_dirty = false;
        if let Err(err) = self.arrivals.save(std::path::Path::new(arrivals::STATE_FILE)) {
            tracing::warn!(error = %err, path = arrivals::STATE_FILE, "cannot save who entered each namespace");
        }
    }

    fn sync_untracked(&self, before: u64) {
        let now = self.tracker.untracked();
        if now > before {
            self.looped.untracked.inc_by(now - before);
        }
    }
}

/// Attaches both classifiers to `veth` of namespace `inode`; a failure is logged and counted, not returned.
fn attach_one(
    attachments: &mut Attachments,
    probes: &Mutex<Probes>,
    looped: &LoopMetrics,
    inode: u32,
    netns: Within<'_>,
    veth: &Veth,
) {
    let key = TrafficKey { netns: inode, ifindex: veth.ifindex };
    // Locked for one interface at a time: a scrape reads the kernel counters through the same lock.
    let mut probes = probes.lock().unwrap_or_else(|p| p.into_inner());
    let attached = attachments.attach(&mut probes, netns, key).map(|a| a.is_some());
    drop(probes);
    if let Ok(false) = attached {
        // Moved to another namespace or deleted since the notification: its own notification follows.
        tracing::debug!(inode, ifindex = veth.ifindex, name = veth.name, "interface gone before it was attached");
    }
    if let Err(err) = attached {
        let hook = match &err {
            TrafficError::Attach { direction: Direction::Egress, .. } => "tc_egress",
            _ => "tc_ingress",
        };
        looped.attach_failures.with_label_values(&[hook]).inc();
        tracing::warn!(inode, name = veth.name, error = %error_chain(&err), "cannot attach the classifiers");
    }
}

/// Runs the agent until `shutdown` resolves (metrics served by the caller, see [`Agent::metrics`]).
pub async fn run(options: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    Agent::start(&options).await?.run(shutdown).await
}

/// A namespace's arrivals by syscall, in [`Syscall::ALL`]'s order, for the scrape.
fn arrival_counts(arrivals: &Arrivals, inode: u32) -> [u64; 4] {
    let record = arrivals.namespaces.get(&inode);
    Syscall::ALL.map(|syscall| record.and_then(|r| r.counts.get(syscall.name())).copied().unwrap_or(0))
}
