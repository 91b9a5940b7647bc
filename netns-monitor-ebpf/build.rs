//! Building this crate needs the `bpf-linker` binary, which cargo cannot express as a dependency.
//! Rebuild when the linker on PATH changes, so a re-installed linker is picked up.
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        // The host build of this crate's (empty) library does not link BPF code; only warn here and let
        // the BPF build fail with the linker's own message.
        Err(err) => println!("cargo:warning=bpf-linker not found on PATH ({err}); run `cargo xtask setup`"),
    }
}
