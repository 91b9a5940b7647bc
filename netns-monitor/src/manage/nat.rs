//! `nat` and `forward`: give a namespace a way out (masquerade its subnet out of a host interface) and a way in
//! (DNAT a host port to a port inside it), as rules in netns-monitor's nftables table (see [`super::nft`]).
//!
//! Rules are tagged `nat/NAME` and `forward/NAME/PORT/PROTO`; namespace names cannot contain '/', so a tag
//! names exactly one namespace. Adding replaces the rules with the same tag in one transaction (idempotent);
//! deleting removes exactly those. IPv4 forwarding is switched on by `add` and left on by `del`: it is host-wide
//! and other things (containers, VPNs) may rely on it.

use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsFd as _,
    str::FromStr,
};

use futures::TryStreamExt as _;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};

use super::{
    BadInput,
    cidr::Cidr,
    name::{NameError, validate_ifname},
    netns::{NetnsError, open_named},
    nft::{
        self, Chain, MAX_COMMENT, Rule,
        expr::{self, CmpOp, Dir, MetaKey},
        wire::{NfSocket, WireError},
    },
    rtnl::{Rtnl, RtnlError, in_netns},
};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Errors managing NAT and port forwards.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("namespace name {name:?} is too long for nat/forward rules (their tag holds at most {MAX_COMMENT} bytes)")]
    NameTooLong { name: String },
    #[error("namespace {name:?} has no global IPv4 address: give {hint}")]
    NoAddress { name: String, hint: &'static str },
    #[error("{what} {cidr} is not IPv4 (netns-monitor's NAT table is IPv4 only)")]
    NotIpv4 { what: &'static str, cidr: String },
    #[error(
        "interface {name:?} does not exist in this namespace (--out names a host interface; \
         --allow-missing-out accepts one that comes later)"
    )]
    NoSuchInterface { name: String },
    #[error(
        "port {port}/{proto} already forwards to namespace {owner:?}: remove that first (forward del {owner} --port {port}/{proto})"
    )]
    PortTaken { port: u16, proto: Proto, owner: String },
    #[error("no nat rules for namespace {name:?}")]
    NoNat { name: String },
    #[error("no port forwards for namespace {name:?}{matching}")]
    NoForward { name: String, matching: String },
    #[error("cannot read the addresses of namespace {name:?}")]
    Addresses {
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot enable IPv4 forwarding ({IP_FORWARD})")]
    Forwarding(#[source] io::Error),
    #[error("cannot update the nftables rules")]
    Nft(#[from] WireError),
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
}

impl BadInput for NatError {
    fn is_bad_input(&self) -> bool {
        match self {
            NatError::Netns(err) => err.is_bad_input(),
            NatError::Name(_)
            | NatError::NameTooLong { .. }
            | NatError::NoAddress { .. }
            | NatError::NotIpv4 { .. }
            | NatError::NoSuchInterface { .. }
            | NatError::PortTaken { .. }
            | NatError::NoNat { .. }
            | NatError::NoForward { .. } => true,
            _ => false,
        }
    }
}

/// Transport protocol of a port forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// `HOST_PORT:NS_PORT[/tcp|udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    pub host_port: u16,
    pub ns_port: u16,
    pub proto: Proto,
}

/// `HOST_PORT[/tcp|udp]`: which forward to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSel {
    pub host_port: u16,
    pub proto: Option<Proto>,
}

/// Why a port specification did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid port {text:?}: {reason}")]
pub struct PortError {
    pub text: String,
    pub reason: &'static str,
}

fn parse_port(text: &str, whole: &str) -> Result<u16, PortError> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(PortError { text: whole.to_owned(), reason: "ports are numbers from 1 to 65535" }),
        Ok(port) => Ok(port),
    }
}

