//! The `netns-monitor` binary: everything lives in the library (`netns_monitor::cli`).
fn main() -> std::process::ExitCode {
    netns_monitor::cli::main()
}
