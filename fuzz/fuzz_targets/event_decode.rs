//! Ring buffer records: any bytes decode to an event or an error, never a panic; a decoded event's accessors
//! (the namespaces that changed, the errno) hold up too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netns_monitor::trace::event::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::decode(data) {
        let _ = event.changed().count();
        let _ = event.errno();
        let _ = format!("{event:?}");
    }
});
