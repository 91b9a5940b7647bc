//! xtask/kernels.toml: the Debian packages `cargo xtask kernels` boots, pinned to exact versions.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::cmd::workspace_root;

/// Debian's own architecture name; every pinned package is built for it.
pub const ARCH: &str = "amd64";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    pub busybox: SuitePackage,
    #[serde(rename = "kernel")]
    pub kernels: Vec<Kernel>,
}

/// A package outside a kernel entry: it carries its own suite.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuitePackage {
    pub suite: String,
    pub name: String,
    pub version: String,
}

impl SuitePackage {
    pub fn package(&self) -> Package {
        Package { name: self.name.clone(), version: self.version.clone() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Short name used on the command line (`--kernel 6.1`), in target/kernels/<id>/ and as a report column.
    pub id: String,
    pub suite: String,
    pub packages: Vec<Package>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
}

impl Package {
    /// `name=version`, as `apt-get download` takes it.
    pub fn spec(&self) -> String {
        format!("{}={}", self.name, self.version)
    }

    /// The file name `apt-get download` gives the package: the epoch's colon is URL-encoded.
    pub fn deb_file_name(&self) -> String {
        format!("{}_{}_{ARCH}.deb", self.name, self.version.replace(':', "%3a"))
    }
}

impl Kernel {
    /// The upstream version of the kernel (the first package's version without epoch and Debian revision):
    /// 7.3.4-1~bpo13+1 is 7.3.4.
    pub fn upstream_version(&self) -> String {
        let version = self.packages.first().map_or("", |p| p.version.as_str());
        let version = version.split_once(':').map_or(version, |(_, v)| v);
        version.split_once('-').map_or(version, |(v, _)| v).to_owned()
    }
}

impl Pins {
    pub fn path() -> PathBuf {
        workspace_root().join("xtask/kernels.toml")
    }

    pub fn load() -> anyhow::Result<Self> {
        let path = Self::path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let pins: Pins = toml::from_str(text)?;
        ensure!(!pins.kernels.is_empty(), "no [[kernel]] entries");
        let mut ids = BTreeSet::new();
        for kernel in &pins.kernels {
            ensure!(ids.insert(kernel.id.as_str()), "kernel id {} is listed twice", kernel.id);
            // The id names a directory under target/kernels/.
            if kernel.id.is_empty() || !kernel.id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                bail!("kernel id {:?}: use letters, digits, '.', '_' or '-'", kernel.id);
            }
            ensure!(
                kernel.id != "busybox" && kernel.id != "apt" && kernel.id != "cache",
                "kernel id {:?} is reserved",
                kernel.id
            );
            ensure!(!kernel.packages.is_empty(), "kernel {} lists no packages", kernel.id);
        }
        Ok(pins)
    }

    /// Every suite a pinned package comes from, for the sources list.
    pub fn suites(&self) -> BTreeSet<&str> {
        self.kernels.iter().map(|k| k.suite.as_str()).chain([self.busybox.suite.as_str()]).collect()
    }

    /// Keeps the kernels named on the command line (by id or upstream version), in the file's order.
    pub fn select(&self, wanted: &[String]) -> anyhow::Result<Vec<Kernel>> {
        if wanted.is_empty() {
            return Ok(self.kernels.clone());
        }
        for w in wanted {
            if !self.kernels.iter().any(|k| &k.id == w || &k.upstream_version() == w) {
                let known: Vec<&str> = self.kernels.iter().map(|k| k.id.as_str()).collect();
                bail!("no pinned kernel {w:?} in {}; pinned: {}", Self::path().display(), known.join(", "));
            }
        }
        Ok(self
            .kernels
            .iter()
            .filter(|k| wanted.iter().any(|w| &k.id == w || &k.upstream_version() == w))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_file_parses() {
        let pins = Pins::load().unwrap();
        assert!(pins.kernels.iter().any(|k| k.id == "5.10"));
        assert!(pins.suites().contains("bookworm"));
    }

    #[test]
    fn file_names_and_versions() {
        let busybox = Package { name: "busybox-static".into(), version: "1:1.35.0-4+deb12u1+b1".into() };
        assert_eq!(busybox.deb_file_name(), "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb");
        let kernel = Kernel {
            id: "7.3".into(),
            suite: "trixie-backports".into(),
            packages: vec![Package {
                name: "linux-binary-7.3.4+deb13-cloud-amd64".into(),
                version: "7.3.4-1~bpo13+1".into(),
            }],
        };
        assert_eq!(kernel.upstream_version(), "7.3.4");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let text = r#"
            busybox = { suite = "bookworm", name = "busybox-static", version = "1" }
            [[kernel]]
            id = "6.1"
            suite = "bookworm"
            packages = [{ name = "a", version = "1" }]
            [[kernel]]
            id = "6.1"
            suite = "bookworm"
            packages = [{ name = "b", version = "1" }]
        "#;
        assert!(Pins::parse(text).is_err());
    }
}
