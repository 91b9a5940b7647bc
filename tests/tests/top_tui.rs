//! `netns-monitor top` in a real terminal (tmux): it shows a namespace's traffic rate from the agent's pinned
//! counters while datagrams go through it, filters and sorts on keys, and `q` ends it with the terminal restored
//! (the alternate screen left, exit status 0).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use netns_monitor_tests::{
    agent::{AgentProcess, VethPair},
    monitoring::require_program,
    netns::{ChildGuard, cli_path},
    require_root,
};

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let tmux = Self { socket: format!("nsm-top-{}", std::process::id()) };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-s", "top", "-x", "200", "-y", "40", command])
            .args([";", "set-option", "-t", "top", "remain-on-exit", "on"])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new(require_program("tmux", "tmux"));
        command.args(["-L", &self.socket]);
        command
    }

    fn output(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.output(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        assert!(self.command().args(&args).status().expect("send-keys").success());
    }

    /// Waits (30 s at most) until the screen satisfies `ok`; returns it.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The table row of namespace `name` (the NAME column), as words.
fn row<'a>(screen: &'a str, name: &str) -> Option<Vec<&'a str>> {
    screen.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|w| w.get(1) == Some(&name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_live_rates_filters_sorts_and_restores_the_terminal() {
    require_root();
    let agent = AgentProcess::start(&[]).await;
    let pair = VethPair::new(53);
    agent.wait_counting(pair.inode(&pair.b), &pair.vb, Duration::from_secs(60));
    let target = format!("{}.2", pair.net);
    // UDP datagrams from A to B, 20 a second, with bash's /dev/udp (no ping on a minimal host).
    let send = format!("while :; do echo x > /dev/udp/{target}/9; sleep 0.05; done");
    let _sender = ChildGuard(
        Command::new("ip").args(["netns", "exec", &pair.a, "bash", "-c", &send]).spawn().expect("start the sender"),
    );
    let command = format!(
        "{} top --pin-dir {} --interval 0.5 --filter nsm-t --sort name",
        cli_path().display(),
        agent.pin_dir.display()
    );
    let tmux = Tmux::start(&command);

    // Both namespaces of the pair, B receiving the datagrams (RX/s, the fifth column, above zero).
    let screen = tmux.wait("B's receive rate", |screen| {
        row(screen, &pair.a).is_some()
            && row(screen, &pair.b).and_then(|w| w.get(4).map(|rx| *rx != "0" && *rx != "-")).unwrap_or(false)
    });
    assert!(screen.contains("agent running"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..4] == ["INODE", "NAME", "CONTAINER", "PROCS"])
    );
    let b = row(&screen, &pair.b).unwrap();
    assert_eq!(b[0], pair.inode(&pair.b).to_string(), "{screen}");

    // A filter typed after `/` keeps only B.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &pair.b]);
    tmux.keys(&["Enter"]);
    let kept = format!("filter: {}", pair.b);
    let filtered = tmux.wait("the filter", |screen| screen.contains(&kept));
    assert!(row(&filtered, &pair.a).is_none() && row(&filtered, &pair.b).is_some(), "only B: {filtered}");
    // `s` sorts by the next column (after NAME comes INODE).
    tmux.keys(&["s"]);
    tmux.wait("the sort column", |screen| screen.contains("sort: INODE"));

    // `q` quits with status 0 and leaves the alternate screen.
    tmux.keys(&["q"]);
    let dead = {
        let started = Instant::now();
        loop {
            let dead = tmux.output(&["display-message", "-p", "-t", "top", "#{pane_dead} #{pane_dead_status}"]);
            if dead.trim().starts_with('1') || started.elapsed() > Duration::from_secs(10) {
                break dead;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(dead.trim(), "1 0", "top exited with status 0");
    let after = tmux.screen();
    assert!(!after.contains("netns-monitor top"), "the terminal is restored (alternate screen left):\n{after}");
}
