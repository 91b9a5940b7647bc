//! `netns-monitor run`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Args;

use super::UsageError;
use crate::{
    agent::{Agent, config::AgentConfig},
    bpf::{DEFAULT_MAX_INTERFACES, DEFAULT_PIN_DIR, LoadOptions, Probes, TrafficOptions},
    metrics::{HttpError, MetricsServer, Render, ServerOptions, WebConfig},
    privileges::{self, CapSet},
};

/// Where `/metrics` is served when neither `--listen` nor the config file says: localhost only, on a port
/// outside Prometheus' fully allocated 9100-9999 exporter block (docs/metrics.md).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10931";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address for the metrics endpoint (`/metrics`, and `/` linking to it). [default: 127.0.0.1:10931]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Prometheus exporter-toolkit web configuration: TLS (>= 1.2) and basic auth with bcrypt hashes
    /// (see deploy/web-config.example.yml).
    #[arg(long, value_name = "FILE")]
    web_config: Option<PathBuf>,
    /// YAML file with the same settings as these flags (listen, web_config, pin_dir, ring_buffer_bytes,
    /// name_containers, hooks, max_interfaces, traffic_protocols); flags given here win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where maps and classifier links are pinned (bpffs). A restarted agent adopts what it finds there.
    /// [default: /sys/fs/bpf/netns-monitor]
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Size of the transition event ring buffer in bytes: a power of two, at least the page size (4096).
    #[arg(long, value_name = "BYTES")]
    ring_buffer_bytes: Option<u32>,
    /// Keep a /run/netns name for every container's namespace, as `attach --all` makes them (symlinks that
    /// never keep a namespace alive), following each container across restarts and removing the name when
    /// the container is gone.
    #[arg(long)]
    name_containers: bool,
    /// Kernel hooks for the transition and namespace events: `fentry` (tier 1: fentry/fexit on the syscall and
    /// namespace functions, no cost to other syscalls; fails where the kernel refuses it), `tracepoint` (tier 2:
    /// syscall tracepoints, which slow every syscall a little), or `auto`: tier 1 where the kernel allows it.
    /// [default: auto]
    #[arg(long, value_name = "TIER", value_parser = clap::builder::PossibleValuesParser::new(crate::bpf::HookChoice::NAMES))]
    hooks: Option<String>,
    /// How many veth ends (host and namespace side each count) can be counted at once: the size of the
    /// classifiers' per-CPU counter arrays, 32 bytes per interface per CPU (16384: 512 KiB per CPU), at most
    /// 65535. Interfaces beyond it are not counted (`netns_monitor_traffic_slots` shows the use). Changing it
    /// re-measures every interface from the kernel's counters. [default: 16384]
    #[arg(long, value_name = "N")]
    max_interfaces: Option<u32>,
    /// Count packets and bytes by transport protocol too (tcp, udp, icmp, other): the
    /// `netns_monitor_network_*_protocol_*` families, 16 more series per interface, and a read of each packet's
    /// IP header.
    #[arg(long)]
    traffic_protocols: bool,
    /// Testing and debugging: trace only the transitions of process PID (filtered in the kernel, so the
    /// transition and lost-event counters then cover that process alone). Traffic counting is unaffected.
    #[arg(long, value_name = "PID", hide = true)]
    filter_pid: Option<u32>,
}

