//! `/proc/PID/mountinfo` lines (mount points may hold any byte, octal-escaped): parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netns_monitor::mountinfo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(entries) = mountinfo::parse(text) {
        assert!(entries.len() <= text.lines().count());
    }
});
