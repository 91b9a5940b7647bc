//! Empty on purpose: the programs live in the `netns-monitor` binary target (src/main.rs). This library
//! target exists so `netns-monitor` can list this crate as a build-dependency and be rebuilt when it changes.
#![no_std]
