//! netns-monitor's own nftables table, spoken to over netlink (no `nft` binary, no libnftnl).
//!
//! Everything lives in one table, `ip netns_monitor`, with four base chains (`postrouting`, `prerouting`,
//! `output` for NAT, `forward` for filtering). Each rule carries a comment (rule userdata in libnftnl's
//! format, so `nft list ruleset` shows it) naming what it belongs to, e.g. `nat/blue`; removing "the rules
//! of X" means deleting the rules with X's comments, and the table goes when its last rule does. Replacing a
//! set of rules is one atomic batch, so re-running an `add` converges to the same rules.

pub mod expr;
pub mod wire;

use expr::Expr;
use wire::{Attrs, Batch, MsgType, NFPROTO_IPV4, NLM_F_APPEND, NLM_F_CREATE, NfSocket, WireError};

/// Our table (family `ip`).
pub const TABLE: &str = "netns_monitor";
/// Rule userdata holds at most 256 bytes (`NFT_USERDATA_MAXLEN`); the comment TLV takes 2 plus a NUL.
pub const MAX_COMMENT: usize = 253;

/// The base chains of our table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// `type nat hook postrouting priority srcnat`: masquerade.
    Postrouting,
    /// `type nat hook prerouting priority dstnat`: port forwards from outside.
    Prerouting,
    /// `type nat hook output priority dstnat`: port forwards from the host itself.
    Output,
    /// `type filter hook forward priority filter`: accept what NAT lets through.
    Forward,
}

impl Chain {
    const ALL: [Chain; 4] = [Chain::Postrouting, Chain::Prerouting, Chain::Output, Chain::Forward];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Postrouting => "postrouting",
            Chain::Prerouting => "prerouting",
            Chain::Output => "output",
            Chain::Forward => "forward",
        }
    }

    /// Chain type, netfilter hook number and priority.
    fn hook(self) -> (&'static str, u32, i32) {
        match self {
            Chain::Postrouting => ("nat", 4, 100),
            Chain::Prerouting => ("nat", 0, -100),
            Chain::Output => ("nat", 3, -100),
            Chain::Forward => ("filter", 2, 0),
        }
    }
}

/// A rule to add: chain, expressions, and the comment that says whose it is.
#[derive(Clone, Debug)]
pub struct Rule {
    pub chain: Chain,
    pub exprs: Vec<Expr>,
    pub comment: String,
}

/// A rule found in our table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// Lists the rules of our table (none if it does not exist).
pub fn rules(socket: &NfSocket) -> Result<Vec<Installed>, WireError> {
    let objects = socket.dump(MsgType::GetRule, NFPROTO_IPV4, Attrs::new().str(1, TABLE))?;
    Ok(objects.iter().filter_map(|attrs| parse_rule(attrs)).filter(|r| r.0 == TABLE).map(|r| r.1).collect())
}

/// In one transaction: deletes the rules whose comment `remove` selects and adds `add` (creating the table and
/// chains if needed). Drops the table when no rule is left. Returns how many rules were deleted.
///
/// The transaction is tied to the ruleset generation it was computed from; if another writer (a concurrent
/// netns-monitor, nft, a container runtime) commits in between, the kernel refuses it and it is recomputed.
pub fn replace(socket: &NfSocket, remove: impl Fn(&str) -> bool, add: &[Rule]) -> Result<usize, WireError> {
    const ATTEMPTS: usize = 20;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match replace_once(socket, &remove, add) {
            Err(err) if err.errno() == Some(libc::ERESTART) && attempt < ATTEMPTS => continue,
            result => return result,
        }
    }
}

