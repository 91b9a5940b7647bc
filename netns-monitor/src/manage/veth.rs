//! `veth add` / `veth del`: a veth pair between two namespaces, addressed and routed in one command.
//!
//! The whole of the usual recipe (`ip link add ... type veth peer ...`, `ip link set PEER netns NS`, two
//! `ip addr add`, three `ip link set up`, `ip route add default via ...`) takes few netlink requests here: the
//! pair is created with the peer already in the target namespace, the host end up and both MTUs set, in one
//! `RTM_NEWLINK`; the peer end is brought up from inside the namespace. If any later step fails the pair is deleted again (deleting one end removes both, and the
//! addresses and route with them), so a failed `add` leaves nothing behind.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use futures::TryStreamExt as _;
use rtnetlink::{
    LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
};

use super::{
    BadInput,
    cidr::Cidr,
    name::{NameError, validate_ifname},
    netns::{NetnsError, open_named},
    rtnl::{Rtnl, RtnlError, errno_of, in_netns},
};

/// Smallest and largest MTU a veth accepts.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Errors creating or deleting a veth pair.
#[derive(Debug, thiserror::Error)]
pub enum VethError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("interface {name:?} already exists in {netns}")]
    Exists { name: String, netns: String },
    #[error("interface {name:?} does not exist in {netns}")]
    Missing { name: String, netns: String },
    #[error("interface {name:?} in {netns} is a {kind}, not a veth: refusing to delete it")]
    NotVeth { name: String, netns: String, kind: String },
    #[error("MTU {0} is out of range ({min}..={max})", min = MTU_RANGE.start(), max = MTU_RANGE.end())]
    Mtu(u32),
    #[error("gateway {gateway} needs --peer-address, to know which network it is on")]
    GatewayWithoutAddress { gateway: IpAddr },
    #[error("gateway {gateway} is not inside the peer's network {network}")]
    GatewayOutside { gateway: IpAddr, network: Cidr },
    #[error("both ends are named {0:?} in the same namespace")]
    SameName(String),
    #[error("cannot {step}")]
    Netlink {
        step: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
}

impl BadInput for VethError {
    fn is_bad_input(&self) -> bool {
        match self {
            VethError::Netns(err) => err.is_bad_input(),
            VethError::Netlink { .. } | VethError::Rtnl(_) => false,
            _ => true,
        }
    }
}

/// A veth pair to create.
#[derive(Clone, Debug, Default)]
pub struct VethSpec {
    /// The end that stays in the host (or `host_netns`) namespace.
    pub host: String,
    /// The end moved into `netns`.
    pub peer: String,
    /// Named namespace of the peer end.
    pub netns: String,
    /// Named namespace of the host end; `None` for the caller's namespace.
    pub host_netns: Option<String>,
    pub address: Option<Cidr>,
    pub peer_address: Option<Cidr>,
    /// Default route inside `netns`.
    pub peer_gateway: Option<IpAddr>,
    pub mtu: Option<u32>,
}

impl VethSpec {
    fn validate(&self) -> Result<(), VethError> {
        validate_ifname(&self.host)?;
        validate_ifname(&self.peer)?;
        if let Some(mtu) = self.mtu.filter(|mtu| !MTU_RANGE.contains(mtu)) {
            return Err(VethError::Mtu(mtu));
        }
        if let Some(gateway) = self.peer_gateway {
            let network = self.peer_address.ok_or(VethError::GatewayWithoutAddress { gateway })?.network();
            if !network.contains(gateway) {
                return Err(VethError::GatewayOutside { gateway, network });
            }
        }
        if self.host == self.peer && self.host_netns.as_deref() == Some(self.netns.as_str()) {
            return Err(VethError::SameName(self.host.clone()));
        }
        Ok(())
    }

    fn host_label(&self) -> String {
        netns_label(self.host_netns.as_deref())
    }
}

/// Creates the pair described by `spec`; on failure removes whatever it made.
pub fn add(spec: &VethSpec) -> Result<(), VethError> {
    spec.validate()?;
    let target = open_named(&spec.netns)?;
    let host_ns = spec.host_netns.as_deref().map(open_named).transpose()?;
    let host_fd = host_ns.as_ref().map(File::as_fd);

    // One thread (and netlink connection) per namespace: create and configure the host end, then the peer.
    let mut created = false;
    let configured = in_netns(host_fd, || {
        let rtnl = Rtnl::connect()?;
        create_pair(&rtnl, spec, target.as_fd())?;
        created = true;
        configure_host_end(&rtnl, spec)
    })
    .map_err(VethError::from)
    .and_then(|r| r)
    .and_then(|()| in_netns(Some(target.as_fd()), || configure_peer_end(spec)).map_err(VethError::from))
    .and_then(|r| r);
    if configured.is_err() && created {
        match in_netns(host_fd, || delete_link(&spec.host, &spec.host_label(), false)) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("cannot remove veth {:?} after a failed add: {err}", spec.host),
            Err(err) => tracing::warn!("cannot remove veth {:?} after a failed add: {err}", spec.host),
        }
    }
    configured
}

