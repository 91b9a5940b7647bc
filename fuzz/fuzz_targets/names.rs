//! Namespace and interface names: validation never panics, and what it accepts fits where it goes (a file name
//! under /run/netns, an interface name of at most 15 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netns_monitor::manage::name::{MAX_IFNAME, MAX_NETNS_NAME, validate_ifname, validate_netns_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if validate_netns_name(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= MAX_NETNS_NAME && !text.contains(['/', '\0']));
        assert!(text != "." && text != "..");
    }
    if validate_ifname(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= MAX_IFNAME && !text.contains(['/', ':', '\0']));
    }
});
