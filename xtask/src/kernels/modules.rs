//! The kernel modules the checks need, with their dependencies, in load order.
//!
//! Debian's packages carry no modules.dep (depmod makes it at install time), so the dependencies come from
//! each module's own `depends=` modinfo string. Modules are decompressed here, because busybox `insmod` takes
//! plain ELF only.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::elf;

/// What the checks use: veth pairs, and tc programs on the ingress/clsact hook (kernels before 6.6 have no
/// TCX, and aya attaches there through cls_bpf).
pub const WANTED: &[&str] = &["veth", "sch_ingress", "cls_bpf"];

pub struct Module {
    pub name: String,
    pub ko: Vec<u8>,
}

/// The modules to load, dependencies first, and the wanted ones the kernel has built in (nothing to load).
pub struct Resolved {
    pub load: Vec<Module>,
    pub builtin: Vec<String>,
}

/// Module names use '_' and '-' interchangeably (the file is often `foo-bar.ko`, the module `foo_bar`).
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// A module's name from its file name, if it is a module (`veth.ko`, `veth.ko.xz`, `veth.ko.zst`, ...).
fn module_name(file: &str) -> Option<String> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().find_map(|ext| file.strip_suffix(ext)).map(normalize)
}

pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> anyhow::Result<Resolved> {
    let mut index = BTreeMap::new();
    index_modules(&modules_dir.join("kernel"), &mut index)?;
    let builtin_list = modules_dir.join("modules.builtin");
    let builtin: BTreeSet<String> = fs::read_to_string(&builtin_list)
        .with_context(|| format!("cannot read {}", builtin_list.display()))?
        .lines()
        .filter_map(|l| module_name(l.rsplit('/').next().unwrap_or(l)))
        .collect();
    let mut resolver = Resolver {
        index,
        builtin,
        done: BTreeSet::new(),
        resolved: Resolved { load: Vec::new(), builtin: Vec::new() },
    };
    for name in wanted {
        resolver.visit(&normalize(name), &mut Vec::new())?;
    }
    Ok(resolver.resolved)
}

fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(name) = module_name(&entry.file_name().to_string_lossy()) {
            index.insert(name, path);
        }
    }
    Ok(())
}

struct Resolver {
    index: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    done: BTreeSet<String>,
    resolved: Resolved,
}

impl Resolver {
    /// Depth first: a module goes after everything it depends on. `path` holds the chain being resolved, to
    /// name a dependency cycle instead of recursing forever.
    fn visit(&mut self, name: &str, path: &mut Vec<String>) -> anyhow::Result<()> {
        if self.done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            bail!("module dependency cycle: {} -> {name}", path.join(" -> "));
        }
        if self.builtin.contains(name) {
            self.done.insert(name.to_owned());
            self.resolved.builtin.push(name.to_owned());
            return Ok(());
        }
        let file = self.index.get(name).with_context(|| {
            let chain = if path.is_empty() { String::new() } else { format!(" (needed by {})", path.join(" <- ")) };
            format!("the kernel has no module {name}{chain}, and does not have it built in")
        })?;
        let ko = decompress(file)?;
        let depends =
            elf::module_depends(&ko).with_context(|| format!("{} has no .modinfo section", file.display()))?;
        path.push(name.to_owned());
        for dependency in depends {
            self.visit(&normalize(&dependency), path)?;
        }
        path.pop();
        self.done.insert(name.to_owned());
        self.resolved.load.push(Module { name: name.to_owned(), ko });
        Ok(())
    }
}

fn decompress(file: &Path) -> anyhow::Result<Vec<u8>> {
    let name = file.to_string_lossy();
    let tool: &[&str] = if name.ends_with(".xz") {
        &["xz", "-dc"]
    } else if name.ends_with(".zst") {
        &["zstd", "-dcq"]
    } else if name.ends_with(".gz") {
        &["gzip", "-dc"]
    } else {
        return fs::read(file).with_context(|| format!("cannot read {}", file.display()));
    };
    let out = Command::new(tool[0])
        .args(&tool[1..])
        .arg(file)
        .output()
        .with_context(|| format!("cannot run {} (is it installed?)", tool[0]))?;
    if !out.status.success() {
        bail!("{} {} failed: {}", tool.join(" "), file.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_name("veth.ko.xz").as_deref(), Some("veth"));
        assert_eq!(module_name("sch_ingress.ko").as_deref(), Some("sch_ingress"));
        assert_eq!(module_name("nf-nat.ko.zst").as_deref(), Some("nf_nat"));
        assert_eq!(module_name("modules.order"), None);
    }
}
