//! The Python tools the set-up installs into a virtual environment of the workspace
//! (`target/python-tools`, see `ensure_python_tools` in xtask/src/setup.rs): `kubernetes-validate`, and
//! PyYAML (one of its dependencies), which the tests use to read YAML files as JSON.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Where xtask/src/setup.rs creates the virtual environment (keep the two in step).
pub const VENV: &str = "target/python-tools";

/// A program of the virtual environment, or a panic saying how to install it.
pub fn venv_program(program: &str) -> PathBuf {
    let path = super::workspace_root().join(VENV).join("bin").join(program);
    assert!(
        path.is_file(),
        "{} is missing: `cargo xtask setup --tests` (run by `cargo xtask test`) installs kubernetes-validate \
         and PyYAML into {VENV}",
        path.display()
    );
    path
}

/// `kubernetes-validate` as a command.
pub fn kubernetes_validate() -> Command {
    Command::new(venv_program("kubernetes-validate"))
}

/// Every YAML document in `path`, as JSON values (PyYAML's safe loader).
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))";
    let out = Command::new(venv_program("python"))
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the virtual environment's python: {e}"));
    assert!(out.status.success(), "{} is not valid YAML: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).expect("python printed JSON") {
        serde_json::Value::Array(documents) => documents,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// The single YAML document in `path`.
pub fn yaml_document(path: &Path) -> serde_json::Value {
    let mut documents = yaml_documents(path);
    assert_eq!(documents.len(), 1, "{} should hold exactly one YAML document", path.display());
    documents.remove(0)
}
