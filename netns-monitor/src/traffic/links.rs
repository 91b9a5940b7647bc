//! Which interfaces get classifiers: veth ends, found with an rtnetlink link dump inside a namespace, or
//! announced by link notifications.

use futures::TryStreamExt as _;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

use crate::manage::rtnl::{Rtnl, RtnlError};

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

/// Every veth end in the calling thread's network namespace (run it through `manage::rtnl::in_netns`).
pub fn veths_here() -> Result<Vec<Veth>, RtnlError> {
    let rtnl = Rtnl::connect()?;
    let links: Vec<LinkMessage> = rtnl
        .run(async { rtnl.handle.link().get().execute().try_collect().await })
        .map_err(|err| RtnlError::Connect(std::io::Error::other(err)))?;
    Ok(links.iter().filter_map(veth_of).collect())
}
