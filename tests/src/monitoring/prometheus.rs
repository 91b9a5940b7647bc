//! A real Prometheus server (Debian's `prometheus` package) for the live dashboard test: started on a free
//! loopback port with its own configuration and storage in a temp dir, queried through its HTTP API, and
//! stopped on drop.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Daemon, TempDir, free_port, http};

/// A running Prometheus.
pub struct Prometheus {
    pub addr: SocketAddr,
    // Dropped in this order: the process first, then its storage directory.
    daemon: Daemon,
    _dir: TempDir,
}

/// Why a query did not give data.
#[derive(Debug)]
pub enum QueryError {
    /// The HTTP request itself failed.
    Transport(String),
    /// Prometheus refused or failed to evaluate it (`errorType: error`).
    Prometheus(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "request failed: {e}"),
            Self::Prometheus(e) => write!(f, "Prometheus error: {e}"),
        }
    }
}

impl Prometheus {
    /// Starts Prometheus with `config` (prometheus.yml contents; `rule_files` may name absolute paths) and
    /// waits up to 30 s until it reports ready.
    pub fn start(config: &str) -> Self {
        let binary = super::require_program("prometheus", "prometheus");
        let dir = TempDir::new("nsm-prom");
        let config_path = dir.write("prometheus.yml", config);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("socket address");
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            // Debian's defaults point at /etc/prometheus; nothing here needs consoles.
            .arg(format!("--web.console.templates={}", dir.path.display()))
            .arg(format!("--web.console.libraries={}", dir.path.display()))
            .arg("--log.level=warn");
        let daemon = Daemon::spawn("prometheus", cmd, dir.path.join("prometheus.log"));
        let mut prometheus = Self { addr, daemon, _dir: dir };
        prometheus.wait_ready(Duration::from_secs(30));
        prometheus
    }

    fn wait_ready(&mut self, deadline: Duration) {
        let start = Instant::now();
        loop {
            self.daemon.assert_running("while starting");
            if http::get(self.addr, "/-/ready", Duration::from_secs(2)).is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "Prometheus at {} not ready within {deadline:?}; log:\n{}",
                self.addr,
                self.daemon.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GETs an API path and returns its `data`, or the error Prometheus gave.
    pub fn api(&self, path_and_query: &str) -> Result<Value, QueryError> {
        let response = http::get(self.addr, path_and_query, Duration::from_secs(10))
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        let body: Value = serde_json::from_str(&response.body).map_err(|e| {
            QueryError::Transport(format!("HTTP {}: not JSON ({e}): {:.300}", response.status, response.body))
        })?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(QueryError::Prometheus(format!("{}: {}", body["errorType"], body["error"])))
        }
    }

    /// Evaluates `expr` now (an instant query) and returns the result: the series of a vector, or the single
    /// value of a scalar or string as one element.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, QueryError> {
        let data = self.api(&format!("/api/v1/query?query={}", http::encode(expr)))?;
        Ok(match &data["result"] {
            Value::Array(series) if data["resultType"] != "scalar" && data["resultType"] != "string" => series.clone(),
            scalar => vec![scalar.clone()],
        })
    }

    /// The single number `expr` evaluates to (first series), if any.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).ok()?;
        let sample = result.first()?;
        let value = sample.get("value").unwrap_or(sample);
        value[1].as_str()?.parse().ok()
    }

    /// The scrape targets (`/api/v1/targets` data).
    pub fn targets(&self) -> Value {
        self.api("/api/v1/targets").unwrap_or_else(|e| panic!("targets: {e}"))
    }

    /// The loaded rule groups (`/api/v1/rules` data).
    pub fn rules(&self) -> Value {
        self.api("/api/v1/rules").unwrap_or_else(|e| panic!("rules: {e}"))
    }

    /// Panics with the log unless Prometheus is still running.
    pub fn assert_running(&mut self) {
        self.daemon.assert_running("during the test");
    }
}

/// A prometheus.yml scraping `target` every second as job `job`, with `rule_files` evaluated every second.
pub fn config(job: &str, target: SocketAddr, rule_files: &[&Path]) -> String {
    let rules: Vec<String> = rule_files.iter().map(|p| format!("  - {}\n", p.display())).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n{}\
         scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n",
        rules.concat()
    )
}
