//! Ring buffer saturation: floods of namespace transitions from several threads, far beyond what the agent can
//! read (a 64 KiB ring buffer holds about 390 events). Proves that:
//! - the traced processes never wait for the consumer: with the agent stopped (SIGSTOP, so the ring buffer stays
//!   full and every event is dropped) a flood runs at least about as fast as with the agent reading;
//! - the lost count is exact: received + lost = generated, for every flood;
//! - the agent's memory stays bounded during floods (sampled `VmRSS`), and a second flood costs no more than the
//!   first;
//! - the agent recovers: once a flood stops, new events are all delivered, none lost.
//!
//! Its own test binary: the agent traces only this process (`--filter-pid`), so counts are exact.

use std::{
    fs::File,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    anonymous_netns,
    reliability::{Accounting, Agent, size, status_field, wait_accounted},
    require_root, sentinel, setns_burst,
};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::Signal,
};

const DEADLINE: Duration = Duration::from_secs(120);
const THREADS: u64 = 4;

/// `THREADS` threads each calling setns `per_thread` times, alternating between the two namespaces; returns
/// the wall time until all are done. Fails if they are not done within the deadline (a blocked producer).
fn flood(files: &(File, File), per_thread: u64) -> Duration {
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    for _ in 0..THREADS {
        let (a, b) = (files.0.try_clone().unwrap(), files.1.try_clone().unwrap());
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..per_thread {
                setns(if i.is_multiple_of(2) { &a } else { &b }, CloneFlags::CLONE_NEWNET).expect("setns");
            }
            let _ = done.send(());
        });
    }
    for _ in 0..THREADS {
        finished
            .recv_timeout(DEADLINE.saturating_sub(started.elapsed()))
            .expect("a flooding thread did not finish: producers must never wait for the consumer");
    }
    started.elapsed()
}

/// Samples the resident memory of `pid` every 2 ms until stopped; returns the highest value in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    let rss = status_field(pid, "VmRSS:")
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                        .expect("VmRSS");
                    peak = peak.max(rss);
                    std::thread::sleep(Duration::from_millis(2));
                }
                peak
            })
        };
        Self { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A sentinel, then waits until the agent counted it (only while nothing else generates events).
fn settle(agent: &Agent) -> Accounting {
    let before = Accounting::of(&agent.scrape());
    std::thread::spawn(sentinel).join().unwrap();
    wait_accounted(agent, before, 1, DEADLINE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_never_block_are_counted_exactly_and_memory_stays_bounded() {
    require_root();
    let per_thread = size("NSM_FLOOD_PER_THREAD", 25_000);
    let generated = THREADS * per_thread;
    let files = (anonymous_netns(), anonymous_netns());
    let pid = std::process::id().to_string();
    let agent = Agent::start(&["--filter-pid", &pid, "--ring-buffer-bytes", "65536"]).await;
    let mut accounting = settle(&agent);
    let rss_start = agent.rss_kib();

    // Floods alternately with the consumer stopped (SIGSTOP: the ring buffer fills at once and stays full) and
    // running, twice each, so that a burst of load from elsewhere on the machine cannot decide the comparison.
    let (mut stopped, mut running, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lost_stopped, mut lost_running, mut received_running) = (0, 0, 0);
    for _ in 0..2 {
        agent.signal(Signal::SIGSTOP);
        stopped.push(flood(&files, per_thread));
        agent.signal(Signal::SIGCONT);
        let after = wait_accounted(&agent, accounting, generated, DEADLINE);
        assert!(
            after.lost - accounting.lost > generated / 2,
            "a stopped consumer must make the kernel drop most events: {accounting:?} -> {after:?}"
        );
        lost_stopped += after.lost - accounting.lost;
        accounting = after;

        let sampler = RssSampler::start(agent.pid());
        running.push(flood(&files, per_thread));
        let after = wait_accounted(&agent, accounting, generated, DEADLINE);
        peaks.push(sampler.peak());
        lost_running += after.lost - accounting.lost;
        received_running += after.net - accounting.net;
        accounting = after;
    }
    assert!(lost_running > 0, "the floods must exceed what the consumer takes: {accounting:?}");

    // Recovery: the agent takes new events again, and loses none when it can keep up.
    setns_burst(files.0.try_clone().unwrap(), files.1.try_clone().unwrap(), 100);
    let recovered = wait_accounted(&agent, accounting, 100, DEADLINE);
    assert_eq!(recovered.lost, accounting.lost, "nothing lost once the flood is over: {recovered:?}");
    assert_eq!(recovered.net, accounting.net + 100);
    let sentinel_counted = settle(&agent);
    assert_eq!(sentinel_counted.none, recovered.none + 1);
    assert!(agent.scrape().get("netns_monitor_events_lost_total", &[]).is_some());

    // Producers do not wait for the consumer: a full ring buffer does not slow them down (a blocked producer
    // would not finish at all; the factor absorbs CPU contention on a shared 2-core machine).
    let (fastest_stopped, fastest_running) = (stopped.iter().min().unwrap(), running.iter().min().unwrap());
    assert!(
        fastest_stopped.as_secs_f64() <= 3.0 * fastest_running.as_secs_f64() + 0.05,
        "floods with the consumer stopped took {stopped:?}, with it running {running:?}"
    );
    // Memory is bounded by the ring buffer and a batch, not by the flood.
    let growth = peaks[0].saturating_sub(rss_start);
    assert!(growth < 64 * 1024, "the agent grew by {growth} KiB during a flood ({rss_start} -> {peaks:?} KiB)");
    assert!(
        peaks[1] <= peaks[0] + 8 * 1024,
        "a second, equal flood grew the agent further: peaks {peaks:?} KiB (start {rss_start} KiB)"
    );
    assert!(agent.log().iter().all(|l| !l.contains("panicked")));
    let rate = |d: &Duration| generated as f64 / d.as_secs_f64() / 1000.0;
    eprintln!(
        "{generated} events per flood from {THREADS} threads: consumer stopped {stopped:.2?} (best {:.0}k/s; \
         {lost_stopped} lost), running {running:.2?} (best {:.0}k/s; {received_running} received, {lost_running} \
         lost); RSS {rss_start} KiB, peaks {peaks:?} KiB",
        rate(fastest_stopped),
        rate(fastest_running),
    );
}
