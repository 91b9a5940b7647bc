//! Kernel function addresses from `/proc/kallsyms`, for a program that recognises a function pointer.
//!
//! Each line is `ADDRESS TYPE NAME [MODULE]`. The kernel prints zeros instead of addresses to a reader
//! `kptr_restrict` hides them from (1: without CAP_SYSLOG; 2: everyone), which is then an error, not address 0.

use std::path::Path;

pub const KALLSYMS: &str = "/proc/kallsyms";

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {KALLSYMS}")]
    Read(#[source] std::io::Error),
    #[error("{KALLSYMS} has no function {0:?}")]
    Missing(String),
    #[error("{KALLSYMS} has {count} functions named {name:?}, so which one is meant is unknown")]
    Ambiguous { name: String, count: usize },
    #[error("{KALLSYMS} hides kernel addresses from this process (kernel.kptr_restrict; needs CAP_SYSLOG)")]
    Hidden,
}

/// Address of the built-in (not module) text symbol `name`.
pub fn function_address(name: &str) -> Result<u64, KallsymsError> {
    read_address(Path::new(KALLSYMS), name)
}

fn read_address(path: &Path, name: &str) -> Result<u64, KallsymsError> {
    let text = std::fs::read_to_string(path).map_err(KallsymsError::Read)?;
    find(&text, name)
}

fn find(text: &str, name: &str) -> Result<u64, KallsymsError> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(symbol), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            // Module symbols have a fourth field; they are not built in.
            continue;
        };
        if symbol == name && matches!(kind, "t" | "T") {
            found.push(u64::from_str_radix(address, 16).unwrap_or(0));
        }
    }
    match found[..] {
        [] => Err(KallsymsError::Missing(name.to_owned())),
        [0] => Err(KallsymsError::Hidden),
        [address] => Ok(address),
        _ => Err(KallsymsError::Ambiguous { name: name.to_owned(), count: found.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff820cbc60 t __pfx_fqdir_work_fn
ffffffff820cbc70 t fqdir_work_fn
ffffffff820cc430 t fqdir_free_fn
ffffffffc0a01000 t veth_xmit\t[veth]
ffffffff83000000 d some_data
";

    #[test]
    fn finds_the_exact_text_symbol() {
        assert_eq!(find(SAMPLE, "fqdir_work_fn").unwrap(), 0xffff_ffff_820c_bc70);
    }

    #[test]
    fn module_and_data_symbols_are_not_functions_of_the_kernel() {
        assert!(matches!(find(SAMPLE, "veth_xmit"), Err(KallsymsError::Missing(_))));
        assert!(matches!(find(SAMPLE, "some_data"), Err(KallsymsError::Missing(_))));
    }

    #[test]
    fn hidden_and_ambiguous_addresses_are_errors() {
        let hidden = "0000000000000000 t fqdir_work_fn\n";
        assert!(matches!(find(hidden, "fqdir_work_fn"), Err(KallsymsError::Hidden)));
        let twice = "ffffffff81000000 t helper\nffffffff82000000 t helper\n";
        assert!(matches!(find(twice, "helper"), Err(KallsymsError::Ambiguous { count: 2, .. })));
    }

    #[test]
    fn the_running_kernel_has_the_destruction_probe_function() {
        // Root on the development VM (kptr_restrict 0): the function tier 2's destruction probe needs.
        assert!(nix::unistd::geteuid().is_root(), "needs root: /proc/kallsyms shows addresses only to CAP_SYSLOG");
        let address = function_address(super::super::hooks::QUEUED_EXIT_FUNCTION).expect("fqdir_work_fn");
        assert_ne!(address, 0);
    }
}
