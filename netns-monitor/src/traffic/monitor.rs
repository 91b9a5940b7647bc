//! Link notifications from every namespace, on one socket, without holding any namespace alive.
//!
//! A netlink socket opened inside a namespace keeps that namespace alive, so listening per namespace would
//! stop namespaces from ever being destroyed. Instead one rtnetlink socket in the agent's namespace sets
//! `NETLINK_LISTEN_ALL_NSID` (as `ip monitor all-nsid` does): the kernel then delivers `RTNLGRP_LINK`
//! notifications from every namespace that has a netns id in ours, tagged with that id in a control message.
//! The lifecycle tracker gives every namespace an id, so this covers them all. Messages from our own namespace
//! carry no id.
//!
//! If the socket's buffer overflows (ENOBUFS), notifications were lost: [`LinkMonitor::next`] reports
//! [`LinkEvent::Overflow`] and the caller rescans.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use tokio::io::unix::AsyncFd;

use super::links::{Veth, veth_of};

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_LISTEN_ALL_NSID: libc::c_int = 8;
const RTMGRP_LINK: u32 = 1;
/// Generous: a burst of namespace churn produces many link messages at once.
const RECEIVE_BUFFER: libc::c_int = 4 * 1024 * 1024;

/// A change to a veth end somewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A veth appeared or changed. `nsid` is `None` for the agent's own namespace.
    Veth { nsid: Option<i32>, veth: Veth },
    /// An interface went away (of any kind; the caller knows which ones it attached to).
    Removed { nsid: Option<i32>, ifindex: u32 },
    /// Notifications were dropped; rescan everything.
    Overflow,
}

/// The all-namespace link notification socket.
pub struct LinkMonitor {
    socket: AsyncFd<OwnedFd>,
    buffer: Vec<u8>,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

impl LinkMonitor {
    /// Opens and subscribes the socket; must run inside a tokio runtime.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the returned fd is owned right away.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        check(unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_LISTEN_ALL_NSID,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        // Above the rmem_max sysctl needs CAP_NET_ADMIN (FORCE); without it take what the sysctl allows.
        let size = RECEIVE_BUFFER;
        for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: as above.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&raw const size).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if set == 0 {
                break;
            }
        }
        // SAFETY: an all-zero sockaddr_nl is valid; the fields that matter are set below.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        address.nl_groups = RTMGRP_LINK;
        // SAFETY: bind with a pointer to a live sockaddr_nl and its size.
        check(unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until dropped; nothing else closes it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
        Ok(Self { socket, buffer: vec![0; 64 * 1024] })
    }

    /// Waits for the next notification datagram and returns the link events in it.
    pub async fn next(&mut self) -> io::Result<Vec<LinkEvent>> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|socket| receive(socket.get_ref().as_raw_fd(), &mut self.buffer)) {
                Ok(Ok((len, nsid))) => return Ok(parse(&self.buffer[..len], nsid)),
                Ok(Err(err)) if err.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![LinkEvent::Overflow]),
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One recvmsg: the datagram's length and the netns id from its control message, if any.
fn receive(fd: libc::c_int, buffer: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // Room for one cmsg carrying an int, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the pointers set below stay alive for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: recvmsg into buffers we own, described by `msg`.
    let len = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut nsid = None;
    // SAFETY: CMSG_* walk the control buffer the kernel just filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == SOL_NETLINK && (*cmsg).cmsg_type == NETLINK_LISTEN_ALL_NSID {
                nsid = Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>()));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((len as usize, nsid))
}

/// The link events in one datagram (it may hold several netlink messages).
pub fn parse(mut data: &[u8], nsid: Option<i32>) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            break;
        }
        if let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]) {
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    if let Some(veth) = veth_of(&link) {
                        events.push(LinkEvent::Veth { nsid, veth });
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    events.push(LinkEvent::Removed { nsid, ifindex: link.header.index });
                }
                _ => {}
            }
        }
        let aligned = (len + 3) & !3;
        data = data.get(aligned..).unwrap_or_default();
    }
    events
}