fn split_proto(text: &str) -> Result<(&str, Option<Proto>), PortError> {
    match text.split_once('/') {
        None => Ok((text, None)),
        Some((ports, "tcp")) => Ok((ports, Some(Proto::Tcp))),
        Some((ports, "udp")) => Ok((ports, Some(Proto::Udp))),
        Some(_) => Err(PortError { text: text.to_owned(), reason: "the protocol is tcp or udp" }),
    }
}

impl FromStr for PortMap {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (ports, proto) = split_proto(text)?;
        let (host, ns) = ports
            .split_once(':')
            .ok_or_else(|| PortError { text: text.to_owned(), reason: "expected HOST_PORT:NS_PORT[/tcp|udp]" })?;
        Ok(PortMap {
            host_port: parse_port(host, text)?,
            ns_port: parse_port(ns, text)?,
            proto: proto.unwrap_or_default(),
        })
    }
}

impl FromStr for PortSel {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (port, proto) = split_proto(text)?;
        Ok(PortSel { host_port: parse_port(port, text)?, proto })
    }
}

fn nat_tag(name: &str) -> String {
    format!("nat/{name}")
}

fn forward_tag(name: &str, port: u16, proto: Proto) -> String {
    format!("forward/{name}/{port}/{proto}")
}

fn check_tag_fits(name: &str) -> Result<(), NatError> {
    if forward_tag(name, u16::MAX, Proto::Tcp).len() > MAX_COMMENT {
        return Err(NatError::NameTooLong { name: name.to_owned() });
    }
    Ok(())
}

/// Masquerades the IPv4 subnets of namespace `name` (or `subnets` when given) out of `out`, accepts that traffic
/// and its replies in the forward hook, and enables IPv4 forwarding. Returns the subnets. `out` must exist
/// unless `allow_missing_out`: a typo would otherwise replace a working rule by one that matches nothing.
pub fn nat_add(name: &str, out: &str, subnets: &[Cidr], allow_missing_out: bool) -> Result<Vec<Cidr>, NatError> {
    validate_ifname(out)?;
    if !allow_missing_out && nix::net::if_::if_nametoindex(out).is_err() {
        return Err(NatError::NoSuchInterface { name: out.to_owned() });
    }
    check_tag_fits(name)?;
    // The namespace must exist even when the subnets are given (rules for a namespace that does not exist would
    // be half-made: nothing owns them and `del` never removes them).
    drop(open_named(name)?);
    let subnets = match subnets {
        [] => namespace_addresses(name)?.into_iter().map(Cidr::network).collect::<Vec<_>>(),
        given => given.iter().map(|c| c.network()).collect(),
    };
    if subnets.is_empty() {
        return Err(NatError::NoAddress { name: name.to_owned(), hint: "--subnet" });
    }
    let tag = nat_tag(name);
    let mut rules = Vec::new();
    for subnet in &subnets {
        let IpAddr::V4(network) = subnet.addr else {
            return Err(NatError::NotIpv4 { what: "subnet", cidr: subnet.to_string() });
        };
        let from_ns = expr::ip_in(Dir::Saddr, network, subnet.prefix, CmpOp::Eq);
        let to_ns = expr::ip_in(Dir::Daddr, network, subnet.prefix, CmpOp::Eq);
        let rule = |chain, parts: Vec<Vec<expr::Expr>>| Rule { chain, exprs: parts.concat(), comment: tag.clone() };
        rules.push(rule(
            Chain::Postrouting,
            vec![from_ns.clone(), expr::ifname(MetaKey::OifName, out), vec![expr::counter(), expr::masquerade()]],
        ));
        rules.push(rule(
            Chain::Forward,
            vec![expr::ifname(MetaKey::OifName, out), from_ns, vec![expr::counter(), expr::accept()]],
        ));
        rules.push(rule(
            Chain::Forward,
            vec![
                expr::ifname(MetaKey::IifName, out),
                to_ns,
                expr::established(),
                vec![expr::counter(), expr::accept()],
            ],
        ));
    }
    enable_forwarding()?;
    nft::replace(&NfSocket::open()?, |comment| comment == tag, &rules)?;
    Ok(subnets)
}

