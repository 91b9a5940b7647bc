//! What the kernel itself counted on one device (`RTM_GETSTATS` for one ifindex, `IFLA_STATS_LINK_64`): the
//! numbers `/sys/class/net/DEV/statistics` and `/proc/net/dev` show, all from `dev_get_stats`.
//!
//! Why netlink and not `/proc/net/dev`: the text file lists every device of the namespace, so reading it per new
//! interface costs O(devices) each time (O(n²) at start-up on a host with thousands of veth ends), and
//! `/sys/class/net` shows the namespace sysfs was mounted in, not the calling thread's. Why `RTM_GETSTATS` and
//! not `RTM_GETLINK`: a link answer for a veth carries its peer's netns id, which the kernel finds by walking
//! every id the namespace has (`peernet2id_alloc`), so asking for each of 10,000 host-side ends cost O(n²) at
//! start-up (a fifth of the agent's start-up CPU, measured with perf); a stats answer carries only the counters.

use std::io;

use crate::route_socket::{NLM_F_REQUEST, NLMSG_HDRLEN, RouteSocket, attribute, header};

/// What the kernel counted on an interface: (rx bytes, rx packets, tx bytes, tx packets).
pub type KernelTotals = [u64; 4];

/// `RTM_GETSTATS`/`RTM_NEWSTATS` (include/uapi/linux/rtnetlink.h, 4.7+).
const RTM_NEWSTATS: u16 = 92;
const RTM_GETSTATS: u16 = 94;
/// `struct if_stats_msg` { family, pad1, pad2, ifindex, filter_mask }, after the `struct nlmsghdr`.
const IF_STATS_MSG_LEN: usize = 12;
/// `IFLA_STATS_LINK_64` (include/uapi/linux/if_link.h) and its filter bit, `IFLA_STATS_FILTER_BIT(1)`.
const IFLA_STATS_LINK_64: u16 = 1;
const FILTER_LINK_64: u32 = 1;

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
        let mut request = [0u8; NLMSG_HDRLEN + IF_STATS_MSG_LEN];
        header(&mut request, RTM_GETSTATS, NLM_F_REQUEST);
        request[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&ifindex.to_ne_bytes());
        request[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 12].copy_from_slice(&FILTER_LINK_64.to_ne_bytes());
        let mut found = None;
        let asked = self.socket.request(&mut request, |kind, message| {
            if kind == RTM_NEWSTATS {
                found = found.or_else(|| totals(message));
            }
        });
        match asked {
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(err),
            Ok(()) => found
                .map(Some)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "RTM_GETSTATS got no IFLA_STATS_LINK_64")),
        }
    }
}

/// The four counters of an `RTM_NEWSTATS` message's `IFLA_STATS_LINK_64` (`struct rtnl_link_stats64`, which
/// starts rx_packets, tx_packets, rx_bytes, tx_bytes).
fn totals(message: &[u8]) -> Option<KernelTotals> {
    let value = attribute(message.get(NLMSG_HDRLEN + IF_STATS_MSG_LEN..)?, IFLA_STATS_LINK_64)?;
    let field = |i: usize| Some(u64::from_ne_bytes(value.get(i * 8..i * 8 + 8)?.try_into().ok()?));
    let (rx_packets, tx_packets, rx_bytes, tx_bytes) = (field(0)?, field(1)?, field(2)?, field(3)?);
    Some([rx_bytes, rx_packets, tx_bytes, tx_packets])
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

    #[test]
    fn loopback_counters_are_the_ones_sysfs_shows() {
        // sysfs shows the namespace it was mounted in: compare only when that is this process's.
        let own = std::fs::read_link("/proc/self/ns/net").ok();
        if own.is_none() || std::fs::read_link("/proc/1/ns/net").ok() != own {
            return;
        }
        let sysfs = || -> Option<KernelTotals> {
            let read = |name: &str| {
                std::fs::read_to_string(format!("/sys/class/net/lo/statistics/{name}")).ok()?.trim().parse().ok()
            };
            Some([read("rx_bytes")?, read("rx_packets")?, read("tx_bytes")?, read("tx_packets")?])
        };
        let Some(before) = sysfs() else { return };
        let got = DeviceStats::open().unwrap().get(1).unwrap().expect("lo");
        let after = sysfs().expect("sysfs again");
        for i in 0..4 {
            assert!(before[i] <= got[i] && got[i] <= after[i], "counter {i}: {before:?} <= {got:?} <= {after:?}");
        }
    }
}
