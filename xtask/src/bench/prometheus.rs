//! A real Prometheus (Debian's `prometheus` package) scraping the agent as a fleet's would: every 15 s with a
//! 10 s timeout, gzip asked for, for a minute; then its own view of those scrapes from its query API (`up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped`), which is what an operator's alert on the agent sees.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::fixture;
use crate::cmd::workspace_root;

/// Scrape interval and timeout, as most fleets run them.
const INTERVAL_S: u64 = 15;
const TIMEOUT_S: u64 = 10;

/// What Prometheus recorded about its scrapes of the agent.
#[derive(Debug)]
pub struct Seen {
    pub scrapes: f64,
    /// Scrapes with `up == 0` (failed or timed out).
    pub failed: f64,
    pub duration_max_s: f64,
    pub duration_avg_s: f64,
    pub samples: f64,
}

struct Server {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Lets a Prometheus scrape `target` for `window`, then asks it what it saw.
pub fn scrape_for(target: SocketAddr, window: Duration) -> anyhow::Result<Seen> {
    let binary =
        ["/usr/bin/prometheus", "/usr/sbin/prometheus"].into_iter().map(PathBuf::from).find(|p| p.exists()).context(
            "no prometheus binary (the `prometheus` Debian package; `cargo xtask setup --tests` installs it)",
        )?;
    let dir = workspace_root().join(format!("target/bench/prometheus-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {INTERVAL_S}s\n  scrape_timeout: {TIMEOUT_S}s\nscrape_configs:\n  - job_name: \
             netns-monitor\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )?;
    let addr = super::agent::free_local_addr()?;
    let log = fs::File::create(dir.join("prometheus.log"))?;
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = Server { child, dir, addr };
    let ready = fixture::wait_until(Duration::from_secs(60), || get(server.addr, "/-/ready").is_ok());
    if let Some(status) = server.child.try_wait()? {
        bail!("prometheus exited ({status}): {}", fs::read_to_string(server.dir.join("prometheus.log"))?);
    }
    ensure!(ready, "prometheus was not ready within 60 s");
    let started = Instant::now();
    eprintln!("[bench]   a real Prometheus scrapes the agent every {INTERVAL_S} s for {} s", window.as_secs());
    // A measurement window, not a wait for an event: the scrapes happen on Prometheus' own schedule.
    while started.elapsed() < window {
        fixture::check()?;
        std::thread::sleep(Duration::from_millis(500));
    }
    // Everything since Prometheus started (its first scrape comes at a random offset within the interval).
    let range = format!("{}s", window.as_secs() + 4 * INTERVAL_S);
    let value = |expr: &str| query(server.addr, &expr.replace("RANGE", &range));
    let job = "{job=\"netns-monitor\"}";
    // A minute is 4 intervals: wait (up to two more) until Prometheus has recorded the 5 scrapes of a full minute.
    let wanted = (window.as_secs() / INTERVAL_S + 1) as f64;
    let count = || value(&format!("count_over_time(up{job}[RANGE])")).unwrap_or(0.0);
    let end = Instant::now() + Duration::from_secs(2 * INTERVAL_S);
    while count() < wanted && Instant::now() < end {
        fixture::check()?;
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(Seen {
        scrapes: value(&format!("count_over_time(up{job}[RANGE])"))?,
        failed: value(&format!("count_over_time(up{job}[RANGE]) - sum_over_time(up{job}[RANGE])"))?,
        duration_max_s: value(&format!("max_over_time(scrape_duration_seconds{job}[RANGE])"))?,
        duration_avg_s: value(&format!("avg_over_time(scrape_duration_seconds{job}[RANGE])"))?,
        samples: value(&format!("max_over_time(scrape_samples_scraped{job}[RANGE])"))?,
    })
}

/// The single value of an instant query (an error when the result is empty).
fn query(addr: SocketAddr, expr: &str) -> anyhow::Result<f64> {
    let body = get(addr, &format!("/api/v1/query?query={}", encode(expr)))?;
    let json: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("query {expr}: {body}"))?;
    ensure!(json["status"] == "success", "query {expr}: {body}");
    let value = json["data"]["result"][0]["value"][1].as_str().with_context(|| format!("no result for {expr}"))?;
    value.parse().with_context(|| format!("{expr} = {value}"))
}

/// GET `path` from Prometheus; the body of a 200 answer.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no end of headers")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {}", head.lines().next().unwrap_or_default());
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return dechunk(body);
    }
    Ok(body.to_owned())
}

/// The body of a chunked response.
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("chunk size {size:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).context("truncated chunk")?);
        rest = after.get(size + 2..).context("truncated chunk")?;
    }
}

/// Percent-encodes a query parameter.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(encode("up{job=\"a b\"}[75s]"), "up%7Bjob%3D%22a%20b%22%7D%5B75s%5D");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n").unwrap(), "abcdef");
        assert!(dechunk("9\r\nabc").is_err());
    }
}
