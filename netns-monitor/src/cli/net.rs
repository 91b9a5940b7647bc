//! `veth`, `nat` and `forward`: connecting namespaces to the host and the outside.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::ExitCode,
};

use clap::{Args, Subcommand};

use super::netns::classify;
use crate::manage::{
    cidr::Cidr,
    nat::{self, PortMap, PortSel},
    veth::{self, VethSpec},
};

#[derive(Debug, Subcommand)]
pub enum VethCommand {
    /// Create a veth pair HOST/PEER with PEER in namespace --netns, both ends and the namespace's `lo` up.
    ///
    /// Optionally address both ends, set their MTU, and add a default route inside the namespace. The recipe
    /// `ip link add HOST type veth peer name PEER; ip link set PEER netns NS; ip addr add ...; ip link set ...
    /// up; ip -n NS route add default via ...` as one command. If any step fails, the pair is removed again.
    Add(VethAddArgs),
    /// Delete the veth HOST (and so its peer). Refuses interfaces that are not veths.
    Del(VethDelArgs),
}

#[derive(Debug, Args)]
pub struct VethAddArgs {
    /// Name of the end that stays in the host (or --host-netns) namespace.
    pub host: String,
    /// Name of the end that goes into --netns.
    pub peer: String,
    /// Named namespace for the peer end.
    #[arg(long, value_name = "NAME")]
    pub netns: String,
    /// Named namespace for the host end, to connect two namespaces (default: the current namespace).
    #[arg(long, value_name = "NAME")]
    pub host_netns: Option<String>,
    /// Address of the host end, e.g. 10.200.1.1/24.
    #[arg(long, value_name = "CIDR")]
    pub address: Option<Cidr>,
    /// Address of the peer end, e.g. 10.200.1.2/24.
    #[arg(long, value_name = "CIDR")]
    pub peer_address: Option<Cidr>,
    /// Default gateway inside the namespace (usually the host end's address).
    #[arg(long, value_name = "IP")]
    pub peer_gateway: Option<IpAddr>,
    /// MTU of both ends.
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
}

#[derive(Debug, Args)]
pub struct VethDelArgs {
    /// Name of the host end.
    pub host: String,
    /// Named namespace the host end is in (default: the current namespace).
    #[arg(long, value_name = "NAME")]
    pub host_netns: Option<String>,
}

pub fn veth(command: VethCommand) -> anyhow::Result<ExitCode> {
    match command {
        VethCommand::Add(args) => {
            let spec = VethSpec {
                host: args.host,
                peer: args.peer,
                netns: args.netns,
                host_netns: args.host_netns,
                address: args.address,
                peer_address: args.peer_address,
                peer_gateway: args.peer_gateway,
                mtu: args.mtu,
            };
            veth::add(&spec).map_err(classify)?;
        }
        VethCommand::Del(args) => veth::del(&args.host, args.host_netns.as_deref()).map_err(classify)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum NatCommand {
    /// Masquerade the namespace's IPv4 subnets out of --out and accept that traffic (and its replies) in the
    /// forward hook; enables IPv4 forwarding. Rules live in the nftables table `ip netns_monitor`, tagged
    /// `nat/NAME`; running it again replaces them.
    Add(NatAddArgs),
    /// Remove the namespace's nat rules (IPv4 forwarding stays on).
    Del(NatDelArgs),
}

#[derive(Debug, Args)]
pub struct NatAddArgs {
    /// Named namespace.
    pub name: String,
    /// Host interface the traffic leaves by; it must exist (see --allow-missing-out).
    #[arg(long, value_name = "IFACE")]
    pub out: String,
    /// Accept an --out interface that does not exist yet (one that comes later: a VPN, a hotplugged NIC).
    #[arg(long)]
    pub allow_missing_out: bool,
    /// Subnet to masquerade (repeatable; default: the networks of the namespace's global IPv4 addresses).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<Cidr>,
}

#[derive(Debug, Args)]
pub struct NatDelArgs {
    /// Named namespace.
    pub name: String,
}

pub fn nat(command: NatCommand) -> anyhow::Result<ExitCode> {
    match command {
        NatCommand::Add(args) => {
            for subnet in nat::nat_add(&args.name, &args.out, &args.subnet, args.allow_missing_out).map_err(classify)? {
                println!("masquerading {subnet} out of {}", args.out);
            }
        }
        NatCommand::Del(args) => nat::nat_del(&args.name).map_err(classify)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// DNAT HOST_PORT on the host's addresses to NS_PORT in the namespace (its first IPv4 address, or --to),
    /// for traffic from outside and from the host itself (not to 127.0.0.0/8); enables IPv4 forwarding.
    /// Tagged `forward/NAME/HOST_PORT/PROTO` in table `ip netns_monitor`; running it again replaces it.
    Add(ForwardAddArgs),
    /// Remove the namespace's port forwards (only the one on --port when given).
    Del(ForwardDelArgs),
}

#[derive(Debug, Args)]
pub struct ForwardAddArgs {
    /// Named namespace.
    pub name: String,
    /// HOST_PORT:NS_PORT[/tcp|udp] (default tcp).
    #[arg(long, value_name = "HOST_PORT:NS_PORT[/PROTO]")]
    pub port: PortMap,
    /// Address inside the namespace to forward to (default: its first global IPv4 address).
    #[arg(long, value_name = "IP")]
    pub to: Option<Ipv4Addr>,
}

#[derive(Debug, Args)]
pub struct ForwardDelArgs {
    /// Named namespace.
    pub name: String,
    /// HOST_PORT[/tcp|udp] of the forward to remove (default: all of the namespace's).
    #[arg(long, value_name = "HOST_PORT[/PROTO]")]
    pub port: Option<PortSel>,
}

pub fn forward(command: ForwardCommand) -> anyhow::Result<ExitCode> {
    match command {
        ForwardCommand::Add(args) => {
            let to = nat::forward_add(&args.name, args.port, args.to).map_err(classify)?;
            println!("forwarding {}/{} to {to}:{}", args.port.host_port, args.port.proto, args.port.ns_port);
        }
        ForwardCommand::Del(args) => nat::forward_del(&args.name, args.port).map_err(classify)?,
    }
    Ok(ExitCode::SUCCESS)
}
