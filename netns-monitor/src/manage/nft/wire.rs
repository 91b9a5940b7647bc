//! The nf_tables netlink wire format: attributes, messages, batches, and a socket that commits a batch or dumps
//! objects. Constants come from the kernel's `include/uapi/linux/netfilter/nf_tables.h` and `nfnetlink.h`
//! (checked against 6.18; they are ABI and do not change).
//!
//! nf_tables integers inside attributes are big-endian; netlink headers and attribute headers are host-endian.

use std::{io, os::fd::AsRawFd as _};

use nix::sys::{
    socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, setsockopt, socket,
        sockopt,
    },
    time::TimeVal,
};

pub const NFPROTO_IPV4: u8 = 2;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// nf_tables message types (`enum nf_tables_msg_types`).
#[derive(Clone, Copy, Debug)]
#[repr(u16)]
pub enum MsgType {
    NewTable = 0,
    DelTable = 2,
    NewChain = 3,
    GetChain = 4,
    NewRule = 6,
    GetRule = 7,
    DelRule = 8,
    GetGen = 16,
}

/// A growing list of netlink attributes.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    pub fn new() -> Self {
        Attrs::default()
    }

    pub fn bytes(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).expect("netlink attribute larger than 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut data = Vec::with_capacity(value.len() + 1);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
        self.bytes(kind, &data)
    }

    pub fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    pub fn be64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A nested attribute whose content `fill` writes.
    pub fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut inner = Attrs::new();
        fill(&mut inner);
        let len = u16::try_from(4 + inner.buf.len()).expect("netlink attribute larger than 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self.buf.extend_from_slice(&inner.buf);
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// Iterates the attributes in `data` as `(type, payload)`.
pub fn parse_attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some((kind, payload))
    })
}

/// A big-endian integer attribute payload.
pub fn be64_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.try_into().ok()?))
}

/// A string attribute payload, without its NUL.
pub fn str_of(payload: &[u8]) -> Option<&str> {
    std::str::from_utf8(payload.split(|&b| b == 0).next()?).ok()
}

/// A transaction: messages applied by the kernel all together or not at all.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// What each message does, by sequence number, to name the object in an error.
    what: Vec<(u32, String)>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch::begin(&Attrs::new())
    }

    /// A batch the kernel refuses with `ERESTART` if the ruleset changed since generation `genid` (what we
    /// based the batch on is then stale: another writer got in between).
    pub fn based_on(genid: u32) -> Self {
        const NFNL_BATCH_GENID: u16 = 1;
        Batch::begin(Attrs::new().be32(NFNL_BATCH_GENID, genid))
    }

    fn begin(attrs: &Attrs) -> Self {
        let mut batch = Batch { buf: Vec::new(), seq: 0, what: Vec::new() };
        batch.push(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, attrs);
        batch
    }

    /// Appends one nf_tables request; `what` describes it for error messages ("add chain postrouting").
    pub fn add(&mut self, kind: MsgType, flags: u16, family: u8, attrs: &Attrs, what: impl Into<String>) {
        let seq = self.push(nft_type(kind), NLM_F_REQUEST | flags, family, 0, attrs);
        self.what.push((seq, what.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.what.is_empty()
    }

    fn push(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &Attrs) -> u32 {
        self.seq += 1;
        push_message(&mut self.buf, kind, flags, self.seq, family, res_id, &attrs.buf);
        self.seq
    }

    /// The bytes to send, with an ack requested on the last message so the commit has a definite answer.
    fn finish(mut self) -> (Vec<u8>, u32, Vec<(u32, String)>) {
        let last = self.seq;
        set_ack(&mut self.buf, last);
        self.push(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &Attrs::new());
        (self.buf, last, self.what)
    }
}

fn nft_type(kind: MsgType) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | kind as u16
}

