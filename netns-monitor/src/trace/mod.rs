//! Namespace transition events: decoding the kernel's records ([`event`]), streaming them from the ring
//! buffer ([`stream`]), naming namespaces ([`names`]) and watching their names ([`name_watch`]), filtering ([`filter`]) and rendering ([`render`]) them,
//! and the loop of `netns-monitor trace` and `monitor` that ties these together ([`session`]).

pub mod event;
pub mod filter;
pub mod name_watch;
pub mod names;
pub mod render;
pub mod session;
pub mod stream;