fn replace_once(socket: &NfSocket, remove: &impl Fn(&str) -> bool, add: &[Rule]) -> Result<usize, WireError> {
    let genid = socket.generation()?;
    let installed = rules(socket)?;
    let (doomed, kept): (Vec<_>, Vec<_>) =
        installed.iter().partition(|rule| rule.comment.as_deref().is_some_and(remove));
    let mut batch = Batch::based_on(genid);
    if !add.is_empty() {
        add_table_and_chains(&mut batch);
    }
    for rule in &doomed {
        let mut attrs = Attrs::new();
        attrs.str(1, TABLE).str(2, &rule.chain).be64(3, rule.handle);
        let what = format!(
            "delete rule {} ({}) from chain {}",
            rule.handle,
            rule.comment.as_deref().unwrap_or(""),
            rule.chain
        );
        batch.add(MsgType::DelRule, 0, NFPROTO_IPV4, &attrs, what);
    }
    for rule in add {
        batch.add(
            MsgType::NewRule,
            NLM_F_CREATE | NLM_F_APPEND,
            NFPROTO_IPV4,
            &rule_attrs(rule),
            format!("add rule {:?} to chain {} of table ip {TABLE}", rule.comment, rule.chain.name()),
        );
    }
    if add.is_empty() && kept.is_empty() && !doomed.is_empty() {
        batch.add(MsgType::DelTable, 0, NFPROTO_IPV4, Attrs::new().str(1, TABLE), format!("delete table ip {TABLE}"));
    }
    socket.commit(batch)?;
    Ok(doomed.len())
}

fn add_table_and_chains(batch: &mut Batch) {
    batch.add(
        MsgType::NewTable,
        NLM_F_CREATE,
        NFPROTO_IPV4,
        Attrs::new().str(1, TABLE),
        format!("add table ip {TABLE}"),
    );
    for chain in Chain::ALL {
        let (kind, hooknum, priority) = chain.hook();
        let mut attrs = Attrs::new();
        attrs.str(1, TABLE).str(3, chain.name());
        attrs.nest(4, |hook| {
            hook.be32(1, hooknum).be32(2, priority as u32);
        });
        attrs.be32(5, 1); // policy accept: our chains only ever add, never drop
        attrs.str(7, kind);
        batch.add(
            MsgType::NewChain,
            NLM_F_CREATE,
            NFPROTO_IPV4,
            &attrs,
            format!("add chain {} to table ip {TABLE}", chain.name()),
        );
    }
}

fn rule_attrs(rule: &Rule) -> Attrs {
    let mut attrs = Attrs::new();
    attrs.str(1, TABLE).str(2, rule.chain.name());
    attrs.nest(4, |list| {
        for expr in &rule.exprs {
            list.nest(1, |elem| {
                elem.str(1, expr.name);
                elem.nest(2, |data| *data = expr.data.clone());
            });
        }
    });
    attrs.bytes(7, &comment_udata(&rule.comment));
    attrs
}

/// libnftnl's rule userdata: a TLV list; type 0 (`NFTNL_UDATA_RULE_COMMENT`) is a NUL-terminated comment.
fn comment_udata(comment: &str) -> Vec<u8> {
    let len = u8::try_from(comment.len() + 1).expect("comment length checked against MAX_COMMENT");
    let mut udata = vec![0, len];
    udata.extend_from_slice(comment.as_bytes());
    udata.push(0);
    udata
}

fn comment_of(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if kind == 0 {
            return wire::str_of(value).map(str::to_owned);
        }
        rest = &rest[2 + len..];
    }
    None
}

/// `(table, rule)` from a NEWRULE dump message.
fn parse_rule(attrs: &[u8]) -> Option<(String, Installed)> {
    let (mut table, mut chain, mut handle, mut comment) = (None, None, None, None);
    for (kind, payload) in wire::parse_attrs(attrs) {
        match kind {
            1 => table = wire::str_of(payload).map(str::to_owned),
            2 => chain = wire::str_of(payload).map(str::to_owned),
            3 => handle = wire::be64_of(payload),
            7 => comment = comment_of(payload),
            _ => {}
        }
    }
    Some((table?, Installed { chain: chain?, handle: handle?, comment }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip_through_userdata() {
        let udata = comment_udata("nat/blue");
        assert_eq!(udata[..2], [0, 9]);
        assert_eq!(comment_of(&udata).as_deref(), Some("nat/blue"));
        assert_eq!(comment_of(&[1, 1, 7, 0, 3, b'a', b'b', 0]).as_deref(), Some("ab"), "skips other TLVs");
        assert_eq!(comment_of(&[0, 9, b'x']), None, "truncated");
    }
}