/// Removes the nat rules of `name`.
pub fn nat_del(name: &str) -> Result<(), NatError> {
    let tag = nat_tag(name);
    match nft::replace(&NfSocket::open()?, |comment| comment == tag, &[])? {
        0 => Err(NatError::NoNat { name: name.to_owned() }),
        _ => Ok(()),
    }
}

/// DNATs `map.host_port` on any of the host's addresses to `map.ns_port` on the namespace's first IPv4 address
/// (or `to`), for traffic from outside and from the host itself; accepts it in the forward hook; enables IPv4
/// forwarding. Returns the address forwarded to.
pub fn forward_add(name: &str, map: PortMap, to: Option<Ipv4Addr>) -> Result<Ipv4Addr, NatError> {
    check_tag_fits(name)?;
    // The namespace must exist even with --to (see nat_add).
    drop(open_named(name)?);
    let target = match to {
        Some(to) => to,
        None => namespace_addresses(name)?
            .into_iter()
            .find_map(|cidr| match cidr.addr {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| NatError::NoAddress { name: name.to_owned(), hint: "--to" })?,
    };
    let tag = forward_tag(name, map.host_port, map.proto);
    let proto = map.proto.number();
    let dnat = |chain, extra: Vec<expr::Expr>| Rule {
        chain,
        exprs: [
            extra,
            expr::to_local_address(),
            expr::l4_dport(proto, map.host_port),
            vec![expr::counter()],
            expr::dnat(target, map.ns_port).to_vec(),
        ]
        .concat(),
        comment: tag.clone(),
    };
    let rules = [
        dnat(Chain::Prerouting, Vec::new()),
        // From the host itself, except to loopback (DNAT of 127/8 would need route_localnet).
        dnat(Chain::Output, expr::ip_in(Dir::Daddr, Ipv4Addr::new(127, 0, 0, 0), 8, CmpOp::Neq)),
        Rule {
            chain: Chain::Forward,
            exprs: [
                expr::ip_in(Dir::Daddr, target, 32, CmpOp::Eq),
                expr::l4_dport(proto, map.ns_port),
                vec![expr::counter(), expr::accept()],
            ]
            .concat(),
            comment: tag.clone(),
        },
    ];
    let socket = NfSocket::open()?;
    // One host port forwards to one place: a second namespace's rule would never see a packet.
    if let Some(owner) = forward_owner(&nft::rules(&socket)?, map.host_port, map.proto)
        && owner != name
    {
        return Err(NatError::PortTaken { port: map.host_port, proto: map.proto, owner });
    }
    enable_forwarding()?;
    nft::replace(&socket, |comment| comment == tag, &rules)?;
    Ok(target)
}

/// The namespace whose forward rule holds `port`/`proto`, if any.
fn forward_owner(rules: &[nft::Installed], port: u16, proto: Proto) -> Option<String> {
    let suffix = format!("/{port}/{proto}");
    rules
        .iter()
        .filter_map(|rule| rule.comment.as_deref())
        .find_map(|comment| comment.strip_prefix("forward/")?.strip_suffix(&suffix).map(str::to_owned))
}

/// Removes the port forwards of `name` (only those matching `sel` when given).
pub fn forward_del(name: &str, sel: Option<PortSel>) -> Result<(), NatError> {
    let prefix = format!("forward/{name}/");
    let matches = |comment: &str| {
        let Some(rest) = comment.strip_prefix(&prefix) else {
            return false;
        };
        match sel {
            None => true,
            Some(PortSel { host_port, proto: None }) => rest.split('/').next() == Some(&host_port.to_string()),
            Some(PortSel { host_port, proto: Some(proto) }) => rest == format!("{host_port}/{proto}"),
        }
    };
    match nft::replace(&NfSocket::open()?, matches, &[])? {
        0 => Err(NatError::NoForward {
            name: name.to_owned(),
            matching: sel.map_or_else(String::new, |s| match s.proto {
                Some(proto) => format!(" on port {}/{proto}", s.host_port),
                None => format!(" on port {}", s.host_port),
            }),
        }),
        _ => Ok(()),
    }
}

/// Removes every nat and forward rule of `name`; used when the namespace is deleted. A kernel without
/// nf_tables has no rules to remove.
pub fn remove_all(name: &str) -> Result<usize, NatError> {
    let socket = match NfSocket::open() {
        Ok(socket) => socket,
        Err(WireError::Socket(_)) => return Ok(0),
        Err(err) => return Err(err.into()),
    };
    let (nat, forward) = (nat_tag(name), format!("forward/{name}/"));
    Ok(nft::replace(&socket, |comment| comment == nat || comment.starts_with(&forward), &[])?)
}

fn enable_forwarding() -> Result<(), NatError> {
    if std::fs::read_to_string(IP_FORWARD).is_ok_and(|value| value.trim() == "1") {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1").map_err(NatError::Forwarding)
}

/// Global IPv4 addresses inside namespace `name`, read over netlink from a thread inside it.
fn namespace_addresses(name: &str) -> Result<Vec<Cidr>, NatError> {
    let netns = open_named(name)?;
    in_netns(Some(netns.as_fd()), || -> Result<Vec<Cidr>, NatError> {
        let rtnl = Rtnl::connect()?;
        let messages: Vec<_> = rtnl
            .run(rtnl.handle.address().get().execute().try_collect())
            .map_err(|source| NatError::Addresses { name: name.to_owned(), source })?;
        Ok(messages
            .into_iter()
            .filter(|msg| msg.header.scope == AddressScope::Universe)
            .filter_map(|msg| {
                msg.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(IpAddr::V4(addr)) => {
                        Some(Cidr { addr: IpAddr::V4(*addr), prefix: msg.header.prefix_len })
                    }
                    _ => None,
                })
            })
            .collect())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_maps() {
        assert_eq!("8080:80".parse(), Ok(PortMap { host_port: 8080, ns_port: 80, proto: Proto::Tcp }));
        assert_eq!("53:5353/udp".parse(), Ok(PortMap { host_port: 53, ns_port: 5353, proto: Proto::Udp }));
        for bad in ["8080", "0:80", "8080:70000", "a:b", "1:2/sctp", ":80"] {
            assert!(bad.parse::<PortMap>().is_err(), "{bad}");
        }
        assert_eq!("8080/udp".parse(), Ok(PortSel { host_port: 8080, proto: Some(Proto::Udp) }));
        assert_eq!("8080".parse(), Ok(PortSel { host_port: 8080, proto: None }));
    }

    #[test]
    fn forward_owner_is_found_by_port_and_protocol() {
        let rule =
            |comment: &str| nft::Installed { chain: "prerouting".into(), handle: 1, comment: Some(comment.into()) };
        let rules = [rule("nat/blue"), rule("forward/blue/8080/tcp"), rule("forward/red/8081/udp")];
        assert_eq!(forward_owner(&rules, 8080, Proto::Tcp).as_deref(), Some("blue"));
        assert_eq!(forward_owner(&rules, 8080, Proto::Udp), None);
        assert_eq!(forward_owner(&rules, 8081, Proto::Udp).as_deref(), Some("red"));
        assert_eq!(forward_owner(&rules, 808, Proto::Tcp), None);
    }

    #[test]
    fn tags_name_exactly_one_namespace() {
        assert_eq!(nat_tag("blue"), "nat/blue");
        assert_eq!(forward_tag("blue", 8080, Proto::Udp), "forward/blue/8080/udp");
        assert!(check_tag_fits(&"x".repeat(200)).is_ok());
        assert!(check_tag_fits(&"x".repeat(250)).is_err());
    }
}
