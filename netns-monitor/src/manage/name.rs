//! Validation of namespace and interface names, with the rules iproute2 and the kernel apply, so a bad name
//! is refused before anything is created.

/// Longest namespace name: a file name under `/run/netns` (`NAME_MAX`).
pub const MAX_NETNS_NAME: usize = 255;
/// Longest interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME: usize = 15;

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid namespace name {name:?}: {reason}")]
    Netns { name: String, reason: &'static str },
    #[error("invalid interface name {name:?}: {reason}")]
    Interface { name: String, reason: &'static str },
}

/// A namespace name as iproute2's `is_valid_netns_name` accepts it, within `NAME_MAX`.
pub fn validate_netns_name(name: &str) -> Result<(), NameError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not allowed")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.len() > MAX_NETNS_NAME {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NameError::Netns { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

/// An interface name as the kernel's `dev_valid_name` accepts it.
pub fn validate_ifname(name: &str) -> Result<(), NameError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_IFNAME {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not allowed")
    } else if name.contains(['/', ':', '\0']) || name.chars().any(char::is_whitespace) {
        Some("it contains '/', ':', a NUL byte or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NameError::Interface { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names_follow_iproute2() {
        for good in ["blue", "a.b", "cni-1234", "with space", &"x".repeat(255)] {
            assert_eq!(validate_netns_name(good), Ok(()), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "nul\0", &"x".repeat(256)] {
            assert!(validate_netns_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for good in ["eth0", "veth-a.1", &"x".repeat(15)] {
            assert_eq!(validate_ifname(good), Ok(()), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", &"x".repeat(16)] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
