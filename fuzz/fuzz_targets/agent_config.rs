//! The agent's configuration file: any text is a configuration or an error naming the problem, never a panic;
//! what is accepted holds a valid ring buffer size and absolute paths.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netns_monitor::agent::config::AgentConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = AgentConfig::parse(text, Path::new("/etc/netns-monitor")) {
        if let Some(bytes) = config.ring_buffer_bytes {
            assert!(bytes >= 4096 && bytes.is_power_of_two());
        }
        for path in [&config.web_config, &config.pin_dir].into_iter().flatten() {
            assert!(path.is_absolute(), "{path:?}");
        }
    }
});
