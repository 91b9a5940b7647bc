//! Ring buffer overflow: with a deliberately tiny ring buffer and a burst of transitions nobody consumes, the
//! kernel's lost-event count equals generated minus received, exactly. Its own test binary, and the programs
//! filter on this process in the kernel, so no other test's events share the ring buffer or the count.

use std::time::Duration;

use netns_monitor::{
    bpf::{LoadOptions, Probes},
    trace::event::{EventKind, Syscall},
};
use netns_monitor_tests::{anonymous_netns, collect_until_sentinel, require_root, sentinel, setns_burst};

const BURST: u64 = 20_000;
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_count_equals_generated_minus_received() {
    require_root();
    // Made before loading: creating them is itself traced.
    let (a, b) = (anonymous_netns(), anonymous_netns());
    let load =
        LoadOptions { ring_buffer_bytes: Some(4096), filter_pid: Some(std::process::id()), ..LoadOptions::default() };
    let mut probes = Probes::load(&load).expect("load with a one-page ring buffer");
    let mut events = probes.events().unwrap();

    // Nothing reads the ring buffer while the burst runs: one page holds about 24 events.
    let burster = setns_burst(a, b, BURST);

    let mut received = 0u64;
    let drained = tokio::time::timeout(DEADLINE, async {
        let mut batch = Vec::new();
        loop {
            let lost = probes.counters().unwrap().lost_events;
            if received + lost >= BURST {
                return lost;
            }
            events.next_batch(&mut batch).await.unwrap();
            for event in batch.drain(..) {
                assert_eq!((event.tid, event.kind), (burster, EventKind::Transition(Syscall::Setns)), "{event:?}");
                assert_eq!(event.ret, 0);
                received += 1;
            }
        }
    })
    .await;
    let lost = drained.unwrap_or_else(|_| {
        let lost = probes.counters().unwrap().lost_events;
        panic!("received {received} + lost {lost} never reached {BURST}")
    });
    assert!(lost > 0 && received > 0, "the ring buffer must have overflowed: received {received}, lost {lost}");

    // Nothing else is on its way: a sentinel comes next, and the count did not move.
    let tid = std::thread::spawn(sentinel).join().unwrap();
    let rest = collect_until_sentinel(&mut events, tid, DEADLINE).await;
    assert_eq!(rest.len(), 1, "only the sentinel after the drain: {rest:#?}");
    let counters = probes.counters().unwrap();
    assert_eq!(counters.lost_events, lost);
    assert_eq!(received + lost, BURST, "received {received} + lost {lost} = generated {BURST}");
    assert_eq!(counters.pending_failed, 0);
    eprintln!("burst {BURST}: received {received}, lost {lost}");
}
