//! A blocking rtnetlink socket for the hot paths that ask one namespace after another (`list`'s interface names
//! and NSIDs, the kernel's own counters of a new interface): no runtime, one buffer reused, and answers handed
//! over as raw bytes so that a caller that needs one attribute does not decode (and allocate) all of them.
//!
//! The socket belongs to the network namespace of the thread that opened it (see [`crate::manage::rtnl`]).

use std::io;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{RouteNetlinkMessage, link::LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `struct nlmsghdr` (include/uapi/linux/netlink.h).
pub const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
/// NLM_F_ROOT | NLM_F_MATCH.
const NLM_F_DUMP: u16 = 0x300;

/// `RTM_GETLINK` and its answer (include/uapi/linux/rtnetlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
/// `IFLA_IFNAME` and `IFLA_EXT_MASK` (include/uapi/linux/if_link.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_EXT_MASK: u16 = 29;
/// Leaves `IFLA_STATS`/`IFLA_STATS64` out of a link dump (5.1+; older kernels ignore the bit).
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

/// An rtnetlink socket of the calling thread's network namespace.
pub struct RouteSocket {
    socket: Socket,
    buffer: Vec<u8>,
    sequence: u32,
}

impl RouteSocket {
    /// Opens the socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // What iproute2 reads into: one RTM_NEWLINK is a few KiB (more with many VFs), a dump batch fills it.
        Ok(Self { socket, buffer: vec![0; 64 * 1024], sequence: 0 })
    }

    /// Sends `request` (a whole netlink message; its sequence number is overwritten) and hands every answer
    /// message that is not an ACK, header included, to `each`. A dump (`NLM_F_DUMP` set) is read to its end;
    /// any other request to its first answer or ACK. An error answer is returned as that errno.
    pub fn request(&mut self, request: &mut [u8], mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let header = request.get_mut(..NLMSG_HDRLEN).ok_or_else(|| invalid("request shorter than its header"))?;
        let dump = u16::from_ne_bytes([header[6], header[7]]) & NLM_F_DUMP == NLM_F_DUMP;
        self.sequence = self.sequence.wrapping_add(1);
        header[8..12].copy_from_slice(&self.sequence.to_ne_bytes());
        self.socket.send(request, 0)?;
        loop {
            let len = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            let mut rest = &self.buffer[..len];
            let mut answered = false;
            while rest.len() >= NLMSG_HDRLEN {
                let size = u32_at(rest, 0) as usize;
                if size < NLMSG_HDRLEN || size > rest.len() {
                    return Err(invalid("truncated netlink message"));
                }
                let (message, next) = rest.split_at(size);
                rest = next.get(align(size) - size..).unwrap_or_default();
                if u32_at(message, 8) != self.sequence {
                    // An answer to an earlier request that gave up: not ours.
                    continue;
                }
                let kind = u16::from_ne_bytes([message[4], message[5]]);
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = message.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4).map_or(0, |c| u32_at(c, 0) as i32);
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    _ => {
                        each(kind, message);
                        let flags = u16::from_ne_bytes([message[6], message[7]]);
                        answered |= flags & NLM_F_MULTI == 0;
                    }
                }
            }
            if answered && !dump {
                return Ok(());
            }
        }
    }

    /// Every interface of this namespace: an `RTM_GETLINK` dump without statistics, each answer handed to `each`
    /// as [`Self::request`] does.
    pub fn dump_links(&mut self, each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut request = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN + 8];
        header(&mut request, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
        let attribute = NLMSG_HDRLEN + IFINFOMSG_LEN;
        request[attribute..attribute + 2].copy_from_slice(&8u16.to_ne_bytes());
        request[attribute + 2..attribute + 4].copy_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
        request[attribute + 4..attribute + 8].copy_from_slice(&RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        self.request(&mut request, each)
    }

    /// Names of every interface of this namespace, in ifindex order.
    pub fn link_names(&mut self) -> io::Result<Vec<String>> {
        let mut links = Vec::new();
        self.dump_links(|kind, message| {
            if kind == RTM_NEWLINK
                && let Some(link) = link_name(message)
            {
                links.push(link);
            }
        })?;
        links.sort_unstable();
        Ok(links.into_iter().map(|(_, name)| name).collect())
    }
}

