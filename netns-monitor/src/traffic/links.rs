//! Which interfaces get classifiers: veth ends, found with an rtnetlink link dump inside a namespace, or
//! announced by link notifications.

use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

use crate::{
    manage::rtnl::RtnlError,
    route_socket::{RouteSocket, decode_link},
};

/// A veth end inside some namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veth {
    pub ifindex: u32,
    pub name: String,
}

/// The veth end described by a link message, if it is one.
pub fn veth_of(link: &LinkMessage) -> Option<Veth> {
    let mut name = None;
    let mut is_veth = false;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                is_veth = infos.iter().any(|info| matches!(info, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    is_veth.then_some(Veth { ifindex: link.header.index, name: name? })
}

/// Every veth end in the calling thread's network namespace (run it through `manage::rtnl::in_netns`, or
/// from a thread that entered the namespace): a link dump without statistics on a blocking socket.
pub fn veths_here() -> Result<Vec<Veth>, RtnlError> {
    let mut socket = RouteSocket::open().map_err(RtnlError::Connect)?;
    let mut veths = Vec::new();
    let mut undecodable = None;
    socket
        .dump_links(|kind, message| match decode_link(kind, message) {
            Ok(link) => veths.extend(link.as_ref().and_then(veth_of)),
            Err(err) => undecodable = Some(err),
        })
        .map_err(RtnlError::Connect)?;
    match undecodable {
        // A link this crate cannot decode is one it cannot tell is a veth: say so rather than skip it.
        Some(err) => Err(RtnlError::Connect(err)),
        None => Ok(veths),
    }
}
