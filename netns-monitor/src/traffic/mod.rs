//! Per-namespace traffic: attaching the tc/TCX classifiers to every veth end ([`attach`]), finding veths
//! ([`links`]) and hearing about new ones ([`monitor`]), reading the counters ([`counters`]), and the kernel's own
//! counters they start from ([`kernel`], [`seed`]).

pub mod attach;
pub mod counters;
pub mod kernel;
pub mod links;
pub mod monitor;
pub mod seed;
pub mod slots;

use crate::bpf::{BpfError, Direction};

/// Errors attaching classifiers or reading their counters.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error(transparent)]
    Bpf(BpfError),
    #[error("cannot open the pinned traffic map {path} (is the agent running, or did it ever run?)")]
    OpenMap {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("traffic map")]
    Map(#[source] aya::maps::MapError),
    #[error("all {capacity} traffic counter slots are in use: restart the agent with a larger --max-interfaces")]
    Full { capacity: u32 },
    #[error("cannot read the kernel's counters of interface {ifindex}")]
    KernelStats {
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the traffic map in batches")]
    Batch(#[source] std::io::Error),
    #[error("cannot count CPUs")]
    Cpus(#[source] std::io::Error),
    #[error("cannot manage pins under {path}")]
    Pin {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter the interface's namespace")]
    Thread(#[source] crate::manage::rtnl::RtnlError),
    #[error("cannot attach the {} classifier to {name}", direction.as_str())]
    Attach {
        name: String,
        direction: Direction,
        #[source]
        source: aya::programs::ProgramError,
    },
}
