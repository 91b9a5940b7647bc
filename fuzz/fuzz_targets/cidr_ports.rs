//! Addresses with prefixes and port specifications: parsing never panics, and what parses prints back to text
//! that parses to the same value (so what the CLI echoes is what it understood).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netns_monitor::manage::{
    cidr::Cidr,
    nat::{PortMap, PortSel},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cidr) = text.parse::<Cidr>() {
        assert_eq!(cidr.to_string().parse::<Cidr>(), Ok(cidr));
        let network = cidr.network();
        assert!(network.contains(cidr.addr));
        assert_eq!(network.network(), network);
    }
    if let Ok(map) = text.parse::<PortMap>() {
        assert!(map.host_port > 0 && map.ns_port > 0);
        let again = format!("{}:{}/{}", map.host_port, map.ns_port, map.proto);
        assert_eq!(again.parse::<PortMap>(), Ok(map));
    }
    let _ = text.parse::<PortSel>();
});
