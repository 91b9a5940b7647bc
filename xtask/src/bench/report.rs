//! The results: one row per figure, written as a markdown table and as JSON, with the machine they ran on.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use crate::cmd::{output, workspace_root};

/// What a row aims for. A row meets its target when every one of its targets holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// value / baseline at least this (throughput: higher is better).
    MinRatio(f64),
    /// value / baseline at most this (time: lower is better).
    MaxRatio(f64),
    /// value at most this, in the row's unit.
    Max(f64),
    /// value - baseline at most this, in the row's unit.
    MaxDelta(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::MinRatio(r) => format!(">= {r} x baseline"),
            Target::MaxRatio(r) if r < 1.0 => format!("<= {} x baseline ({}x faster)", num(r), num(1.0 / r)),
            Target::MaxRatio(r) => format!("<= {r} x baseline"),
            Target::Max(v) => format!("<= {} {unit}", num(v)),
            Target::MaxDelta(d) => format!("<= +{} {unit}", num(d)),
        }
    }

    /// `None` when it cannot be judged (no baseline); else whether it holds and, when not, by how much.
    fn judge(self, value: f64, baseline: Option<f64>, unit: &str) -> Option<(bool, String)> {
        let ratio = baseline.filter(|b| *b != 0.0).map(|b| value / b);
        Some(match self {
            Target::MinRatio(t) => {
                let r = ratio?;
                (r >= t, format!("ratio {:.3} is {:.3} below {t}", r, t - r))
            }
            Target::MaxRatio(t) => {
                let r = ratio?;
                (r <= t, format!("ratio {:.3} is {:.3} above {t:.3}", r, r - t))
            }
            Target::Max(t) => (value <= t, format!("{} {unit} over", num(value - t))),
            Target::MaxDelta(t) => {
                let d = value - baseline?;
                (d <= t, format!("+{} {unit} is {} {unit} over +{}", num(d), num(d - t), num(t)))
            }
        })
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Row {
    /// Short stable identifier, e.g. `tcp-throughput`.
    pub name: String,
    /// What was measured and how.
    pub what: String,
    pub unit: &'static str,
    /// Median (or the percentile the row names) of the samples.
    pub value: f64,
    pub baseline: Option<f64>,
    pub targets: Vec<Target>,
    /// Repetitions behind `value` (and `baseline`).
    pub reps: usize,
    pub samples: Vec<f64>,
    pub baseline_samples: Vec<f64>,
    /// One line for the table.
    pub note: String,
    /// What dominates, for rows whose target is missed or that need explaining (below the table).
    pub analysis: Option<String>,
    /// Further figures (JSON only, plus the analysis text where it cites them).
    pub extra: Map<String, Value>,
}

impl Row {
    pub fn new(name: impl Into<String>, what: impl Into<String>, unit: &'static str, value: f64) -> Self {
        Row {
            name: name.into(),
            what: what.into(),
            unit,
            value,
            baseline: None,
            targets: Vec::new(),
            reps: 1,
            samples: Vec::new(),
            baseline_samples: Vec::new(),
            note: String::new(),
            analysis: None,
            extra: Map::new(),
        }
    }

    pub fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    pub fn samples(mut self, samples: &[f64], baseline: &[f64]) -> Self {
        self.reps = samples.len().max(baseline.len()).max(1);
        self.samples = samples.to_vec();
        self.baseline_samples = baseline.to_vec();
        self
    }

    pub fn reps(mut self, reps: usize) -> Self {
        self.reps = reps;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn analysis(mut self, analysis: impl Into<String>) -> Self {
        self.analysis = Some(analysis.into());
        self
    }

    pub fn extra(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b != 0.0).map(|b| self.value / b)
    }

    /// `None` without targets; otherwise whether all hold, and what falls short.
    pub fn status(&self) -> Option<(bool, Vec<String>)> {
        if self.targets.is_empty() {
            return None;
        }
        let mut met = true;
        let mut short = Vec::new();
        for target in &self.targets {
            match target.judge(self.value, self.baseline, self.unit) {
                Some((true, _)) => {}
                Some((false, by)) => {
                    met = false;
                    short.push(by);
                }
                None => {
                    met = false;
                    short.push("no baseline".to_owned());
                }
            }
        }
        Some((met, short))
    }

    fn json(&self) -> Value {
        let status = self.status();
        json!({
            "name": self.name,
            "what": self.what,
            "unit": self.unit,
            "value": self.value,
            "baseline": self.baseline,
            "ratio": self.ratio(),
            "delta": self.baseline.map(|b| self.value - b),
            "target": self.targets.iter().map(|t| t.describe(self.unit)).collect::<Vec<_>>().join(" and "),
            "met": status.as_ref().map(|(met, _)| *met),
            "missed_by": status.map(|(_, short)| short),
            "repetitions": self.reps,
            "samples": self.samples,
            "baseline_samples": self.baseline_samples,
            "note": self.note,
            "analysis": self.analysis,
            "extra": self.extra,
        })
    }
}

/// The machine the figures come from.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_mib: u64,
    pub virtualization: String,
    pub revision: String,
    pub binary: String,
    pub date: String,
}

