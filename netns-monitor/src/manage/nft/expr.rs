//! nf_tables expressions: the small instruction set a rule is written in (load a header field into a register,
//! compare, set a verdict, NAT). Only what netns-monitor's rules use. Attribute numbers are from
//! `include/uapi/linux/netfilter/nf_tables.h`.

use std::net::Ipv4Addr;

use super::wire::Attrs;
use crate::manage::cidr::v4_mask;

/// The first general-purpose 16-byte register; `NFT_REG_VERDICT` is 0.
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG_VERDICT: u32 = 0;

/// One expression: its kernel name and its attributes.
#[derive(Clone, Debug)]
pub struct Expr {
    pub name: &'static str,
    pub data: Attrs,
}

fn expr(name: &'static str, fill: impl FnOnce(&mut Attrs)) -> Expr {
    let mut data = Attrs::new();
    fill(&mut data);
    Expr { name, data }
}

/// Where a payload offset counts from (`enum nft_payload_bases`).
#[derive(Clone, Copy, Debug)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// `payload load`: `len` bytes at `offset` of the header `base` into register 1.
pub fn payload(base: Base, offset: u32, len: u32) -> Expr {
    expr("payload", |a| {
        a.be32(1, REG_1).be32(2, base as u32).be32(3, offset).be32(4, len);
    })
}

/// `meta load`: the packet property `key` (`enum nft_meta_keys`) into register 1.
pub fn meta(key: MetaKey) -> Expr {
    expr("meta", |a| {
        a.be32(1, REG_1).be32(2, key as u32);
    })
}

#[derive(Clone, Copy, Debug)]
pub enum MetaKey {
    IifName = 6,
    OifName = 7,
    L4Proto = 16,
}

/// Register 1 &= `mask` (`bitwise`, with a zero xor).
pub fn mask(mask: &[u8]) -> Expr {
    let len = u32::try_from(mask.len()).expect("short mask");
    expr("bitwise", |a| {
        a.be32(1, REG_1).be32(2, REG_1).be32(3, len);
        a.nest(4, |m| {
            m.bytes(1, mask);
        });
        a.nest(5, |x| {
            x.bytes(1, &vec![0; mask.len()]);
        });
    })
}

#[derive(Clone, Copy, Debug)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// Compare register 1 with `data`; the rule stops here unless it holds.
pub fn cmp(op: CmpOp, data: &[u8]) -> Expr {
    expr("cmp", |a| {
        a.be32(1, REG_1).be32(2, op as u32);
        a.nest(3, |d| {
            d.bytes(1, data);
        });
    })
}

/// `ct state` into register 1 (a host-order u32 bitmask).
pub fn ct_state() -> Expr {
    expr("ct", |a| {
        a.be32(1, REG_1).be32(2, 0);
    })
}

/// `fib daddr type` into register 1 (a host-order u32 `RTN_*`).
pub fn fib_daddr_type() -> Expr {
    const RESULT_ADDRTYPE: u32 = 3;
    const FLAG_DADDR: u32 = 1 << 1;
    expr("fib", |a| {
        a.be32(1, REG_1).be32(2, RESULT_ADDRTYPE).be32(3, FLAG_DADDR);
    })
}

pub fn counter() -> Expr {
    expr("counter", |_| {})
}

pub fn masquerade() -> Expr {
    expr("masq", |_| {})
}

/// `accept` verdict.
pub fn accept() -> Expr {
    const NF_ACCEPT: u32 = 1;
    expr("immediate", |a| {
        a.be32(1, REG_VERDICT);
        a.nest(2, |d| {
            d.nest(2, |v| {
                v.be32(1, NF_ACCEPT);
            });
        });
    })
}

/// `dnat to ADDR:PORT`: loads both into registers 1 and 2, then rewrites the destination.
pub fn dnat(addr: Ipv4Addr, port: u16) -> [Expr; 3] {
    const NFT_NAT_DNAT: u32 = 1;
    const NFPROTO_IPV4: u32 = 2;
    let load = |reg: u32, data: Vec<u8>| {
        expr("immediate", move |a| {
            a.be32(1, reg);
            a.nest(2, |d| {
                d.bytes(1, &data);
            });
        })
    };
    [
        load(REG_1, addr.octets().to_vec()),
        load(REG_2, port.to_be_bytes().to_vec()),
        expr("nat", |a| {
            a.be32(1, NFT_NAT_DNAT).be32(2, NFPROTO_IPV4).be32(3, REG_1).be32(5, REG_2);
        }),
    ]
}

// ---- Matches built from the expressions above, as nft would compile them. ----

/// IPv4 header offsets of the source and destination addresses.
#[derive(Clone, Copy, Debug)]
pub enum Dir {
    Saddr = 12,
    Daddr = 16,
}

/// `ip saddr|daddr NETWORK/PREFIX` (or `!=` with `CmpOp::Neq`).
pub fn ip_in(dir: Dir, network: Ipv4Addr, prefix: u8, op: CmpOp) -> Vec<Expr> {
    let mask_bits = v4_mask(prefix);
    let network = u32::from(network) & mask_bits;
    let mut exprs = vec![payload(Base::Network, dir as u32, 4)];
    if prefix < 32 {
        exprs.push(mask(&mask_bits.to_be_bytes()));
    }
    exprs.push(cmp(op, &network.to_be_bytes()));
    exprs
}

/// `iifname|oifname NAME` (the name is compared as the kernel stores it: NUL-padded to IFNAMSIZ).
pub fn ifname(key: MetaKey, name: &str) -> Vec<Expr> {
    let mut padded = [0u8; 16];
    padded[..name.len()].copy_from_slice(name.as_bytes());
    vec![meta(key), cmp(CmpOp::Eq, &padded)]
}

/// `meta l4proto PROTO th dport PORT`.
pub fn l4_dport(proto: u8, port: u16) -> Vec<Expr> {
    vec![
        meta(MetaKey::L4Proto),
        cmp(CmpOp::Eq, &[proto]),
        payload(Base::Transport, 2, 2),
        cmp(CmpOp::Eq, &port.to_be_bytes()),
    ]
}

/// `ct state established,related`.
pub fn established() -> Vec<Expr> {
    const ESTABLISHED: u32 = 1 << 1;
    const RELATED: u32 = 1 << 2;
    vec![ct_state(), mask(&(ESTABLISHED | RELATED).to_ne_bytes()), cmp(CmpOp::Neq, &0u32.to_ne_bytes())]
}

/// `fib daddr type local`: the packet is addressed to this host.
pub fn to_local_address() -> Vec<Expr> {
    const RTN_LOCAL: u32 = 2;
    vec![fib_daddr_type(), cmp(CmpOp::Eq, &RTN_LOCAL.to_ne_bytes())]
}
