//! The real agent as the benchmarks run it: `netns-monitor run --listen 127.0.0.1:<free port> --pin-dir
//! /sys/fs/bpf/nmbench-<pid>-<n>`, ready once it serves `/metrics`; stopping it removes its pin directory,
//! which detaches its classifiers (no program of ours stays behind for a baseline run).

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::fixture;
use crate::cmd::workspace_root;

pub struct Agent {
    child: Option<Child>,
    pub pin_dir: PathBuf,
    pub addr: SocketAddr,
    log: PathBuf,
    /// From spawn until `/metrics` answered.
    pub start_time: Duration,
    /// VmRSS in KiB once it said it serves, before the first scrape.
    pub rss_at_ready: u64,
}

impl Agent {
    /// Starts the agent and waits (up to `timeout`) until `/metrics` answers.
    pub fn start(binary: &Path, timeout: Duration) -> anyhow::Result<Self> {
        Self::start_with(binary, timeout, &[])
    }

    /// [`Self::start`] with more `run` arguments (`--hooks tracepoint`).
    pub fn start_with(binary: &Path, timeout: Duration, extra: &[&str]) -> anyhow::Result<Self> {
        let pin_dir = fixture::pin_dir();
        let addr = free_local_addr()?;
        let logs = workspace_root().join("target/bench/logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
        let log = logs.join(format!("agent-{}.log", pin_dir.file_name().unwrap_or_default().to_string_lossy()));
        let stderr = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let started = Instant::now();
        let child = Command::new(binary)
            .arg("run")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--pin-dir")
            .arg(&pin_dir)
            .args(extra)
            .env("RUST_LOG", "warn,netns_monitor::agent=info,netns_monitor::cli=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut agent = Agent { child: Some(child), pin_dir, addr, log, start_time: Duration::ZERO, rss_at_ready: 0 };
        // The listener is bound before the agent attaches anything, so a connection would be accepted and then
        // wait; wait for the agent to say it serves instead. Then one scrape, however long it takes: a client
        // that gives up and retries leaves the agent rendering for nobody.
        loop {
            fixture::check()?;
            if let Some(status) = agent.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the agent exited during start-up ({status}); its log:\n{}", agent.log_tail());
            }
            if std::fs::read_to_string(&agent.log).is_ok_and(|log| log.contains("serving /metrics")) {
                break;
            }
            if started.elapsed() > timeout {
                bail!("the agent did not serve /metrics within {timeout:?}; its log:\n{}", agent.log_tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        agent.rss_at_ready = agent.rss_kib().map_or(0, |(rss, _)| rss);
        scrape_timeout(agent.addr, timeout).context("the first scrape failed")?;
        agent.start_time = started.elapsed();
        Ok(agent)
    }

    /// The hook tier the agent loaded (1 or 2), from its `netns_monitor_hook_info`.
    pub fn tier(&self) -> anyhow::Result<u8> {
        let metrics = self.metrics()?;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("netns_monitor_hook_info{"))
            .context("the agent exports no netns_monitor_hook_info")?;
        let tier = line.split("tier=\"").nth(1).and_then(|rest| rest.split('"').next()).context("no tier label")?;
        tier.parse().with_context(|| format!("tier label {tier:?}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// One scrape: its latency (connect to last byte) and body.
    pub fn scrape(&self) -> anyhow::Result<(Duration, String)> {
        scrape_timeout(self.addr, Duration::from_secs(60))
    }

    /// One scrape as Prometheus makes it (`Accept-Encoding: gzip`): its latency (connect to the last byte of
    /// the compressed body; decoding is the scraper's and not in it), the bytes on the wire, and the body.
    pub fn scrape_gzip(&self) -> anyhow::Result<(Duration, usize, String)> {
        let (elapsed, wire, gzipped) = fetch(self.addr, Duration::from_secs(60), true)?;
        ensure!(gzipped, "the agent ignored Accept-Encoding: gzip");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&wire[..])
            .read_to_string(&mut text)
            .context("the gzipped body does not decode")?;
        Ok((elapsed, wire.len(), text))
    }

    /// The body of one scrape.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.scrape()?.1)
    }

    /// VmRSS and VmHWM (peak) of the agent, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("cannot read the agent's /proc/PID/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .with_context(|| format!("no {name} in /proc/PID/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, wait, then remove the pin directory (detaching every classifier it pinned). Fails if the
    /// agent does not exit cleanly or the directory cannot be removed.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let result = self.terminate();
        let removed = self.remove_pins();
        result.and(removed)
    }

    /// SIGTERM and wait, leaving the pin directory (and so the classifier links) for the caller to remove.
    pub fn stop_keeping_pins(mut self) -> anyhow::Result<()> {
        let result = self.terminate();
        // Drop must not remove them either.
        self.pin_dir = PathBuf::new();
        result
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().context("waiting for the agent")? {
                ensure!(status.success(), "the agent exited with {status}; its log:\n{}", self.log_tail());
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the agent did not stop within 30 s of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn remove_pins(&self) -> anyhow::Result<()> {
        if self.pin_dir.as_os_str().is_empty() {
            return Ok(());
        }
        match std::fs::remove_dir_all(&self.pin_dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot remove {}", self.pin_dir.display())),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.remove_pins();
    }
}

/// A local address nothing listens on right now.
pub fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free local port")?;
    listener.local_addr().context("cannot find a free local port")
}

/// GET /metrics over a fresh connection (as Prometheus does with keep-alive off): the time from connect to
/// the last byte of the body, and the body. The body is read into a buffer sized from Content-Length, so the
/// client's own copying stays out of the figure.
pub fn scrape_timeout(addr: SocketAddr, timeout: Duration) -> anyhow::Result<(Duration, String)> {
    let (elapsed, body, _) = fetch(addr, timeout, false)?;
    Ok((elapsed, String::from_utf8(body).context("the /metrics body is not UTF-8")?))
}

/// GET /metrics as [`scrape_timeout`] describes, asking for gzip if `gzip`: the latency, the body as sent, and
/// whether it came gzipped.
fn fetch(addr: SocketAddr, timeout: Duration, gzip: bool) -> anyhow::Result<(Duration, Vec<u8>, bool)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let encoding = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
    stream.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: text/plain\r\n{encoding}Connection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut response = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        let n = stream.read(&mut chunk).context("reading the /metrics response")?;
        ensure!(n > 0, "the connection closed before the end of the headers");
        response.extend_from_slice(&chunk[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    ensure!(head.starts_with("HTTP/1.1 200"), "/metrics answered {:?}", head.lines().next().unwrap_or_default());
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok());
    let mut body = response.split_off(head_end);
    match length {
        Some(length) => {
            let have = body.len();
            body.resize(length.max(have), 0);
            stream.read_exact(&mut body[have..]).context("reading the /metrics body")?;
        }
        None => {
            stream.read_to_end(&mut body).context("reading the /metrics body")?;
        }
    }
    let elapsed = started.elapsed();
    let gzipped = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.strip_prefix("content-encoding:").is_some_and(|v| v.trim() == "gzip")
    });
    Ok((elapsed, body, gzipped))
}

/// Sum of the samples of `name` whose labels include every `name="value"` of `labels` (0 if none).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels_part, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(k, v)| labels_part.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Number of sample lines (series) in an exposition.
pub fn series(text: &str) -> usize {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total{program=\"tc_ingress\"} 10\n\
                    a_total{program=\"tc_egress\"} 5\nab_total 7\nb 1.5\n";
        assert_eq!(sample(text, "a_total", &[]), 15.0);
        assert_eq!(sample(text, "a_total", &[("program", "tc_egress")]), 5.0);
        assert_eq!(sample(text, "b", &[]), 1.5);
        assert_eq!(sample(text, "c", &[]), 0.0);
        assert_eq!(series(text), 4);
    }
}
