//! BTF blobs: parsing never panics, and neither do the offset look-ups the loader makes on what parsed (a
//! kernel's BTF is trusted, but a corrupt or truncated file must fail with an error, not take the agent down).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netns_monitor::bpf::{btf::Btf, offsets};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else { return };
    let _ = offsets::compute(&btf);
    for (ty, path) in [("s", "a"), ("s", "a.b"), ("s", "a.b.c"), ("t", "x")] {
        let _ = btf.struct_size(ty);
        let _ = btf.member_offset(ty, path);
    }
});
