//! Managing network namespaces, the `ip netns` way but through netlink and system calls only (no `ip`,
//! `iptables` or `nft` processes):
//! - [`netns`]: named namespaces under /run/netns (add, del, attach, identify, pids), iproute2's on-disk form,
//! - [`autoname`]: the names `attach --all` gives, symlinks that never keep a namespace alive,
//! - [`exec`]: run a command inside one, with `ip netns exec`'s mount and /etc semantics (or in every one),
//! - [`enter`]: any network namespace by path, process or inode, and a process's other types as `nsenter`,
//! - [`nsid`]: netns ids (`ip netns set`, `ip netns list-id`),
//! - [`veth`]: veth pairs with addresses, `lo` and a default route, undone on failure,
//! - [`nat`]: masquerade and port forwards, as rules in our own nftables table ([`nft`]),
//! - [`rtnl`]: running netlink work on a thread inside a namespace; [`name`], [`cidr`]: input validation.
//!
//! Every error says which object it is about. Errors caused by the input (a bad name, a missing namespace, an
//! interface that already exists) report [`BadInput::is_bad_input`], so the CLI can exit with 2 for them.

pub mod autoname;
pub mod cidr;
pub mod enter;
pub mod exec;
pub mod name;
pub mod nat;
pub mod netns;
pub mod nft;
pub mod nsid;
pub mod rtnl;
pub mod veth;

/// Whether an error is the caller's input being wrong (exit code 2) rather than the operation failing (1).
pub trait BadInput {
    fn is_bad_input(&self) -> bool;
}

/// Errors deleting a namespace together with its rules.
#[derive(Debug, thiserror::Error)]
pub enum DelError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("cannot remove the nat/forward rules of namespace {name:?}")]
    Rules {
        name: String,
        #[source]
        source: Box<nat::NatError>,
    },
}

impl BadInput for DelError {
    fn is_bad_input(&self) -> bool {
        matches!(self, DelError::Netns(err) if err.is_bad_input())
    }
}

/// `del NAME`: removes the namespace's nat/forward rules, then its name. Returns how many rules went.
pub fn delete_namespace(name: &str) -> Result<usize, DelError> {
    name::validate_netns_name(name).map_err(netns::NetnsError::from)?;
    if std::fs::symlink_metadata(netns::path_of(name)).is_err() {
        return Err(netns::NetnsError::Missing { name: name.to_owned() }.into());
    }
    let rules =
        nat::remove_all(name).map_err(|source| DelError::Rules { name: name.to_owned(), source: Box::new(source) })?;
    netns::del(name)?;
    Ok(rules)
}