/// Runs the agent. In order: everything the operator wrote is checked (exit 2), the capabilities are checked
/// (exit 1, naming the missing ones) and every other one is dropped, the endpoint is bound and the programs are
/// loaded, then the capabilities only that needed are dropped too. All of this happens before the async runtime
/// exists, because capabilities belong to threads and the process must still have only one (see
/// [`crate::privileges`]).
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Everything that can be wrong with the configuration is found before anything is loaded into the kernel.
    let file = match &args.config {
        Some(path) => AgentConfig::load(path).map_err(|err| UsageError(crate::bpf::error_chain(&err)))?,
        None => AgentConfig::default(),
    };
    let ring_buffer_bytes = args.ring_buffer_bytes.or(file.ring_buffer_bytes);
    if let Some(bytes) = ring_buffer_bytes
        && !(bytes >= 4096 && bytes.is_power_of_two())
    {
        return Err(UsageError(format!("--ring-buffer-bytes must be a power of two >= 4096, not {bytes}")).into());
    }
    let max_interfaces = args.max_interfaces.or(file.max_interfaces).unwrap_or(DEFAULT_MAX_INTERFACES);
    if !crate::agent::config::valid_max_interfaces(max_interfaces) {
        return Err(UsageError(format!(
            "--max-interfaces must be between 1 and {}, not {max_interfaces}",
            netns_monitor_common::traffic::MAX_SLOTS
        ))
        .into());
    }
    let traffic =
        TrafficOptions { max_interfaces, protocols: args.traffic_protocols || file.traffic_protocols.unwrap_or(false) };
    let listen = args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
    let web = match args.web_config.or(file.web_config) {
        Some(path) => Some(WebConfig::load(&path).map_err(|err| UsageError(crate::bpf::error_chain(&err)))?),
        None => None,
    };
    let name_containers = args.name_containers || file.name_containers.unwrap_or(false);
    if name_containers {
        crate::manage::autoname::ready().context("--name-containers cannot keep names under /run/netns")?;
    }

    // Before the capabilities go: raising the limit needs CAP_SYS_RESOURCE, which is not kept.
    crate::bpf::memlock::raise();
    let startup = drop_privileges(listen)?;
    let server = match MetricsServer::bind_now(listen, web, ServerOptions::default()) {
        Ok(server) => server,
        // Certificates, keys and users named by the web config are the operator's input: bad usage (exit 2).
        Err(err @ (HttpError::Tls { .. } | HttpError::Auth { .. })) => {
            return Err(UsageError(crate::bpf::error_chain(&err)).into());
        }
        Err(err) => return Err(anyhow::Error::new(err).context(format!("cannot serve metrics on {listen}"))),
    };
    let load = LoadOptions {
        ring_buffer_bytes,
        filter_pid: args.filter_pid,
        pin_dir: Some(args.pin_dir.or(file.pin_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR))),
        hooks: match args.hooks {
            Some(name) => name.parse().map_err(UsageError)?,
            None => file.hooks.unwrap_or_default(),
        },
        traffic,
    };
    let probes = Probes::load(&load)?;
    let continuing = startup.without(CapSet::of(privileges::AGENT_STARTUP_ONLY.iter().copied()));
    privileges::restrict_to(continuing).context("cannot drop the start-up capabilities")?;
    tracing::info!(kept = %continuing.names(), "programs loaded; start-up capabilities dropped");
    super::runtime()?.block_on(serve(probes, server, name_containers))
}

/// Checks that the agent holds what it needs and drops everything else; returns what it kept.
fn drop_privileges(listen: SocketAddr) -> anyhow::Result<CapSet> {
    let mut needs = privileges::AGENT_REQUIRED.to_vec();
    if listen.port() != 0 && listen.port() < 1024 {
        needs.push(privileges::Need {
            cap: privileges::CAP_NET_BIND_SERVICE,
            why: "listen on a port below 1024 (start-up only)",
        });
    }
    privileges::check(&needs)?;
    let held = privileges::current()?.permitted;
    let missing: Vec<String> = privileges::AGENT_OPTIONAL
        .iter()
        .filter(|need| !held.contains(need.cap))
        .map(|need| format!("{} (to {})", need.cap, need.why))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(missing = %missing.join("; "), "running without optional capabilities");
    }
    // CAP_SETPCAP (when held) stays until the last drop, which needs it to narrow the bounding set.
    let keep = CapSet::of(needs.iter().chain(privileges::AGENT_OPTIONAL).map(|need| need.cap))
        .union(CapSet::of([privileges::CAP_SETPCAP]));
    let dropped = privileges::restrict_to(keep).context("cannot drop capabilities")?;
    let kept = keep.intersection(held);
    tracing::info!(kept = %kept.names(), dropped = %dropped.names(), "capabilities");
    Ok(kept)
}

async fn serve(probes: Probes, server: MetricsServer, name_containers: bool) -> anyhow::Result<ExitCode> {
    let mut agent = Agent::start_with(probes).await?;
    agent.name_containers(name_containers);
    let metrics = agent.metrics();
    let render: Render = Arc::new(move || metrics.render().map_err(Into::into));
    tracing::info!(address = %server.local_addr(), "serving /metrics");
    let (stop, stopped) = tokio::sync::watch::channel(());
    let (failed, http_failed) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        let mut stopped = stopped;
        let served = server
            .run(render, async move {
                let _ = stopped.changed().await;
            })
            .await;
        if served.is_err() {
            let _ = failed.send(());
        }
        served
    });
    // The agent stops on SIGINT/SIGTERM, or when the endpoint died (an agent nobody can scrape is no agent).
    let result = agent
        .run(async move {
            tokio::select! {
                () = super::shutdown_signal() => {}
                Ok(()) = http_failed => tracing::error!("the metrics endpoint stopped; shutting down"),
            }
        })
        .await;
    drop(stop);
    http.await.context("the metrics server task failed")?.context("the metrics server failed")?;
    result?;
    Ok(ExitCode::SUCCESS)
}
