//! Namespace transition events: decoding the kernel's records ([`event`]), streaming them from the ring
//! buffer ([`stream`]), naming namespaces ([`names`]), filtering ([`filter`]) and rendering ([`render`]) them,
//! and the `netns-monitor trace` loop that ties these together ([`session`]).

pub mod event;
pub mod filter;
pub mod names;
pub mod render;
pub mod session;
pub mod stream;
