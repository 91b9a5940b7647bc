//! What the kernel itself counted on one device (`RTM_GETLINK` for one ifindex, `IFLA_STATS64`): the numbers
//! `/sys/class/net/DEV/statistics` and `/proc/net/dev` show, both from `dev_get_stats`.
//!
//! Why netlink and not `/proc/net/dev`: the text file lists every device of the namespace, so reading it per new
//! interface costs O(devices) each time (O(n²) at start-up on a host with thousands of veth ends), and
//! `/sys/class/net` shows the namespace sysfs was mounted in, not the calling thread's. One request for one
//! index costs the same whatever the namespace holds.

use std::io;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
};

use crate::route_socket::{RouteSocket, decode_link};

/// What the kernel counted on an interface: (rx bytes, rx packets, tx bytes, tx packets).
pub type KernelTotals = [u64; 4];

/// An rtnetlink socket of the calling thread's network namespace (the namespace is fixed when it is made).
pub struct DeviceStats {
    socket: RouteSocket,
}

impl DeviceStats {
    /// Opens the socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Self> {
        Ok(Self { socket: RouteSocket::open()? })
    }

    /// The kernel's counters of interface `ifindex` of this namespace; `None` when no interface has that index.
    pub fn get(&mut self, ifindex: u32) -> io::Result<Option<KernelTotals>> {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetLink(link));
        request.header.flags = NLM_F_REQUEST;
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        let mut found = None;
        let mut undecodable = None;
        let asked = self.socket.request(&mut bytes, |kind, message| match decode_link(kind, message) {
            Ok(link) => found = found.or(link.as_ref().map(totals)),
            Err(err) => undecodable = Some(err),
        });
        match asked {
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(err) => return Err(err),
            Ok(()) => {}
        }
        match (found, undecodable) {
            (Some(totals), _) => Ok(Some(totals)),
            (None, Some(err)) => Err(err),
            (None, None) => Err(io::Error::new(io::ErrorKind::InvalidData, "RTM_GETLINK got no RTM_NEWLINK answer")),
        }
    }
}

/// The four counters of an `RTM_NEWLINK` message (zero when it carries no `IFLA_STATS64`, as for a device that
/// keeps none).
fn totals(link: &LinkMessage) -> KernelTotals {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Stats64(s) => Some([s.rx_bytes, s.rx_packets, s.tx_bytes, s.tx_packets]),
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_counters_and_a_missing_index_has_none() {
        // Any thread may ask about its own namespace's loopback (index 1) without privileges.
        let mut stats = DeviceStats::open().expect("rtnetlink socket");
        assert!(stats.get(1).expect("ask for lo").is_some());
        assert_eq!(stats.get(i32::MAX as u32 - 7).expect("ask for a missing index"), None);
        // The socket keeps working after an error answer.
        assert!(stats.get(1).expect("ask for lo again").is_some());
    }
}