/// Deletes the veth `name` (both ends) from `host_netns` (the caller's namespace when `None`).
pub fn del(name: &str, host_netns: Option<&str>) -> Result<(), VethError> {
    validate_ifname(name)?;
    let host_ns = host_netns.map(open_named).transpose()?;
    in_netns(host_ns.as_ref().map(File::as_fd), || delete_link(name, &netns_label(host_netns), true))?
}

fn netns_label(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("namespace {name:?}"),
        None => "the current namespace".to_owned(),
    }
}

/// One `RTM_NEWLINK`: the host end up, the peer created directly inside `target`.
fn create_pair(rtnl: &Rtnl, spec: &VethSpec, target: BorrowedFd<'_>) -> Result<(), VethError> {
    // Not up yet: veth refuses to open an end whose peer is not linked (ENOTCONN), as the peer is at this point.
    let mut peer = LinkUnspec::new_with_name(&spec.peer).setns_by_fd(target.as_raw_fd());
    let mut pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(spec.host.clone()).up();
    if let Some(mtu) = spec.mtu {
        peer = peer.mtu(mtu);
        pair = pair.mtu(mtu);
    }
    let pair = pair.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))).build();
    let created = rtnl.run(rtnl.handle.link().add(pair).execute());
    match created {
        Ok(()) => Ok(()),
        Err(err) if errno_of(&err) == Some(libc::EEXIST) => {
            // Say which end clashes: the host end if it exists here, else the peer in the target.
            if rtnl.run(find_link(rtnl, &spec.host)).is_ok_and(|link| link.is_some()) {
                Err(VethError::Exists { name: spec.host.clone(), netns: spec.host_label() })
            } else {
                Err(VethError::Exists { name: spec.peer.clone(), netns: netns_label(Some(&spec.netns)) })
            }
        }
        Err(source) => {
            Err(VethError::Netlink { step: format!("create veth pair {:?}/{:?}", spec.host, spec.peer), source })
        }
    }
}

fn configure_host_end(rtnl: &Rtnl, spec: &VethSpec) -> Result<(), VethError> {
    let Some(address) = spec.address else {
        return Ok(());
    };
    let index = link_index(rtnl, &spec.host, &spec.host_label())?;
    add_address(rtnl, index, &spec.host, address)
}

fn configure_peer_end(spec: &VethSpec) -> Result<(), VethError> {
    const LOOPBACK_IFINDEX: u32 = 1;
    let rtnl = Rtnl::connect()?;
    let label = netns_label(Some(&spec.netns));
    rtnl.run(rtnl.handle.link().set(LinkUnspec::new_with_index(LOOPBACK_IFINDEX).up().build()).execute())
        .map_err(|source| VethError::Netlink { step: format!("bring lo up in {label}"), source })?;
    let index = link_index(&rtnl, &spec.peer, &label)?;
    rtnl.run(rtnl.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute())
        .map_err(|source| VethError::Netlink { step: format!("bring {:?} up in {label}", spec.peer), source })?;
    if let Some(address) = spec.peer_address {
        add_address(&rtnl, index, &spec.peer, address)?;
    }
    if let Some(gateway) = spec.peer_gateway {
        let route = match gateway {
            IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).output_interface(index).build(),
            IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).output_interface(index).build(),
        };
        rtnl.run(rtnl.handle.route().add(route).execute()).map_err(|source| VethError::Netlink {
            step: format!("add the default route via {gateway} in {label}"),
            source,
        })?;
    }
    Ok(())
}

fn add_address(rtnl: &Rtnl, index: u32, name: &str, address: Cidr) -> Result<(), VethError> {
    rtnl.run(rtnl.handle.address().add(index, address.addr, address.prefix).execute())
        .map_err(|source| VethError::Netlink { step: format!("add address {address} to {name:?}"), source })
}

async fn find_link(rtnl: &Rtnl, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match rtnl.handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(err) if errno_of(&err) == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(err),
    }
}

fn link_index(rtnl: &Rtnl, name: &str, netns: &str) -> Result<u32, VethError> {
    let link = rtnl
        .run(find_link(rtnl, name))
        .map_err(|source| VethError::Netlink { step: format!("look up {name:?} in {netns}"), source })?;
    link.map(|l| l.header.index).ok_or_else(|| VethError::Missing { name: name.to_owned(), netns: netns.to_owned() })
}

/// Deletes link `name` in the calling thread's namespace, after checking it is a veth when `check_kind`.
fn delete_link(name: &str, netns: &str, check_kind: bool) -> Result<(), VethError> {
    let rtnl = Rtnl::connect()?;
    let link = rtnl
        .run(find_link(&rtnl, name))
        .map_err(|source| VethError::Netlink { step: format!("look up {name:?} in {netns}"), source })?
        .ok_or_else(|| VethError::Missing { name: name.to_owned(), netns: netns.to_owned() })?;
    if check_kind {
        let kind = link_kind(&link);
        if kind.as_ref() != Some(&InfoKind::Veth) {
            let kind = kind.map_or_else(|| "device without a kind".to_owned(), |k| k.to_string());
            return Err(VethError::NotVeth { name: name.to_owned(), netns: netns.to_owned(), kind });
        }
    }
    rtnl.run(rtnl.handle.link().del(link.header.index).execute())
        .map_err(|source| VethError::Netlink { step: format!("delete {name:?} in {netns}"), source })
}

fn link_kind(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    })
}
