//! Benchmarks: `cargo xtask bench NAME`. One file per benchmark; each builds what it measures in release mode,
//! runs both sides in one run on the same machine state, prints its figures, and removes everything it made.

mod netns_setup;
mod stats;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Time setting up N namespaces, each with a veth pair, addresses, lo up and a default route: with
    /// `netns-monitor add` + `veth add` versus the `ip netns add` / `ip link` / `ip addr` / `ip route` recipe.
    NetnsSetup(netns_setup::Args),
}

pub fn bench(bench: &Bench) -> anyhow::Result<()> {
    match bench {
        Bench::NetnsSetup(args) => netns_setup::run(args),
    }
}
