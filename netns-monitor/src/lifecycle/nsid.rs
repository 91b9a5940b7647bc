//! Netns ids (NSIDs) over rtnetlink: the number the current network namespace uses to refer to another one
//! (`ip netns list` shows it as `(id: N)`).
//!
//! An id is looked up or assigned with a file descriptor of the other namespace (`RTM_GETNSID` /
//! `RTM_NEWNSID` with `NETNSA_FD`). The kernel sends `RTM_DELNSID` to `RTNLGRP_NSID` listeners when a
//! namespace that has an id dies (`unhash_nsid` in `cleanup_net`), which is how destruction is observed.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use futures::StreamExt as _;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    nsid::{NsidAttribute, NsidMessage},
};
use rtnetlink::Handle;

use crate::route_socket::RouteSocket;

/// Errors talking to rtnetlink about netns ids.
#[derive(Debug, thiserror::Error)]
pub enum NsidError {
    #[error("cannot send the {request} request to rtnetlink")]
    Send { request: &'static str },
    #[error("rtnetlink refused {request}: {code}")]
    Refused { request: &'static str, code: std::io::Error },
    #[error("rtnetlink sent no answer to {request}")]
    NoAnswer { request: &'static str },
}

fn message(payload: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut message = NetlinkMessage::from(payload);
    message.header.flags = flags;
    message.finalize();
    message
}

fn nsid_message(attributes: Vec<NsidAttribute>) -> NsidMessage {
    let mut nsid = NsidMessage::default();
    nsid.header.family = AddressFamily::Unspec;
    nsid.attributes = attributes;
    nsid
}

/// Sends one request and returns the answers that are not ACKs, failing on an error answer.
async fn request(
    handle: &mut Handle,
    request: &'static str,
    message: NetlinkMessage<RouteNetlinkMessage>,
) -> Result<Vec<RouteNetlinkMessage>, NsidError> {
    let mut answers = handle.request(message).map_err(|_| NsidError::Send { request })?;
    let mut out = Vec::new();
    while let Some(answer) = answers.next().await {
        match answer.payload {
            NetlinkPayload::InnerMessage(inner) => out.push(inner),
            NetlinkPayload::Error(err) => {
                if let Some(code) = err.code {
                    return Err(NsidError::Refused { request, code: std::io::Error::from_raw_os_error(-code.get()) });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The id the current namespace has for the namespace behind `fd`, if any.
pub async fn get(handle: &mut Handle, fd: BorrowedFd<'_>) -> Result<Option<i32>, NsidError> {
    let answers = request(handle, "RTM_GETNSID", get_request(fd)).await?;
    let id = answers.into_iter().find_map(id_in).ok_or(NsidError::NoAnswer { request: "RTM_GETNSID" })?;
    Ok((id >= 0).then_some(id))
}

/// `RTM_GETNSID` for the namespace behind `fd` (also sent on a blocking socket by `inventory::details`).
pub fn get_request(fd: BorrowedFd<'_>) -> NetlinkMessage<RouteNetlinkMessage> {
    let get = nsid_message(vec![NsidAttribute::Fd(fd.as_raw_fd() as u32)]);
    message(RouteNetlinkMessage::GetNsId(get), NLM_F_REQUEST)
}

/// `RTM_NEWNSID` giving the namespace behind `fd` the id `id` (`-1`: the lowest free one), acknowledged.
pub fn set_request(fd: BorrowedFd<'_>, id: i32) -> NetlinkMessage<RouteNetlinkMessage> {
    let new = nsid_message(vec![NsidAttribute::Fd(fd.as_raw_fd() as u32), NsidAttribute::Id(id)]);
    message(RouteNetlinkMessage::NewNsId(new), NLM_F_REQUEST | NLM_F_ACK)
}

/// `RTM_GETNSID` dump: every id the current namespace has assigned.
pub fn dump_request() -> NetlinkMessage<RouteNetlinkMessage> {
    message(RouteNetlinkMessage::GetNsId(nsid_message(Vec::new())), NLM_F_REQUEST | NLM_F_DUMP)
}

/// The id an `RTM_NEWNSID` answer carries (negative: none assigned); `None` for any other message.
pub fn id_in(answer: RouteNetlinkMessage) -> Option<i32> {
    match answer {
        RouteNetlinkMessage::NewNsId(msg) => msg.attributes.into_iter().find_map(|a| match a {
            NsidAttribute::Id(id) => Some(id),
            _ => None,
        }),
        _ => None,
    }
}

/// The id of the namespace behind `fd`, assigning the lowest free one if it has none (as
/// `ip netns set NAME auto` does).
pub async fn ensure(handle: &mut Handle, fd: BorrowedFd<'_>) -> Result<i32, NsidError> {
    if let Some(id) = get(handle, fd).await? {
        return Ok(id);
    }
    match request(handle, "RTM_NEWNSID", set_request(fd, -1)).await {
        Ok(_) => {}
        // Someone else assigned one between our two requests: use theirs.
        Err(NsidError::Refused { code, .. }) if code.raw_os_error() == Some(libc::EEXIST) => {}
        Err(err) => return Err(err),
    }
    get(handle, fd).await?.ok_or(NsidError::NoAnswer { request: "RTM_GETNSID after RTM_NEWNSID" })
}

/// Every netns id the current namespace has assigned now (`RTM_GETNSID` dump).
pub async fn dump(handle: &mut Handle) -> Result<std::collections::BTreeSet<i32>, NsidError> {
    let answers = request(handle, "RTM_GETNSID dump", dump_request()).await?;
    Ok(answers
        .into_iter()
        .filter_map(|answer| match answer {
            RouteNetlinkMessage::NewNsId(msg) => msg.attributes.into_iter().find_map(|a| match a {
                NsidAttribute::Id(id) => Some(id),
                _ => None,
            }),
            _ => None,
        })
        .filter(|id| *id >= 0)
        .collect())
}

/// Sends `message` on a blocking socket and hands each decoded answer to `each`.
fn blocking(
    socket: &mut RouteSocket,
    message: &NetlinkMessage<RouteNetlinkMessage>,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> std::io::Result<()> {
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket.request(&mut bytes, |_, answer| {
        if let Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(answer), .. }) =
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(answer)
        {
            each(answer);
        }
    })
}

/// [`get`] on a blocking socket (the socket's namespace is the one the id is relative to).
pub fn get_blocking(socket: &mut RouteSocket, fd: BorrowedFd<'_>) -> std::io::Result<Option<i32>> {
    let mut id = None;
    blocking(socket, &get_request(fd), |answer| id = id.or(id_in(answer)))?;
    Ok(id.filter(|&id| id >= 0))
}

/// Gives the namespace behind `fd` the id `id` (`-1`: the lowest free one). The kernel refuses (`EEXIST`) when
/// the namespace has an id already or `id` is taken.
pub fn set_blocking(socket: &mut RouteSocket, fd: BorrowedFd<'_>, id: i32) -> std::io::Result<()> {
    blocking(socket, &set_request(fd, id), |_| {})
}

/// [`dump`] on a blocking socket, ascending.
pub fn dump_blocking(socket: &mut RouteSocket) -> std::io::Result<Vec<i32>> {
    let mut ids = Vec::new();
    blocking(socket, &dump_request(), |answer| ids.extend(id_in(answer).filter(|&id| id >= 0)))?;
    ids.sort_unstable();
    Ok(ids)
}

/// Whether `message` says notifications were lost (the socket's buffer overflowed, `ENOBUFS`).
pub fn is_overrun(message: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
    matches!(message.payload, NetlinkPayload::Overrun(_))
}

/// The id in an `RTM_DELNSID` notification.
pub fn deleted_id(message: &NetlinkMessage<RouteNetlinkMessage>) -> Option<i32> {
    match &message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNsId(msg)) => {
            msg.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) => Some(*id),
                _ => None,
            })
        }
        _ => None,
    }
}