impl Machine {
    pub fn detect(binary: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let trimmed = |cmd: &mut Command| output(cmd).map(|s| s.trim().to_owned()).unwrap_or_default();
        let root = workspace_root();
        let mut revision = trimmed(Command::new("git").arg("-C").arg(&root).args(["rev-parse", "--short", "HEAD"]));
        if !trimmed(Command::new("git").arg("-C").arg(&root).args(["status", "--porcelain", "--untracked-files=no"]))
            .is_empty()
        {
            revision.push_str("+dirty");
        }
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            kernel: trimmed(Command::new("uname").arg("-r")),
            memory_mib: memory_kib / 1024,
            virtualization: {
                // Exits non-zero when there is none, printing "none".
                let detect = |kind: &str| {
                    Command::new("systemd-detect-virt")
                        .arg(kind)
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                        .unwrap_or_default()
                };
                format!("vm {}, container {}", detect("--vm"), detect("--container"))
            },
            revision,
            binary: binary.display().to_string(),
            date: trimmed(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} cores ({}), {} MiB, kernel {}, virtualization {}, netns-monitor {}",
            self.cores,
            self.cpu,
            self.memory_mib,
            self.kernel,
            if self.virtualization.is_empty() { "unknown" } else { &self.virtualization },
            self.revision
        )
    }

    fn json(&self) -> Value {
        json!({
            "cores": self.cores,
            "cpu": self.cpu,
            "kernel": self.kernel,
            "memory_mib": self.memory_mib,
            "virtualization": self.virtualization,
            "revision": self.revision,
            "binary": self.binary,
            "date": self.date,
        })
    }
}

/// Every row of one `cargo xtask bench` invocation.
pub struct Report {
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub failures: Vec<String>,
    pub wall_seconds: f64,
}

impl Report {
    pub fn new(machine: Machine) -> Self {
        Report { machine, rows: Vec::new(), failures: Vec::new(), wall_seconds: 0.0 }
    }

    /// Adds a row and prints it at once, so a long suite shows its progress.
    pub fn push(&mut self, row: Row) {
        let (value, baseline, ratio, _, status) = cells(&row);
        eprintln!("[bench] {}: {value} (baseline {baseline}, ratio {ratio}) {status}", row.name);
        self.rows.push(row);
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# netns-monitor benchmarks\n");
        let _ = writeln!(
            md,
            "Machine: {} cores ({}), {} MiB RAM, kernel {}, virtualization: {}. netns-monitor {} ({}), {}; the \
             whole run took {:.0} s.\n",
            m.cores,
            m.cpu,
            m.memory_mib,
            m.kernel,
            if m.virtualization.is_empty() { "unknown" } else { &m.virtualization },
            m.revision,
            m.binary,
            m.date,
            self.wall_seconds
        );
        let _ = writeln!(md, "| benchmark | value | baseline | ours / baseline | target | status | reps | notes |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            let (value, baseline, ratio, target, status) = cells(row);
            let _ = writeln!(
                md,
                "| {} | {value} | {baseline} | {ratio} | {target} | {status} | {} | {} |",
                row.name,
                row.reps,
                row.note.replace('|', "/")
            );
        }
        let explained: Vec<&Row> = self.rows.iter().filter(|r| r.analysis.is_some()).collect();
        if !explained.is_empty() {
            let _ = writeln!(md, "\n## What dominates\n");
            for row in explained {
                let _ = writeln!(md, "- **{}**: {}", row.name, row.analysis.as_deref().unwrap_or_default());
            }
        }
        let _ = writeln!(md, "\n## What each row measures\n");
        for row in &self.rows {
            let _ = writeln!(md, "- **{}**: {}", row.name, row.what);
        }
        if !self.failures.is_empty() {
            let _ = writeln!(md, "\n## Failed benchmarks\n");
            for failure in &self.failures {
                let _ = writeln!(md, "- {failure}");
            }
        }
        md
    }

    fn json(&self) -> Value {
        json!({
            "machine": self.machine.json(),
            "wall_seconds": self.wall_seconds,
            "rows": self.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "failures": self.failures,
        })
    }

    /// Writes `results.md` and `results.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&self.json()).context("cannot encode the results")?;
        std::fs::write(dir.join("results.json"), json + "\n")
            .with_context(|| format!("cannot write {}/results.json", dir.display()))?;
        std::fs::write(dir.join("results.md"), self.markdown())
            .with_context(|| format!("cannot write {}/results.md", dir.display()))
    }
}

/// value, baseline, ratio, target and status cells of a row.
fn cells(row: &Row) -> (String, String, String, String, String) {
    let with_unit = |v: f64| format!("{} {}", num(v), row.unit);
    let value = with_unit(row.value);
    let baseline = row.baseline.map_or_else(|| "—".to_owned(), with_unit);
    let ratio = row.ratio().map_or_else(|| "—".to_owned(), |r| format!("{r:.3}"));
    let target = if row.targets.is_empty() {
        "—".to_owned()
    } else {
        row.targets.iter().map(|t| t.describe(row.unit)).collect::<Vec<_>>().join(" and ")
    };
    let status = match row.status() {
        None => "—".to_owned(),
        Some((true, _)) => "met".to_owned(),
        Some((false, short)) => format!("**missed** ({})", short.join("; ")),
    };
    (value, baseline, ratio, target, status)
}

/// A figure with as many decimals as it deserves.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if (v.fract() == 0.0 && a < 1e15) || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_judge_and_say_by_how_much() {
        let row = Row::new("x", "x", "ns", 142.0).baseline(80.0).target(Target::MaxDelta(20.0));
        let (met, short) = row.status().unwrap();
        assert!(!met);
        assert_eq!(short, ["+62 ns is 42 ns over +20"]);
        let row = Row::new("x", "x", "Gbit/s", 9.9).baseline(10.0).target(Target::MinRatio(0.97));
        assert!(row.status().unwrap().0);
        let row =
            Row::new("x", "x", "ms", 7.0).baseline(35.0).target(Target::MaxRatio(1.0 / 3.0)).target(Target::Max(10.0));
        assert!(row.status().unwrap().0);
        assert_eq!(Row::new("x", "x", "ms", 7.0).status(), None);
        assert_eq!(num(3.0), "3");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.5), "0.50");
    }
}
