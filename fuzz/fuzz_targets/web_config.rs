//! The exporter-toolkit web configuration: any text is a configuration or an error naming the problem, never a
//! panic (no file named in it is read: that happens when the server binds).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netns_monitor::metrics::WebConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = WebConfig::parse(text, Path::new("/etc/netns-monitor/web.yml"));
});
