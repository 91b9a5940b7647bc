//! The netns-monitor command line, built inside the test package so the integration tests can run it as a
//! process (`CARGO_BIN_EXE_netns-monitor-cli`): exactly the product's entry point, `netns_monitor::cli::main`.
fn main() -> std::process::ExitCode {
    netns_monitor::cli::main()
}
