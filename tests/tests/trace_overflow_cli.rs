//! The trace CLI under overflow: it warns with the lost count, and printed + lost = generated, exactly.
//! Its own test binary so that the kernel-side `--pid` filter sees only this burst.

use std::{fs::File, time::Duration};

use netns_monitor_tests::{TraceProcess, anonymous_netns, require_root, sentinel, setns_burst};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

const BURST: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_warns_with_the_exact_lost_count() {
    require_root();
    let (a, b): (File, File) = (anonymous_netns(), anonymous_netns());
    let pid = std::process::id().to_string();
    let mut trace = TraceProcess::start(&["--json", "--pid", &pid, "--ring-buffer-bytes", "4096"]).await;

    let burster = setns_burst(a, b, BURST);
    // Read lines and warnings until every burst event is accounted for: printed, or counted as lost. The sum
    // must never overshoot, and must get there.
    let (mut printed, mut lost) = (0u64, 0u64);
    let accounted = tokio::time::timeout(Duration::from_secs(60), async {
        while printed + lost < BURST {
            tokio::select! {
                line = trace.stdout.next_line() => {
                    let line = line.unwrap().expect("trace ended early");
                    let v: Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(v["tid"], burster, "{v}");
                    printed += 1;
                }
                line = trace.stderr.next_line() => {
                    let line = line.unwrap().expect("trace ended early");
                    if line.contains("events lost") {
                        lost = total_lost(&line);
                    }
                }
            }
            assert!(printed + lost <= BURST, "printed {printed} + lost {lost} exceeds generated {BURST}");
        }
    })
    .await;
    assert!(accounted.is_ok(), "printed {printed} + lost {lost} never reached {BURST}");
    assert!(lost > 0, "a one-page ring buffer must overflow under this burst");

    // The ring buffer is drained now: a sentinel gets through, and nothing else was lost meanwhile.
    let tid = std::thread::spawn(sentinel).join().unwrap();
    let line = tokio::time::timeout(Duration::from_secs(30), trace.stdout.next_line())
        .await
        .expect("sentinel within the deadline")
        .unwrap()
        .expect("trace still running");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((v["tid"].as_u64(), v["errno"].as_str()), (Some(u64::from(tid)), Some("EBADF")), "{v}");

    kill(Pid::from_raw(trace.child.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = trace.stderr.next_line().await.unwrap() {
            assert!(!line.contains("events lost"), "nothing may be lost after the drain: {line}");
        }
        trace.child.wait().await.unwrap()
    })
    .await
    .expect("trace stops on SIGINT");
    assert!(ended.success(), "Ctrl-C is a normal end: {ended}");
    assert_eq!(printed + lost, BURST);
    eprintln!("CLI: printed {printed}, lost {lost} of {BURST}");
}

/// The total from "netns-monitor: warning: N events lost (ring buffer full), TOTAL in total".
fn total_lost(warning: &str) -> u64 {
    warning
        .rsplit(", ")
        .next()
        .and_then(|t| t.strip_suffix(" in total"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unexpected warning format: {warning}"))
}
