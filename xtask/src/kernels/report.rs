//! target/kernels/results.{md,json}, and the README's "Supported kernels" table made from results.json.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{
    pins::Package,
    qemu::Accel,
    results::{CheckResult, Status},
};

pub const README_BEGIN: &str = "<!-- kernels:begin -->";
pub const README_END: &str = "<!-- kernels:end -->";

/// One `cargo xtask kernels` run, as results.json holds it.
#[derive(Debug, Deserialize, Serialize)]
pub struct Run {
    pub date: String,
    pub host: String,
    pub revision: String,
    pub accel: Accel,
    /// Why the run uses this accelerator (the KVM probe's verdict).
    pub accel_reason: String,
    pub check_args: Vec<String>,
    pub kernels: Vec<KernelRun>,
    /// Selected kernels that were not booted because an earlier one failed (no --keep-going).
    pub not_run: Vec<String>,
    pub download: Download,
    pub total_s: f64,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Download {
    pub packages: usize,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct KernelRun {
    pub id: String,
    /// Upstream version, from the pinned package (6.1.192).
    pub version: String,
    /// The kernel's release string (`uname -r`), from its modules directory.
    pub release: String,
    pub suite: String,
    pub packages: Vec<Package>,
    /// The bzImage payload's compression.
    pub compression: String,
    /// Modules loaded, in order, and wanted ones the kernel has built in.
    pub modules: Vec<String>,
    pub builtin_modules: Vec<String>,
    /// From starting qemu to the first result line; none when no result came.
    pub boot_s: Option<f64>,
    /// From starting qemu to its end.
    pub total_s: f64,
    pub console_log: String,
    /// `boot` first, then what the guest reported, in its order.
    pub results: Vec<CheckResult>,
}

impl Run {
    pub fn failures(&self) -> Vec<String> {
        self.kernels
            .iter()
            .flat_map(|k| {
                k.results.iter().filter(|r| r.status == Status::Fail).map(move |r| format!("{} {}", k.id, r.check))
            })
            .collect()
    }

    /// Check names in the order they first appear.
    fn checks(&self) -> Vec<&str> {
        let mut checks: Vec<&str> = Vec::new();
        for result in self.kernels.iter().flat_map(|k| &k.results) {
            if !checks.contains(&result.check.as_str()) {
                checks.push(&result.check);
            }
        }
        checks
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let json = dir.join("results.json");
        fs::write(&json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("cannot write {}", json.display()))?;
        let md = dir.join("results.md");
        fs::write(&md, self.markdown()).with_context(|| format!("cannot write {}", md.display()))?;
        eprintln!("[kernels] wrote {} and {}", md.display(), json.display());
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::from("# netns-monitor on Debian's kernels\n\n");
        let _ = writeln!(md, "- date: {}", self.date);
        let _ = writeln!(md, "- host: {}", self.host);
        let _ = writeln!(md, "- netns-monitor: {}", self.revision);
        let _ = writeln!(md, "- accelerator: {} ({})", self.accel.name(), self.accel_reason);
        let args =
            if self.check_args.is_empty() { "none".to_owned() } else { format!("`{}`", self.check_args.join(" ")) };
        let _ = writeln!(md, "- kernel-check arguments: {args}");
        let downloaded = if self.download.packages == 0 {
            "nothing (every package was in target/kernels/cache)".to_owned()
        } else {
            format!(
                "{} packages, {:.1} MB in {:.0} s (apt-get update included)",
                self.download.packages,
                self.download.bytes as f64 / 1e6,
                self.download.seconds
            )
        };
        let _ = writeln!(md, "- downloaded: {downloaded}; whole run {:.0} s", self.total_s);
        if !self.not_run.is_empty() {
            let _ = writeln!(
                md,
                "- not run (an earlier kernel failed; `--keep-going` runs all): {}",
                self.not_run.join(", ")
            );
        }

        md.push_str("\n## Kernels\n\n| kernel | release | suite | packages (pinned in xtask/kernels.toml) | vmlinux | modules | boot | total |\n|---|---|---|---|---|---|---|---|\n");
        for k in &self.kernels {
            let packages: Vec<String> = k.packages.iter().map(|p| format!("`{}` {}", p.name, p.version)).collect();
            let mut modules = k.modules.join(", ");
            if !k.builtin_modules.is_empty() {
                let _ = write!(
                    modules,
                    "{}built in: {}",
                    if modules.is_empty() { "" } else { "; " },
                    k.builtin_modules.join(", ")
                );
            }
            let boot = k.boot_s.map_or("—".to_owned(), |s| format!("{s:.0} s"));
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} | {} | {} | {boot} | {:.0} s |",
                k.id,
                k.release,
                k.suite,
                packages.join("<br>"),
                k.compression,
                modules,
                k.total_s
            );
        }
        md.push_str("\nboot: from starting qemu to the first result line; total: until qemu ended.\n");

        let checks = self.checks();
        md.push_str("\n## Results\n\n| check |");
        for k in &self.kernels {
            let _ = write!(md, " {} |", k.id);
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(self.kernels.len()));
        md.push('\n');
        let mut details = String::new();
        for check in &checks {
            let _ = write!(md, "| {} |", cell_text(check));
            for k in &self.kernels {
                let cell = match k.results.iter().find(|r| r.check == *check) {
                    None => "—".to_owned(),
                    Some(r) => {
                        let (first, more) = match r.detail.split_once('\n') {
                            Some((first, _)) => (first, true),
                            None => (r.detail.as_str(), false),
                        };
                        if more {
                            let _ =
                                write!(details, "\n### {} on {}\n\n```\n{}\n```\n", check, k.id, r.detail.trim_end());
                        }
                        let reason = format!("{}{}", first.trim(), if more { " (see below)" } else { "" });
                        match r.status {
                            Status::Pass => "pass".to_owned(),
                            Status::Degraded => format!("degraded: {}", cell_text(&reason)),
                            Status::Fail => format!("FAIL: {}", cell_text(&reason)),
                        }
                    }
                };
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
        if !details.is_empty() {
            md.push_str("\n## Details\n");
            md.push_str(&details);
        }
        md
    }

    /// The README's "Supported kernels" table: per kernel its version, what works, what is degraded and why
    /// (and what fails, if anything does).
    pub fn readme_section(&self) -> String {
        let any_fail = self.kernels.iter().any(|k| k.results.iter().any(|r| r.status == Status::Fail));
        let mut md = format!(
            "Supported kernels: Debian's own cloud kernels, each booted under qemu ({}) with the release build by \
             `cargo xtask kernels` ({}, netns-monitor {}; details in `target/kernels/results.md`).\n\n",
            match self.accel {
                Accel::Kvm => "KVM",
                Accel::Tcg => "TCG",
            },
            self.date.split('T').next().unwrap_or(&self.date),
            self.revision
        );
        md.push_str("| Kernel | Debian package | Works | Degraded (why) |");
        md.push_str(if any_fail { " Fails |\n|---|---|---|---|---|\n" } else { "\n|---|---|---|---|\n" });
        for k in &self.kernels {
            let with = |status: Status, why: bool| -> String {
                let items: Vec<String> = k
                    .results
                    .iter()
                    .filter(|r| r.status == status)
                    .map(|r| {
                        let detail = r.detail.lines().next().unwrap_or("").trim();
                        if why && !detail.is_empty() {
                            format!("`{}`: {}", r.check, cell_text(detail))
                        } else {
                            format!("`{}`", r.check)
                        }
                    })
                    .collect();
                if items.is_empty() { "—".to_owned() } else { items.join(if why { "<br>" } else { ", " }) }
            };
            let package =
                k.packages.first().map_or(String::new(), |p| format!("`{}` {} ({})", p.name, p.version, k.suite));
            let _ = write!(
                md,
                "| {} | {package} | {} | {} |",
                k.version,
                with(Status::Pass, false),
                with(Status::Degraded, true)
            );
            if any_fail {
                let _ = write!(md, " {} |", with(Status::Fail, true));
            }
            md.push('\n');
        }
        md
    }
}

/// A table cell's text on one line, with no '|' to break the table.
fn cell_text(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

/// Rewrites what lies between the README's kernel markers with the table made from `results_json`.
pub fn update_readme(readme: &Path, results_json: &Path) -> anyhow::Result<()> {
    let json = fs::read_to_string(results_json).with_context(|| format!("cannot read {}", results_json.display()))?;
    let run: Run = serde_json::from_str(&json).with_context(|| format!("cannot parse {}", results_json.display()))?;
    let text = fs::read_to_string(readme).with_context(|| format!("cannot read {}", readme.display()))?;
    let updated = replace_region(&text, &run.readme_section()).with_context(|| format!("in {}", readme.display()))?;
    fs::write(readme, updated).with_context(|| format!("cannot write {}", readme.display()))?;
    eprintln!("[kernels] updated the supported kernels in {}", readme.display());
    Ok(())
}

fn replace_region(text: &str, section: &str) -> anyhow::Result<String> {
    let (Some(begin), Some(end)) = (text.find(README_BEGIN), text.find(README_END)) else {
        bail!("no {README_BEGIN} ... {README_END} region to rewrite; add the two markers where the table goes");
    };
    if end < begin {
        bail!("{README_END} comes before {README_BEGIN}");
    }
    let head = &text[..begin + README_BEGIN.len()];
    Ok(format!("{head}\n{}{}", section.trim_end_matches('\n').to_owned() + "\n", &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        let result = |check: &str, status, detail: &str| CheckResult {
            check: check.into(),
            status,
            detail: detail.into(),
            ms: None,
        };
        let kernel = |id: &str, results| KernelRun {
            id: id.into(),
            version: format!("{id}.1"),
            release: format!("{id}.0-1-cloud-amd64"),
            suite: "bookworm".into(),
            packages: vec![Package { name: format!("linux-image-{id}"), version: format!("{id}.1-1") }],
            compression: "zstd".into(),
            modules: vec!["veth".into()],
            builtin_modules: vec![],
            boot_s: Some(30.0),
            total_s: 40.0,
            console_log: String::new(),
            results,
        };
        Run {
            date: "2026-12-01T00:00:00Z".into(),
            host: "test".into(),
            revision: "abc".into(),
            accel: Accel::Tcg,
            accel_reason: "KVM probe failed".into(),
            check_args: vec![],
            kernels: vec![
                kernel("5.10", vec![result("boot", Status::Pass, ""), result("pin", Status::Degraded, "no | pinning")]),
                kernel("6.1", vec![result("boot", Status::Fail, "timeout\nline 1\nline 2")]),
            ],
            not_run: vec![],
            download: Download::default(),
            total_s: 80.0,
        }
    }

    #[test]
    fn the_table_has_a_cell_per_check_and_kernel() {
        let md = run().markdown();
        assert!(md.contains("| boot | pass | FAIL: timeout (see below) |"), "{md}");
        assert!(md.contains("| pin | degraded: no \\| pinning | — |"), "{md}");
        assert!(md.contains("### boot on 6.1\n\n```\ntimeout\nline 1\nline 2\n```"), "{md}");
        assert_eq!(run().failures(), ["6.1 boot"]);
    }

    #[test]
    fn the_readme_region_is_replaced_and_the_rest_kept() {
        let readme = "# x\n\nbefore\n<!-- kernels:begin -->\nold\n<!-- kernels:end -->\nafter\n";
        let updated = replace_region(readme, &run().readme_section()).unwrap();
        assert!(updated.starts_with("# x\n\nbefore\n<!-- kernels:begin -->\nSupported kernels"));
        assert!(updated.ends_with("|\n<!-- kernels:end -->\nafter\n"), "{updated}");
        assert!(!updated.contains("old"));
        assert!(
            updated
                .contains("| 5.10.1 | `linux-image-5.10` 5.10.1-1 (bookworm) | `boot` | `pin`: no \\| pinning | — |"),
            "{updated}"
        );
        assert!(replace_region("no markers", "x").is_err());
    }

    #[test]
    fn the_readme_is_updated_from_results_json() {
        let dir = std::env::temp_dir().join(format!("xtask-kernels-readme-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (readme, json) = (dir.join("README.md"), dir.join("results.json"));
        fs::write(&json, serde_json::to_string(&run()).unwrap()).unwrap();
        fs::write(&readme, format!("# x\n{README_BEGIN}\n{README_END}\n")).unwrap();
        update_readme(&readme, &json).unwrap();
        let text = fs::read_to_string(&readme).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        // A failing kernel adds the Fails column.
        assert!(text.contains("| Kernel | Debian package | Works | Degraded (why) | Fails |"), "{text}");
        assert!(text.contains("| 6.1.1 | `linux-image-6.1` 6.1.1-1 (bookworm) | — | — | `boot`: timeout |"), "{text}");
    }
}
