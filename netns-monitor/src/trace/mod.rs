//! Namespace transition events: decoding the kernel's records ([`event`]) and streaming them from the ring
//! buffer ([`stream`]).

pub mod event;
pub mod stream;
