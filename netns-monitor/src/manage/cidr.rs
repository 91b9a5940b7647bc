//! An address with a prefix length (`10.0.0.1/24`), as `ip addr add` takes it.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

/// An interface address and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid address {text:?}: {reason}")]
pub struct CidrError {
    pub text: String,
    pub reason: &'static str,
}

impl Cidr {
    /// The network this address belongs to (host bits cleared), as a CIDR.
    pub fn network(self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & v4_mask(self.prefix))),
            IpAddr::V6(v6) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Cidr { addr, prefix: self.prefix }
    }

    /// True if `ip` is inside this address's network.
    pub fn contains(self, ip: IpAddr) -> bool {
        Cidr { addr: ip, prefix: self.prefix }.network() == self.network() && ip.is_ipv4() == self.addr.is_ipv4()
    }
}

/// The IPv4 netmask of a prefix length, as a host-order integer.
pub fn v4_mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError { text: text.to_owned(), reason };
        let (addr, prefix) = text.split_once('/').ok_or_else(|| err("expected ADDRESS/PREFIX, e.g. 10.0.0.1/24"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IPv4 or IPv6 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("the prefix length is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err(if addr.is_ipv4() {
                "the prefix length is above 32"
            } else {
                "the prefix length is above 128"
            }));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes_networks() {
        let cidr: Cidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(cidr.network().to_string(), "10.1.2.0/24");
        assert!(cidr.contains("10.1.2.200".parse().unwrap()));
        assert!(!cidr.contains("10.1.3.1".parse().unwrap()));
        assert_eq!("fd00::1/64".parse::<Cidr>().unwrap().network().to_string(), "fd00::/64");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().network().prefix, 0);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["10.0.0.1", "10.0.0.300/24", "10.0.0.1/33", "fd00::1/129", "x/8", "10.0.0.1/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