/// One answer decoded as a link: `Ok(None)` for a message that is no `RTM_NEWLINK`.
pub fn decode_link(kind: u16, message: &[u8]) -> io::Result<Option<LinkMessage>> {
    if kind != RTM_NEWLINK {
        return Ok(None);
    }
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
        Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)), .. }) => {
            Ok(Some(link))
        }
        Ok(_) => Ok(None),
        Err(err) => Err(invalid(&err.to_string())),
    }
}

/// Index and `IFLA_IFNAME` of one `RTM_NEWLINK` message, without decoding its other attributes.
fn link_name(message: &[u8]) -> Option<(i32, String)> {
    let body = message.get(NLMSG_HDRLEN..)?;
    let index = i32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let value = attribute(body.get(IFINFOMSG_LEN..)?, IFLA_IFNAME)?;
    let value = value.split(|&b| b == 0).next().unwrap_or_default();
    Some((index, String::from_utf8_lossy(value).into_owned()))
}

/// The value of the first attribute of type `wanted` among `attributes` (a message's attributes, after its
/// fixed header); `None` when there is none, or a malformed attribute comes first.
pub fn attribute(mut attributes: &[u8], wanted: u16) -> Option<&[u8]> {
    while attributes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        // Without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if len < 4 || len > attributes.len() {
            return None;
        }
        if kind == wanted {
            return Some(&attributes[4..len]);
        }
        attributes = attributes.get(align(len)..).unwrap_or_default();
    }
    None
}

/// Writes a request's `struct nlmsghdr`: its length (all of `request`), type and flags.
pub fn header(request: &mut [u8], kind: u16, flags: u16) {
    let len = u32::try_from(request.len()).unwrap_or(u32::MAX);
    request[0..4].copy_from_slice(&len.to_ne_bytes());
    request[4..6].copy_from_slice(&kind.to_ne_bytes());
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Netlink aligns messages and attributes to 4 bytes.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_own_interfaces_with_loopback_first() {
        // Any thread may dump its own namespace's links without privileges.
        let mut socket = RouteSocket::open().expect("rtnetlink socket");
        let names = socket.link_names().expect("link dump");
        assert_eq!(names.first().map(String::as_str), Some("lo"));
        // The kernel's own list of this namespace, when sysfs shows the same namespace.
        let own = std::fs::read_link("/proc/self/ns/net").ok();
        let sysfs_is_ours = std::fs::read_link("/proc/1/ns/net").ok() == own;
        if sysfs_is_ours && let Ok(dir) = std::fs::read_dir("/sys/class/net") {
            let mut sysfs: Vec<String> = dir.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
            let mut ours = names.clone();
            sysfs.sort();
            ours.sort();
            assert_eq!(ours, sysfs);
        }
        // The socket keeps working for a second request.
        assert_eq!(socket.link_names().expect("second dump"), names);
    }

    #[test]
    fn skips_malformed_attributes() {
        let mut message = vec![0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
        message[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&7i32.to_ne_bytes());
        // IFLA_MTU (4), then IFLA_IFNAME "eth0" with its NUL and padding.
        message.extend_from_slice(&8u16.to_ne_bytes());
        message.extend_from_slice(&4u16.to_ne_bytes());
        message.extend_from_slice(&1500u32.to_ne_bytes());
        message.extend_from_slice(&9u16.to_ne_bytes());
        message.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        message.extend_from_slice(b"eth0\0\0\0\0");
        assert_eq!(link_name(&message), Some((7, "eth0".to_owned())));
        // An attribute claiming more bytes than there are ends the walk.
        let mut broken = message[..NLMSG_HDRLEN + IFINFOMSG_LEN].to_vec();
        broken.extend_from_slice(&200u16.to_ne_bytes());
        broken.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        assert_eq!(link_name(&broken), None);
    }
}