fn push_message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) {
    let len = u32::try_from(16 + 4 + attrs.len()).expect("netlink message larger than 4 GiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // struct nfgenmsg: family, version (NFNETLINK_V0), resource id (big-endian).
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
}

/// Sets NLM_F_ACK on the message with sequence number `seq`.
fn set_ack(buf: &mut [u8], seq: u32) {
    let mut offset = 0;
    while offset + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        if u32::from_ne_bytes(buf[offset + 8..offset + 12].try_into().expect("4 bytes")) == seq {
            let flags = u16::from_ne_bytes([buf[offset + 6], buf[offset + 7]]) | NLM_F_ACK;
            buf[offset + 6..offset + 8].copy_from_slice(&flags.to_ne_bytes());
        }
        offset += len.next_multiple_of(4).max(16);
    }
}

/// Errors talking to nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot open a netfilter netlink socket (is nf_tables available?)")]
    Socket(#[source] nix::Error),
    #[error("netfilter netlink I/O failed")]
    Io(#[source] nix::Error),
    #[error("cannot {what}")]
    Rejected {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("malformed reply from nf_tables")]
    Malformed,
}

impl WireError {
    /// The errno the kernel answered with, if it refused a request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            WireError::Rejected { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A netfilter netlink socket in the calling thread's network namespace.
pub struct NfSocket {
    fd: std::os::fd::OwnedFd,
}

/// One message of a reply: type, sequence number, and the payload after the nfgenmsg header.
struct Reply<'a> {
    kind: u16,
    seq: u32,
    body: &'a [u8],
}

impl NfSocket {
    pub fn open() -> Result<Self, WireError> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)
            .map_err(WireError::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(WireError::Socket)?;
        // A kernel that never answers must not hang the command.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::from(libc::timeval { tv_sec: 10, tv_usec: 0 }))
            .map_err(WireError::Socket)?;
        Ok(NfSocket { fd })
    }

    /// Sends `batch` and waits for the kernel's verdict on it; the first refused message is the error.
    pub fn commit(&self, batch: Batch) -> Result<(), WireError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (buf, last, what) = batch.finish();
        send(self.fd.as_raw_fd(), &buf, MsgFlags::empty()).map_err(WireError::Io)?;
        let mut first_error = None;
        let mut done = false;
        while !done {
            self.receive(|reply| {
                if reply.kind != NLMSG_ERROR {
                    return Ok(());
                }
                let errno = error_code(reply.body)?;
                if errno != 0 && first_error.is_none() {
                    let what = what.iter().find(|(seq, _)| *seq == reply.seq).map(|(_, w)| w.clone());
                    first_error = Some(WireError::Rejected {
                        what: what.unwrap_or_else(|| "commit the nf_tables batch".to_owned()),
                        source: io::Error::from_raw_os_error(-errno),
                    });
                }
                if reply.seq == last {
                    done = true;
                }
                Ok(())
            })?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The ruleset generation, which every committed batch increments.
    pub fn generation(&self) -> Result<u32, WireError> {
        const NFT_MSG_NEWGEN: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 15;
        const NFTA_GEN_ID: u16 = 1;
        let mut buf = Vec::new();
        push_message(&mut buf, nft_type(MsgType::GetGen), NLM_F_REQUEST | NLM_F_ACK, 1, 0, 0, &[]);
        send(self.fd.as_raw_fd(), &buf, MsgFlags::empty()).map_err(WireError::Io)?;
        let (mut genid, mut done) = (None, false);
        while !done {
            self.receive(|reply| {
                match reply.kind {
                    NFT_MSG_NEWGEN => {
                        genid = parse_attrs(reply.body.get(4..).ok_or(WireError::Malformed)?)
                            .find(|(kind, _)| *kind == NFTA_GEN_ID)
                            .and_then(|(_, value)| Some(u32::from_be_bytes(value.try_into().ok()?)));
                    }
                    NLMSG_ERROR => {
                        done = true;
                        let errno = error_code(reply.body)?;
                        if errno != 0 {
                            return Err(WireError::Rejected {
                                what: "read the ruleset generation".to_owned(),
                                source: io::Error::from_raw_os_error(-errno),
                            });
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        genid.ok_or(WireError::Malformed)
    }

    /// Dumps objects (`GetRule`, `GetChain`) of `family` matching `filter`; returns each object's attributes.
    /// A missing table (ENOENT) is an empty answer.
    pub fn dump(&self, kind: MsgType, family: u8, filter: &Attrs) -> Result<Vec<Vec<u8>>, WireError> {
        let mut buf = Vec::new();
        push_message(&mut buf, nft_type(kind), NLM_F_REQUEST | NLM_F_DUMP, 1, family, 0, &filter.buf);
        send(self.fd.as_raw_fd(), &buf, MsgFlags::empty()).map_err(WireError::Io)?;
        let mut objects = Vec::new();
        let mut done = false;
        while !done {
            self.receive(|reply| {
                match reply.kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        done = true;
                        let errno = error_code(reply.body)?;
                        if errno != 0 && errno != -libc::ENOENT {
                            return Err(WireError::Rejected {
                                what: format!("list nf_tables objects ({kind:?})"),
                                source: io::Error::from_raw_os_error(-errno),
                            });
                        }
                    }
                    _ => objects.push(reply.body.get(4..).ok_or(WireError::Malformed)?.to_vec()),
                }
                Ok(())
            })?;
        }
        Ok(objects)
    }

    /// Reads one datagram and hands each message in it to `each`.
    fn receive(&self, mut each: impl FnMut(Reply<'_>) -> Result<(), WireError>) -> Result<(), WireError> {
        let mut buf = vec![0u8; 256 * 1024];
        let len = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(WireError::Io)?;
        let mut data = &buf[..len];
        while data.len() >= 16 {
            let msg_len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
            if msg_len < 16 || msg_len > data.len() {
                return Err(WireError::Malformed);
            }
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            let seq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
            each(Reply { kind, seq, body: &data[16..msg_len] })?;
            data = &data[msg_len.next_multiple_of(4).min(data.len())..];
        }
        Ok(())
    }
}

/// The (negative) errno of an NLMSG_ERROR body; 0 is an ack.
fn error_code(body: &[u8]) -> Result<i32, WireError> {
    Ok(i32::from_ne_bytes(body.get(0..4).ok_or(WireError::Malformed)?.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding_and_nesting() {
        let mut attrs = Attrs::new();
        attrs.str(1, "abc").be32(2, 7).nest(3, |inner| {
            inner.be64(1, 0x0102_0304_0506_0708);
        });
        assert_eq!(attrs.buf.len() % 4, 0);
        let parsed: Vec<_> = parse_attrs(&attrs.buf).collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!((parsed[0].0, str_of(parsed[0].1)), (1, Some("abc")));
        assert_eq!(parsed[1], (2, &7u32.to_be_bytes()[..]));
        assert_eq!(parsed[2].0, 3, "nested flag is masked off");
        let inner: Vec<_> = parse_attrs(parsed[2].1).collect();
        assert_eq!(be64_of(inner[0].1), Some(0x0102_0304_0506_0708));
    }

    #[test]
    fn batch_acks_only_the_last_request() {
        let mut batch = Batch::new();
        batch.add(MsgType::NewTable, NLM_F_CREATE, NFPROTO_IPV4, Attrs::new().str(1, "t"), "add table");
        batch.add(MsgType::NewTable, NLM_F_CREATE, NFPROTO_IPV4, Attrs::new().str(1, "u"), "add table");
        let (buf, last, what) = batch.finish();
        assert_eq!(last, 3, "begin is 1, the two requests 2 and 3");
        assert_eq!(what.len(), 2);
        let mut offset = 0;
        let mut acked = Vec::new();
        while offset < buf.len() {
            let len = u32::from_ne_bytes(buf[offset..offset + 4].try_into().unwrap()) as usize;
            let flags = u16::from_ne_bytes([buf[offset + 6], buf[offset + 7]]);
            acked.push(flags & NLM_F_ACK != 0);
            offset += len;
        }
        assert_eq!(acked, [false, false, true, false]);
    }
}
