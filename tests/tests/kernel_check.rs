//! The kernel matrix's in-VM scenario (`kernel-check`, run by `cargo xtask kernels` on Debian's kernels) on
//! this machine's kernel, on both tc paths: TCX, and clsact/cls_bpf forced with `NETNS_MONITOR_TC=clsact`
//! (what kernels before 6.6 use), so the legacy path is exercised by every run of the suite. This kernel refuses
//! fentry (hook tier 1) by a policy of its own, so only the tier-2 event checks run here (`hooks` says so); the
//! matrix runs both tiers on Debian's kernels.

use std::process::Command;

use netns_monitor::traffic::attach::TC_MODE_ENV;
use netns_monitor_tests::{netns::cli_path, require_root};
use serde_json::Value;

fn run_scenario(tc_mode: Option<&str>) -> Vec<Value> {
    require_root();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kernel-check"));
    command.arg("--agent").arg(cli_path());
    if let Some(mode) = tc_mode {
        command.env(TC_MODE_ENV, mode);
    }
    let out = command.output().expect("run kernel-check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<Value> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("NMK-RESULT "))
        .map(|json| serde_json::from_str(json).expect("result lines are JSON"))
        .collect();
    assert!(stdout.lines().any(|l| l.starts_with("NMK-END")), "no end marker: {stdout}");
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] == "fail").collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", out.status);
    results
}

fn detail<'a>(results: &'a [Value], check: &str) -> &'a str {
    let result = results.iter().find(|r| r["check"] == check).unwrap_or_else(|| panic!("no {check} result"));
    result["detail"].as_str().expect("detail")
}

/// One test, both paths one after the other: each scenario counts the classifier programs loaded for its pin
/// directory, and the two must not overlap.
#[test]
fn scenario_passes_with_tcx_and_with_legacy_tc() {
    let results = run_scenario(None);
    // kernel, hooks, 8 event checks per tier this kernel has, 7 agent checks.
    let tiers = if detail(&results, "hooks").contains("picks tier 1") { 2 } else { 1 };
    assert_eq!(results.len(), 9 + 8 * tiers, "every check reported: {results:#?}");
    assert!(detail(&results, "lifecycle-1000@tier2").contains("created 1000, destroyed 1000, unknown 0"));
    assert!(detail(&results, "restart").contains("pinned TCX links taken over"), "{results:#?}");

    let results = run_scenario(Some("clsact"));
    assert_eq!(results.len(), 9 + 8 * tiers, "every check reported: {results:#?}");
    assert!(detail(&results, "kernel").contains("clsact"), "{results:#?}");
    assert!(detail(&results, "restart").contains("cls_bpf filters taken over in place"), "{results:#?}");
}
